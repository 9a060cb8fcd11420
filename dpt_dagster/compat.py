"""Every Dagster API the adapter touches beyond the public decorators, in one place.

Built and tested against Dagster 1.13. The event log is read only through the
non-deprecated record APIs (``fetch_materializations`` with
:class:`dagster.AssetRecordsFilter`, ``fetch_run_status_changes`` with
:class:`dagster.RunStatusChangeRecordsFilter`); ``get_event_records`` is
deprecated and raises for run-status events on the default SQLite instance.
When a future Dagster moves something, this module is the one to change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

import dagster as dg
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    EventLogRecord,
    RunsFilter,
    RunStatusChangeRecordsFilter,
)

#: Final run events the sensor reads (``DagsterEventType`` member names; their stored
#: values are still the legacy ``PIPELINE_*`` strings), with the dpt status each one means.
RUN_STATUS_EVENTS: dict[str, str] = {
    DagsterEventType.RUN_SUCCESS.name: "success",
    DagsterEventType.RUN_FAILURE.name: "failed",
    DagsterEventType.RUN_CANCELED.name: "cancelled",
}

#: Dagster refuses to fetch more event records than this at once (MAX_LIMIT_GET_EVENT_RECORDS).
DEFAULT_MAX_FETCH = 10_000
#: Partition keys named in one event-log query.
PARTITIONS_PER_QUERY = 1000
#: Storage id standing for a materialisation still being made (newer than any stored).
NOT_YET_STORED = 2**62

#: Tag prefixes Dagster writes on materialisations.
INPUT_EVENT_POINTER = "dagster/input_event_pointer/"
INPUT_DATA_VERSION = "dagster/input_data_version/"
CODE_VERSION_TAG = "dagster/code_version"
PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"
DATA_VERSION_TAG = "dagster/data_version"


def dagster_version() -> str:
    return str(getattr(dg, "__version__", "unknown"))


def max_fetch() -> int:
    """The largest ``limit`` the instance accepts for one record fetch."""
    try:
        from dagster._core.storage.event_log.sql_event_log import get_max_event_records_limit

        return int(get_max_event_records_limit())
    except Exception:  # moved or renamed in another Dagster version
        return DEFAULT_MAX_FETCH


# ---------------------------------------------------------------------------------------------
# Reading the event log
# ---------------------------------------------------------------------------------------------


def materialization_summaries_after(
    instance: DagsterInstance, after_storage_id: int, limit: int
) -> list[Any]:
    """Materialisations of every asset after a storage id, oldest first, without payloads.

    One indexed query on the event log (``AssetEventSummaryRecord``: storage id, run id,
    asset key, partition, timestamp): the record APIs filter by asset key, which would
    cost one query per asset.
    """
    if not hasattr(instance, "get_asset_event_summary_records"):
        raise RuntimeError(
            f"dpt_dagster needs DagsterInstance.get_asset_event_summary_records, which Dagster "
            f"{dagster_version()} lacks: upgrade Dagster (tested with 1.13.29)"
        )
    return list(
        instance.get_asset_event_summary_records(
            DagsterEventType.ASSET_MATERIALIZATION,
            after_storage_id=after_storage_id,
            limit=limit,
            ascending=True,
        )
    )


def materialization_summaries_by_id(
    instance: DagsterInstance, storage_ids: Iterable[int]
) -> list[Any]:
    """Summaries of the materialisations with these storage ids (any asset), oldest first."""
    ids = sorted(set(storage_ids))
    found: list[Any] = []
    for start in range(0, len(ids), 1000):
        part = ids[start : start + 1000]
        found.extend(
            instance.get_asset_event_summary_records(
                DagsterEventType.ASSET_MATERIALIZATION,
                storage_ids=part,
                limit=len(part),
                ascending=True,
            )
        )
    return found


def latest_materialization_records(
    instance: DagsterInstance, asset_keys: Sequence[AssetKey]
) -> dict[AssetKey, Any]:
    """The newest materialisation record of each key, payload included (one query)."""
    if not asset_keys:
        return {}
    latest: dict[AssetKey, Any] = {}
    for record in instance.get_asset_records(list(asset_keys)):
        entry = record.asset_entry
        if entry.last_materialization_record is not None:
            latest[entry.asset_key] = entry.last_materialization_record
    return latest


def materialized_asset_ids(
    instance: DagsterInstance, asset_keys: Sequence[AssetKey]
) -> dict[AssetKey, int | None]:
    """The storage id of the newest materialisation of each key (None: never materialised)."""
    if not asset_keys:
        return {}
    result: dict[AssetKey, int | None] = dict.fromkeys(asset_keys)
    for record in instance.get_asset_records(list(asset_keys)):
        entry = record.asset_entry
        result[entry.asset_key] = entry.last_materialization_storage_id
    return result


def fetch_materializations_by_id(
    instance: DagsterInstance, asset_key: AssetKey, storage_ids: Sequence[int]
) -> list[EventLogRecord]:
    """The materialisations of ``asset_key`` with exactly these storage ids."""
    if not storage_ids:
        return []
    result = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=asset_key, storage_ids=list(storage_ids)),
        limit=len(storage_ids),
    )
    return list(result.records)


def materializations_by_storage_id(
    instance: DagsterInstance, storage_ids: Iterable[int]
) -> list[EventLogRecord] | None:
    """The materialisations with these storage ids, of any assets, oldest first.

    One query per 1000 ids on the event log's index (the instance's record APIs take one
    asset key per query: 200 assets cost 200 queries), one for the assets' wipes. Events
    made before their asset's last wipe are left out, as the per-asset APIs leave them out
    (the default SQLite storage deletes them; the single-database storages keep them).
    None when the storage cannot query across assets: read them per asset then.

    Private: ``SqlEventLogStorage._get_assets_details`` (the wipe timestamps; public
    asset records leave wiped assets out).
    """
    ids = sorted(set(storage_ids))
    storage = instance.event_log_storage
    assets_details = getattr(storage, "_get_assets_details", None)
    if assets_details is None:
        return None
    records: list[EventLogRecord] = []
    try:
        for start in range(0, len(ids), 1000):
            part = ids[start : start + 1000]
            records.extend(
                storage.get_event_records(
                    dg.EventRecordsFilter(
                        event_type=DagsterEventType.ASSET_MATERIALIZATION, storage_ids=part
                    ),
                    limit=len(part),
                    ascending=True,
                )
            )
    except NotImplementedError:
        return None
    keys = sorted({r.asset_key for r in records if r.asset_key is not None}, key=str)
    wiped: dict[AssetKey, float] = {}
    for key, details in zip(keys, assets_details(keys) if keys else (), strict=True):
        if details is not None and details.last_wipe_timestamp:
            wiped[key] = details.last_wipe_timestamp
    return [
        r
        for r in records
        if r.asset_key not in wiped or r.event_log_entry.timestamp > wiped[r.asset_key]
    ]


def latest_storage_ids_by_partition(
    instance: DagsterInstance, asset_key: AssetKey, partitions: Sequence[str] | None
) -> dict[str, int]:
    """The storage id of the newest materialisation of each partition of ``asset_key``.

    ``partitions`` None: every partition ever materialised. Partitions never materialised
    are left out. One indexed query per 1000 partitions (a larger set asks for all).
    """
    kind = DagsterEventType.ASSET_MATERIALIZATION
    if partitions is None or len(partitions) > PARTITIONS_PER_QUERY * 4:
        found = instance.get_latest_storage_id_by_partition(asset_key, kind)
        wanted = None if partitions is None else set(partitions)
        return {str(p): int(i) for p, i in found.items() if wanted is None or p in wanted}
    result: dict[str, int] = {}
    names = list(dict.fromkeys(partitions))
    for start in range(0, len(names), PARTITIONS_PER_QUERY):
        part = set(names[start : start + PARTITIONS_PER_QUERY])
        found = instance.get_latest_storage_id_by_partition(asset_key, kind, partitions=part)
        result.update({str(p): int(i) for p, i in found.items()})
    return result


def materializations_before(
    instance: DagsterInstance,
    asset_key: AssetKey,
    partitions: Sequence[str] | None,
    before_storage_id: int,
    page_size: int = 1000,
) -> Iterator[EventLogRecord]:
    """Newest first, page by page: materialisations of ``asset_key`` (in ``partitions``)
    older than a storage id. Stop iterating once you have what you need."""
    records_filter = AssetRecordsFilter(
        asset_key=asset_key,
        asset_partitions=list(partitions) if partitions is not None else None,
        before_storage_id=before_storage_id,
    )
    cursor = None
    while True:
        result = instance.fetch_materializations(
            records_filter, limit=page_size, cursor=cursor, ascending=False
        )
        yield from result.records
        if not result.has_more or not result.records:
            return
        cursor = result.cursor


def fetch_run_status_changes_after(
    instance: DagsterInstance, event_type: str, after_storage_id: int, limit: int
) -> tuple[list[EventLogRecord], bool]:
    """Run status events of one type (``RUN_SUCCESS``...) after a storage id, oldest first."""
    result = instance.fetch_run_status_changes(
        RunStatusChangeRecordsFilter(
            event_type=cast(Any, DagsterEventType[event_type]), after_storage_id=after_storage_id
        ),
        limit=limit,
        ascending=True,
    )
    return list(result.records), bool(result.has_more)


def run_records(instance: DagsterInstance, run_ids: Iterable[str]) -> dict[str, Any]:
    """Run records by run id (one query per 500 ids)."""
    ids = sorted({r for r in run_ids if r})
    found: dict[str, Any] = {}
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        for record in instance.get_run_records(RunsFilter(run_ids=part), limit=len(part)):
            found[record.dagster_run.run_id] = record
    return found


def run_asset_events(
    instance: DagsterInstance, run_id: str, event_type: str
) -> set[tuple[AssetKey, str | None]]:
    """(asset key, partition) of one run's events of one type, from the event log index.

    ``event_type``: ``"ASSET_MATERIALIZATION"`` or ``"ASSET_MATERIALIZATION_PLANNED"``.
    A plan for a partition range has no partition here (None).
    """
    rows = instance.get_asset_event_summary_records(
        cast(Any, DagsterEventType[event_type]), run_id=run_id, ascending=True
    )
    return {(row.asset_key, row.partition) for row in rows}


def run_partition_range(run: Any) -> tuple[str, str] | None:
    """(first, last) partition of a run over a partition range (a single-run backfill)."""
    tags = run.tags or {}
    start, end = tags.get(PARTITION_RANGE_START_TAG), tags.get(PARTITION_RANGE_END_TAG)
    return (start, end) if start is not None and end is not None else None


def run_outcome_logs(instance: DagsterInstance, run_id: str) -> list[Any]:
    """The events of a finished run that say which assets it planned, made, failed or skipped."""
    return list(
        instance.all_logs(
            run_id,
            of_type={
                DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
                DagsterEventType.ASSET_MATERIALIZATION,
                DagsterEventType.STEP_FAILURE,
            },
        )
    )


# ---------------------------------------------------------------------------------------------
# Event payloads
# ---------------------------------------------------------------------------------------------


def event_type(entry: Any) -> str | None:
    """The ``DagsterEventType`` member name of an event (``"RUN_FAILURE"``), or None."""
    event = entry.dagster_event
    if event is None:
        return None
    try:
        return str(event.event_type.name)
    except Exception:
        return str(event.event_type_value)


def planned_partitions(entry: Any, limit: int) -> list[str | None]:
    """The partitions an ``ASSET_MATERIALIZATION_PLANNED`` event announces (at most ``limit``)."""
    data = entry.dagster_event.event_specific_data
    if getattr(data, "partition", None) is not None:
        return [data.partition]
    subset = getattr(data, "partitions_subset", None)
    if subset is not None:
        with contextlib.suppress(Exception):
            return list(subset.get_partition_keys())[:limit]
    return [None]


def planned_asset_key(entry: Any) -> AssetKey | None:
    data = entry.dagster_event.event_specific_data
    key = getattr(data, "asset_key", None)
    return key if isinstance(key, AssetKey) else None


def _root_cause(error: Any) -> Any:
    seen = 0
    while error is not None and getattr(error, "cause", None) is not None and seen < 20:
        error = error.cause
        seen += 1
    return error


def error_text(error: Any) -> str | None:
    """``"ValueError: boom"`` from a Dagster ``SerializableErrorInfo`` (its root cause)."""
    root = _root_cause(error)
    if root is None:
        return None
    message = str(getattr(root, "message", "") or "").strip()
    return message or getattr(root, "cls_name", None)


def step_failure_error(entry: Any) -> str | None:
    """The root error of a ``STEP_FAILURE`` event."""
    data = entry.dagster_event.event_specific_data
    return error_text(getattr(data, "error", None))


def run_failure_details(entry: Any) -> tuple[str | None, str | None]:
    """(step key, root error text) of the first failed step behind a ``RUN_FAILURE`` event."""
    data = entry.dagster_event.event_specific_data if entry.dagster_event else None
    step_event = getattr(data, "first_step_failure_event", None)
    if step_event is not None:
        step_data = getattr(step_event, "event_specific_data", None)
        return step_event.step_key, error_text(getattr(step_data, "error", None))
    return None, error_text(getattr(data, "error", None))


def metadata_values(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Plain values of a Dagster metadata mapping (``MetadataValue.value``)."""
    plain: dict[str, Any] = {}
    for key, value in metadata.items():
        plain[str(key)] = getattr(value, "value", value)
    return plain


# ---------------------------------------------------------------------------------------------
# The asset graph
# ---------------------------------------------------------------------------------------------


def asset_graph(repository_def: Any) -> Any | None:
    """The asset graph of the sensor's code location, or None outside one."""
    if repository_def is None:
        return None
    try:
        return repository_def.asset_graph
    except Exception:
        return None


def graph_parent_keys(graph: Any, key: AssetKey) -> list[AssetKey]:
    """The declared parents of ``key`` in ``graph`` ([] when the graph does not know it)."""
    if graph is None:
        return []
    try:
        if not graph.has(key):
            return []
        return sorted(graph.get(key).parent_keys, key=lambda k: k.to_user_string())
    except Exception:
        return []


class PartitionMappingUnknown(Exception):
    """The asset graph at hand cannot say which parent partitions a child partition read."""


def mapped_parent_partitions(
    graph: Any,
    instance: DagsterInstance,
    child: AssetKey,
    child_partition: str | None,
    parent: AssetKey,
) -> list[str] | None:
    """The partitions of ``parent`` that ``child_partition`` of ``child`` depends on.

    Evaluated by the asset graph's partition mapping (``AssetDep`` / ``AssetIn``
    ``partition_mapping``, else Dagster's defaults: identity, time-window overlap, all
    partitions), restricted to partitions that exist; dynamic partitions are read from
    ``instance``. None: ``parent`` is not partitioned.

    :raises PartitionMappingUnknown: the graph does not know ``child`` or ``parent``, or
        the mapping cannot be evaluated (the message says why).
    """
    if graph is None:
        raise PartitionMappingUnknown("no asset graph (the sensor runs outside a code location)")
    if not graph.has(child) or not graph.has(parent):
        missing = child if not graph.has(child) else parent
        raise PartitionMappingUnknown(
            f"asset {missing.to_user_string()} is not in this code location's asset graph"
        )
    parent_def = graph.get(parent).partitions_def
    if parent_def is None:
        return None
    try:
        mapping = graph.get_partition_mapping(child, parent)
        if (
            isinstance(mapping, dg.IdentityPartitionMapping)
            and child_partition is not None
            and graph.get(child).partitions_def == parent_def
        ):
            return [child_partition]  # the same partition: no subset to build
        with dg.partition_loading_context(dynamic_partitions_store=instance):
            result = graph.get_parent_partition_keys_for_child(child_partition, parent, child)
            return [str(k) for k in result.partitions_subset.get_partition_keys()]
    except Exception as exc:
        raise PartitionMappingUnknown(
            f"the partition mapping of {child.to_user_string()} to "
            f"{parent.to_user_string()} failed for partition {child_partition!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


# ---------------------------------------------------------------------------------------------
# In-process context (for dpt_core.track() inside an asset)
# ---------------------------------------------------------------------------------------------


def current_op_context() -> Any | None:
    """The Dagster op/asset execution context of this thread, or None."""
    try:
        from dagster._core.execution.context.compute import current_execution_context

        ctx = current_execution_context.get()
    except Exception:
        return None
    if ctx is None:
        return None
    return getattr(ctx, "op_execution_context", ctx)


def context_asset_graph(ctx: Any) -> Any | None:
    """The asset graph a running op sees: its code location's, else its job's.

    ``materialize()`` and ``execute_in_process()`` run without a repository; the job's
    asset layer then holds the graph of the assets it was built from.
    """
    try:
        return ctx.repository_def.asset_graph
    except Exception:
        pass
    try:
        return ctx.job_def.asset_layer.asset_graph
    except Exception:
        return None


def context_asset_partition(ctx: Any) -> tuple[AssetKey, str | None] | None:
    """(asset key, partition) an op context materialises, when it is exactly one of each."""
    try:
        keys = list(ctx.selected_asset_keys)
        if len(keys) != 1:
            return None
        partition = None
        if ctx.has_partition_key:
            partition = ctx.partition_key
        elif ctx.has_partition_key_range:
            return None
        return keys[0], partition
    except Exception:
        return None
