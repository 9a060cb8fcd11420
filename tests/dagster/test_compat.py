"""Every Dagster shape ``dpt_dagster.compat`` relies on, checked on a real instance.

One test per need: when a Dagster release moves or reshapes something, the test of
that function fails here, by name, instead of the sensor recording less without a word.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from dpt_dagster import compat

DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-06")
REGIONS = dg.StaticPartitionsDefinition(["us", "eu"])
SEEN: dict[str, Any] = {}


@dg.asset(partitions_def=DAILY)
def days(context: dg.AssetExecutionContext) -> None:
    ctx = compat.current_op_context()
    SEEN["context"] = ctx
    SEEN["target"] = compat.context_asset_partition(ctx)
    SEEN["graph"] = compat.context_asset_graph(ctx)


@dg.asset(
    partitions_def=DAILY,
    deps=[
        dg.AssetDep(
            days, partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)
        )
    ],
)
def previous_day() -> None: ...


@dg.asset(deps=[days])
def all_days() -> None: ...


@dg.asset(partitions_def=DAILY, deps=[days])
def same_day() -> None: ...


@dg.asset(
    partitions_def=dg.MultiPartitionsDefinition({"date": DAILY, "region": REGIONS}),
    deps=[days],
)
def by_region() -> None: ...


@dg.asset
def plain() -> None: ...


@dg.asset(deps=[plain])
def fails() -> None:
    raise ValueError("broken on purpose")


@dg.asset(deps=[fails])
def never() -> None: ...


DEFS = dg.Definitions(
    assets=[days, previous_day, all_days, same_day, by_region, plain, fails, never]
)


@pytest.fixture
def instance(dagster_home: Path) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.local_temp(str(dagster_home)) as instance:
        yield instance


def _make_days(instance: dg.DagsterInstance, *keys: str) -> list[str]:
    runs = []
    for key in keys:
        result = dg.materialize([days], instance=instance, partition_key=key)
        assert result.success
        runs.append(result.run_id)
    return runs


def test_max_fetch_reads_dagsters_limit() -> None:
    from dagster._core.storage.event_log.sql_event_log import get_max_event_records_limit

    assert compat.max_fetch() == get_max_event_records_limit() > 0


def test_summaries_and_records(instance: dg.DagsterInstance) -> None:
    [run_a, run_b] = _make_days(instance, "2024-01-01", "2024-01-02")
    rows = compat.materialization_summaries_after(instance, 0, 10)
    assert [(r.asset_key, r.partition, r.run_id) for r in rows] == [
        (days.key, "2024-01-01", run_a),
        (days.key, "2024-01-02", run_b),
    ]
    assert all(isinstance(r.storage_id, int) and r.timestamp > 0 for r in rows)
    assert compat.materialization_summaries_after(instance, rows[0].storage_id, 10) == [rows[1]]
    assert compat.materialization_summaries_by_id(instance, [rows[1].storage_id]) == [rows[1]]

    [record] = compat.fetch_materializations_by_id(instance, days.key, [rows[1].storage_id])
    assert record.event_log_entry.asset_materialization.partition == "2024-01-02"
    latest = compat.latest_materialization_records(instance, [days.key])
    assert latest[days.key].storage_id == rows[1].storage_id
    assert compat.materialized_asset_ids(instance, [days.key, plain.key]) == {
        days.key: rows[1].storage_id,
        plain.key: None,
    }


@pytest.fixture(params=["run-sharded", "consolidated"])
def any_instance(request: Any, dagster_home: Path) -> Iterator[dg.DagsterInstance]:
    """The default SQLite instance (a wipe deletes the index's copies of the events), and
    a single-database event log, which keeps them behind a wipe timestamp as the
    PostgreSQL and MySQL storages do."""
    overrides = None
    if request.param == "consolidated":
        overrides = {
            "event_log_storage": {
                "module": "dagster._core.storage.event_log",
                "class": "ConsolidatedSqliteEventLogStorage",
                "config": {"base_dir": str(dagster_home / "consolidated")},
            }
        }
    with dg.DagsterInstance.local_temp(str(dagster_home), overrides=overrides) as instance:
        sharded = type(instance.event_log_storage).__name__ == "SqliteEventLogStorage"
        assert sharded is (request.param == "run-sharded")
        yield instance


def test_materializations_by_storage_id_across_assets(any_instance: dg.DagsterInstance) -> None:
    """One query for the payloads of several assets' materialisations; what a wipe hid
    stays hidden, as the per-asset record API hides it."""
    instance = any_instance
    _make_days(instance, "2024-01-01", "2024-01-02")
    assert dg.materialize([plain], instance=instance).success
    rows = compat.materialization_summaries_after(instance, 0, 10)
    ids = [r.storage_id for r in rows]
    found = compat.materializations_by_storage_id(instance, reversed(ids))
    assert found is not None
    assert [r.storage_id for r in found] == ids
    assert [(r.asset_key, r.event_log_entry.asset_materialization.partition) for r in found] == [
        (days.key, "2024-01-01"),
        (days.key, "2024-01-02"),
        (plain.key, None),
    ]
    assert compat.materializations_by_storage_id(instance, ids[1:2])[0].storage_id == ids[1]

    instance.wipe_assets([days.key])
    assert compat.fetch_materializations_by_id(instance, days.key, ids[:2]) == []
    kept = compat.materializations_by_storage_id(instance, ids)
    assert [r.storage_id for r in kept] == [ids[2]]
    _make_days(instance, "2024-01-03")
    newest = compat.materialization_summaries_after(instance, ids[2], 10)[0].storage_id
    kept = compat.materializations_by_storage_id(instance, [*ids, newest])
    assert [r.storage_id for r in kept] == [ids[2], newest]


def test_latest_storage_ids_by_partition_and_older_ones(instance: dg.DagsterInstance) -> None:
    _make_days(instance, "2024-01-01", "2024-01-02", "2024-01-01")
    ids = [r.storage_id for r in compat.materialization_summaries_after(instance, 0, 10)]
    assert compat.latest_storage_ids_by_partition(
        instance, days.key, ["2024-01-01", "2024-01-02", "2024-01-05"]
    ) == {"2024-01-01": ids[2], "2024-01-02": ids[1]}
    assert compat.latest_storage_ids_by_partition(instance, days.key, None) == {
        "2024-01-01": ids[2],
        "2024-01-02": ids[1],
    }
    older = compat.materializations_before(instance, days.key, ["2024-01-01"], ids[2], page_size=1)
    assert [r.storage_id for r in older] == [ids[0]]
    everything = compat.materializations_before(instance, days.key, None, ids[2] + 1, page_size=2)
    assert [r.storage_id for r in everything] == [ids[2], ids[1], ids[0]]


def test_partition_mappings_of_the_asset_graph(instance: dg.DagsterInstance) -> None:
    graph = DEFS.resolve_asset_graph()
    assert compat.asset_graph(DEFS.get_repository_def()) is not None

    def mapped(child: Any, partition: str | None, parent: Any) -> list[str] | None:
        return compat.mapped_parent_partitions(graph, instance, child.key, partition, parent.key)

    assert mapped(previous_day, "2024-01-03", days) == ["2024-01-02"]
    assert mapped(same_day, "2024-01-03", days) == ["2024-01-03"]  # identity
    assert mapped(previous_day, "2024-01-01", days) == []  # the day before the first one
    assert mapped(all_days, None, days) == [f"2024-01-0{d}" for d in range(1, 6)]
    assert mapped(by_region, "2024-01-02|eu", days) == ["2024-01-02"]
    assert mapped(fails, None, plain) is None  # an unpartitioned parent
    assert compat.graph_parent_keys(graph, previous_day.key) == [days.key]

    with pytest.raises(compat.PartitionMappingUnknown, match="not in this code location"):
        compat.mapped_parent_partitions(graph, instance, dg.AssetKey("elsewhere"), None, days.key)
    with pytest.raises(compat.PartitionMappingUnknown, match="no asset graph"):
        compat.mapped_parent_partitions(None, instance, days.key, None, days.key)
    with pytest.raises(compat.PartitionMappingUnknown, match="not-a-day"):
        mapped(previous_day, "not-a-day", days)


def test_the_running_asset_context(instance: dg.DagsterInstance) -> None:
    SEEN.clear()
    assert compat.current_op_context() is None
    _make_days(instance, "2024-01-03")
    assert SEEN["context"] is not None
    assert SEEN["target"] == (days.key, "2024-01-03")
    assert SEEN["graph"].has(days.key)


def test_run_outcome_events(instance: dg.DagsterInstance) -> None:
    result = dg.materialize([plain, fails, never], instance=instance, raise_on_error=False)
    assert not result.success
    run_id = result.run_id
    assert compat.run_asset_events(instance, run_id, "ASSET_MATERIALIZATION_PLANNED") == {
        (plain.key, None),
        (fails.key, None),
        (never.key, None),
    }
    assert compat.run_asset_events(instance, run_id, "ASSET_MATERIALIZATION") == {(plain.key, None)}

    logs = compat.run_outcome_logs(instance, run_id)
    kinds = [compat.event_type(e) for e in logs]
    assert {"ASSET_MATERIALIZATION_PLANNED", "ASSET_MATERIALIZATION", "STEP_FAILURE"} <= set(kinds)
    planned = [e for e in logs if compat.event_type(e) == "ASSET_MATERIALIZATION_PLANNED"]
    assert {compat.planned_asset_key(e) for e in planned} == {plain.key, fails.key, never.key}
    assert all(compat.planned_partitions(e, 10) == [None] for e in planned)
    [failure] = [e for e in logs if compat.event_type(e) == "STEP_FAILURE"]
    assert compat.step_failure_error(failure) == "ValueError: broken on purpose"

    events, more = compat.fetch_run_status_changes_after(instance, "RUN_FAILURE", 0, 10)
    assert [e.event_log_entry.run_id for e in events] == [run_id] and more is False
    assert compat.run_failure_details(events[0].event_log_entry) == (
        "fails",
        "ValueError: broken on purpose",
    )
    [record] = compat.run_records(instance, [run_id]).values()
    assert record.dagster_run.run_id == run_id and record.end_time is not None
    assert compat.run_partition_range(record.dagster_run) is None


def test_a_range_run_and_its_plan(instance: dg.DagsterInstance) -> None:
    @dg.asset(partitions_def=DAILY, backfill_policy=dg.BackfillPolicy.single_run())
    def ranged(context: dg.AssetExecutionContext) -> None: ...

    job = dg.Definitions(
        assets=[ranged], jobs=[dg.define_asset_job("ranged_job", selection=[ranged])]
    ).resolve_job_def("ranged_job")
    result = job.execute_in_process(
        instance=instance,
        tags={
            compat.PARTITION_RANGE_START_TAG: "2024-01-01",
            compat.PARTITION_RANGE_END_TAG: "2024-01-02",
        },
    )
    [record] = compat.run_records(instance, [result.run_id]).values()
    assert compat.run_partition_range(record.dagster_run) == ("2024-01-01", "2024-01-02")
    logs = compat.run_outcome_logs(instance, result.run_id)
    plans = [e for e in logs if compat.event_type(e) == "ASSET_MATERIALIZATION_PLANNED"]
    assert [p for e in plans for p in compat.planned_partitions(e, 10)] == [
        "2024-01-01",
        "2024-01-02",
    ]
    both = {(ranged.key, "2024-01-01"), (ranged.key, "2024-01-02")}
    assert compat.run_asset_events(instance, result.run_id, "ASSET_MATERIALIZATION") == both
    assert compat.run_asset_events(instance, result.run_id, "ASSET_MATERIALIZATION_PLANNED") == both


def test_the_private_dagster_names_dpt_uses_are_still_there() -> None:
    """dpt_dagster.compat reaches into Dagster's private parts in exactly three functions
    (:func:`compat.max_fetch`, :func:`compat.current_op_context` and the cross-asset read
    of :func:`compat.materializations_by_storage_id`, through the SQL event log's
    ``_get_assets_details``), which fall back quietly at run time; this test is what fails
    loudly when Dagster moves or reshapes them."""
    import contextvars
    import inspect
    import pathlib

    from dagster._core.execution.context.compute import current_execution_context
    from dagster._core.storage.event_log.sql_event_log import get_max_event_records_limit

    assert isinstance(current_execution_context, contextvars.ContextVar)
    assert current_execution_context.get(None) is None  # nothing runs here
    assert isinstance(get_max_event_records_limit(), int)
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

    details = inspect.signature(SqlEventLogStorage._get_assets_details)
    assert list(details.parameters)[:2] == ["self", "asset_keys"], details
    # ... and no other dpt_dagster module imports a private Dagster module.
    package = pathlib.Path(inspect.getfile(compat)).parent
    private = {
        path.name: [line.strip() for line in path.read_text().splitlines() if "dagster._" in line]
        for path in sorted(package.glob("*.py"))
    }
    assert {name: lines for name, lines in private.items() if lines} == {
        "compat.py": [
            "from dagster._core.storage.event_log.sql_event_log import get_max_event_records_limit",
            "from dagster._core.execution.context.compute import current_execution_context",
        ]
    }
