"""Record Prefect flow runs, task runs and assets with dpt, in one line.

::

    import dpt_prefect
    from prefect import flow, task

    @flow(**dpt_prefect.flow_hooks())
    def nightly(night: str): ...

    @task(**dpt_prefect.task_hooks())  # optional: per-task environment and arguments
    def calibrate(path: str): ...

Importing this package does not import Prefect; calling the functions does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dpt_prefect.translator import PrefectTranslator

__all__ = ["PrefectTranslator", "flow_hooks", "flush", "task_hooks"]


def flow_hooks(translator: PrefectTranslator | None = None, **kwargs: Any) -> dict[str, Any]:
    """Keyword arguments for ``@flow(...)`` recording the flow run and its task runs.

    See :func:`dpt_prefect.hooks.flow_hooks`.
    """
    from dpt_prefect.hooks import flow_hooks as _flow_hooks

    return _flow_hooks(translator, **kwargs)


def task_hooks(translator: PrefectTranslator | None = None, **kwargs: Any) -> dict[str, Any]:
    """Keyword arguments for ``@task(...)`` / ``@materialize(...)`` recording the task run in its
    own process. See :func:`dpt_prefect.hooks.task_hooks`.
    """
    from dpt_prefect.hooks import task_hooks as _task_hooks

    return _task_hooks(translator, **kwargs)


def flush(timeout: float | None = None) -> bool:
    """Wait until the task runs of every finished flow run are read back and recorded.

    See :func:`dpt_prefect.hooks.flush`.
    """
    from dpt_prefect.hooks import flush as _flush

    return _flush(timeout)


def __getattr__(name: str) -> Any:
    if name == "PrefectTranslator":
        from dpt_prefect.translator import PrefectTranslator

        return PrefectTranslator
    raise AttributeError(f"module 'dpt_prefect' has no attribute {name!r}")
