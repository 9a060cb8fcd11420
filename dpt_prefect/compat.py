"""Prefect version differences, in one place.

dpt_prefect supports Prefect 3.9+. Everything that depends on where Prefect
keeps a class, a context or a client call is looked up here, so the hooks and
the translator read the same on every supported version. Importing this module
imports Prefect: only the Prefect-side modules (hooks, translator) import it,
never :mod:`dpt_prefect.dpt_plugin`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import prefect
from prefect.context import FlowRunContext, TaskRunContext

try:  # Prefect >= 3.4 (assets)
    from prefect.assets import Asset
    from prefect.context import AssetContext
except ImportError:  # pragma: no cover - older Prefect without assets
    Asset = None  # type: ignore[assignment,misc]
    AssetContext = None  # type: ignore[assignment,misc]

try:
    from prefect.tasks import MaterializingTask
except ImportError:  # pragma: no cover - older Prefect without assets
    MaterializingTask = None  # type: ignore[assignment,misc]

from prefect.tasks import Task

__all__ = [
    "Asset",
    "AssetContext",
    "FlowRunContext",
    "MaterializingTask",
    "PREFECT_VERSION",
    "Task",
    "TaskRunContext",
    "api_client",
    "current_asset_context",
    "current_flow_run_context",
    "current_task_run_context",
    "is_asset",
    "is_materializing_task",
    "read_flow_name",
    "read_task_run",
    "read_task_run_states",
    "read_task_runs",
    "resolve_argument",
    "upstream_task_run_ids",
]

PREFECT_VERSION: str = prefect.__version__
#: The API refuses larger pages; read task runs page by page.
PAGE_SIZE = 200


def current_flow_run_context() -> Any:
    """The active ``FlowRunContext`` (Prefect's ``EngineContext``), or None."""
    return FlowRunContext.get()


def current_task_run_context() -> Any:
    """The active ``TaskRunContext``, or None outside a task run."""
    return TaskRunContext.get()


def current_asset_context() -> Any:
    """The active ``AssetContext`` of a materialising task, or None."""
    return AssetContext.get() if AssetContext is not None else None


def is_asset(obj: Any) -> bool:
    return Asset is not None and isinstance(obj, Asset)


def is_materializing_task(task: Any) -> bool:
    return MaterializingTask is not None and isinstance(task, MaterializingTask)


@contextlib.contextmanager
def api_client(fresh: bool = False) -> Iterator[Any]:
    """A synchronous Prefect client: the running flow's own when there is one (and not
    ``fresh``: another thread must not share it), else a new one.

    A ``fresh`` client is always a new one: ``get_client()`` would hand back the client
    of the engine whose context a read-back runs in, which the engine closes when the
    flow run ends.
    """
    from prefect.client.orchestration import SyncPrefectClient, get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY, PREFECT_API_URL

    context = None if fresh else FlowRunContext.get()
    client = getattr(context, "client", None) if context is not None else None
    if isinstance(client, SyncPrefectClient):  # an async flow's client is async
        yield client
        return

    api_url = PREFECT_API_URL.value()
    if fresh and api_url:
        new = SyncPrefectClient(
            api_url, auth_string=PREFECT_API_AUTH_STRING.value(), api_key=PREFECT_API_KEY.value()
        )
        with new:
            yield new
        return
    with get_client(sync_client=True) as client:
        yield client


def read_task_runs(client: Any, flow_run_id: UUID | str) -> list[Any]:
    """Every task run of one flow run, read page by page."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    runs: list[Any] = []
    flow_filter = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(str(flow_run_id))]))
    while True:
        page = client.read_task_runs(
            flow_run_filter=flow_filter,
            sort=TaskRunSort.ID_DESC,
            limit=PAGE_SIZE,
            offset=len(runs),
        )
        runs.extend(page)
        if len(page) < PAGE_SIZE:
            return runs


def read_task_run(client: Any, task_run_id: UUID | str) -> Any:
    return client.read_task_run(UUID(str(task_run_id)))


def read_task_run_states(client: Any, task_run_id: UUID | str) -> list[Any]:
    """The state history of one task run, oldest first."""
    states = list(client.read_task_run_states(UUID(str(task_run_id))))
    states.sort(key=lambda s: s.timestamp)
    return states


@functools.lru_cache(maxsize=256)
def _flow_name_by_id(flow_id: str) -> str | None:
    with api_client() as client:
        return str(client.read_flow(UUID(flow_id)).name)


def read_flow_name(client: Any, flow_run_id: UUID | str) -> str | None:
    """The name of the flow of a flow run (two API reads, the second cached)."""
    flow_run = client.read_flow_run(UUID(str(flow_run_id)))
    return _flow_name_by_id(str(flow_run.flow_id))


def resolve_argument(value: Any) -> Any:
    """A task argument as the task saw it: an upstream future becomes its (finished) result.

    The running hooks see the arguments as the task was called, before Prefect
    resolved upstream futures; by then those futures are done, so this does not wait.
    """
    from prefect.futures import PrefectFuture

    if not isinstance(value, PrefectFuture):
        return value
    try:
        return value.result(timeout=0, raise_on_failure=False)
    except Exception:
        return f"<result of task run {value.task_run_id}>"


def upstream_task_run_ids(task_inputs: Any) -> list[str]:
    """The ids of the task runs whose results a task run was called with."""
    ids: list[str] = []
    for name, refs in (task_inputs or {}).items():
        if name in ("__parents__", "wait_for"):
            continue
        for ref in refs or ():
            if getattr(ref, "input_type", None) == "task_run" and getattr(ref, "id", None):
                ids.append(str(ref.id))
    return ids
