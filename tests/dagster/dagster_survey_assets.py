"""The Dagster pipeline the adapter tests run, and helpers to tick the sensor and read dpt."""

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

# ---------------------------------------------------------------------------------------------
# The pipeline under test
# ---------------------------------------------------------------------------------------------


class DataDir(dg.ConfigurableResource):  # type: ignore[misc]
    """Where the test assets write their files."""

    path: str

    def file(self, name: str) -> Path:
        target = Path(self.path) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target


DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-10")
MANY = 12
CATALOG = dg.AssetSpec("catalog", description="an external input, never materialised here")


@dg.asset(code_version="1")
def raw(data: DataDir) -> dg.MaterializeResult:
    path = data.file("raw.txt")
    path.write_text(f"raw {time.time_ns()}\n")
    return dg.MaterializeResult(metadata={"dpt/path": str(path), "rows": 3})


@dg.asset(deps=[raw, CATALOG])
def clean(data: DataDir) -> dg.MaterializeResult:
    path = data.file("clean.txt")
    path.write_text(data.file("raw.txt").read_text().upper())
    return dg.MaterializeResult(metadata={"dpt/path": str(path)})


@dg.asset(deps=[clean])
def summary() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"lines": 1})


@dg.asset(partitions_def=DAILY, key_prefix=["survey"])
def nightly(context: dg.AssetExecutionContext, data: DataDir) -> dg.MaterializeResult:
    path = data.file(f"nights/{context.partition_key}.txt")
    path.write_text(f"night {context.partition_key}\n")
    return dg.MaterializeResult(metadata={"dpt/path": str(path)})


@dg.asset(partitions_def=DAILY, deps=[nightly], key_prefix=["survey"])
def calibrated(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"night": context.partition_key})


@dg.asset(deps=[nightly], key_prefix=["survey"])
def season() -> None:
    """Unpartitioned: depends on every night."""


@dg.asset(deps=[raw])
def broken() -> None:
    raise ValueError("boom: bad calibration")


@dg.asset(deps=[broken])
def after_broken() -> None:
    """Never runs: its parent fails."""


@dg.multi_asset(specs=[dg.AssetSpec("left"), dg.AssetSpec("right", deps=[raw])], name="pair")
def pair(data: DataDir) -> Any:
    path = data.file("left.txt")
    path.write_text("left\n")
    yield dg.MaterializeResult(asset_key="left", metadata={"dpt/path": str(path)})
    yield dg.MaterializeResult(asset_key="right")


@dg.multi_asset(specs=[dg.AssetSpec(f"m{i:02d}") for i in range(MANY)], name="many")
def many() -> Any:
    for i in range(MANY):
        yield dg.MaterializeResult(asset_key=f"m{i:02d}")


@dg.asset
def reporter(data: DataDir) -> dg.MaterializeResult:
    """Calls dpt itself: the extra file lands on this materialisation's invocation."""
    import dpt_core

    extra = data.file("report-extra.txt")
    extra.write_text("extra\n")
    dpt_core.track(str(extra))
    path = data.file("report.txt")
    path.write_text("report\n")
    return dg.MaterializeResult(metadata={"dpt/path": str(path)})


ASSETS = [
    raw,
    clean,
    summary,
    CATALOG,
    nightly,
    calibrated,
    season,
    broken,
    after_broken,
    pair,
    many,
    reporter,
]
NIGHTLY_JOB = dg.define_asset_job("nightly_job", selection=[nightly, calibrated])


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


@dataclass
class Pipeline:
    """One Dagster instance, the definitions (with the dpt sensor) and the data directory."""

    instance: dg.DagsterInstance
    defs: dg.Definitions
    data_dir: Path
    db: Any

    @property
    def resources(self) -> dict[str, Any]:
        return {"data": DataDir(path=str(self.data_dir))}

    def materialize(
        self,
        assets: Sequence[Any],
        selection: Sequence[Any] | None = None,
        partition_key: str | None = None,
    ) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [*assets, CATALOG],
            instance=self.instance,
            resources=self.resources,
            selection=selection,
            partition_key=partition_key,
            raise_on_error=False,
        )

    def run_job(self, name: str, partition_key: str | None = None) -> dg.ExecuteInProcessResult:
        job = self.defs.resolve_job_def(name)
        return job.execute_in_process(
            instance=self.instance, partition_key=partition_key, raise_on_error=False
        )

    def sensor(self, name: str = "dpt_tracker") -> dg.SensorDefinition:
        return self.defs.resolve_sensor_def(name)

    def tick(
        self,
        cursor: str | None = None,
        sensor: dg.SensorDefinition | None = None,
        defs: dg.Definitions | None = None,
    ) -> Any:
        ctx = dg.build_sensor_context(
            instance=self.instance, cursor=cursor, definitions=defs or self.defs
        )
        return (sensor or self.sensor()).evaluate_tick(ctx)

    def storage_id(self, key: str | Sequence[str], run_id: str) -> int:
        """The storage id of ``key``'s materialisation in ``run_id``."""
        asset_key = dg.AssetKey(key) if isinstance(key, str) else dg.AssetKey(list(key))
        records = self.instance.fetch_materializations(asset_key, limit=1000).records
        ids = [r.storage_id for r in records if r.event_log_entry.run_id == run_id]
        assert len(ids) == 1, (key, run_id, ids)
        return ids[0]

    # -- reading what dpt recorded ------------------------------------------------------

    def counts(self) -> dict[str, int]:
        tables = (
            "invocations",
            "data_products",
            "data_product_versions",
            "invocation_inputs",
            "lineage_edges",
        )
        return {t: self.db.scalar(f"SELECT COUNT(*) FROM {t}") for t in tables}

    def invocation(self, task: str | None, run_id: str) -> Any:
        sql = "SELECT * FROM invocations WHERE external_id = :run AND "
        sql += "task IS NULL" if task is None else "task = :task"
        rows = self.db.rows(sql, run=run_id, task=task)
        assert len(rows) == 1, (task, run_id, rows)
        return rows[0]

    def versions(self, uri_like: str) -> list[Any]:
        return self.db.rows(
            "SELECT v.*, p.uri FROM data_product_versions v "
            "JOIN data_products p ON p.id = v.product_id WHERE p.uri LIKE :u ORDER BY v.id",
            u=uri_like,
        )

    def parents_of(self, version_uuid: str) -> list[tuple[str, str, int]]:
        """(parent uri, parent version uuid, labelling invocation id) of a version."""
        rows = self.db.rows(
            "SELECT p.uri, pv.uuid, e.invocation_id FROM lineage_edges e "
            "JOIN data_product_versions pv ON pv.id = e.parent_version_id "
            "JOIN data_products p ON p.id = pv.product_id "
            "JOIN data_product_versions cv ON cv.id = e.child_version_id "
            "WHERE cv.uuid = :u ORDER BY p.uri, pv.id",
            u=version_uuid,
        )
        return [(r[0], r[1], r[2]) for r in rows]


def cursor_of(result: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.cursor)
    return data
