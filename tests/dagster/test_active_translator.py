"""The translator given to the sensor is the one ``dpt_core.track()`` uses inside assets.

The sensor runs in the daemon's code server and the asset in a run worker: both load the
same definitions, so building ``dpt_asset_sensor(translator=...)`` registers the
translator in each process. Here once in process, once with the asset materialised by
``dagster asset materialize`` in another process.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

import dpt_core
import dpt_dagster
from dpt_dagster import DagsterTranslator


class LakeTranslator(DagsterTranslator):
    """Names every asset in the team's lake, and its tasks by the last key component."""

    def get_asset_uri(self, asset_key: dg.AssetKey, partition: str | None) -> str:
        uri = "lake://survey/" + "/".join(asset_key.path)
        return f"{uri}/{partition}" if partition is not None else uri

    def get_task(self, asset_key: dg.AssetKey) -> str:
        return "lake:" + asset_key.path[-1]


@dg.asset
def raw_table() -> None: ...


@dg.asset(deps=[raw_table])
def summary_table(context: dg.AssetExecutionContext) -> None:
    """Names itself and its parent with dpt, as a user does who wants the edge explicit."""
    dpt_core.track(context.asset_key, parents=[dg.AssetKey("raw_table")])


def _products(db: Any) -> list[str]:
    return [r.uri for r in db.rows("SELECT uri FROM data_products ORDER BY uri")]


def test_registering_follows_the_sensor_built_last(dpt_env: Any) -> None:
    translator = LakeTranslator()
    dpt_dagster.dpt_asset_sensor(translator=translator)
    assert dpt_dagster.active_translator() is translator
    assert dpt_core.get_tracker().resolve(dg.AssetKey(["a", "b"])) == "lake://survey/a/b"
    dpt_dagster.dpt_asset_sensor()
    assert type(dpt_dagster.active_translator()) is DagsterTranslator
    assert dpt_core.get_tracker().resolve(dg.AssetKey(["a", "b"])) == "dagster://asset/a/b"


def test_in_asset_track_and_the_sensor_make_one_product(dpt_env: Any, dagster_home: Path) -> None:
    sensor = dpt_dagster.dpt_asset_sensor(translator=LakeTranslator())
    defs = dg.Definitions(assets=[raw_table, summary_table], sensors=[sensor])
    instance = dg.DagsterInstance.local_temp(str(dagster_home))
    try:
        first = dg.materialize([raw_table], instance=instance)
        second = dg.materialize(
            [raw_table, summary_table], instance=instance, selection=[summary_table]
        )
        sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    finally:
        instance.dispose()

    assert _products(dpt_env) == ["lake://survey/raw_table", "lake://survey/summary_table"]
    [row] = dpt_env.rows(
        "SELECT id, task, status, environment_id FROM invocations WHERE external_id = :r "
        "AND task IS NOT NULL",
        r=second.run_id,
    )
    assert (row.task, row.status) == ("lake:summary_table", "success")
    assert row.environment_id is not None  # opened from inside the asset
    # The sensor's version of raw_table is the one the asset named as its parent.
    [raw_version] = dpt_env.rows(
        "SELECT v.id FROM data_product_versions v JOIN invocations i ON i.id = v.produced_by_id "
        "WHERE i.external_id = :r",
        r=first.run_id,
    )
    inputs = dpt_env.rows(
        "SELECT version_id FROM invocation_inputs WHERE invocation_id = :i", i=row.id
    )
    assert [i.version_id for i in inputs] == [raw_version.id]
    assert dpt_env.rows("SELECT id FROM invocations WHERE status = 'running'") == []


DEFS = textwrap.dedent(
    """
    import dagster as dg
    import dpt_core
    import dpt_dagster


    class LakeTranslator(dpt_dagster.DagsterTranslator):
        def get_asset_uri(self, asset_key, partition):
            uri = "lake://survey/" + "/".join(asset_key.path)
            return f"{uri}/{partition}" if partition is not None else uri


    @dg.asset
    def raw_table() -> None: ...


    @dg.asset(deps=[raw_table])
    def summary_table(context: dg.AssetExecutionContext) -> None:
        dpt_core.track(context.asset_key, parents=[dg.AssetKey("raw_table")])


    defs = dg.Definitions(
        assets=[raw_table, summary_table],
        sensors=[dpt_dagster.dpt_asset_sensor(translator=LakeTranslator())],
    )
    """
)


@pytest.mark.slow
def test_the_run_worker_uses_the_sensors_translator(
    dpt_env: Any, dagster_home: Path, tmp_path: Path
) -> None:
    defs_file = tmp_path / "lake_defs.py"
    defs_file.write_text(DEFS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPT_")}
    env.update(dpt_env.environ())
    dagster = str(Path(sys.executable).with_name("dagster"))
    done = subprocess.run(
        [
            dagster,
            "asset",
            "materialize",
            "-f",
            str(defs_file),
            "--select",
            "raw_table,summary_table",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # Before any tick: the worker process opened the asset's invocation with the lake URI.
    assert _products(dpt_env) == ["lake://survey/raw_table", "lake://survey/summary_table"]

    # The daemon's side: the same definitions loaded in this process.
    spec = importlib.util.spec_from_file_location("lake_defs", defs_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    defs = module.defs
    instance = dg.DagsterInstance.get()
    try:
        sensor = defs.resolve_sensor_def("dpt_tracker")
        sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    finally:
        instance.dispose()

    assert _products(dpt_env) == ["lake://survey/raw_table", "lake://survey/summary_table"]
    statuses = [r.status for r in dpt_env.rows("SELECT status FROM invocations")]
    assert statuses == ["success"] * 3  # the run, raw_table, summary_table


@dg.asset
def raw_file(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    path = Path(os.environ["DPT_TEST_DATA"]) / "raw.csv"
    path.write_text("a,b\n1,2\n")
    return dg.MaterializeResult(metadata={"dpt/path": str(path)})


@dg.asset(partitions_def=dg.StaticPartitionsDefinition(["x", "y"]), deps=[raw_file])
def split_file(context: dg.AssetExecutionContext) -> None:
    """Names its parent and itself by asset key, as the asset's own code would."""
    with dpt_core.invocation() as inv:
        inv.read(dg.AssetKey("raw_file"))
    dpt_core.track(context.asset_key)


def test_an_asset_key_names_the_product_the_sensor_records(
    dpt_env: Any, dagster_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside an asset, an upstream's key is its file (dpt/path); the asset's own key is
    the product of this partition."""
    monkeypatch.setenv("DPT_TEST_DATA", str(tmp_path))
    sensor = dpt_dagster.dpt_asset_sensor(translator=LakeTranslator())
    defs = dg.Definitions(assets=[raw_file, split_file], sensors=[sensor])
    instance = dg.DagsterInstance.local_temp(str(dagster_home))
    try:
        dg.materialize([raw_file], instance=instance)
        run = dg.materialize(
            [raw_file, split_file], instance=instance, selection=[split_file], partition_key="x"
        )
        sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    finally:
        instance.dispose()

    raw_uri = (tmp_path / "raw.csv").resolve().as_uri()
    assert _products(dpt_env) == sorted([raw_uri, "lake://survey/split_file/x"])
    [row] = dpt_env.rows(
        "SELECT id, status FROM invocations WHERE external_id = :r AND task IS NOT NULL",
        r=run.run_id,
    )
    assert row.status == "success"
    inputs = dpt_env.rows(
        "SELECT p.uri, v.produced_by_id FROM invocation_inputs i "
        "JOIN data_product_versions v ON v.id = i.version_id "
        "JOIN data_products p ON p.id = v.product_id WHERE i.invocation_id = :i",
        i=row.id,
    )
    assert [(i.uri, i.produced_by_id is not None) for i in inputs] == [(raw_uri, True)]
    # One version per product: the asset's own track() of its key and the sensor's record
    # of the same materialisation (same run, no content hash) are one version, which
    # carries the materialisation's metadata.
    versions = dpt_env.rows(
        "SELECT p.uri, v.metadata FROM data_product_versions v "
        "JOIN data_products p ON p.id = v.product_id ORDER BY p.uri"
    )
    assert [v.uri for v in versions] == [raw_uri, "lake://survey/split_file/x"]
    split_metadata = versions[1].metadata
    if isinstance(split_metadata, str):
        split_metadata = json.loads(split_metadata)
    assert split_metadata["dagster/partition"] == "x"
