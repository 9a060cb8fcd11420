"""The Airflow listener: task-instance and dag-run events -> the translator -> the dpt Tracker.

Airflow registers :data:`dpt_listener` through :class:`dpt_airflow.plugin.DptAirflowPlugin`.
Task-instance hooks run in the task-runner process on the worker (the same
process, and thread, as the task's code), so the invocation they open records
the worker's environment and in-task ``dpt_core.track()`` calls can join it.
Dag-run hooks run in the scheduler (or in the process calling ``dag.test()``).

Every hook goes through :meth:`DptListener._guard`: a failure in dpt or in a
translator is logged once per process and swallowed, unless ``DPT_STRICT=1``,
where it is raised to Airflow (which logs it as "error calling listener" with
the traceback; Airflow never lets a listener fail a task).

Airflow loads the plugin in every component (API server, dag processor,
triggerer, ...), most of which never record anything, so this module imports
dpt_core and the translator on the first event, not at import; with
``[dpt] enabled = False`` they are never imported.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from dpt_airflow import compat

if TYPE_CHECKING:
    import dpt_core
    from dpt_airflow.translator import AirflowTranslator
    from dpt_core.adapter import HostGuard, RunRegistry

    TaskKey = tuple[str, str, str, int, int]
    DagRunKey = tuple[Any, Any]

log = logging.getLogger("dpt.airflow")

#: ``[dpt]`` options in ``airflow.cfg`` (or ``AIRFLOW__DPT__<KEY>`` variables).
CONFIG_SECTION = "dpt"
#: Task tries one process keeps open at most (a task runner has one; dag.test() a dag's).
MAX_OPEN_TRIES = 10_000
#: A try's dpt status from the state Airflow gives its task instance; others: ``crashed``.
_STATUS_OF_STATE = {
    "success": "success",
    "failed": "failed",
    "up_for_retry": "failed",
    "upstream_failed": "failed",
    "skipped": "skipped",
    "removed": "cancelled",
}


K = TypeVar("K")


class _PerTracker(Generic[K]):
    """Keys this process noted for the tracker in use (bounded): a new tracker, a new
    database, starts with none. Made on first use: a component that records nothing
    never imports dpt_core."""

    def __init__(self) -> None:
        self._held: tuple[Any, RunRegistry[K, bool]] | None = None

    def registry(self) -> RunRegistry[K, bool]:
        import dpt_core

        tracker = dpt_core.get_tracker()
        if self._held is None or self._held[0] is not tracker:
            from dpt_core.adapter import RunRegistry

            self._held = (tracker, RunRegistry(MAX_OPEN_TRIES))
        return self._held[1]

    def made(self) -> RunRegistry[K, bool] | None:
        """The registry, None (without importing dpt_core) when none was made yet."""
        return None if self._held is None else self._held[1]


class _OpenTry(NamedTuple):
    """A task try this process opened: its invocation, and the translator that opened it
    (which also closes it: its end then reads no Airflow config, ~70 us on the task's
    thread, and a translator changed in ``airflow.cfg`` meanwhile applies from the next try)."""

    handle: dpt_core.InvocationHandle
    translator: AirflowTranslator


class DptListener:
    """Open and close one dpt invocation per task try, under one per dag run.

    :param translator: overrides the ``[dpt] translator`` option (tests, programmatic use).
    """

    def __init__(self, translator: AirflowTranslator | None = None) -> None:
        self.translator_override = translator
        self._translators: dict[str, AirflowTranslator] = {}
        #: Task tries open in this process, by :func:`compat.task_key` (made on first use:
        #: a component that records nothing never imports dpt_core).
        self._running: RunRegistry[TaskKey, _OpenTry] | None = None
        #: The dag runs (uuids) this process recorded the start of.
        self._dag_runs: _PerTracker[str] = _PerTracker()
        #: The task tries whose end this process recorded: the end of their dag run need
        #: not close them again (see _close_unfinished_tries).
        self._ended: _PerTracker[TaskKey] = _PerTracker()
        self._failures: HostGuard | None = None
        #: (translator, (dag_id, run_id), uuid) of the last dag run a task asked for.
        self._last_dag_run: tuple[Any, tuple[Any, Any], str] | None = None
        #: ((dag_id, run_id), ([dpt] enabled, [dpt] translator)) of the last dag run read.
        self._held_options: tuple[DagRunKey, tuple[bool, str]] | None = None

    # -- Airflow hooks: task instances (task runner) ----------------------------------------

    @compat.hookimpl
    def on_task_instance_running(self, previous_state: Any, task_instance: Any) -> None:
        self._guard("task start", self._task_started, task_instance)

    @compat.hookimpl
    def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
        self._guard("task success", self._task_finished, task_instance, "success", None)

    @compat.hookimpl
    def on_task_instance_failed(
        self, previous_state: Any, task_instance: Any, error: BaseException | str | None
    ) -> None:
        self._guard("task failure", self._task_finished, task_instance, "failed", error)

    @compat.hookimpl
    def on_task_instance_skipped(self, previous_state: Any, task_instance: Any) -> None:
        self._guard("task skip", self._task_finished, task_instance, "skipped", None)

    # -- Airflow hooks: dag runs (scheduler, dag.test) --------------------------------------

    @compat.hookimpl
    def on_dag_run_running(self, dag_run: Any, msg: str) -> None:
        self._guard("dag run start", self._dag_run_started, dag_run)

    @compat.hookimpl
    def on_dag_run_success(self, dag_run: Any, msg: str) -> None:
        self._guard("dag run success", self._dag_run_finished, dag_run, "success", None)

    @compat.hookimpl
    def on_dag_run_failed(self, dag_run: Any, msg: str) -> None:
        self._guard("dag run failure", self._dag_run_finished, dag_run, "failed", msg)

    # -- settings ---------------------------------------------------------------------------

    def enabled(self, dag_run: DagRunKey | None = None) -> bool:
        """False under ``[dpt] enabled = False`` or ``DPT_DISABLED=1``.

        :param dag_run: ``(dag_id, run_id)`` of the event's dag run: the ``[dpt]`` options
            are then read once per dag run in this process (see :meth:`_options`); without
            it, at every call."""
        if not self._options(dag_run)[0]:
            return False
        import dpt_core

        return dpt_core.get_tracker().enabled

    @property
    def translator(self) -> AirflowTranslator:
        """The override, else the class named by ``[dpt] translator``, else :class:`AirflowTranslator`."""
        return self.translator_for(None)

    def translator_for(self, dag_run: DagRunKey | None) -> AirflowTranslator:
        """:attr:`translator`, its option read once per dag run (see :meth:`enabled`)."""
        if self.translator_override is not None:
            return self.translator_override
        name = self._options(dag_run)[1]
        translator = self._translators.get(name)
        if translator is None:
            from dpt_airflow.translator import AirflowTranslator
            from dpt_core.adapter import load_translator

            translator = (
                load_translator(name, AirflowTranslator, setting=f"[{CONFIG_SECTION}] translator")()
                if name
                else AirflowTranslator()
            )
            self._translators[name] = translator
        return translator

    def _options(self, dag_run: DagRunKey | None) -> tuple[bool, str]:
        """``[dpt] enabled`` and ``[dpt] translator`` for an event of ``dag_run``.

        Read at the first event of a dag run in this process and kept for its other
        events: a task process runs one try, but ``dag.test()`` runs every try of a dag
        run in one process, and two Airflow config reads were ~0.25 ms of each try on
        the task's thread. A change applies from the next dag run (or the next task
        process). Without ``dag_run``, read now (and not kept).
        """
        held = self._held_options
        if dag_run is not None and held is not None and held[0] == dag_run:
            return held[1]
        options = (
            compat.conf_getboolean(CONFIG_SECTION, "enabled", fallback=True),
            compat.conf_get(CONFIG_SECTION, "translator", fallback="") or "",
        )
        if dag_run is not None:
            self._held_options = (dag_run, options)
        return options

    @property
    def running(self) -> RunRegistry[TaskKey, _OpenTry]:
        """The task tries open in this process."""
        if self._running is None:
            from dpt_core.adapter import RunRegistry

            self._running = RunRegistry(MAX_OPEN_TRIES)
        return self._running

    # -- task tries -------------------------------------------------------------------------

    def _task_started(self, ti: Any) -> dpt_core.InvocationHandle | None:
        dag_run_key = (ti.dag_id, ti.run_id)
        if not self.enabled(dag_run_key) or not compat.is_runtime_task_instance(ti):
            return None
        import dpt_core

        if compat.in_task_process():
            # The task process ends with os._exit (and under the Celery and Kubernetes
            # executors its parent never loaded dpt, so dpt cannot tell it is a fork): its
            # writer stays in the background, flushed when the task runner stops.
            from dpt_core.adapter import ends_without_exit_handlers

            ends_without_exit_handlers(flushed_by_caller=True)
        translator = self.translator_for(dag_run_key)
        context = compat.template_context(ti)
        dag_run = context.get("dag_run")
        tracker = dpt_core.get_tracker()
        # One batch: the try's start and its inputs (and the dag run's start, the first
        # time) reach the spool in one append and the database in one transaction.
        with tracker.batch():
            return self._start_try(tracker, translator, ti, context, dag_run)

    def _start_try(
        self,
        tracker: dpt_core.Tracker,
        translator: AirflowTranslator,
        ti: Any,
        context: Any,
        dag_run: Any,
    ) -> dpt_core.InvocationHandle:
        parent = self._started_dag_run(translator, dag_run) if dag_run is not None else None
        handle = tracker.start(
            translator.get_job(ti),
            task=translator.get_task(ti),
            orchestrator=translator.orchestrator,
            uuid=translator.get_invocation_uuid(ti),
            parent=parent or "",
            external_id=translator.get_external_id(ti),
            parameters=compat.mask_airflow_secrets(translator.get_parameters(ti, context)),
            command=compat.mask_airflow_secrets(translator.get_command(ti, context)),
            code_version=translator.get_code_version(ti, context),
            variables=translator.get_context_variables(ti, context),
            started_at=getattr(ti, "start_date", None),
        )
        self.running.set(compat.task_key(ti), _OpenTry(handle, translator))
        inputs = translator.get_inputs(ti, context)
        if inputs:
            handle.read(*inputs)
        return handle

    def _task_finished(self, ti: Any, status: str, error: BaseException | str | None) -> None:
        # A try that started here is closed whatever the settings say now, by the
        # translator that opened it (and without reading the settings again: a config
        # lookup costs 50-70 us on the task's thread).
        opened = self.running.pop(compat.task_key(ti))
        dag_run_key = (ti.dag_id, ti.run_id)
        if opened is None and not self.enabled(dag_run_key):
            return
        import dpt_core

        handle: dpt_core.InvocationHandle | None
        if opened is not None:
            handle, translator = opened
        else:
            handle, translator = None, self.translator_for(dag_run_key)
        if handle is None and compat.is_runtime_task_instance(ti):
            # The start event was missed (the try failed before the task ran): record it now.
            handle = self._task_started(ti)
            self.running.pop(compat.task_key(ti))
        tracker = dpt_core.get_tracker()
        from_elsewhere = handle is None
        if handle is None:
            # An ORM TaskInstance from the scheduler or API server (a heartbeat timeout,
            # a state set by hand): close the try the worker opened, if it did and if the
            # worker did not record its end itself.
            handle = tracker.attach(
                translator.get_invocation_uuid(ti), translator.get_job(ti), translator.get_task(ti)
            )
        # One batch: the outputs and the end, one append and one transaction.
        with tracker.batch():
            try:
                if status == "success" and compat.is_runtime_task_instance(ti):
                    outputs = translator.get_outputs(ti, compat.template_context(ti))
                    if outputs:
                        handle.write(*outputs)
            finally:
                # Closed whatever failed above: a try never stays running because of dpt.
                handle.finish(
                    status,
                    error=compat.mask_airflow_secrets(translator.get_error(error)),
                    only_if_running=from_elsewhere,
                )
        self._ended.registry().set(compat.task_key(ti), True)

    def current_context(self) -> dpt_core.plugin_api.CurrentContext | None:
        """The task try running on this thread, for the ``dpt_current_context`` hook."""
        if self._running is None or not len(self._running):
            return None
        ti = compat.current_task_instance()
        if ti is not None:
            opened = self._running.get(compat.task_key(ti))
        else:
            # A thread the task started: Airflow's context does not follow it there,
            # but a task process runs one task try.
            open_tries = self._running.items()
            opened = open_tries[0][1] if len(open_tries) == 1 else None
        if opened is None:
            return None
        import dpt_core

        handle = opened.handle
        return dpt_core.plugin_api.CurrentContext(handle.uuid, job=handle.job, task=handle.task)

    # -- dag runs ---------------------------------------------------------------------------

    def _start_dag_run(self, translator: AirflowTranslator, dag_run: Any) -> str:
        """Record the dag run's invocation (idempotent: every task of the run asks)."""
        import dpt_core

        uuid: str = translator.get_dag_run_uuid(dag_run.dag_id, dag_run.run_id)
        dpt_core.get_tracker().start(
            str(dag_run.dag_id),
            orchestrator=translator.orchestrator,
            uuid=uuid,
            parent=False,  # a dag run is a root, whatever dpt invocation is open around it
            external_id=str(dag_run.run_id),
            parameters=compat.mask_airflow_secrets(translator.get_dag_run_parameters(dag_run)),
            started_at=getattr(dag_run, "start_date", None),
            environment=False,
        )
        return uuid

    def _started_dag_run(self, translator: AirflowTranslator, dag_run: Any) -> str:
        """The dag run's uuid, its start recorded if this process has not yet: the dag run
        hook records it where the scheduler runs, a task in its own process, once (not at
        every task of the run: each was a whole event on the task's thread), and the end
        of a run none of whose tries started here."""
        uuid = self._dag_run_uuid(translator, dag_run)
        started = self._dag_runs.registry()
        if uuid not in started:
            self._start_dag_run(translator, dag_run)
            started.set(uuid, True)
        return uuid

    def _dag_run_uuid(self, translator: AirflowTranslator, dag_run: Any) -> str:
        """``translator.get_dag_run_uuid`` of the dag run, asked once for every task of it."""
        ids = (dag_run.dag_id, dag_run.run_id)
        last = self._last_dag_run
        if last is None or last[0] is not translator or last[1] != ids:
            last = self._last_dag_run = (translator, ids, translator.get_dag_run_uuid(*ids))
        return last[2]

    def _dag_run_started(self, dag_run: Any) -> None:
        key = (dag_run.dag_id, dag_run.run_id)
        if self.enabled(key):
            self._started_dag_run(self.translator_for(key), dag_run)

    def _dag_run_finished(self, dag_run: Any, status: str, msg: str | None) -> None:
        key = (dag_run.dag_id, dag_run.run_id)
        if not self.enabled(key) and not self._started_here(dag_run):
            return  # (a dag run this process recorded the start of is closed all the same)
        import dpt_core

        translator = self.translator_for(key)
        uuid = self._dag_run_uuid(translator, dag_run)
        try:
            self._started_dag_run(translator, dag_run)
            self._close_unfinished_tries(dag_run)
        finally:
            self._dag_runs.registry().pop(uuid)  # (a cleared task may run it again)
            handle = dpt_core.get_tracker().attach(uuid, str(dag_run.dag_id))
            handle.finish(
                status,
                error=(
                    compat.mask_airflow_secrets(translator.get_error(msg))
                    if status == "failed"
                    else None
                ),
                ended_at=getattr(dag_run, "end_date", None),
            )

    def _started_here(self, dag_run: Any) -> bool:
        """This process recorded the start of ``dag_run`` (and has not closed it)."""
        started = self._dag_runs.made()
        if started is None:
            return False  # (nothing started: dpt_core need not be imported)
        key = (dag_run.dag_id, dag_run.run_id)
        return self._dag_run_uuid(self.translator_for(key), dag_run) in started

    def _close_unfinished_tries(self, dag_run: Any) -> None:
        """No try of a finished dag run stays running.

        Tries that started in this process but whose end event never came (another
        listener failed first, the task runner gave up) are closed as Airflow says the try
        ended, else ``crashed``. Where Airflow's metadata database is at hand (the
        scheduler, ``dag.test()``), every current try of the run is closed the same way if,
        and only if, no end was recorded for it (the translator's ``get_invocation_uuid``
        is asked with the try's ids only: dag_id, run_id, task_id, map_index, try_number): a worker killed mid-try, or one whose end
        events were lost, never leaves its try running; a worker's own record is never
        overwritten (its end may still be on its way: Airflow learns a task's state before
        the worker's end listeners run). Tries whose end this process recorded are
        left alone (under ``dag.test()``, every try: one no-op event each, else).
        """
        import dpt_core

        ids = (dag_run.dag_id, dag_run.run_id)
        left = self.running.pop_where(lambda key, _: key[:2] == ids)
        ended = {key for key, _ in self._ended.registry().pop_where(lambda key, _: key[:2] == ids)}
        # (dag_run.get_task_instances() only where tries were open here: dag.test(); in the
        # scheduler it would close the scheduler's own session, see compat.dag_run_tries)
        states = compat.task_instance_states(dag_run) if left else {}
        for (_, _, task_id, map_index, try_number), (handle, _) in left:
            known = states.get((task_id, map_index))
            state = known[1] if known is not None and known[0] == try_number else None
            handle.finish(_STATUS_OF_STATE.get(state or "", "crashed"))
        closed = ended | {key for key, _ in left}
        tries = compat.dag_run_tries(str(dag_run.dag_id), str(dag_run.run_id)) or []
        # (not run: try 0; closed above, or their end recorded here)
        open_elsewhere = [r for r in tries if r.try_number and compat.task_key(r) not in closed]
        if not open_elsewhere:
            return
        tracker = dpt_core.get_tracker()
        translator = self.translator_for(ids)
        with tracker.batch():
            for row in open_elsewhere:
                status = _STATUS_OF_STATE.get(compat.state_text(row.state), "crashed")
                uuid = translator.get_invocation_uuid(row)
                tracker.attach(uuid).finish(status, only_if_running=True)

    # -- Airflow hooks: the task runner stopping ---------------------------------------------

    @compat.hookimpl
    def before_stopping(self, component: Any) -> None:
        self._guard("task runner stop", self._hand_over_open_tries)
        self._guard("task runner stop", self._flush_before_exit)

    def _hand_over_open_tries(self) -> None:
        """A try still open when its task runner stops did not end: it deferred (the
        triggerer and then another worker process resume it) or is up for reschedule.
        Hand it over, so this process's exit does not close it as crashed."""
        for _, opened in self.running.pop_where(lambda _key, _opened: True):
            opened.handle.detach()

    def _flush_before_exit(self) -> None:
        """A task process ends with os._exit right after this hook (the try's state is
        already with Airflow): its writer writes what the try recorded first."""
        if compat.in_task_process() and "dpt_core" in sys.modules:
            import dpt_core

            dpt_core.flush()

    # -- the guard --------------------------------------------------------------------------

    def _guard(self, what: str, call: Callable[..., Any], *args: Any) -> Any:
        """Run ``call`` under the adapter's host guard: a failure is logged once per kind
        and swallowed, unless strict mode is on (then a translator failure is raised after
        the hook recorded, and closed, what it could)."""
        if self._failures is None:
            # dpt_core is imported only here and on real events, never by a disabled plugin.
            from dpt_core.adapter import host_guard

            self._failures = host_guard("the task goes on untracked", log, prefix="recording ")
        return self._failures(f"the Airflow {what}", call, *args)


#: The listener the plugin registers with Airflow.
dpt_listener = DptListener()


def active_translator() -> AirflowTranslator:
    """The translator Airflow's events are recorded with, in this process.

    The one registry: the ``dpt_resolve_uri`` hook (an ``Asset`` passed to
    ``dpt_core.track()`` in task code, or in any script) asks it too, so a custom
    translator names an asset the same way in the listener and in the task's own calls.
    """
    return dpt_listener.translator
