"""Prefect state hooks that record flow runs, task runs and assets with dpt.

Prefect has no global hook registry: the user adds the hooks, in one line::

    @flow(**dpt_prefect.flow_hooks())
    def nightly(night: str): ...

    @task(**dpt_prefect.task_hooks())  # optional: per-task environment and arguments
    def calibrate(path: str): ...

Flow hooks record the flow run when it starts and, when it ends, read every
task run of it back from the Prefect API, in a background thread (a bounded
wait lets the API catch up with the task-run events; :func:`flush` waits for
it), and record each as a child invocation, with its attempts and the assets it
materialised. Task hooks record a task run
from inside the task's own process as it runs (its real environment and the
argument values it was called with), its attempts, and its assets with the
metadata the task added. Both derive the same invocation ids from the Prefect
run ids, so a task run is one row however many of them saw it.

Every call into dpt goes through :func:`guard`: a tracking failure is logged
once and never fails the flow (with ``DPT_STRICT=1`` it is raised; Prefect
then logs it as a hook error).
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

import dpt_core
from dpt_core.adapter import (
    BackgroundWork,
    RunRegistry,
    TranslatorRegistry,
    as_utc,
    host_guard,
    poll_until,
)
from dpt_prefect import compat
from dpt_prefect.glue import READBACK_TIMEOUT, flow_hooks, task_hooks
from dpt_prefect.translator import PrefectTranslator, state_type

__all__ = ["READBACK_TIMEOUT", "FlowRecorder", "TaskRecorder", "flow_hooks", "flush", "task_hooks"]

log = logging.getLogger("dpt.prefect")

#: First and longest pause between two reads of the task runs.
READBACK_POLL = 0.05
READBACK_POLL_MAX = 0.25
#: Longest wait when the flow run crashed or was cancelled: its running task runs will not
#: settle, only the states Prefect already set need to reach the API.
READBACK_TIMEOUT_ENDED = 5.0
#: When the flow run crashed or was cancelled, this process may not know which task runs
#: it had (the engine that ran them is gone): the read-back goes on until the API's list
#: has not changed for this long (within READBACK_TIMEOUT_ENDED), so a task run whose
#: creation reaches the API a moment late is still recorded.
READBACK_QUIET_ENDED = 1.5
#: Task runs remembered per process (oldest forgotten first).
MAX_REMEMBERED = 20_000

# ---------------------------------------------------------------------------------------------
# The guard
# ---------------------------------------------------------------------------------------------

#: Every call into dpt: a failure is logged once per kind and swallowed unless ``DPT_STRICT=1``.
guard = host_guard("the flow goes on without it", log, prefix="recording ")


def _enabled() -> bool:
    try:
        return dpt_core.get_tracker().enabled
    except Exception:
        return True  # let the guarded call report the configuration error


# ---------------------------------------------------------------------------------------------
# What this process knows about the runs it saw
# ---------------------------------------------------------------------------------------------


@dataclass
class FlowRunRecord:
    """What the hooks keep of a flow run between its start and its end."""

    uuid: str
    job: str
    translator: PrefectTranslator


@dataclass
class TaskRunRecord:
    """What the hooks keep of a task run between its start and its end."""

    uuid: str
    flow_run_id: str | None
    job: str
    task: str
    translator: PrefectTranslator
    #: (attempt number, when it started) of the attempt running now.
    attempt: tuple[int, Any] | None = None
    finished: bool = False
    assets_recorded: bool = False


@dataclass
class Registry:
    """Runs this process recorded, so hooks, in-task ``track()`` and the read-back agree."""

    flows: RunRegistry[str, FlowRunRecord]
    tasks: RunRegistry[str, TaskRunRecord]
    #: Task runs that stand for a subflow run this process recorded as a flow run, with the
    #: flow run that called the subflow.
    subflow_task_runs: RunRegistry[str, str | None]

    def forget_flow(self, flow_run_id: str) -> None:
        """Forget a flow run whose read-back is over, and every task run of it."""
        self.flows.pop(flow_run_id)
        self.tasks.pop_where(lambda _, record: record.flow_run_id == flow_run_id)
        self.subflow_task_runs.pop_where(lambda _, caller: caller == flow_run_id)


registry = Registry(
    RunRegistry(MAX_REMEMBERED), RunRegistry(MAX_REMEMBERED), RunRegistry(MAX_REMEMBERED)
)

#: The stock translator, for hooks given none.
translators: TranslatorRegistry[PrefectTranslator] = TranslatorRegistry(PrefectTranslator)


def default_translator() -> PrefectTranslator:
    return translators.active()


# ---------------------------------------------------------------------------------------------
# Background read-backs
# ---------------------------------------------------------------------------------------------


@dataclass
class ReadbackSnapshot:
    """What a flow run's read-back needs from the moment the flow run ended."""

    flow_run_id: str
    job: str
    local_assets: dict[str, set[Any]]
    tasks_by_key: dict[str, Any]
    #: The dpt status the flow run ended with: task runs not final by then are closed by it.
    flow_status: str = "crashed"


#: Read-backs run here, so a flow run returns without waiting for the Prefect API to catch
#: up with its task runs. Its threads are joined at interpreter exit (each read-back is
#: bounded by its timeout), while the Prefect API is still reachable.
readbacks = BackgroundWork("dpt-prefect-readback")


def flush(timeout: float | None = None) -> bool:
    """Wait until every finished flow run's task runs are read back and recorded, and
    what this process recorded is in the database (:func:`dpt_core.flush`).

    The flow hooks record task runs in the background after a flow run ends; call this
    before reading what was recorded (tests, a script that queries dpt right after a
    flow). :returns: True when nothing is left pending.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    read_back = readbacks.flush(timeout)
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    return dpt_core.flush(left) and read_back


# ---------------------------------------------------------------------------------------------
# Flow hooks
# ---------------------------------------------------------------------------------------------


class FlowRecorder:
    """What the flow-run state hooks do (:class:`dpt_prefect.glue.FlowHooks` calls it)."""

    def __init__(
        self, translator: PrefectTranslator | None, readback_timeout: float, background: bool
    ) -> None:
        self.translator = translator or default_translator()
        self.readback_timeout = readback_timeout
        self.background = background

    def dpt_flow_running(self, flow: Any, flow_run: Any, state: Any) -> None:
        if _enabled():
            guard("the flow run start", lambda: self._start(flow, flow_run, state))

    def dpt_flow_finished(self, flow: Any, flow_run: Any, state: Any) -> None:
        if _enabled():
            guard("the flow run end", lambda: self._finish(flow, flow_run, state))

    # -- internals ------------------------------------------------------------------------

    def _start(self, flow: Any, flow_run: Any, state: Any) -> FlowRunRecord:
        flow_run_id = str(flow_run.id)
        known = registry.flows.get(flow_run_id)
        if known is not None:  # a flow-run retry: the same invocation goes on
            return known
        translator = self.translator
        parent_uuid = None
        parent_task_run_id = getattr(flow_run, "parent_task_run_id", None)
        if parent_task_run_id:
            parent_flow_run_id = self._parent_flow_run_id(flow_run)
            if parent_flow_run_id:
                parent_uuid = translator.get_flow_run_uuid(parent_flow_run_id)
            registry.subflow_task_runs.set(str(parent_task_run_id), parent_flow_run_id)
        handle = translator.start_flow_run(flow, flow_run, state, parent_uuid)
        record = FlowRunRecord(handle.uuid, translator.get_flow_job(flow, flow_run), translator)
        registry.flows.set(flow_run_id, record)
        # Their materialisations are then recorded as they commit, with their metadata.
        for found in find_tasks(flow).values():
            if compat.is_materializing_task(found):
                add_commit_hook(found)
        return record

    @staticmethod
    def _parent_flow_run_id(flow_run: Any) -> str | None:
        """The flow run that called this subflow: the enclosing flow-run context, else the API."""
        context = compat.current_flow_run_context()
        enclosing = getattr(context, "flow_run", None) if context is not None else None
        if enclosing is not None and enclosing.id != flow_run.id:
            return str(enclosing.id)
        with compat.api_client() as client:
            parent = compat.read_task_run(client, flow_run.parent_task_run_id)
        return str(parent.flow_run_id) if parent.flow_run_id else None

    def _finish(self, flow: Any, flow_run: Any, state: Any) -> None:
        flow_run_id = str(flow_run.id)
        if flow_run_id not in registry.flows:  # ended before running (bad parameters, ...)
            guard("the flow run start", lambda: self._start(flow, flow_run, state))
        flow_status = final_status(self.translator, state)
        snapshot = guard(
            "the flow run end", lambda: self._snapshot(flow, flow_run, flow_status)
        ) or ReadbackSnapshot(flow_run_id, "flow", {}, {}, flow_status)
        try:
            close_flow_run(self.translator, flow, flow_run, state)
        finally:
            if self.background:
                readbacks.submit(lambda: self._readback(snapshot))
            else:
                self._readback(snapshot)

    def _snapshot(self, flow: Any, flow_run: Any, flow_status: str) -> ReadbackSnapshot:
        """What only this moment knows: the flow-run context goes away when the hook returns."""
        context = compat.current_flow_run_context()
        if context is not None and getattr(context.flow_run, "id", None) != flow_run.id:
            context = None
        return ReadbackSnapshot(
            flow_run_id=str(flow_run.id),
            job=self._job(flow, flow_run),
            # The task runs this process ran, with the assets Prefect tracked for each.
            local_assets=(
                {str(k): set(v) for k, v in context.task_run_assets.items()}
                if context is not None and hasattr(context, "task_run_assets")
                else {}
            ),
            tasks_by_key=find_tasks(flow),
            flow_status=flow_status,
        )

    def _readback(self, snapshot: ReadbackSnapshot) -> None:
        closed: set[str] = set()
        try:
            guard("the task runs", lambda: self._record_task_runs(snapshot, closed))
        finally:
            # Whatever failed above, no task run this process saw start stays running.
            try:
                close_unfinished_task_runs(snapshot.flow_run_id, snapshot.flow_status, closed)
            finally:
                registry.forget_flow(snapshot.flow_run_id)

    def _record_task_runs(self, snapshot: ReadbackSnapshot, closed: set[str]) -> None:
        """Read the flow run's task runs back from the API; record those not recorded yet.

        ``closed`` collects the ids of the task runs closed here.
        """
        local_assets = snapshot.local_assets
        timeout = self.readback_timeout
        if snapshot.flow_status in ("crashed", "cancelled"):
            timeout = min(timeout, READBACK_TIMEOUT_ENDED)
        with compat.api_client(fresh=self.background) as client:
            task_runs = self._await_task_runs(
                client,
                snapshot.flow_run_id,
                set(local_assets),
                timeout,
                quiet=READBACK_QUIET_ENDED
                if snapshot.flow_status in ("crashed", "cancelled")
                else 0.0,
            )
            ordered = sorted(
                task_runs,
                key=lambda r: (
                    as_utc(r.start_time or r.expected_start_time) is None,
                    str(r.start_time or r.expected_start_time or ""),
                    str(r.id),
                ),
            )
            # One transaction for the whole flow run's task runs.
            with self.translator.tracker.batch():
                self._record_each(client, snapshot, ordered, closed)

    def _record_each(
        self, client: Any, snapshot: ReadbackSnapshot, ordered: list[Any], closed: set[str]
    ) -> None:
        local_assets = snapshot.local_assets
        for task_run in ordered:
            task_run_id = str(task_run.id)
            if task_run_id in registry.subflow_task_runs:
                continue  # the subflow's own hooks recorded it as a flow run
            known = registry.tasks.get(task_run_id)
            if known is not None and known.finished:
                continue  # the task hooks recorded it, in the task's own environment
            try:
                self._record_task_run(
                    client,
                    snapshot.job,
                    task_run,
                    snapshot.tasks_by_key.get(task_run.task_key),
                    ran_here=task_run_id in local_assets,
                    local_assets=local_assets,
                    assets_recorded=known is not None and known.assets_recorded,
                )
            finally:
                # Closed as Prefect says it ended, whatever part of its record failed.
                state = task_run.state if task_run.state is not None else task_run.state_type
                close_task_run(self.translator, task_run, state, snapshot.flow_status)
                closed.add(task_run_id)
                if known is not None:
                    known.finished = True

    def _job(self, flow: Any, flow_run: Any) -> str:
        record = registry.flows.get(str(flow_run.id))
        return record.job if record is not None else self.translator.get_flow_job(flow, flow_run)

    def _await_task_runs(
        self,
        client: Any,
        flow_run_id: Any,
        expected: set[str],
        timeout: float,
        quiet: float = 0.0,
    ) -> list[Any]:
        """The flow run's task runs once the API shows them settled, or after the timeout.

        Task runs reach the API as events, a moment after they happen: wait until every
        task run this process ran is there and none (not recorded by task hooks yet) is
        still pending or running -- and, with ``quiet``, until the list has not changed
        for that long (for a caller that cannot know which task runs to expect).
        """
        seen: set[str] | None = None
        changed = time.monotonic()

        def settled(task_runs: list[Any]) -> bool:
            nonlocal seen, changed
            visible = {str(r.id) for r in task_runs}
            if visible != seen:
                seen, changed = visible, time.monotonic()
            return (
                all(_settled(r) for r in task_runs)
                and not _missing(expected, visible)
                and time.monotonic() - changed >= quiet
            )

        task_runs, done = poll_until(
            lambda: compat.read_task_runs(client, flow_run_id),
            settled,
            timeout=timeout,
            pause=READBACK_POLL,
            max_pause=READBACK_POLL_MAX,
        )
        if not done:
            log.debug(
                "dpt: task runs of flow run %s not settled after %.1f s", flow_run_id, timeout
            )
        return task_runs

    def _record_task_run(
        self,
        client: Any,
        job: str,
        task_run: Any,
        task: Any,
        *,
        ran_here: bool,
        local_assets: dict[str, set[Any]],
        assets_recorded: bool,
    ) -> None:
        """Record a task run read back from the API: its start, attempts and assets, each part
        on its own (one that fails costs only itself); the caller closes it."""
        translator = self.translator
        name = f"task run {task_run.name or task_run.id}"
        # The API may return a run's state type before its state object: go by the type.
        state = task_run.state if task_run.state is not None else task_run.state_type
        guard(
            f"the start of {name}",
            lambda: translator.start_task_run(
                task,
                task_run,
                job=job,
                parameters=None,
                started_at=as_utc(task_run.start_time) or as_utc(task_run.expected_start_time),
                environment=ran_here,
            ),
        )
        if (task_run.run_count or 0) > 1:
            guard(
                f"the attempts of {name}",
                lambda: self._record_attempts(client, job, task_run, task, ran_here),
            )
        if (
            not assets_recorded
            and state is not None
            and state_type(state) == "COMPLETED"
            and task_run.state_name != "Cached"
            and compat.is_materializing_task(task)
        ):
            outputs, dependencies = _materialized(task_run, task, local_assets)
            guard(
                f"the assets of {name}",
                lambda: translator.record_materialization(
                    task_run, outputs, dependencies, None, task.materialized_by
                ),
            )

    def _record_attempts(
        self, client: Any, job: str, task_run: Any, task: Any, ran_here: bool
    ) -> None:
        translator = self.translator
        states = compat.read_task_run_states(client, task_run.id)
        for attempt, started, ended, status, error in translator.attempts_from_states(
            task_run, states
        ):
            translator.record_attempt(
                task,
                task_run,
                attempt,
                job=job,
                status=status,
                error=error,
                started_at=started,
                ended_at=ended,
                environment=ran_here,
            )


def final_status(translator: PrefectTranslator, state: Any) -> str:
    """The dpt status of a flow run's final state: the translator's, else Prefect's state type
    as dpt names it, else ``crashed`` (an end dpt cannot name)."""
    status = guard("the flow run status", lambda: translator.get_status(state))
    return status or PrefectTranslator.get_status(translator, state) or "crashed"


def close_flow_run(translator: PrefectTranslator, flow: Any, flow_run: Any, state: Any) -> None:
    """Record the flow run's end through the translator; if that fails, still close it (as
    Prefect's state says, else ``crashed``), so it never stays running."""

    def finish() -> bool:
        translator.finish_flow_run(flow, flow_run, state)
        return True

    if guard("the flow run end", finish) is None:
        _close_plainly(
            translator, "flow-run", flow_run.id, state, final_status(translator, state), None
        )


def close_task_run(
    translator: PrefectTranslator, task_run: Any, state: Any, flow_status: str | None
) -> None:
    """Close a task run of a flow run that has ended: as Prefect says it ended, or by
    :meth:`~PrefectTranslator.get_unfinished_status`; if the translator fails, still closed."""
    name = f"task run {getattr(task_run, 'name', None) or task_run.id}"
    done = guard(
        f"the end of {name}",
        lambda: translator.finish_task_run(
            task_run, state, unfinished_ok=True, flow_status=flow_status
        ),
    )
    if done is None:
        status = PrefectTranslator.get_status(translator, state) or (
            PrefectTranslator.get_unfinished_status(translator, state, flow_status)
        )
        _close_plainly(translator, "task-run", task_run.id, state, status, flow_status)


def _close_plainly(
    translator: PrefectTranslator,
    kind: str,
    run_id: Any,
    state: Any,
    status: str,
    flow_status: str | None,
) -> None:
    """Close a run without the translator's help (it failed): the stock uuid if the
    translator's own cannot be had, Prefect's message as the error."""

    def close() -> None:
        method = (
            translator.get_flow_run_uuid if kind == "flow-run" else translator.get_task_run_uuid
        )
        try:
            uuid = method(run_id)
        except Exception:
            uuid = dpt_core.invocation_uuid("prefect", kind, str(run_id))
        message = getattr(state, "message", None)
        error = None if status in ("success", "skipped") else str(message or status)
        translator.tracker.attach(uuid).finish(
            status, error=error, ended_at=as_utc(getattr(state, "timestamp", None))
        )

    guard(f"closing {kind} {run_id}", close)


def close_unfinished_task_runs(flow_run_id: str, flow_status: str, closed: set[str]) -> None:
    """Close the task runs of a flow run that this process saw start and nobody closed: the
    read-back failed or did not see them. Their final state is unknown here: crashed
    (cancelled when the flow run was)."""
    left = [
        (task_run_id, record)
        for task_run_id, record in registry.tasks.items()
        if record.flow_run_id == flow_run_id and not record.finished and task_run_id not in closed
    ]
    for task_run_id, record in left:
        status = "cancelled" if flow_status == "cancelled" else "crashed"
        error = (
            f"dpt could not read this task run's final state from the Prefect API when its "
            f"flow run ended ({flow_status})"
        )
        guard(f"closing task run {task_run_id}", functools.partial(_close, record, status, error))
        record.finished = True


def _close(record: TaskRunRecord, status: str, error: str) -> None:
    record.translator.tracker.attach(record.uuid).finish(status, error=error)


def _materialized(
    task_run: Any, task: Any, local_assets: dict[str, set[Any]]
) -> tuple[list[Any], set[Any]]:
    """What a ``@materialize`` task run made and from what, seen from its flow's process.

    Prefect tracked the run's assets in the flow-run context; the ``Task`` object found
    by task key adds its ``asset_deps`` — unless it is not the task that ran (a
    ``with_options()`` copy with other assets shares its task key), then only upstream
    task results count as dependencies.
    """
    tracked = local_assets.get(str(task_run.id))
    declared = list(task.assets or ())
    dependencies: set[Any] = set()
    if tracked is None or {a.key for a in tracked} == {a.key for a in declared}:
        outputs = declared
        dependencies.update(task.asset_deps or ())
    else:
        outputs = sorted(tracked, key=lambda a: str(a.key))
    for upstream in compat.upstream_task_run_ids(task_run.task_inputs):
        dependencies.update(local_assets.get(upstream, ()))
    return outputs, dependencies


def _missing(expected: set[str], visible: set[str]) -> set[str]:
    """Task runs this process ran that the API does not show yet (and no task hook closed)."""
    return {
        i
        for i in expected - visible
        if not ((known := registry.tasks.get(i)) is not None and known.finished)
    }


def _settled(task_run: Any) -> bool:
    """True when the API shows a task run as it will stay (or dpt needs nothing more of it)."""
    task_run_id = str(task_run.id)
    known = registry.tasks.get(task_run_id)
    if (known is not None and known.finished) or task_run_id in registry.subflow_task_runs:
        return True
    state = task_run.state
    if state is None:
        return False
    kind = state_type(state)
    if kind != state_type(task_run.state_type or ""):
        return False  # the API is between two states of this run
    if kind in ("RUNNING", "SCHEDULED", "CANCELLING"):
        return False
    return not (kind == "PENDING" and state.name != "NotReady")


def find_tasks(flow: Any) -> dict[str, Any]:
    """The ``Task`` objects a flow's function can see (its globals and closure), by task key.

    The API knows a task run's task key but not its task; the ``Task`` object gives the
    task's name and, for ``@materialize``, its assets and asset dependencies.
    """
    fn = getattr(flow, "fn", None)
    candidates: list[Any] = list(getattr(fn, "__globals__", {}).values())
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            candidates.append(cell.cell_contents)
        except ValueError:
            continue
    found: dict[str, Any] = {}
    for obj in candidates:
        if isinstance(obj, compat.Task):
            found.setdefault(obj.task_key, obj)
    return found


# ---------------------------------------------------------------------------------------------
# Task hooks
# ---------------------------------------------------------------------------------------------


class TaskRecorder:
    """What the task-run state hooks do (:class:`dpt_prefect.glue.TaskHooks` calls it)."""

    def __init__(self, translator: PrefectTranslator | None) -> None:
        self.translator = translator or default_translator()

    def dpt_task_running(self, task: Any, task_run: Any, state: Any) -> None:
        if _enabled():
            guard("the task run start", lambda: self._running(task, task_run, state))

    def dpt_task_finished(self, task: Any, task_run: Any, state: Any) -> None:
        if _enabled():
            guard("the task run end", lambda: self._finished(task, task_run, state))

    def dpt_task_commit(self, transaction: Any) -> None:
        """Record a materialisation while Prefect's asset context (with its metadata) is active."""
        CommitHook()(transaction)

    # -- internals ------------------------------------------------------------------------

    def _running(self, task: Any, task_run: Any, state: Any) -> None:
        if compat.is_materializing_task(task):
            add_commit_hook(task)
        record = start_task_run(self.translator, task, task_run, state)
        attempt = int(task_run.run_count or 1)
        now = as_utc(state.timestamp)
        previous = record.attempt
        if attempt > 1:
            if previous is not None and previous[0] == attempt - 1:
                started = previous[1]
            elif attempt == 2:
                started = as_utc(task_run.start_time)
            else:
                started = None
            self.translator.record_attempt(
                task,
                task_run,
                attempt - 1,
                job=record.job,
                status="failed",
                error=_retried_error(state, attempt - 1),
                started_at=started,
                ended_at=now,
                environment=True,
            )
        record.attempt = (attempt, now)

    def _finished(self, task: Any, task_run: Any, state: Any) -> None:
        translator = self.translator
        record = guard(
            "the task run start", lambda: start_task_run(translator, task, task_run, state)
        )
        status = translator.get_status(state)
        try:
            if record is not None:
                self._finish_parts(task, task_run, state, record, status)
        finally:
            # Closed whatever part of its record failed above.
            if status is not None:
                close_task_run(translator, task_run, state, None)
                if record is not None:
                    record.finished = True

    def _finish_parts(
        self, task: Any, task_run: Any, state: Any, record: TaskRunRecord, status: str | None
    ) -> None:
        """The last attempt and the assets of a task run that ended, each on its own."""
        translator = self.translator
        attempt = int(task_run.run_count or 1)
        if attempt > 1 and status is not None:
            started = record.attempt[1] if record.attempt and record.attempt[0] == attempt else None
            guard(
                "the task run attempt",
                lambda: translator.record_attempt(
                    task,
                    task_run,
                    attempt,
                    job=record.job,
                    status=status,
                    error=translator.get_error(state),
                    started_at=started,
                    ended_at=as_utc(state.timestamp),
                    environment=True,
                ),
            )
        if (
            not record.assets_recorded
            and status == "success"
            and getattr(state, "name", "") != "Cached"
            and compat.is_materializing_task(task)
        ):
            # The commit hook did not run (a transaction owned by an enclosing one):
            # record from the task's declaration instead.
            record.assets_recorded = True
            guard(
                "the assets",
                lambda: translator.record_materialization(
                    task_run,
                    task.assets,
                    _declared_dependencies(task, task_run),
                    None,
                    task.materialized_by,
                ),
            )


class CommitHook:
    """dpt's commit hook for a ``@materialize`` task: records the task run's materialisation
    while Prefect's asset context, with the metadata the task added
    (``add_asset_metadata``, ``Asset.add_metadata``), is still active.

    ``@task`` takes no ``on_commit`` argument, so the hooks add it to the task object: the
    task hooks when the task first runs (a run's commit hooks are read after its running
    hooks), the flow hooks to the ``@materialize`` tasks their flow's function can see
    when the flow run starts. It records only a task run dpt records here (its task
    hooks started it, or its flow run has the flow hooks in this process), with that
    run's translator.
    """

    __name__ = "dpt_task_commit"

    def __call__(self, transaction: Any) -> None:
        if _enabled():
            guard("the assets", _record_commit)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CommitHook)

    def __hash__(self) -> int:
        return hash(CommitHook)


def add_commit_hook(task: Any) -> None:
    """Give a ``@materialize`` task dpt's :class:`CommitHook`, once."""
    commit_hooks = task.on_commit_hooks
    if not any(isinstance(h, CommitHook) for h in commit_hooks):
        commit_hooks.append(CommitHook())


def _record_commit() -> None:
    context = compat.current_task_run_context()
    assets = compat.current_asset_context()
    if context is None or assets is None or not assets.downstream_assets:
        return
    task_run = context.task_run
    if assets.task_run_id is not None and assets.task_run_id != task_run.id:
        return
    record = registry.tasks.get(str(task_run.id))
    if record is None:
        flow_record = registry.flows.get(str(task_run.flow_run_id))
        if flow_record is None:
            return  # neither the task's nor its flow's hooks are here: not dpt's to record
        record = start_task_run(flow_record.translator, context.task, task_run, None)
    if record.assets_recorded:
        return
    record.translator.record_materialization(
        task_run,
        assets.downstream_assets,
        set(assets.upstream_assets) | set(assets.direct_asset_dependencies),
        assets.materialization_metadata,
        assets.materialized_by,
    )
    record.assets_recorded = True


def _retried_error(state: Any, attempt: int) -> str:
    """Why an attempt failed. For an immediate retry Prefect calls the running hooks while it
    still handles the attempt's exception, so the exception is at hand; else say it failed."""
    if getattr(state, "name", "") == "Retrying":
        exc = sys.exc_info()[1]
        if isinstance(exc, Exception):
            return f"{type(exc).__name__}: {exc}"
    return f"attempt {attempt} failed; Prefect retried the task run"


def _declared_dependencies(task: Any, task_run: Any) -> set[Any]:
    dependencies = set(getattr(task, "asset_deps", None) or ())
    context = compat.current_flow_run_context()
    tracked = getattr(context, "task_run_assets", None) if context is not None else None
    if tracked:
        for upstream in compat.upstream_task_run_ids(task_run.task_inputs):
            for key, assets in tracked.items():
                if str(key) == upstream:
                    dependencies.update(assets)
    return dependencies


def _flow_job(translator: PrefectTranslator, task_run: Any) -> str:
    """The job of a task run: its flow's, from this process if it ran the flow, else the API."""
    flow_run_id = str(task_run.flow_run_id) if task_run.flow_run_id else None
    if flow_run_id is None:
        return "task"
    record = registry.flows.get(flow_run_id)
    if record is not None:
        return record.job
    context = compat.current_flow_run_context()
    if context is not None and str(getattr(context.flow_run, "id", "")) == flow_run_id:
        return translator.get_flow_job(context.flow, context.flow_run)
    with compat.api_client() as client:
        name = compat.read_flow_name(client, flow_run_id)
    return name or "flow"


def start_task_run(
    translator: PrefectTranslator, task: Any, task_run: Any, state: Any
) -> TaskRunRecord:
    """Record the task run as started from inside its own process, once; its registry record."""
    task_run_id = str(task_run.id)
    known = registry.tasks.get(task_run_id)
    if known is not None:
        return known
    job = _flow_job(translator, task_run)
    context = compat.current_task_run_context()
    parameters = (
        context.parameters
        if context is not None and getattr(context.task_run, "id", None) == task_run.id
        else None
    )
    started_at = as_utc(task_run.start_time) or as_utc(getattr(state, "timestamp", None))
    handle = translator.start_task_run(
        task, task_run, job=job, parameters=parameters, started_at=started_at, environment=True
    )
    record = TaskRunRecord(
        uuid=handle.uuid,
        flow_run_id=str(task_run.flow_run_id) if task_run.flow_run_id else None,
        job=job,
        task=translator.get_task_name(task, task_run),
        translator=translator,
    )
    return registry.tasks.add(task_run_id, record)


# ---------------------------------------------------------------------------------------------
# What is running now (the dpt_current_context hook)
# ---------------------------------------------------------------------------------------------


def current_context() -> dpt_core.plugin_api.CurrentContext | None:
    """The task run (or flow run) running here, if dpt records it; starts it when needed.

    A task run is recorded when its task has the task hooks or its flow run has the flow
    hooks in this process; then ``dpt_core.track()`` in the task writes to its invocation.
    """
    context = compat.current_task_run_context()
    if context is not None and getattr(context, "task_run", None) is not None:
        task_run = context.task_run
        known = registry.tasks.get(str(task_run.id))
        flow_record = registry.flows.get(str(task_run.flow_run_id))
        if known is None and flow_record is not None:
            known = start_task_run(flow_record.translator, context.task, task_run, None)
        if known is not None:
            return dpt_core.plugin_api.CurrentContext(known.uuid, known.job, known.task)
    flow_context = compat.current_flow_run_context()
    flow_run = getattr(flow_context, "flow_run", None) if flow_context is not None else None
    if flow_run is not None:
        record = registry.flows.get(str(flow_run.id))
        if record is not None:
            return dpt_core.plugin_api.CurrentContext(record.uuid, record.job, None)
    return None


def active_translator() -> PrefectTranslator:
    """The translator of the run executing here: the one registry every path asks.

    Inside a task run, the translator its task hooks were given, else its flow run's
    (the flow hooks'); in a flow's body, the flow run's; elsewhere the stock one. So an
    in-task ``dpt_core.track(asset)`` names the asset as the hooks do: one product.
    """
    context = compat.current_task_run_context()
    task_run = getattr(context, "task_run", None) if context is not None else None
    if task_run is not None:
        known = registry.tasks.get(str(task_run.id))
        if known is not None:
            return known.translator
        flow_record = registry.flows.get(str(task_run.flow_run_id))
        if flow_record is not None:
            return flow_record.translator
    flow_context = compat.current_flow_run_context()
    flow_run = getattr(flow_context, "flow_run", None) if flow_context is not None else None
    if flow_run is not None:
        record = registry.flows.get(str(flow_run.id))
        if record is not None:
            return record.translator
    return default_translator()


def resolve_asset(target: Any) -> str | None:
    """The URI of a Prefect ``Asset`` handed to ``read``/``write``/``track``, else None.

    Named by :func:`active_translator`, as the hooks of the run executing here name it.
    """
    if not compat.is_asset(target):
        return None
    return active_translator().get_asset_uri(target)
