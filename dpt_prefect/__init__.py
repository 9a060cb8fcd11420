"""Record Prefect flow runs, task runs and assets with dpt, in one line.

::

    import dpt_prefect
    from prefect import flow, task

    @flow(**dpt_prefect.flow_hooks())
    def nightly(night: str): ...

    @task(**dpt_prefect.task_hooks())  # optional: per-task environment and arguments
    def calibrate(path: str): ...

Importing this package imports neither Prefect nor dpt_core, and neither does
calling :func:`flow_hooks` or :func:`task_hooks`: the hooks import dpt's recorder
when they first run with tracking on (with ``DPT_DISABLED=1`` they never do).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dpt_prefect.translator import PrefectTranslator

__all__ = ["PrefectTranslator", "flow_hooks", "flush", "task_hooks"]


def flow_hooks(translator: PrefectTranslator | None = None, **kwargs: Any) -> dict[str, Any]:
    """Keyword arguments for ``@flow(...)`` recording the flow run and its task runs.

    See :func:`dpt_prefect.glue.flow_hooks`.
    """
    from dpt_prefect.glue import flow_hooks as _flow_hooks

    return _flow_hooks(translator, **kwargs)


def task_hooks(translator: PrefectTranslator | None = None, **kwargs: Any) -> dict[str, Any]:
    """Keyword arguments for ``@task(...)`` / ``@materialize(...)`` recording the task run in its
    own process. See :func:`dpt_prefect.glue.task_hooks`.
    """
    from dpt_prefect.glue import task_hooks as _task_hooks

    return _task_hooks(translator, **kwargs)


def flush(timeout: float | None = None) -> bool:
    """Wait until the task runs of every finished flow run are read back and recorded.

    See :func:`dpt_prefect.hooks.flush`.
    """
    hooks = sys.modules.get("dpt_prefect.hooks")
    if hooks is None:  # no hook recorded anything in this process: nothing is pending
        return True
    return bool(hooks.flush(timeout))


def __getattr__(name: str) -> Any:
    if name == "PrefectTranslator":
        from dpt_prefect.translator import PrefectTranslator

        return PrefectTranslator
    raise AttributeError(f"module 'dpt_prefect' has no attribute {name!r}")
