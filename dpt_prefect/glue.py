"""The hooks Prefect calls: the host glue, light enough for every new flow process.

A Prefect worker starts one Python process per flow run, and each pays for what the
flow's hooks import. So the objects :func:`flow_hooks` and :func:`task_hooks` hand to
Prefect import nothing but the standard library: with ``DPT_DISABLED=1`` in the
environment a hook returns at once (no dpt_core, no SQLAlchemy, no Prefect client
call); otherwise the first hook call imports the recorder (:mod:`dpt_prefect.hooks`),
which does the work.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dpt_prefect.hooks import FlowRecorder, TaskRecorder
    from dpt_prefect.translator import PrefectTranslator

#: Longest wait (seconds) for the API to show a finished flow run's task runs as final.
#: Task runs reach the API as events, which a busy server takes a while to ingest.
READBACK_TIMEOUT = 15.0

#: ``DPT_DISABLED`` values meaning "on" (as dpt_core's settings read them).
_TRUE = frozenset({"1", "true", "yes", "on"})


def disabled_by_environment() -> bool:
    """True when ``DPT_DISABLED`` says so: decided without importing dpt_core.

    (``DPT_DISABLED`` in a config file is read by the recorder, at a settings load.)
    """
    return os.environ.get("DPT_DISABLED", "").strip().lower() in _TRUE


def _merge(ours: dict[str, list[Any]], extra: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {key: list(hooks) for key, hooks in ours.items()}
    for key, value in extra.items():
        if key in merged:
            merged[key].extend(value or [])
        else:
            merged[key] = value
    return merged


class FlowHooks:
    """The flow-run state hooks (see :func:`flow_hooks`); picklable."""

    def __init__(
        self, translator: PrefectTranslator | None, readback_timeout: float, background: bool
    ) -> None:
        self.translator = translator
        self.readback_timeout = readback_timeout
        self.background = background
        self._recorder: FlowRecorder | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_recorder": None}

    def hooks(self) -> dict[str, list[Any]]:
        return {
            "on_running": [self.dpt_flow_running],
            "on_completion": [self.dpt_flow_finished],
            "on_failure": [self.dpt_flow_finished],
            "on_crashed": [self.dpt_flow_finished],
            "on_cancellation": [self.dpt_flow_finished],
        }

    def recorder(self) -> FlowRecorder:
        if self._recorder is None:
            from dpt_prefect.hooks import FlowRecorder

            self._recorder = FlowRecorder(self.translator, self.readback_timeout, self.background)
        return self._recorder

    # Prefect calls hooks as hook(flow, flow_run, state) and logs their names.

    def dpt_flow_running(self, flow: Any, flow_run: Any, state: Any) -> None:
        if not disabled_by_environment():
            self.recorder().dpt_flow_running(flow, flow_run, state)

    def dpt_flow_finished(self, flow: Any, flow_run: Any, state: Any) -> None:
        if not disabled_by_environment():
            self.recorder().dpt_flow_finished(flow, flow_run, state)


class TaskHooks:
    """The task-run state hooks (see :func:`task_hooks`); picklable."""

    def __init__(self, translator: PrefectTranslator | None) -> None:
        self.translator = translator
        self._recorder: TaskRecorder | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_recorder": None}

    def hooks(self) -> dict[str, list[Any]]:
        return {
            "on_running": [self.dpt_task_running],
            "on_completion": [self.dpt_task_finished],
            "on_failure": [self.dpt_task_finished],
        }

    def recorder(self) -> TaskRecorder:
        if self._recorder is None:
            from dpt_prefect.hooks import TaskRecorder

            self._recorder = TaskRecorder(self.translator)
        return self._recorder

    def dpt_task_running(self, task: Any, task_run: Any, state: Any) -> None:
        if not disabled_by_environment():
            self.recorder().dpt_task_running(task, task_run, state)

    def dpt_task_finished(self, task: Any, task_run: Any, state: Any) -> None:
        if not disabled_by_environment():
            self.recorder().dpt_task_finished(task, task_run, state)


def flow_hooks(
    translator: PrefectTranslator | None = None,
    *,
    readback_timeout: float = READBACK_TIMEOUT,
    background: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """Keyword arguments for ``@flow(...)`` that record the flow run and its task runs.

    ::

        @flow(**dpt_prefect.flow_hooks())
        def nightly(night: str): ...

    :param translator: a :class:`~dpt_prefect.PrefectTranslator` (subclass) deciding what
        is recorded; default: the stock one.
    :param readback_timeout: longest wait, in seconds, when the flow run ends, for the
        Prefect API to show its task runs as finished.
    :param background: read the task runs back in a background thread (the default), so
        the flow returns at once; :func:`dpt_prefect.flush` waits for it. False reads them
        back in the completion hook, before the flow returns.
    :param extra: your own hooks or other ``@flow`` options; hook lists are merged after
        dpt's (``flow_hooks(on_failure=[notify])``).
    :returns: ``on_running``, ``on_completion``, ``on_failure``, ``on_crashed`` and
        ``on_cancellation`` hook lists (plus ``extra``). With ``DPT_DISABLED=1`` in the
        environment each hook returns at once, having imported nothing.
    """
    return _merge(FlowHooks(translator, readback_timeout, background).hooks(), extra)


def task_hooks(translator: PrefectTranslator | None = None, **extra: Any) -> dict[str, Any]:
    """Keyword arguments for ``@task(...)`` / ``@materialize(...)`` that record the task run
    from inside the task's own process.

    ::

        @task(**dpt_prefect.task_hooks())
        def calibrate(path: str): ...

    Adds what only the task's process knows: its environment (host, packages) when
    tasks run on other workers, the argument values, the error of each failed attempt,
    and the metadata a ``@materialize`` task adds to its assets.

    :param translator: as for :func:`flow_hooks`.
    :param extra: your own hooks or other ``@task`` options, merged after dpt's.
    :returns: ``on_running``, ``on_completion`` and ``on_failure`` hook lists (a
        ``@materialize`` task also gets a commit hook when it first runs).
    """
    return _merge(TaskHooks(translator).hooks(), extra)
