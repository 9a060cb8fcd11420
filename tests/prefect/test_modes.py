"""Disabled and strict modes, tracking failures, a custom translator, the dpt plugin, other processes."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
from prefect import flow, task
from prefect.assets import Asset, materialize
from prefect.states import Cancelled, Cancelling, Completed, Crashed, Failed, Pending
from prefect.task_runners import ProcessPoolTaskRunner

import dpt_core
import dpt_prefect
from dpt_prefect import dpt_plugin
from dpt_prefect.translator import PrefectTranslator


@task
def double(x: int) -> int:
    return 2 * x


@task(**dpt_prefect.task_hooks())
def double_hooked(x: int) -> int:
    return 2 * x


@flow(**dpt_prefect.flow_hooks())
def doubling(x: int) -> int:
    return double(x)


class BrokenTranslator(PrefectTranslator):
    def get_flow_parameters(self, flow: Any, flow_run: Any) -> dict[str, Any]:
        raise RuntimeError("translator bug")


@flow(name="with-broken-translator", **dpt_prefect.flow_hooks(translator=BrokenTranslator()))
def broken(x: int) -> int:
    return double(x)


class BrokenJobName(PrefectTranslator):
    def get_flow_job(self, flow: Any, flow_run: Any) -> str:
        raise RuntimeError("translator bug in the job name")


@flow(name="with-broken-job-name", **dpt_prefect.flow_hooks(translator=BrokenJobName()))
def broken_job_name(x: int) -> int:
    return double(x)


class SurveyTranslator(PrefectTranslator):
    def get_flow_job(self, flow: Any, flow_run: Any) -> str:
        return f"survey/{flow.name}"

    def get_task_name(self, task: Any, task_run: Any = None) -> str:
        return f"step:{super().get_task_name(task, task_run)}"


@task(**dpt_prefect.task_hooks(translator=SurveyTranslator()))
def double_survey(x: int) -> int:
    return 2 * x


@flow(name="survey", **dpt_prefect.flow_hooks(translator=SurveyTranslator()))
def survey(x: int) -> int:
    return double(x) + double_survey(x)


@flow
def untracked(x: int) -> int:
    return double_hooked(x)


@flow(task_runner=ProcessPoolTaskRunner(max_workers=1), **dpt_prefect.flow_hooks())
def in_another_process(x: int) -> int:
    return double_hooked.submit(x).result()


def test_disabled_records_nothing(
    run_flow: Any, recorded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DPT_DISABLED", "1")
    dpt_core.plugin_api.reset()
    state = run_flow(doubling, 3)
    assert state.is_completed() and state.result() == 6
    monkeypatch.delenv("DPT_DISABLED")
    dpt_core.plugin_api.reset()
    assert recorded.invocations() == []


def test_disabled_costs_a_new_flow_process_nothing(tmp_path: Path) -> None:
    """With DPT_DISABLED=1 a new process (as a Prefect worker starts per flow run) runs a
    flow with dpt's hooks without importing dpt_core or SQLAlchemy, and records nothing."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from prefect import flow, task\n"
        "import dpt_prefect\n"
        "@task(**dpt_prefect.task_hooks())\n"
        "def one(i): return i\n"
        "@flow(name='disabled-process', **dpt_prefect.flow_hooks())\n"
        "def f(): return one(1)\n"
        "assert f() == 1 and dpt_prefect.flush()\n"
        "print(sorted(m for m in ('dpt_core', 'dpt_prefect.hooks', 'sqlalchemy')"
        " if m in sys.modules))\n"
    )
    env = {**os.environ, "DPT_DISABLED": "1", "DPT_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert not (tmp_path / "x.db").exists()


def test_a_translator_failure_costs_only_its_own_field(
    run_flow: Any, recorded: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An override of a descriptive method that raises: dpt's default answers instead."""
    with caplog.at_level(logging.WARNING, logger="dpt.prefect"):
        state = run_flow(broken, 2)
    assert state.is_completed() and state.result() == 4
    assert "the translator's get_flow_parameters failed" in caplog.text
    assert "translator bug" in caplog.text
    flow_row = recorded.one(task=None)
    assert flow_row["job"] == "with-broken-translator"
    assert flow_row["status"] == "success"
    assert flow_row["parameters"] == {"x": 2}  # the default parameters
    row = recorded.one(task="double")
    assert row["status"] == "success"
    assert row["parent_id"] == flow_row["id"]


def test_a_broken_identity_costs_the_run_it_names_not_the_flow(
    run_flow: Any, recorded: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An override of a method that names the run (its job) that raises: no default name
    stands in (it would name another job); the flow run is not recorded, the flow goes on."""
    with caplog.at_level(logging.WARNING, logger="dpt.prefect"):
        state = run_flow(broken_job_name, 2)
    assert state.is_completed() and state.result() == 4
    assert "translator bug in the job name" in caplog.text
    assert recorded.invocations(task=None) == []
    assert all(r["job"] != "with-broken-job-name" for r in recorded.invocations())


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" | {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        self.messages.append(text)


class BrokenReadBack(PrefectTranslator):
    def get_task_name(self, task: Any, task_run: Any = None) -> str:
        raise RuntimeError("read-back bug")


@flow(name="with-broken-read-back", **dpt_prefect.flow_hooks(translator=BrokenReadBack()))
def broken_read_back(x: int) -> int:
    return double(x)


def test_strict_mode_raises_tracking_errors(recorded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DPT_STRICT", "1")
    dpt_core.plugin_api.reset()
    handler = _Records()
    prefect_logger = logging.getLogger("prefect")
    prefect_logger.addHandler(handler)
    try:
        state = broken(2, return_state=True)
        dpt_prefect.flush(timeout=60)
    finally:
        prefect_logger.removeHandler(handler)
    # Prefect runs hooks itself: it logs a hook's error and the flow run goes on.
    assert state.is_completed()
    assert any(
        "dpt_flow_running" in m and "TrackingError" in m and "translator bug" in m
        for m in handler.messages
    ), handler.messages
    # A background read-back's error is raised by flush().
    state = broken_read_back(2, return_state=True)
    assert state.is_completed()
    with pytest.raises(dpt_core.TrackingError, match="read-back bug"):
        dpt_prefect.flush(timeout=60)
    assert recorded.one(job="with-broken-read-back", task=None)["status"] == "success"


def test_a_custom_translator(run_flow: Any, recorded: Any) -> None:
    state = run_flow(survey, 1)
    assert state.is_completed()
    flow_row = recorded.one(task=None)
    assert flow_row["job"] == "survey/survey"
    read_back = recorded.one(task="step:double")
    hooked = recorded.one(task="step:double_survey")
    for row in (read_back, hooked):
        assert row["job"] == "survey/survey"
        assert row["parent_id"] == flow_row["id"]


def test_task_hooks_in_a_flow_without_flow_hooks(run_flow: Any, recorded: Any) -> None:
    state = run_flow(untracked, 5)
    assert state.is_completed()
    row = recorded.one(task="double_hooked")
    assert row["job"] == "untracked"
    assert row["parent_id"] is None
    assert row["status"] == "success"
    assert row["parameters"] == {"x": 5}
    assert row["environment_id"] is not None
    assert len(recorded.invocations()) == 1


@pytest.mark.slow
def test_a_task_run_in_another_process(run_flow: Any, recorded: Any, dpt_env: Any) -> None:
    state = run_flow(in_another_process, 21)
    assert state.is_completed() and state.result() == 42
    flow_row = recorded.one(task=None)
    row = recorded.one(task="double_hooked")
    assert row["parent_id"] == flow_row["id"]
    assert row["job"] == "in-another-process"
    assert row["status"] == "success"
    # Recorded by the task hooks in the worker process: arguments and environment known.
    assert row["parameters"] == {"x": 21}
    assert row["environment_id"] is not None
    assert len(recorded.invocations()) == 2


def test_hooks_pickle_for_task_runner_processes() -> None:
    hooks = dpt_prefect.task_hooks(translator=SurveyTranslator())
    restored = pickle.loads(pickle.dumps(hooks))
    assert set(restored) == {"on_running", "on_completion", "on_failure"}
    assert isinstance(restored["on_running"][0].__self__.translator, SurveyTranslator)


def test_user_hooks_are_merged() -> None:
    def mine(*args: Any) -> None:
        return None

    hooks = dpt_prefect.flow_hooks(on_failure=[mine], retries=2)
    assert hooks["on_failure"][-1] is mine
    assert len(hooks["on_failure"]) == 2
    assert hooks["retries"] == 2


def test_states_to_statuses() -> None:
    translator = PrefectTranslator()
    assert translator.get_status(Completed()) == "success"
    assert translator.get_status(Failed(message="boom")) == "failed"
    assert translator.get_error(Failed(message="boom")) == "boom"
    assert translator.get_status(Crashed(message="gone")) == "crashed"
    assert translator.get_status(Cancelled()) == "cancelled"
    assert translator.get_status(Cancelling()) == "cancelled"
    assert translator.get_status(Pending(name="NotReady")) is None
    assert translator.get_unfinished_status(Pending(name="NotReady")) == "skipped"
    assert translator.get_error(Completed()) is None


def test_task_arguments_as_json() -> None:
    translator = PrefectTranslator()
    arguments = translator.get_arguments(
        {
            "n": 3,
            "names": ["a", "b"],
            "path": Path("/data/x.fits"),
            "many": list(range(5000)),
            "long": "x" * 10_000,
        }
    )
    assert arguments["n"] == 3
    assert arguments["names"] == ["a", "b"]
    assert arguments["path"] == repr(Path("/data/x.fits"))
    assert arguments["many"] == "<list of 5000 items>"
    assert arguments["long"] == "<str: 10002 characters of JSON>"


def test_the_dpt_plugin_outside_prefect_runs(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    assert dpt_plugin.dpt_current_context() is None
    assert dpt_plugin.dpt_resolve_uri(Asset(key=path.as_uri())) == path.as_uri()
    assert dpt_plugin.dpt_resolve_uri(str(path)) is None
    assert dpt_core.get_tracker().resolve(Asset(key="s3://bucket/key.parquet")) == (
        "s3://bucket/key.parquet"
    )


def test_environment_variables_reach_task_runner_processes() -> None:
    assert os.environ["PREFECT_API_URL"].startswith("http://127.0.0.1:")


@task
async def async_double(x: int) -> int:
    return 2 * x


@task(**dpt_prefect.task_hooks())
async def async_double_hooked(x: int) -> int:
    return 2 * x


@flow(**dpt_prefect.flow_hooks(background=False))
async def async_child(x: int) -> int:
    return await async_double(x)


@flow(**dpt_prefect.flow_hooks(background=False))
async def async_parent(x: int) -> int:
    return await async_double_hooked(x) + await async_child(x)


def test_async_flows_and_tasks(recorded: Any) -> None:
    import asyncio

    assert asyncio.run(async_parent(3)) == 12
    assert dpt_prefect.flush(timeout=60)
    parent_row = recorded.one(job="async-parent", task=None)
    child_row = recorded.one(job="async-child", task=None)
    assert parent_row["status"] == child_row["status"] == "success"
    assert child_row["parent_id"] == parent_row["id"]
    hooked = recorded.one(task="async_double_hooked")
    assert hooked["parent_id"] == parent_row["id"]
    assert hooked["parameters"] == {"x": 3}
    assert recorded.one(task="async_double")["parent_id"] == child_row["id"]
    assert len(recorded.invocations()) == 4


BAD_KEY = "s3://warehouse/broken-asset.csv"


class OneBadAsset(PrefectTranslator):
    """A user's translator with a bug for one asset key and for one task's name."""

    def get_asset_uri(self, asset: Any) -> str:
        if str(getattr(asset, "key", asset)) == BAD_KEY:
            raise ValueError("no mapping for this bucket")
        return super().get_asset_uri(asset)

    def get_task_name(self, task: Any, task_run: Any = None) -> str:
        if task is None and str(getattr(task_run, "task_key", "")).startswith("tracked_inside"):
            raise RuntimeError("read-back bug")
        return super().get_task_name(task, task_run)


@materialize("s3://warehouse/good-asset.csv", BAD_KEY)
def two_assets() -> str:
    return "written"


@task
def tracked_inside(path: str) -> None:
    Path(path).write_text("x\n")
    dpt_core.track(path)


@flow(name="one-bad-record", **dpt_prefect.flow_hooks(translator=OneBadAsset()))
def one_bad_record(path: str) -> None:
    two_assets()
    tracked_inside(path)


def test_a_record_that_fails_costs_only_itself(
    run_flow: Any, recorded: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "inside.txt"
    with caplog.at_level(logging.WARNING, logger="dpt.prefect"):
        state = run_flow(one_bad_record, str(path))
    assert state.is_completed()
    # The bad asset is named in a warning; the good one is recorded.
    assert f"recording asset {BAD_KEY!r} of task run" in caplog.text
    assert "no mapping for this bucket" in caplog.text
    materialize_row = recorded.one(task="two_assets")
    assert materialize_row["status"] == "success"
    (good,) = recorded.versions("s3://warehouse/good-asset.csv")
    assert good["produced_by_id"] == materialize_row["id"]
    assert recorded.versions(BAD_KEY) == []
    # The task run started inside the task (track()) had its read-back fail midway: it is
    # closed all the same, as Prefect says it ended.
    inside = recorded.one(task="tracked_inside")
    assert inside["status"] == "success"
    (version,) = recorded.versions(path.as_uri())
    assert version["produced_by_id"] == inside["id"]
    assert [r["status"] for r in recorded.invocations() if r["status"] == "running"] == []
    assert len(recorded.invocations()) == 3
