"""The host glue: a Dagster sensor that records the instance's event log into dpt.

Each tick reads, from a durable cursor, a bounded batch of new asset
materialisations and of finished runs, resolves what each materialisation
consumed, and hands everything to the translator. Every call into dpt goes
through :func:`_guard`: a tracking error is logged once and the sensor moves on
(the core has already spooled what the database refused), unless
``DPT_STRICT=1``, where the tick fails and the cursor stays put.

The cursor is JSON::

    {"v": 1, "materializations": 1234,
     "runs": {"RUN_SUCCESS": 1201, "RUN_FAILURE": 1190, "RUN_CANCELED": 0},
     "behind": false, "lag_seconds": 0.0}

Materialisations and run-status events are read through different record APIs
whose storage ids are separate sequences, so each keeps its own position.
Recording is idempotent (deterministic UUIDs), so a reset or lost cursor, two
sensors on one instance or a restarted daemon re-read events without
duplicating anything.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from dagster import (
    AssetKey,
    DefaultSensorStatus,
    EventLogRecord,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

import dpt_core
from dpt_core.adapter import as_utc, host_guard
from dpt_dagster import compat
from dpt_dagster.translator import (
    DagsterTranslator,
    Materialization,
    Upstream,
    register_translator,
)

log = logging.getLogger("dpt.dagster")

CURSOR_VERSION = 1
#: Materialisations recorded per store transaction.
RECORD_BATCH = 100
DEFAULT_BATCH_SIZE = 1000
#: Seconds a tick may spend recording before it stops at the last event recorded
#: (Dagster gives up on a sensor evaluation after 60 s by default).
DEFAULT_TIME_BUDGET_SECONDS = 40.0
#: Most partitions of one asset a failed run's plan is read for.
MAX_PLANNED_PARTITIONS = 1000


# ---------------------------------------------------------------------------------------------
# Cursor and tick report
# ---------------------------------------------------------------------------------------------


@dataclass
class SensorCursor:
    """Where the sensor is in the event log (one position per storage-id sequence)."""

    materializations: int = 0
    runs: dict[str, int] = field(default_factory=dict)
    behind: bool = False
    lag_seconds: float = 0.0

    @classmethod
    def parse(cls, text: str | None) -> SensorCursor:
        """The cursor in ``text``; a missing or unreadable cursor starts from the beginning."""
        if not text:
            return cls()
        try:
            data = json.loads(text)
            runs = {str(k): int(v) for k, v in (data.get("runs") or {}).items()}
            return cls(
                materializations=int(data.get("materializations") or 0),
                runs=runs,
                behind=bool(data.get("behind", False)),
                lag_seconds=float(data.get("lag_seconds") or 0.0),
            )
        except (ValueError, TypeError, AttributeError):
            log.warning(
                "dpt: sensor cursor %r is not a dpt cursor; starting from the beginning "
                "(recording is idempotent, nothing is duplicated)",
                text[:80],
            )
            return cls()

    def dumps(self) -> str:
        return json.dumps(
            {
                "v": CURSOR_VERSION,
                "materializations": self.materializations,
                "runs": {k: self.runs[k] for k in sorted(self.runs)},
                "behind": self.behind,
                "lag_seconds": round(self.lag_seconds, 3),
            },
            sort_keys=True,
        )


@dataclass
class TickResult:
    """What one tick did: the new cursor and counts for the tick message."""

    cursor: str
    materializations: int = 0
    runs: int = 0
    unmaterialized: int = 0
    errors: int = 0
    assets_behind: bool = False
    runs_behind: bool = False
    out_of_time: bool = False
    lag_seconds: float = 0.0
    disabled: bool = False

    @property
    def behind(self) -> bool:
        return self.assets_behind or self.runs_behind

    def message(self) -> str:
        if self.disabled:
            return "dpt is disabled (DPT_DISABLED): nothing recorded, cursor kept"
        parts = [
            f"dpt recorded {self.materializations} materialisation(s), {self.runs} finished run(s)"
        ]
        if self.unmaterialized:
            parts.append(f"{self.unmaterialized} unmaterialised planned asset(s)")
        if self.errors:
            parts.append(f"{self.errors} tracking error(s) logged and skipped")
        if self.behind:
            what = []
            if self.assets_behind:
                what.append("more materialisations")
            if self.runs_behind:
                what.append("more finished runs")
            why = " (the tick ran out of time)" if self.out_of_time else ""
            parts.append(
                f"behind{why}: {' and '.join(what)}, lag {self.lag_seconds:.0f}s; "
                "the next ticks catch up"
            )
        else:
            parts.append("up to date")
        return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# The guard
# ---------------------------------------------------------------------------------------------

_failures = host_guard("the sensor goes on without it", prefix="recording ")


def _guard(
    what: str, call: Callable[[], Any], tracker: dpt_core.Tracker, logger: Any, result: TickResult
) -> Any:
    """Run one recording step; log a failure once and go on, unless ``DPT_STRICT=1``."""
    try:
        return call()
    except Exception as exc:
        _failures.failed(
            what,
            exc,
            strict=tracker.settings.strict,
            key=what.split(" ", 1)[0],
            logger=logger,
        )
        result.errors += 1
        return None


# ---------------------------------------------------------------------------------------------
# Reading the event log
# ---------------------------------------------------------------------------------------------


def _load_materializations(instance: Any, rows: Sequence[Any]) -> dict[int, Materialization]:
    """The payloads of materialisation summaries, by storage id, in as few queries as possible.

    1. Each asset's newest materialisation comes with the asset index (one query for
       all keys): a sensor that keeps up finds every payload there.
    2. The rest by storage id, across assets (one query per 1000).
    3. Only where the event log storage cannot do that: per asset key (one query each).

    Rows whose event is gone (a wiped asset) are left out.
    """
    loaded: dict[int, Materialization] = {}
    latest = compat.latest_materialization_records(
        instance, sorted({r.asset_key for r in rows}, key=lambda k: k.to_string())
    )
    for row in rows:
        record = latest.get(row.asset_key)
        if record is not None and record.storage_id == row.storage_id:
            loaded[row.storage_id] = Materialization.from_record(record)
    rest = [r for r in rows if r.storage_id not in loaded]
    if not rest:
        return loaded
    found = compat.materializations_by_storage_id(instance, [r.storage_id for r in rest])
    if found is not None:
        loaded.update((r.storage_id, Materialization.from_record(r)) for r in found)
        return loaded
    by_key: dict[AssetKey, list[int]] = defaultdict(list)
    for row in rest:
        by_key[row.asset_key].append(row.storage_id)
    for key, ids in by_key.items():
        for start in range(0, len(ids), 1000):
            for record in compat.fetch_materializations_by_id(
                instance, key, ids[start : start + 1000]
            ):
                loaded[record.storage_id] = Materialization.from_record(record)
    return loaded


@dataclass
class _Wanted:
    """Partitions of ``parent`` that ``child`` read, still to be found in the event log."""

    child: Materialization
    parent: AssetKey
    #: ``[None]`` for an unpartitioned parent.
    partitions: list[str | None]


def resolve_upstream(
    instance: Any, materializations: Sequence[Materialization], graph: Any, logger: Any = None
) -> dict[int, list[Upstream]]:
    """What each materialisation consumed, by its storage id.

    For every upstream asset of a materialisation (its declared parents, and any asset a
    ``dagster/input_event_pointer/<key>`` tag names):

    - the asset graph's partition mapping says which upstream partitions the
      materialisation's partition read (identity, time-window offsets, static,
      multi-partition, all partitions, specific partitions...);
    - each of those partitions is linked to its newest materialisation made before the
      child's (storage ids are the event log's order); partitions never made by then are
      not inputs;
    - the input event pointer names the exact materialisation consumed, but Dagster
      writes there the newest materialisation of *any* partition of the upstream asset:
      it is used for an unpartitioned upstream, and for a partitioned one only when it
      is one of the mapped partitions (then it is that partition's newest when the step
      read it);
    - an upstream asset never materialised in this instance (a source, or an asset of
      another deployment) is an input all the same, named by its ``dagster://`` URI;
    - when the mapping cannot be evaluated here (the child or the parent is not in this
      code location's asset graph), a partitioned pointer is left out with a warning:
      which partition was read cannot be told.
    """
    logger = logger or log
    known: dict[int, Materialization] = {m.storage_id: m for m in materializations}
    missing = {
        storage_id
        for m in materializations
        for storage_id in m.input_event_pointers.values()
        if storage_id not in known
    }
    if missing:
        rows = compat.materialization_summaries_by_id(instance, missing)
        known.update(_load_materializations(instance, rows))

    mappings: dict[tuple[AssetKey, str | None, AssetKey], list[str] | None] = {}
    unknown: dict[tuple[AssetKey, str | None, AssetKey], str] = {}

    def mapped(m: Materialization, parent: AssetKey) -> list[str] | None:
        slot = (m.asset_key, m.partition, parent)
        if slot in unknown:
            raise compat.PartitionMappingUnknown(unknown[slot])
        if slot not in mappings:
            try:
                mappings[slot] = compat.mapped_parent_partitions(
                    graph, instance, m.asset_key, m.partition, parent
                )
            except compat.PartitionMappingUnknown as exc:
                unknown[slot] = str(exc)
                raise
        return mappings[slot]

    warned: set[tuple[AssetKey, AssetKey]] = set()

    def leave_out(m: Materialization, parent: AssetKey, why: str) -> None:
        if (m.asset_key, parent) not in warned:
            warned.add((m.asset_key, parent))
            logger.warning(
                "dpt: the input %s of %s is left out: %s",
                parent.to_user_string(),
                m.asset_key.to_user_string(),
                why,
            )

    result: dict[int, list[Upstream]] = {}
    wanted: list[_Wanted] = []
    for m in materializations:
        upstream: list[Upstream] = []
        pointers = m.input_event_pointers
        parents = set(compat.graph_parent_keys(graph, m.asset_key)) | set(pointers)
        for parent in sorted(parents, key=lambda k: k.to_string()):
            pointed = known.get(pointers[parent]) if parent in pointers else None
            if pointed is not None and pointed.asset_key != parent:
                pointed = None
            try:
                partitions = mapped(m, parent)
            except compat.PartitionMappingUnknown as exc:
                if pointed is not None and pointed.partition is None:
                    upstream.append(Upstream(parent, None, pointed))
                elif pointed is not None:
                    leave_out(m, parent, f"which of its partitions was read is unknown ({exc})")
                continue
            if partitions is None:
                if pointed is None:
                    wanted.append(_Wanted(m, parent, [None]))
                elif pointed.partition is None:
                    upstream.append(Upstream(parent, None, pointed))
                else:  # an asset of another code location: unpartitioned only in this graph
                    leave_out(
                        m,
                        parent,
                        f"it is partitioned ({pointed.partition!r} was made) but this code "
                        "location's asset graph does not say how",
                    )
                continue
            rest: list[str | None] = list(partitions)
            if pointed is not None and pointed.partition in partitions:
                upstream.append(Upstream(parent, pointed.partition, pointed))
                rest = [p for p in partitions if p != pointed.partition]
            if rest:
                wanted.append(_Wanted(m, parent, rest))
        result[m.storage_id] = upstream

    if wanted:
        by_parent: dict[AssetKey, list[_Wanted]] = defaultdict(list)
        for w in wanted:
            by_parent[w.parent].append(w)
        last_ids = compat.materialized_asset_ids(
            instance, sorted(by_parent, key=lambda k: k.to_string())
        )
        for parent, group in by_parent.items():
            found = _newest_before(instance, parent, group, last_ids.get(parent), known)
            for w, ups in zip(group, found, strict=True):
                result[w.child.storage_id].extend(ups)
    return result


def _newest_before(
    instance: Any,
    parent: AssetKey,
    group: Sequence[_Wanted],
    last_id: int | None,
    known: dict[int, Materialization],
) -> list[list[Upstream]]:
    """For each request of ``group``: each wanted partition's newest materialisation
    before the child's (one index query for the whole group in the usual case).

    A parent never materialised here is named by its URI, one input per partition.
    """
    if last_id is None:
        return [[Upstream(parent, p, None) for p in w.partitions] for w in group]
    chosen: list[dict[str | None, int]] = [{} for _ in group]
    named = sorted({p for w in group for p in w.partitions if p is not None})
    latest = compat.latest_storage_ids_by_partition(instance, parent, named) if named else {}
    for index, w in enumerate(group):
        before = w.child.storage_id
        older: list[str | None] = []
        for p in w.partitions:
            newest = last_id if p is None else latest.get(p)
            if newest is None:
                continue  # never made: not an input
            if newest < before:
                chosen[index][p] = newest
            else:
                older.append(p)
        if not older:
            continue
        still = set(older)
        scan = [p for p in older if p is not None] if None not in still else None
        for record in compat.materializations_before(
            instance, parent, scan, before, page_size=min(1000, 4 * len(older) + 8)
        ):
            m = Materialization.from_record(record)
            if m.partition in still:
                still.discard(m.partition)
                chosen[index][m.partition] = record.storage_id
                known.setdefault(record.storage_id, m)
            if not still:
                break
    needed = sorted({i for c in chosen for i in c.values() if i not in known})
    for start in range(0, len(needed), 1000):
        for record in compat.fetch_materializations_by_id(
            instance, parent, needed[start : start + 1000]
        ):
            known[record.storage_id] = Materialization.from_record(record)
    found: list[list[Upstream]] = []
    for w, picks in zip(group, chosen, strict=True):
        ups = []
        for p in w.partitions:
            hit = known.get(picks[p]) if p in picks else None
            if hit is not None and hit.asset_key == parent and hit.partition == p:
                ups.append(Upstream(parent, p, hit))
        found.append(ups)
    return found


# ---------------------------------------------------------------------------------------------
# One tick
# ---------------------------------------------------------------------------------------------


def run_tick(
    instance: Any,
    cursor: str | None,
    *,
    translator: DagsterTranslator | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    time_budget_seconds: float | None = DEFAULT_TIME_BUDGET_SECONDS,
    repository_def: Any = None,
    logger: Any = None,
    tracker: dpt_core.Tracker | None = None,
) -> TickResult:
    """Record what happened in ``instance`` since ``cursor``; returns the new cursor and counts.

    This is the whole sensor body, usable without a sensor context (scripts, benchmarks).

    :param time_budget_seconds: stop recording once this much time has gone (None: no
        limit); the cursor then stops at the last event recorded, so a slow database makes
        ticks smaller instead of making them time out and never advance.
    """
    translator = translator or DagsterTranslator()
    tracker = tracker or dpt_core.get_tracker()
    logger = logger or log
    state = SensorCursor.parse(cursor)
    if not tracker.enabled:
        return TickResult(cursor=cursor or state.dumps(), disabled=True)
    result = TickResult(cursor="")
    now = time.time()
    deadline = time.monotonic() + time_budget_seconds if time_budget_seconds else None

    handled = 0

    def out_of_time() -> bool:
        """True once the budget is spent; every tick still records at least one event."""
        if handled and deadline is not None and time.monotonic() > deadline:
            result.out_of_time = True
        return result.out_of_time

    rows = compat.materialization_summaries_after(instance, state.materializations, batch_size + 1)
    next_row = rows[batch_size] if len(rows) > batch_size else None
    rows = rows[:batch_size]
    run_events: dict[str, tuple[list[EventLogRecord], bool]] = {
        event_type: compat.fetch_run_status_changes_after(
            instance, event_type, state.runs.get(event_type, 0), batch_size
        )
        for event_type in compat.RUN_STATUS_EVENTS
    }

    loaded = _load_materializations(instance, rows)
    materializations = [loaded[r.storage_id] for r in rows if r.storage_id in loaded]
    if len(materializations) < len(rows):
        logger.info(
            "dpt: %d materialisation(s) vanished before they could be read (wiped assets)",
            len(rows) - len(materializations),
        )
    run_ids = {m.run_id for m in materializations} | {
        r.event_log_entry.run_id for rs, _more in run_events.values() for r in rs
    }
    runs = compat.run_records(instance, run_ids)
    upstream = resolve_upstream(
        instance, materializations, compat.asset_graph(repository_def), logger
    )

    # -- materialisations, oldest first ----------------------------------------------------
    def _record_one(m: Materialization) -> None:
        nonlocal handled
        handled += 1
        run_record = runs.get(m.run_id)
        if run_record is not None and m.run_id not in started_runs:
            started_runs.add(m.run_id)
            _guard(
                f"run {m.run_id}",
                partial(translator.start_run, tracker, m.run_id, run_record),
                tracker,
                logger,
                result,
            )
        done = _guard(
            f"materialisation {m.asset_key.to_user_string()} (storage id {m.storage_id})",
            partial(
                _record_materialization,
                translator,
                tracker,
                m,
                run_record,
                upstream.get(m.storage_id, []),
            ),
            tracker,
            logger,
            result,
        )
        if done:
            result.materializations += 1

    position = rows[-1].storage_id if rows else state.materializations
    started_runs: set[str] = set()
    batch = contextlib.ExitStack()
    with batch:
        for index, m in enumerate(materializations):
            if out_of_time():
                position = materializations[index - 1].storage_id
                break
            if index % RECORD_BATCH == 0:
                # Each group of events is one transaction in the store, not one per event.
                batch.close()
                batch.enter_context(tracker.batch())
            _record_one(m)
    state.materializations = position

    # -- finished runs ---------------------------------------------------------------------
    with tracker.batch():
        for event_type, (events, _more) in run_events.items():
            for record in events:
                if out_of_time():
                    break
                handled += 1
                run_id = record.event_log_entry.run_id
                outcome = _guard(
                    f"run {run_id} ({event_type})",
                    partial(
                        _record_run_outcome, instance, translator, tracker, record, runs.get(run_id)
                    ),
                    tracker,
                    logger,
                    result,
                )
                state.runs[event_type] = record.storage_id
                if outcome is not None:
                    result.runs += 1
                    result.unmaterialized += outcome

    # -- the lag -----------------------------------------------------------------------------
    lag_from: list[float] = []
    pending = [m for m in materializations if m.storage_id > state.materializations]
    if pending:
        lag_from.append(pending[0].timestamp)
    elif next_row is not None:
        lag_from.append(next_row.timestamp)
    result.assets_behind = bool(pending) or next_row is not None
    for event_type, (events, more) in run_events.items():
        waiting = [r for r in events if r.storage_id > state.runs.get(event_type, 0)]
        if waiting or more:
            result.runs_behind = True
            lag_from.append((waiting[0] if waiting else events[-1]).event_log_entry.timestamp)
    result.lag_seconds = max((max(now - ts, 0.0) for ts in lag_from), default=0.0)
    state.behind = result.behind
    state.lag_seconds = result.lag_seconds
    result.cursor = state.dumps()
    return result


def _record_materialization(
    translator: DagsterTranslator,
    tracker: dpt_core.Tracker,
    materialization: Materialization,
    run_record: Any,
    upstream: Sequence[Upstream],
) -> bool:
    translator.record_materialization(tracker, materialization, run_record, upstream)
    return True


def _record_run_outcome(
    instance: Any,
    translator: DagsterTranslator,
    tracker: dpt_core.Tracker,
    record: EventLogRecord,
    run_record: Any,
) -> int:
    """Close the run, and every asset (partition) it planned but did not materialise.

    Those are recorded too, so that none stays ``running`` (an asset whose code opened
    its invocation with ``dpt_core.track()``), and so that a failed run says which
    assets it did not make: ``failed`` (its step failed), ``cancelled``, or ``skipped``
    (stopped by another failure, or, in a successful run, an optional output the asset
    did not emit).

    :returns: how many planned-but-unmaterialised assets were recorded.
    """
    translator.finish_run(tracker, record, run_record)
    status = translator.get_status(compat.event_type(record.event_log_entry) or "")
    if run_record is None:
        return 0
    if status == "success":
        return _record_unmade_of_successful_run(instance, translator, tracker, record, run_record)
    run_id = record.event_log_entry.run_id
    planned: dict[tuple[AssetKey, str | None], str | None] = {}
    made: set[tuple[AssetKey, str | None]] = set()
    failed_steps: dict[str, str | None] = {}
    for entry in compat.run_outcome_logs(instance, run_id):
        kind = compat.event_type(entry)
        if kind == "ASSET_MATERIALIZATION_PLANNED":
            key = compat.planned_asset_key(entry)
            if key is not None:
                for partition in compat.planned_partitions(entry, MAX_PLANNED_PARTITIONS):
                    planned[(key, partition)] = entry.step_key
        elif kind == "ASSET_MATERIALIZATION" and entry.asset_materialization is not None:
            made.add((entry.asset_materialization.asset_key, entry.asset_materialization.partition))
        elif kind == "STEP_FAILURE" and entry.step_key:
            failed_steps[entry.step_key] = compat.step_failure_error(entry)
    ended = as_utc(run_record.end_time or record.event_log_entry.timestamp)
    count = 0
    for (key, partition), step_key in sorted(
        planned.items(), key=lambda i: (i[0][0].to_string(), i[0][1] or "")
    ):
        if (key, partition) in made:
            continue
        if step_key is not None and step_key in failed_steps:
            asset_status = "failed"
            error = f'step "{step_key}" failed: {failed_steps[step_key] or "unknown error"}'
        elif status == "cancelled":
            asset_status, error = "cancelled", "the run was cancelled before this asset was made"
        else:
            asset_status = "skipped"
            error = "not materialised: the run failed before this asset's step succeeded"
        translator.record_unmaterialized(
            tracker, run_record, key, partition, asset_status, error, ended
        )
        count += 1
    return count


def _record_unmade_of_successful_run(
    instance: Any,
    translator: DagsterTranslator,
    tracker: dpt_core.Tracker,
    record: EventLogRecord,
    run_record: Any,
) -> int:
    """A successful run's planned assets it did not materialise (optional outputs not
    emitted), as ``skipped``. Two index queries; none of the run's own event log."""
    run_id = record.event_log_entry.run_id
    planned = compat.run_asset_events(instance, run_id, "ASSET_MATERIALIZATION_PLANNED")
    if not planned:
        return 0
    unmade = planned - compat.run_asset_events(instance, run_id, "ASSET_MATERIALIZATION")
    if compat.run_partition_range(run_record.dagster_run) is not None:
        # A range's plan names no partition here; its partitions are not told apart.
        unmade = {(k, p) for k, p in unmade if p is not None}
    ended = as_utc(run_record.end_time or record.event_log_entry.timestamp)
    for key, partition in sorted(unmade, key=lambda i: (i[0].to_string(), i[1] or "")):
        translator.record_unmaterialized(
            tracker,
            run_record,
            key,
            partition,
            "skipped",
            "the run succeeded without materialising this asset (an optional output not emitted)",
            ended,
        )
    return len(unmade)


# ---------------------------------------------------------------------------------------------
# The sensor
# ---------------------------------------------------------------------------------------------


class _TickLogger:
    """Logs to the tick's log (shown in the Dagster UI) and to the ``dpt.dagster`` logger."""

    def __init__(self, tick_log: Any) -> None:
        self.tick_log = tick_log

    def info(self, message: str, *args: Any) -> None:
        log.info(message, *args)
        self.tick_log.info(message % args if args else message)

    def warning(self, message: str, *args: Any) -> None:
        log.warning(message, *args)
        self.tick_log.warning(message % args if args else message)


def dpt_asset_sensor(
    name: str = "dpt_tracker",
    *,
    minimum_interval_seconds: int = 30,
    default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING,
    batch_size: int = DEFAULT_BATCH_SIZE,
    time_budget_seconds: float | None = DEFAULT_TIME_BUDGET_SECONDS,
    translator: DagsterTranslator | None = None,
    description: str | None = None,
) -> SensorDefinition:
    """A sensor that records asset materialisations and finished runs into dpt.

    Attach it in one line::

        defs = Definitions(assets=[...], sensors=[dpt_dagster.dpt_asset_sensor()])

    :param name: the sensor's name (one per code location).
    :param minimum_interval_seconds: seconds between ticks.
    :param default_status: RUNNING (default) starts it with the daemon; STOPPED waits
        for someone to switch it on in the UI.
    :param batch_size: most materialisations (and most run events of each kind) one
        tick records; a longer backlog is caught up over the next ticks.
    :param time_budget_seconds: seconds a tick may spend recording; it then stops at the
        last event recorded and the next tick goes on (None: no limit). Keep it below
        Dagster's sensor timeout (60 s by default).
    :param translator: a :class:`~dpt_dagster.DagsterTranslator` (subclass) deciding
        what is recorded. It becomes the process's active translator
        (:func:`~dpt_dagster.active_translator`): ``dpt_core.track()`` inside an asset
        uses it too, in every process that loads these definitions.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    batch = min(int(batch_size), compat.max_fetch())
    the_translator = translator or DagsterTranslator()
    register_translator(the_translator)

    @sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=description
        or "Records asset materialisations, lineage and run outcomes into dpt "
        "(data-product-tracker).",
    )
    def _dpt_sensor(context: SensorEvaluationContext) -> SkipReason:
        result = run_tick(
            context.instance,
            context.cursor,
            translator=the_translator,
            batch_size=batch,
            time_budget_seconds=time_budget_seconds,
            repository_def=context.repository_def,
            logger=_TickLogger(context.log),
        )
        if not result.disabled:
            context.update_cursor(result.cursor)
        return SkipReason(result.message())

    return _dpt_sensor
