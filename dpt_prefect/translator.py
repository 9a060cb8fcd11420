"""Prefect objects -> dpt records: the one place that knows both worlds.

The hooks (:mod:`dpt_prefect.hooks`) hand every flow-run and task-run state,
every task run read back from the Prefect API and every asset materialisation
to a :class:`PrefectTranslator`, which says what to record: the job and task
names, the invocation ids, the parameters, the statuses and error texts, the
products and their parents. To change any of it, subclass the translator,
override the ``get_*`` methods you need and pass an instance to the hooks::

    @flow(**dpt_prefect.flow_hooks(translator=MyTranslator()))
    def nightly(): ...

    @task(**dpt_prefect.task_hooks(translator=MyTranslator()))
    def calibrate(path): ...
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import dpt_core
from dpt_core.adapter import Translator, as_utc
from dpt_prefect import compat

log = logging.getLogger("dpt.prefect")
T = TypeVar("T")

#: The ``orchestrator`` column of everything the Prefect adapter records.
ORCHESTRATOR = "prefect"

#: One asset that cannot be recorded costs only itself: a warning naming it.
_assets_guard = dpt_core.plugin_api.Guard("the task run's other assets are recorded", log)

#: Prefect state types -> dpt statuses. Types missing here are not final for dpt.
_STATUSES = {
    "COMPLETED": "success",
    "FAILED": "failed",
    "CRASHED": "crashed",
    "CANCELLED": "cancelled",
    "CANCELLING": "cancelled",
}


def state_type(state: Any) -> str:
    """``"COMPLETED"``, ``"FAILED"``, ... for a Prefect state (or a task run's ``state_type``)."""
    kind = getattr(state, "type", state)
    return str(getattr(kind, "value", kind) or "").upper()


class PrefectTranslator(
    Translator,
    identity={
        "get_flow_run_uuid",
        "get_task_run_uuid",
        "get_attempt_uuid",
        "get_asset_version_uuid",
        "get_flow_job",
        "get_task_name",
        "get_asset_uri",
    },
    logger=log,
):
    """Translate Prefect flow runs, task runs, states and assets into dpt invocations and products.

    Objects handed in are Prefect's own: ``flow`` / ``task`` are the decorated
    ``Flow`` / ``Task``; ``flow_run`` / ``task_run`` the API models
    (``prefect.client.schemas.objects.FlowRun`` / ``TaskRun``); ``state`` a
    ``prefect.states.State``. ``task`` is None for task runs read back from the API
    whose ``Task`` object this process does not know.

    The translator holds no tracker (it may be pickled to task-runner processes with
    the hooks); :attr:`tracker` is the process tracker unless one is given.

    An override that raises costs only its own field (:class:`dpt_core.adapter.Translator`):
    dpt's default answers instead, and the run is recorded; an override of an identity
    method (the ``get_*_uuid`` methods, ``get_flow_job``, ``get_task_name``,
    ``get_asset_uri``) that raises costs the run or asset it names.
    """

    #: Longest value (characters of JSON) kept for one task argument.
    max_parameter_chars = 4096
    #: Longest text kept for an argument that is not JSON-able (its ``repr``).
    max_repr_chars = 200

    def __init__(self, tracker: dpt_core.Tracker | None = None) -> None:
        self._tracker = tracker

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_tracker"] = None
        return state

    @property
    def tracker(self) -> dpt_core.Tracker:
        return self._tracker or dpt_core.get_tracker()

    # -- identity ---------------------------------------------------------------------------

    def get_flow_run_uuid(self, flow_run_id: Any) -> str:
        """The idempotency key of a flow run: the same in every process and every hook.

        Example override (a namespace per Prefect workspace)::

            def get_flow_run_uuid(self, flow_run_id):
                return dpt_core.invocation_uuid("prefect", "prod", "flow-run", flow_run_id)
        """
        return dpt_core.invocation_uuid(ORCHESTRATOR, "flow-run", str(flow_run_id))

    def get_task_run_uuid(self, task_run_id: Any) -> str:
        """The idempotency key of a task run.

        The task hooks (in the task's process), an in-task ``dpt_core.track()`` and the
        read-back when the flow finishes all derive it from the Prefect task-run id, so
        they write one row per task run. Example override::

            def get_task_run_uuid(self, task_run_id):
                return dpt_core.invocation_uuid("prefect", "prod", "task-run", task_run_id)
        """
        return dpt_core.invocation_uuid(ORCHESTRATOR, "task-run", str(task_run_id))

    def get_attempt_uuid(self, task_run_id: Any, attempt: int) -> str:
        """The idempotency key of one attempt of a retried task run (a child of the task run)."""
        return dpt_core.invocation_uuid(ORCHESTRATOR, "task-run", str(task_run_id), attempt)

    def get_asset_version_uuid(self, flow_run_id: Any, uri: str, content_hash: str | None) -> str:
        """The idempotency key of an asset version seen in a flow run: its URI and content hash.

        The task that materialised it and the tasks that depend on it derive the same key,
        whichever is recorded first (a dependent task's hooks often run before the
        read-back records the materialisation), so they meet on one version row.
        """
        return dpt_core.invocation_uuid(
            ORCHESTRATOR, "asset", str(flow_run_id), uri, content_hash or ""
        )

    # -- flow runs --------------------------------------------------------------------------

    def get_flow_job(self, flow: Any, flow_run: Any) -> str:
        """The invocation's ``job`` for a flow run, and for each of its task runs: the flow name.

        Example override (group flows by deployment)::

            def get_flow_job(self, flow, flow_run):
                return f"{flow.name}/{flow_run.deployment_id or 'local'}"
        """
        return str(getattr(flow, "name", None) or getattr(flow_run, "name", None) or "flow")

    def get_flow_parameters(self, flow: Any, flow_run: Any) -> dict[str, Any]:
        """The invocation's ``parameters``: the flow run's parameters (as Prefect stored them).

        Example override (leave out a large parameter)::

            def get_flow_parameters(self, flow, flow_run):
                parameters = super().get_flow_parameters(flow, flow_run)
                parameters.pop("catalogue", None)
                return parameters
        """
        return self.get_arguments(dict(getattr(flow_run, "parameters", None) or {}))

    def get_flow_code_version(self, flow: Any, flow_run: Any) -> str | None:
        """The invocation's ``code_version``: the flow's version (by default Prefect's hash of the
        flow's source file).

        Example override (the git commit the deployment pinned)::

            def get_flow_code_version(self, flow, flow_run):
                return os.environ.get("GIT_COMMIT") or super().get_flow_code_version(flow, flow_run)
        """
        version = getattr(flow, "version", None)
        return str(version) if version else None

    def get_flow_command(self, flow: Any, flow_run: Any) -> list[str] | None:
        """The invocation's ``command``: how this process was started (``sys.argv``).

        Example override::

            def get_flow_command(self, flow, flow_run):
                return None  # the command line holds secrets here
        """
        return list(sys.argv) if sys.argv and sys.argv[0] else None

    def get_external_id(self, run: Any) -> str | None:
        """The invocation's ``external_id``: the Prefect flow-run or task-run id."""
        run_id = getattr(run, "id", None)
        return str(run_id) if run_id else None

    # -- task runs --------------------------------------------------------------------------

    def get_task_name(self, task: Any, task_run: Any = None) -> str:
        """The invocation's ``task``: the task's name (``@task(name=...)``, else its function name).

        A task run read back from the API without its ``Task`` object in this process is
        named from its task key (the function name). Example override (the task run's
        own name, e.g. ``add-8d7``, so mapped runs differ)::

            def get_task_name(self, task, task_run=None):
                return task_run.name if task_run is not None else super().get_task_name(task)
        """
        if task is not None and getattr(task, "name", None):
            return str(task.name)
        task_key = str(getattr(task_run, "task_key", "") or "")
        if task_key:
            return task_key.rsplit("-", 1)[0] if "-" in task_key else task_key
        return str(getattr(task_run, "name", None) or "task")

    def get_task_parameters(
        self, task: Any, parameters: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """The invocation's ``parameters`` for a task run: the arguments it was called with.

        Only known inside the task's process (the task hooks, or ``dpt_core.track()``
        in the task): the Prefect API keeps references to upstream results, not
        values, so a task run only read back from the API has no parameters. An
        argument that was an upstream task's future is that task's result.
        Example override (record only some arguments)::

            def get_task_parameters(self, task, parameters):
                return {k: v for k, v in (parameters or {}).items() if k in ("band", "night")}
        """
        return self.get_arguments(
            {name: compat.resolve_argument(value) for name, value in (parameters or {}).items()}
        )

    def get_arguments(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Argument values as JSON: JSON-able values as they are (when not too long), others as a
        short ``repr``. Example override (keep every value's full ``repr``)::

            def get_arguments(self, arguments):
                return {name: repr(value) for name, value in arguments.items()}
        """
        out: dict[str, Any] = {}
        for name, value in arguments.items():
            if isinstance(value, list | tuple | set | frozenset | dict) and len(value) > 1000:
                out[str(name)] = f"<{type(value).__name__} of {len(value)} items>"
                continue
            try:
                text = json.dumps(value, allow_nan=False)
            except (TypeError, ValueError, RecursionError):
                try:
                    shown = repr(value)
                except Exception:
                    shown = f"<{type(value).__name__}>"
                if len(shown) > self.max_repr_chars:
                    shown = shown[: self.max_repr_chars - 3] + "..."
                out[str(name)] = shown
                continue
            if len(text) > self.max_parameter_chars:
                out[str(name)] = f"<{type(value).__name__}: {len(text)} characters of JSON>"
            else:
                out[str(name)] = value
        return out

    def get_task_code_version(self, task: Any) -> str | None:
        """The invocation's ``code_version`` for a task run: ``@task(version=...)``, if set."""
        version = getattr(task, "version", None) if task is not None else None
        return str(version) if version else None

    # -- states -----------------------------------------------------------------------------

    def get_status(self, state: Any) -> str | None:
        """The dpt status of a final Prefect state; None while the run is not finished.

        ``Completed`` (also ``Cached``) -> success, ``Failed`` -> failed, ``Crashed`` ->
        crashed, ``Cancelled``/``Cancelling`` -> cancelled; a task run still ``Pending``
        when its flow run ended (an upstream task failed) -> skipped. Example override
        (a cached task run did not run: call it skipped)::

            def get_status(self, state):
                if getattr(state, "name", "") == "Cached":
                    return "skipped"
                return super().get_status(state)
        """
        kind = state_type(state)
        if kind in _STATUSES:
            return _STATUSES[kind]
        return None

    def get_unfinished_status(self, state: Any, flow_status: str | None = None) -> str:
        """The dpt status of a task run that is not final when its flow run ended.

        No run stays ``running`` after its flow run: a task run that never started
        (``Pending``, ``Scheduled``, ``Paused``: an upstream task failed, or the flow
        stopped first) -> skipped; one that was running when its flow run was cancelled
        -> cancelled; any other (still ``Running`` in the API, or its state unknown) ->
        crashed. ``flow_status`` is the dpt status the flow run ended with.
        """
        kind = state_type(state) if state is not None else ""
        if kind in ("PENDING", "SCHEDULED", "PAUSED"):
            return "skipped"
        if flow_status == "cancelled" or kind == "CANCELLING":
            return "cancelled"
        return "crashed"

    def get_unfinished_error(self, state: Any, flow_status: str | None = None) -> str | None:
        """The ``error`` of a task run closed by :meth:`get_unfinished_status` (None when skipped)."""
        if self.get_unfinished_status(state, flow_status) == "skipped":
            return None
        shown = getattr(state, "name", None) or state_type(state).title() or "unknown"
        return (
            f"the Prefect API showed this task run as {shown} when its flow run ended"
            f" ({flow_status or 'unknown'}); dpt closed it"
        )

    def get_error(self, state: Any) -> str | None:
        """The invocation's ``error`` text: the message of a failed, crashed or cancelled state.

        Example override (first line only)::

            def get_error(self, state):
                text = super().get_error(state)
                return text.splitlines()[0] if text else None
        """
        if self.get_status(state) in (None, "success"):
            return None
        message = getattr(state, "message", None)
        return str(message) if message else f"{getattr(state, 'name', 'state')}"

    # -- assets -----------------------------------------------------------------------------

    def get_asset_uri(self, asset: Any) -> str:
        """The dpt URI of a Prefect asset: its key (``file:///...`` keys are files, so dpt hashes them).

        Example override (assets keyed ``warehouse://t`` are PostgreSQL tables)::

            def get_asset_uri(self, asset):
                key = super().get_asset_uri(asset)
                if key.startswith("warehouse://"):
                    return "postgres://db/warehouse/public." + key.removeprefix("warehouse://")
                return key
        """
        return str(getattr(asset, "key", asset))

    def get_asset_metadata(
        self, asset: Any, metadata: Mapping[str, Any] | None, materialized_by: str | None = None
    ) -> dict[str, Any]:
        """The metadata kept on the product version a task run materialised.

        The asset's key and properties (name, description, url, owners) and
        ``materialized_by`` under ``"prefect_asset"``, then the materialisation
        metadata the task added (``add_asset_metadata``, ``Asset.add_metadata``) at top
        level — seen only when the task's commit is recorded, not by the read-back.
        Example override (drop the properties)::

            def get_asset_metadata(self, asset, metadata, materialized_by=None):
                return dict(metadata or {})
        """
        facts: dict[str, Any] = {"key": str(getattr(asset, "key", asset))}
        properties = getattr(asset, "properties", None)
        if properties is not None:
            with contextlib.suppress(Exception):
                facts.update(properties.model_dump(exclude_unset=True, exclude_none=True))
        if materialized_by:
            facts["materialized_by"] = materialized_by
        return {"prefect_asset": facts, **dict(metadata or {})}

    # -- recording (called by the hooks) ----------------------------------------------------

    def start_flow_run(
        self, flow: Any, flow_run: Any, state: Any, parent_uuid: str | None
    ) -> dpt_core.InvocationHandle:
        """Record a flow run as started (idempotent on its uuid), in this process's environment."""
        return self.tracker.start(
            self.get_flow_job(flow, flow_run),
            orchestrator=ORCHESTRATOR,
            uuid=self.get_flow_run_uuid(flow_run.id),
            parent=parent_uuid or False,
            external_id=self.get_external_id(flow_run),
            parameters=self.get_flow_parameters(flow, flow_run),
            command=self.get_flow_command(flow, flow_run),
            code_version=self.get_flow_code_version(flow, flow_run),
            started_at=as_utc(getattr(state, "timestamp", None))
            or as_utc(getattr(flow_run, "start_time", None)),
        )

    def finish_flow_run(self, flow: Any, flow_run: Any, state: Any) -> None:
        status = self.get_status(state)
        if status is None:
            return
        self.tracker.attach(self.get_flow_run_uuid(flow_run.id)).finish(
            status,
            error=self.get_error(state),
            ended_at=as_utc(getattr(state, "timestamp", None)),
        )

    def start_task_run(
        self,
        task: Any,
        task_run: Any,
        *,
        job: str,
        parameters: Mapping[str, Any] | None,
        started_at: dt.datetime | None,
        environment: bool,
    ) -> dpt_core.InvocationHandle:
        """Record a task run as started, a child of its flow run's invocation (idempotent)."""
        flow_run_id = getattr(task_run, "flow_run_id", None)
        return self.tracker.start(
            job,
            task=self.get_task_name(task, task_run),
            orchestrator=ORCHESTRATOR,
            uuid=self.get_task_run_uuid(task_run.id),
            parent=self.get_flow_run_uuid(flow_run_id) if flow_run_id else False,
            external_id=self.get_external_id(task_run),
            parameters=self.get_task_parameters(task, parameters),
            code_version=self.get_task_code_version(task),
            started_at=started_at,
            environment=environment,
        )

    def finish_task_run(
        self,
        task_run: Any,
        state: Any,
        *,
        unfinished_ok: bool = False,
        flow_status: str | None = None,
    ) -> str | None:
        """Record a task run's final status; returns it.

        A state that is not final leaves the run as it is (None), unless
        ``unfinished_ok`` (its flow run has ended): then it is closed by
        :meth:`get_unfinished_status`.
        """
        status = self.get_status(state) if state is not None else None
        error = self.get_error(state) if status is not None else None
        if status is None and unfinished_ok:
            status = self.get_unfinished_status(state, flow_status)
            error = self.get_unfinished_error(state, flow_status)
        if status is None:
            return None
        ended_at = as_utc(getattr(task_run, "end_time", None)) or as_utc(
            getattr(state, "timestamp", None)
        )
        self.tracker.attach(self.get_task_run_uuid(task_run.id)).finish(
            status, error=error, ended_at=ended_at
        )
        return status

    def record_attempt(
        self,
        task: Any,
        task_run: Any,
        attempt: int,
        *,
        job: str,
        status: str,
        error: str | None,
        started_at: dt.datetime | None,
        ended_at: dt.datetime | None,
        environment: bool,
    ) -> None:
        """Record one attempt of a retried task run as a child invocation of the task run.

        Its ``task`` is ``"<task name> attempt <n>"`` and its ``external_id``
        ``"<task run id>#<n>"``; every attempt but the last failed (Prefect retried it).
        """
        self.tracker.start(
            job,
            task=f"{self.get_task_name(task, task_run)} attempt {attempt}",
            orchestrator=ORCHESTRATOR,
            uuid=self.get_attempt_uuid(task_run.id, attempt),
            parent=self.get_task_run_uuid(task_run.id),
            external_id=f"{task_run.id}#{attempt}",
            parameters={"attempt": attempt},
            code_version=self.get_task_code_version(task),
            started_at=started_at,
            environment=environment,
            status=status,  # already over: recorded as one event
            ended_at=ended_at,
            error=error,
        )

    def attempts_from_states(
        self, task_run: Any, states: Sequence[Any]
    ) -> list[tuple[int, dt.datetime | None, dt.datetime | None, str, str | None]]:
        """``(attempt, started_at, ended_at, status, error)`` per attempt, from a state history.

        Each ``Running`` (or ``Retrying``) state opens an attempt; the next state closes it.
        Every attempt but the last failed; the last one ends like the task run.
        """
        attempts: list[tuple[int, dt.datetime | None, dt.datetime | None, str, str | None]] = []
        starts = [i for i, s in enumerate(states) if state_type(s) == "RUNNING"]
        for number, index in enumerate(starts, start=1):
            started = as_utc(states[index].timestamp)
            ended = as_utc(states[index + 1].timestamp) if index + 1 < len(states) else None
            if number < len(starts):
                attempts.append(
                    (
                        number,
                        started,
                        ended,
                        "failed",
                        f"attempt {number} failed; Prefect retried the task run",
                    )
                )
            else:
                final = task_run.state
                status = self.get_status(final) if final is not None else None
                if status is None:
                    continue
                attempts.append((number, started, ended, status, self.get_error(final)))
        return attempts

    def asset_ref(
        self,
        asset: Any,
        flow_run_id: Any,
        metadata: Mapping[str, Any] | None = None,
    ) -> dpt_core.ProductRef:
        """A product reference for an asset as it is now, with its flow-run version key."""
        uri = self.get_asset_uri(asset)
        observed = self.tracker.observe([uri])
        content_hash = observed[0].content_hash if observed else None
        return dpt_core.ProductRef(
            uri,
            metadata=dict(metadata) if metadata is not None else None,
            content_hash=content_hash,
            version_uuid=self.get_asset_version_uuid(flow_run_id, uri, content_hash),
        )

    def _output_ref(
        self,
        asset: Any,
        flow_run_id: Any,
        metadata: Mapping[str, Any] | None,
        materialized_by: str | None,
    ) -> dpt_core.ProductRef:
        facts = self.get_asset_metadata(asset, metadata, materialized_by)
        return self.asset_ref(asset, flow_run_id, facts)

    def record_materialization(
        self,
        task_run: Any,
        assets: Iterable[Any],
        dependencies: Iterable[Any],
        metadata: Mapping[str, Mapping[str, Any]] | None = None,
        materialized_by: str | None = None,
    ) -> list[str]:
        """Record the assets a task run materialised as its outputs, derived from ``dependencies``.

        ``file://`` keys resolve to the files, so the versions get content hashes.
        Without dependencies, the outputs derive from whatever else the task run read.
        An asset (or dependency) that cannot be recorded costs only itself: a warning
        names it and the task run, and the others are recorded (raised under
        ``DPT_STRICT=1``).
        """
        flow_run_id = getattr(task_run, "flow_run_id", None) or task_run.id
        handle = self.tracker.attach(self.get_task_run_uuid(task_run.id))
        run_name = str(getattr(task_run, "name", None) or task_run.id)
        by_uri: dict[str, Any] = {}
        for dependency in dependencies:
            uri = _each_asset(run_name, dependency, self.get_asset_uri, dependency)
            if uri is not None:
                by_uri.setdefault(uri, dependency)
        parents = []
        for uri in sorted(by_uri):
            parent = _each_asset(run_name, by_uri[uri], self.asset_ref, by_uri[uri], flow_run_id)
            if parent is not None:
                parents.append(parent)
        refs = []
        for asset in sorted(assets, key=lambda a: str(getattr(a, "key", a))):
            ref = _each_asset(
                run_name,
                asset,
                self._output_ref,
                asset,
                flow_run_id,
                (metadata or {}).get(str(getattr(asset, "key", asset))),
                materialized_by,
            )
            if ref is not None:
                refs.append(ref)
        if not refs:
            return []
        return handle.write(*refs, parents=parents or None)


def _each_asset(run_name: str, asset: Any, call: Callable[..., T], *args: Any) -> T | None:
    """``call(*args)`` for one asset; its failure is a warning naming the asset and the run."""
    key = str(getattr(asset, "key", asset))
    return _assets_guard.run(
        f"recording asset {key!r} of task run {run_name!r}",
        lambda: call(*args),
        key=f"asset:{key}",
    )
