"""Airflow version differences, in one place.

dpt_airflow supports Airflow 3.3+ (the task SDK). Everything that depends on
where Airflow keeps a class or an attribute is looked up here, so the listener
and the translator read the same on every supported version. Importing this
module imports Airflow: only the Airflow-side modules (plugin, listener,
translator) import it, never :mod:`dpt_airflow.dpt_plugin`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from typing import Any

try:
    from airflow.listeners import hookimpl
except ImportError:  # pragma: no cover - a task-SDK-only install
    from pluggy import HookimplMarker

    hookimpl = HookimplMarker("airflow")

try:
    from airflow.plugins_manager import AirflowPlugin
except ImportError:  # pragma: no cover - a task-SDK-only install
    from airflow.sdk.plugins_manager import AirflowPlugin  # type: ignore[assignment]

__all__ = [
    "AirflowPlugin",
    "asset_types",
    "bundle_version",
    "conf_get",
    "conf_getboolean",
    "context_variables",
    "current_task_instance",
    "hookimpl",
    "in_task_process",
    "is_runtime_task_instance",
    "mask_airflow_secrets",
    "task_instance_states",
    "task_key",
    "template_context",
]


@functools.cache
def _conf() -> Any:
    """Airflow's configuration: the core parser where airflow-core is installed, else the SDK's."""
    try:
        from airflow.configuration import conf
    except ImportError:  # pragma: no cover - a task-SDK-only install
        from airflow.sdk.configuration import conf  # type: ignore[no-redef]
    return conf


def conf_get(section: str, key: str, fallback: str | None = None) -> str | None:
    """An Airflow config value (``AIRFLOW__SECTION__KEY`` wins over ``airflow.cfg``), read each call."""
    value = _conf().get(section, key, fallback=fallback)
    return None if value is None else str(value)


def conf_getboolean(section: str, key: str, fallback: bool) -> bool:
    return bool(_conf().getboolean(section, key, fallback=fallback))


@functools.cache
def asset_types() -> tuple[type[Any], type[Any]]:
    """``(BaseAsset, AssetAlias)``: the classes of task inlets/outlets."""
    from airflow.sdk.definitions.asset import AssetAlias, BaseAsset

    return BaseAsset, AssetAlias


def is_runtime_task_instance(task_instance: Any) -> bool:
    """True for the task runner's ``RuntimeTaskInstance`` (in the worker, with the task and its context).

    The API server and the scheduler hand listeners an ORM ``TaskInstance`` instead: it
    has the ids but neither the operator nor a template context.
    """
    return hasattr(task_instance, "get_template_context") and hasattr(task_instance, "task")


def in_task_process() -> bool:
    """True in a task process Airflow's supervisor started (any executor), which ends with
    ``os._exit`` after the try; False under ``dag.test()``, which runs each try in the
    calling process with in-process supervisor comms, and outside a task runner."""
    runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
    comms = getattr(runner, "SUPERVISOR_COMMS", None)
    if comms is None:
        return False
    supervisor = sys.modules.get("airflow.sdk.execution_time.supervisor")
    in_process = getattr(supervisor, "InProcessSupervisorComms", None)
    return in_process is None or not isinstance(comms, in_process)


def template_context(task_instance: Any) -> Mapping[str, Any]:
    """The task's template context, or an empty mapping outside the worker.

    Airflow keeps one context dict a try (``_cached_template_context``, made before the
    task runner calls any listener) and updates it in place; ``get_template_context()``
    recomputes the params and the run's values into it at every call (~0.3 ms on the
    task's thread, twice a try), so the kept dict is read when there is one.
    """
    if not is_runtime_task_instance(task_instance):
        return {}
    cached = getattr(task_instance, "_cached_template_context", None)
    if isinstance(cached, dict):
        return cached
    context: Mapping[str, Any] = task_instance.get_template_context()
    return context


def task_key(task_instance: Any) -> tuple[str, str, str, int, int]:
    """``(dag_id, run_id, task_id, map_index, try_number)``: one task try, on any TaskInstance type."""
    map_index = task_instance.map_index
    return (
        task_instance.dag_id,
        task_instance.run_id,
        task_instance.task_id,
        -1 if map_index is None else int(map_index),
        int(task_instance.try_number or 0),
    )


def dag_run_tries(dag_id: str, run_id: str) -> list[Any] | None:
    """The current try of each task instance of a dag run, read from Airflow's metadata
    database in a session of its own: rows with ``dag_id``, ``run_id``, ``task_id``,
    ``map_index``, ``try_number`` and ``state``, or None where this process has no
    metadata database (a task runner).

    Never through the listener's ``dag_run`` (``dag_run.get_task_instances()`` opens
    Airflow's thread-scoped session, the scheduler's own, and closing it detaches the
    scheduler's objects: the scheduler loop then dies on a ``DetachedInstanceError``):
    Airflow's own non-scoped session, and the five columns only (no ORM objects: loading
    ``DagRun.fetch_task_instances``' task instances, each with its dag run, was ~3 ms at
    the end of a dag run of 40 tasks).
    """
    import types

    from airflow import settings
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    if getattr(settings, "NonScopedSession", None) is None:
        return None
    ti = TaskInstance
    with create_session(scoped=False) as session:
        # (Airflow's own session and model build the query: the adapter writes no SQL)
        query = (
            session.query(ti.task_id, ti.map_index, ti.try_number, ti.state)
            .filter(ti.dag_id == dag_id, ti.run_id == run_id)
            .order_by(ti.task_id, ti.map_index)
        )
        return [
            types.SimpleNamespace(
                dag_id=dag_id,
                run_id=run_id,
                task_id=task_id,
                map_index=map_index,
                try_number=try_number,
                state=state,
            )
            for task_id, map_index, try_number, state in query
        ]


def state_text(state: Any) -> str:
    """A task instance state as text (``"success"``, ...; ``"None"`` for none)."""
    return str(getattr(state, "value", state))


def task_instance_states(dag_run: Any) -> dict[tuple[str, int], tuple[int, str]]:
    """``{(task_id, map_index): (try_number, state)}`` of a dag run's task instances.

    Only the ORM ``DagRun`` (scheduler, ``dag.test()``, API server) can list them;
    the task runner's has no ``get_task_instances``: an empty mapping there.
    """
    get_task_instances = getattr(dag_run, "get_task_instances", None)
    if get_task_instances is None:
        return {}
    states: dict[tuple[str, int], tuple[int, str]] = {}
    for ti in get_task_instances():
        state = getattr(ti.state, "value", ti.state)
        map_index = -1 if ti.map_index is None else int(ti.map_index)
        states[(ti.task_id, map_index)] = (int(ti.try_number or 0), str(state))
    return states


def mask_airflow_secrets(value: Any) -> Any:
    """``value`` (text, or JSON-able data) with the secrets Airflow's own masker knows
    replaced by ``<redacted>`` wherever they occur, as Airflow masks its task logs.

    That masker knows secrets dpt cannot see: the passwords of connections and the
    values of sensitive Variables the task fetched (from the metadata database or a
    secrets backend), and values given to ``mask_secret``. Only string values are
    masked, not keys: a value under a secret-looking key is left to dpt's redaction
    (in the tracker, after this), which keeps a keyed digest so a change still shows.

    What Airflow's ``redact`` does to a string is its masker's pattern of every secret
    it knows, substituted (``replacer``, None until it knows one): that pattern is read
    live at each call and applied here, and a masker that knows no secret yet leaves
    ``value`` as it is, without walking it. Each try's parameters, command and error
    went through Airflow's generic walker a string at a time: ~0.25 ms of every try
    on the task's thread. An Airflow without that attribute gets its ``redact`` per string.
    """
    try:
        from airflow.sdk._shared.secrets_masker import _secrets_masker

        replacer = _secrets_masker().replacer
    except (ImportError, AttributeError):
        from airflow.sdk._shared.secrets_masker import redact

        return _mask_strings(value, lambda text: str(redact(text, replacement="<redacted>")))
    if replacer is None:
        return value
    return _mask_strings(value, lambda text: replacer.sub("<redacted>", text))


def _mask_strings(value: Any, mask: Callable[[str], str]) -> Any:
    """``value`` with ``mask`` applied to every string in it (dict keys excepted)."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {key: _mask_strings(item, mask) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_strings(item, mask) for item in value]
    return value


def current_task_instance() -> Any | None:
    """The task instance running on this thread (``get_current_context()["ti"]``), else None."""
    from airflow.sdk import get_current_context

    try:
        return get_current_context()["ti"]
    except (RuntimeError, KeyError):
        return None


def bundle_version(task_instance: Any) -> str | None:
    """The version of the DAG bundle the task ran from (a git commit for git bundles), if known.

    ``dag.test()`` runs tasks without a bundle instance, and local bundles have no version.
    """
    bundle = getattr(task_instance, "bundle_instance", None)
    version = getattr(bundle, "version", None)
    return str(version) if version else None


#: The prefix of the variables Airflow exports to a running task's environment.
CONTEXT_VARIABLE_PREFIX = "AIRFLOW_CTX_"


def context_variables(context: Mapping[str, Any]) -> dict[str, str]:
    """The ``AIRFLOW_CTX_*`` variables Airflow exports for the task try of ``context``.

    Airflow's own function computes them (the one the task runner calls just before the
    task's ``execute``, which also adds what ``airflow_local_settings`` contributes),
    so dpt records exactly what the task's code sees in ``os.environ``; the listener
    calls this earlier, when those variables are not set yet or still hold the
    previous task's values.
    """
    from airflow.sdk.execution_time.context import context_to_airflow_vars

    variables: dict[str, str] = context_to_airflow_vars(context, in_env_var_format=True)
    return variables
