"""A dpt plugin that emits OpenLineage events live (entry point ``openlineage`` in group ``dpt``).

Install the extra (``pip install 'data-product-tracker[openlineage]'``) and
configure a transport the OpenLineage way — ``openlineage.yml`` (in
``$OPENLINEAGE_CONFIG``, the working directory or ``~/.openlineage/``),
``OPENLINEAGE_URL`` (+ ``OPENLINEAGE_API_KEY``), or
``OPENLINEAGE__TRANSPORT__TYPE=file`` / ``console`` / ``kafka`` ... variables —
and every invocation dpt records is also sent to Marquez, DataHub or any
OpenLineage consumer: START when it starts (with the ``dpt_environment`` facet)
and COMPLETE/FAIL/ABORT when it ends, carrying the inputs and outputs recorded
in between. The events are those of ``dpt export --format openlineage``.

Without openlineage-python, without a configured transport, or with
``OPENLINEAGE_DISABLED=true``, the plugin does nothing (the import is tried once
and its result cached). An emit error is logged once per kind and never raised,
so tracking and the pipeline go on — unless ``DPT_STRICT=1``.

Only invocations that started in this process can be completed with a job
name; products recorded for other invocations (``dpt track`` inside ``dpt run``)
reach OpenLineage through the process that owns the invocation, or through
``dpt export``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dpt_core.events import (
    EnvironmentSnapshot,
    InvocationFinished,
    InvocationStarted,
    ProductsRead,
    ProductsWritten,
)
from dpt_core.guard import Guard
from dpt_core.hookspecs import hookimpl
from dpt_core.log import log

if TYPE_CHECKING:  # imported when an event is forwarded: every dpt process loads this plugin
    from dpt_core.export.openlineage import Dataset, RunRef


_UNSET: Any = object()
_module: Any = _UNSET
_clients: dict[tuple[Any, ...], Any] = {}
_runs: dict[str, _Run] = {}
_failures = Guard("events are not forwarded")
_lock = threading.Lock()


class _Run:
    """A run this emitter has seen start, kept until it ends (what it read and wrote so
    far, and its tags)."""

    __slots__ = ("ref", "orchestrator", "parent", "root", "inputs", "outputs", "tags")

    def __init__(
        self, ref: RunRef, orchestrator: str, parent: RunRef | None, root: RunRef | None
    ) -> None:
        self.ref = ref
        self.orchestrator = orchestrator
        self.parent = parent
        self.root = root
        self.inputs: dict[tuple[str, str], Dataset] = {}
        self.outputs: dict[tuple[str, str], Dataset] = {}
        self.tags: dict[str, str] = {}


def reset() -> None:
    """Forget clients, open runs and logged errors (the import result stays cached)."""
    with _lock:
        for client in _clients.values():
            close = getattr(client, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):  # closing must never fail tracking
                    close(1.0)
        _clients.clear()
        _runs.clear()
        _failures.reset()


def _openlineage() -> Any:
    """The ``openlineage.client.client`` module, or None when not installed (tried once)."""
    global _module
    if _module is _UNSET:
        try:
            from openlineage.client import client as found
        except ImportError:
            _module = None
        else:
            _module = found
    return _module


def _config_key() -> tuple[Any, ...]:
    from dpt_core.environment import variables_starting_with

    return (tuple(sorted(variables_starting_with("OPENLINEAGE").items())), os.getcwd())


def _disabled() -> bool:
    return os.environ.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true"


def configured() -> bool:
    """True when an OpenLineage transport is configured the OpenLineage way (and not disabled)."""
    env = os.environ
    if _disabled():
        return False
    if env.get("OPENLINEAGE_URL") or any(k.startswith("OPENLINEAGE__TRANSPORT") for k in env):
        return True
    candidates = (
        env.get("OPENLINEAGE_CONFIG"),
        os.path.join(os.getcwd(), "openlineage.yml"),
        os.path.join(os.path.expanduser("~"), ".openlineage", "openlineage.yml"),
    )
    return any(path and os.path.isfile(path) for path in candidates)


def _failed(what: str, exc: Exception) -> None:
    _failures.failed(f"OpenLineage {what}", exc)


def client() -> Any:
    """The OpenLineage client for the current configuration, or None (not installed/configured)."""
    if _disabled():
        # Checked first, from the one variable: ``dpt serve`` sets it, and then every
        # event it records skips the configuration key (a scan of os.environ, ~36 us).
        return None
    key = _config_key()
    with _lock:
        if key in _clients:
            return _clients[key]
    # Nothing configured: nothing to import (openlineage-python costs a fresh process
    # about 0.4 s of imports, for nothing).
    module = _openlineage() if configured() else None
    if module is None:
        with _lock:
            _clients[key] = None
        return None
    with _lock:
        if key in _clients:
            return _clients[key]
        made = None
        if configured():
            try:
                made = module.OpenLineageClient()
            except Exception as exc:  # noqa: BLE001
                _clients[key] = None
                _failed("client set-up", exc)
                return None
        _clients[key] = made
        _clients[_config_key()] = made  # the client may alias OPENLINEAGE_URL into variables
        return made


def _guarded(what: str, call: Callable[[Any], None]) -> None:
    try:
        ol = client()
        if ol is not None:
            call(ol)
    except Exception as exc:  # noqa: BLE001 - never fail tracking (see _failed for strict mode)
        _failed(what, exc)


def _environment(snapshot: EnvironmentSnapshot) -> dict[str, Any]:
    return {
        "fingerprint": snapshot.fingerprint,
        "python": snapshot.python_version,
        "implementation": snapshot.implementation,
        "platform": snapshot.platform,
        "host": snapshot.hostname,
        "user": snapshot.user,
        "packages": dict(snapshot.distributions),
        "variables": {k: v for k, v, _ in snapshot.variables if v is not None},
        "redacted": [k for k, _, digest in snapshot.variables if digest is not None],
        "facets": snapshot.facets,
    }


@hookimpl
def dpt_invocation_started(event: InvocationStarted) -> None:
    def emit(ol: Any) -> None:
        from dpt_core.export.openlineage import RunRef, as_client_event, run_event

        if event.uuid in _runs:
            return  # seen already (a replay): START was sent
        parent_run = _runs.get(event.parent_uuid) if event.parent_uuid else None
        parent = parent_run.ref if parent_run else None
        root = (parent_run.root or parent_run.ref) if parent_run else None
        run = _Run(RunRef(event.uuid, event.job, event.task), event.orchestrator, parent, root)
        run.tags = dict(event.tags)
        _runs[event.uuid] = run
        data = run_event(
            "START",
            time=event.started_at,
            run=run.ref,
            orchestrator=run.orchestrator,
            parent=parent,
            root=root,
            environment=_environment(event.environment) if event.environment else None,
            tags=run.tags,
        )
        ol.emit(as_client_event(data))

    _guarded("emit", emit)
    if event.status != "running" and event.uuid in _runs:
        # recorded after the fact (a sensor): the run's outcome comes in the same event
        dpt_invocation_finished(
            InvocationFinished(
                event.uuid, event.status, event.ended_at or event.started_at, event.error
            )
        )


@hookimpl
def dpt_products_read(event: ProductsRead) -> None:
    if event.invocation_uuid not in _runs:
        return  # not forwarded (no client when it started): skip the configuration lookup

    def keep(_ol: Any) -> None:
        from dpt_core.export.openlineage import Dataset

        run = _runs.get(event.invocation_uuid)
        if run is not None:
            for o in event.inputs:
                run.inputs[(o.uri, o.version_uuid)] = Dataset(o.uri, o.version_uuid, o.content_hash)

    _guarded("emit", keep)


@hookimpl
def dpt_products_written(event: ProductsWritten) -> None:
    if event.invocation_uuid not in _runs:
        return

    def keep(_ol: Any) -> None:
        from dpt_core.export.openlineage import Dataset

        run = _runs.get(event.invocation_uuid)
        if run is not None:
            for o in event.outputs:
                run.outputs[(o.uri, o.version_uuid)] = Dataset(
                    o.uri, o.version_uuid, o.content_hash, o.tags or None
                )

    _guarded("emit", keep)


@hookimpl
def dpt_invocation_finished(event: InvocationFinished) -> None:
    if event.uuid not in _runs:
        return  # did not start in this process (or no client then): nothing to send

    def emit(ol: Any) -> None:
        from dpt_core.export.openlineage import EVENT_TYPES, as_client_event, run_event

        run = _runs.pop(event.uuid, None)
        if run is None:
            log.debug(
                "dpt: OpenLineage: run %s did not start in this process; not sent", event.uuid
            )
            return
        data = run_event(
            EVENT_TYPES.get(event.status, "OTHER"),
            time=event.ended_at,
            run=run.ref,
            orchestrator=run.orchestrator,
            parent=run.parent,
            root=run.root,
            error=event.error,
            inputs=list(run.inputs.values()),
            outputs=list(run.outputs.values()),
            tags=run.tags,
        )
        ol.emit(as_client_event(data))

    _guarded("emit", emit)
