"""dpt_core.adapter, the kit the adapters share, against a real Tracker on SQLite."""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import subprocess
import sys
import threading
from typing import Any

import pytest

import dpt_core
from dpt_core import adapter as kit
from dpt_core.adapter import (
    BackgroundWork,
    RunRegistry,
    TranslatorRegistry,
    as_utc,
    host_guard,
    load_translator,
    poll_until,
)


def runs(env: Any) -> list[Any]:
    return env.rows("SELECT job, task, status, error, started_at FROM invocations ORDER BY id")


class Translator:
    def job(self) -> str:
        return "stock"


class SurveyTranslator(Translator):
    def job(self) -> str:
        return "survey"


# -- the guard factory ----------------------------------------------------------------------


def test_a_guarded_callback_fails_alone_and_is_logged_once(
    dpt_env: Any, caplog: pytest.LogCaptureFixture
) -> None:
    guard = host_guard("the task goes on untracked", logging.getLogger("dpt.test"))
    tracker = dpt_core.get_tracker()

    def on_task_start(task: str) -> str:
        handle = tracker.start("nightly", task=task, orchestrator="test")
        if task == "bad":
            raise RuntimeError("translator bug")
        handle.finish("success")
        return handle.uuid

    with caplog.at_level(logging.WARNING, logger="dpt.test"):
        assert guard("the task start", on_task_start, "good") is not None
        assert guard("the task start", on_task_start, "bad", default="none") == "none"
        assert guard("the task start", on_task_start, "bad") is None
    assert caplog.text.count("translator bug") == 1  # once per kind of failure
    assert "dpt: the task start failed, the task goes on untracked: RuntimeError" in caplog.text
    rows = runs(dpt_env)
    assert [(r.task, r.status) for r in rows] == [
        ("good", "success"),
        ("bad", "running"),
        ("bad", "running"),
    ]


def test_the_decorator_form_and_strict_mode(
    dpt_env: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    guard = host_guard("the flow goes on", prefix="recording ")

    @guard.callback("the flow run end", default=False)
    def on_flow_end(status: str) -> bool:
        dpt_core.get_tracker().start("flow", orchestrator="test").finish(status)
        return True

    assert on_flow_end.__name__ == "on_flow_end"  # orchestrators log hook names
    assert on_flow_end("success") is True
    with caplog.at_level(logging.WARNING, logger="dpt"):
        assert on_flow_end("no-such-status") is False
    assert "dpt: recording the flow run end failed, the flow goes on" in caplog.text
    monkeypatch.setenv("DPT_STRICT", "1")
    dpt_core.plugin_api.reset()
    with pytest.raises(dpt_core.DptError):
        on_flow_end("no-such-status")
    with pytest.raises(dpt_core.TrackingError, match="recording the flow run end failed"):
        guard("the flow run end", lambda: 1 / 0)
    # the failed finishes cost only themselves: their starts are recorded
    assert [r.status for r in runs(dpt_env)] == ["success", "running", "running"]


# -- translators: an override that raises costs only its own field ----------------------------

kit_log = logging.getLogger("dpt.kit-test")


class StockTranslator(
    kit.Translator,
    identity={"get_job"},
    fallbacks={"get_outputs": list},
    logger=kit_log,
):
    """An adapter's translator: what the kit falls back to."""

    def get_job(self, run: str) -> str:
        return f"job-{run}"

    def get_parameters(self, run: str) -> dict[str, Any]:
        return {"run": run}

    def get_outputs(self, run: str) -> list[str]:
        return [f"/data/{run}.csv"]

    def get_error(self, error: str) -> str:
        if not error:
            raise ValueError("the default cannot describe an empty error")
        return error

    def record(self, tracker: dpt_core.Tracker, run: str) -> None:
        """What an adapter's hook does: every field asked of the translator."""
        handle = tracker.start(
            self.get_job(run), orchestrator="test", parameters=self.get_parameters(run)
        )
        handle.finish("success")


class UsersTranslator(StockTranslator):
    """A user's translator with bugs."""

    def get_job(self, run: str) -> str:
        if run == "bad-job":
            raise RuntimeError("bug in get_job")
        return super().get_job(run)

    def get_parameters(self, run: str) -> dict[str, Any]:
        raise RuntimeError("bug in get_parameters")

    def get_outputs(self, run: str) -> list[str]:
        raise RuntimeError("bug in get_outputs")

    def get_helper(self) -> str:  # not a method of the adapter's: left alone
        raise RuntimeError("bug in a helper")


class UsersSubclass(UsersTranslator):
    def get_parameters(self, run: str) -> dict[str, Any]:
        return {**super().get_parameters(run), "site": "lsst"}


def test_an_override_that_raises_costs_only_its_field(
    dpt_env: Any, caplog: pytest.LogCaptureFixture
) -> None:
    guard = host_guard("the run goes on untracked", kit_log)
    translator = UsersTranslator()
    with caplog.at_level(logging.WARNING, logger="dpt.kit-test"):
        guard("the run", translator.record, dpt_core.get_tracker(), "r1")
        guard("the run", translator.record, dpt_core.get_tracker(), "r2")
        assert translator.get_outputs("r1") == []  # the fallback, not the default's outputs
    rows = dpt_env.rows("SELECT job, status, parameters FROM invocations ORDER BY id")
    assert [(r.job, r.status) for r in rows] == [("job-r1", "success"), ("job-r2", "success")]
    parameters = [r.parameters for r in rows]
    assert [p if isinstance(p, dict) else json.loads(p) for p in parameters] == [
        {"run": "r1"},
        {"run": "r2"},
    ]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("bug in get_parameters" in m for m in messages) == 1  # logged once
    assert any(
        "dpt: the translator's get_parameters failed, dpt records the rest of the run: "
        "RuntimeError: bug in get_parameters" in m
        for m in messages
    ), messages
    # a subclass's super() chain: the parent's failure falls back, the child goes on
    assert UsersSubclass().get_parameters("r3") == {"run": "r3", "site": "lsst"}


def test_an_identity_override_that_raises_costs_its_record(
    dpt_env: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A default name would name another run: no fallback, the guard reports it."""
    guard = host_guard("the run goes on untracked", kit_log)
    with caplog.at_level(logging.WARNING, logger="dpt.kit-test"):
        assert guard("the run", UsersTranslator().record, dpt_core.get_tracker(), "bad-job") is None
    assert dpt_env.rows("SELECT job FROM invocations") == []
    assert (
        "dpt: the run failed, the run goes on untracked: RuntimeError: bug in get_job"
        in caplog.text
    )
    # neither are helper methods the adapter does not have, nor failures of the default
    with pytest.raises(RuntimeError, match="bug in a helper"):
        UsersTranslator().get_helper()
    with pytest.raises(ValueError, match="cannot describe an empty error"):
        UsersTranslator().get_error("")


def test_in_strict_mode_a_translator_failure_is_raised_after_the_rest_is_recorded(
    dpt_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DPT_STRICT", "1")
    dpt_core.plugin_api.reset()
    guard = host_guard("the run goes on untracked", kit_log)
    with pytest.raises(dpt_core.TrackingError, match="the translator's get_parameters failed"):
        guard("the run", UsersTranslator().record, dpt_core.get_tracker(), "r1")
    rows = dpt_env.rows("SELECT job, status FROM invocations")
    assert [(r.job, r.status) for r in rows] == [("job-r1", "success")]  # recorded first
    # outside a guarded call there is nothing to finish first: raised at once
    with pytest.raises(RuntimeError, match="bug in get_parameters"):
        UsersTranslator().get_parameters("r2")


def test_declaring_a_method_the_translator_lacks_is_an_error() -> None:
    with pytest.raises(TypeError, match=r"has no method\(s\) \['get_jbo'\]"):

        class Misspelt(kit.Translator, identity={"get_jbo"}):
            def get_job(self) -> str:
                return "job"


# -- time -----------------------------------------------------------------------------------


def test_as_utc_reads_what_orchestrators_hand_out(dpt_env: Any) -> None:
    utc = dt.datetime(2026, 1, 31, 12, 0, tzinfo=dt.UTC)

    class Pendulumish(dt.datetime):
        pass

    assert as_utc(None) is None
    assert as_utc(dt.datetime(2026, 1, 31, 12, 0)) == utc  # naive: read as UTC
    paris = dt.timezone(dt.timedelta(hours=1))
    converted = as_utc(dt.datetime(2026, 1, 31, 13, 0, tzinfo=paris))
    assert converted == utc and converted.utcoffset() == dt.timedelta(0)
    sub = as_utc(Pendulumish(2026, 1, 31, 12, 0, tzinfo=dt.UTC))
    assert type(sub) is dt.datetime and sub == utc
    assert as_utc(utc.timestamp()) == utc
    assert as_utc(int(utc.timestamp())) == utc
    assert as_utc("2026-01-31T12:00:00+00:00") == utc
    with pytest.raises(ValueError, match="'yesterday' is not ISO 8601"):
        as_utc("yesterday")
    with pytest.raises(TypeError, match="cannot read .* as a timestamp"):
        as_utc(object())
    with pytest.raises(TypeError):
        as_utc(True)
    # what the kit returns is what the tracker stores
    dpt_core.get_tracker().start(
        "times", orchestrator="test", started_at=as_utc(dt.datetime(2026, 1, 31, 12, 0))
    ).finish("success")
    (row,) = runs(dpt_env)
    stored = row.started_at
    if isinstance(stored, str):
        stored = dt.datetime.fromisoformat(stored)
    assert stored.replace(tzinfo=None) == utc.replace(tzinfo=None)


# -- runs open in this process --------------------------------------------------------------


def test_the_registry_of_running_invocations_is_bounded(dpt_env: Any) -> None:
    tracker = dpt_core.get_tracker()
    running: RunRegistry[str, Any] = RunRegistry(maxsize=3)
    for i in range(5):
        running.set(f"try-{i}", tracker.start("dag", task=f"t{i}", orchestrator="test"))
    assert len(running) == 3 and running.maxsize == 3
    assert "try-0" not in running and "try-1" not in running  # the oldest go first
    assert running.get("try-2") is not None
    running.set("try-5", tracker.start("dag", task="t5", orchestrator="test"))
    assert "try-2" in running and "try-3" not in running  # try-2 was used: try-3 went
    first = running["try-4"]
    assert running.add("try-4", object()) is first  # the first one wins
    for _key, handle in running.pop_where(lambda key, _: key != "try-5"):
        handle.finish("success")
    assert list(running) == ["try-5"]
    running.pop("try-5").finish("failed", error="boom")
    assert running.pop("try-5") is None and len(running) == 0
    statuses = {r.task: r.status for r in runs(dpt_env)}
    assert statuses == {
        "t0": "running",
        "t1": "running",
        "t2": "success",
        "t3": "running",
        "t4": "success",
        "t5": "failed",
    }
    with pytest.raises(ValueError, match="maxsize=0"):
        RunRegistry(0)


def test_the_registry_under_threads() -> None:
    running: RunRegistry[int, int] = RunRegistry(maxsize=100)

    def fill(offset: int) -> None:
        for i in range(1000):
            running.add(offset + i, i)
            running.get(offset + i // 2)

    threads = [threading.Thread(target=fill, args=(n * 10_000,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(running) == 100


# -- translators ----------------------------------------------------------------------------


def test_load_translator_by_name() -> None:
    assert load_translator(f"{__name__}.SurveyTranslator", Translator) is SurveyTranslator
    assert load_translator(f"{__name__}:SurveyTranslator", Translator) is SurveyTranslator
    with pytest.raises(ValueError, match=r"\[dpt\] translator = 'nowhere.Nope' cannot be imported"):
        load_translator("nowhere.Nope", Translator, setting="[dpt] translator")
    with pytest.raises(ValueError, match=r"does not name a subclass of \S*\.Translator"):
        load_translator(f"{__name__}.runs", Translator)
    with pytest.raises(ValueError, match="cannot be imported"):
        load_translator(f"{__name__}.Missing", Translator)


def test_the_active_translator() -> None:
    made: list[Translator] = []

    def factory() -> Translator:
        made.append(Translator())
        return made[-1]

    translators = TranslatorRegistry(Translator, factory)
    assert translators.active() is translators.active() is made[0]  # made once
    survey = SurveyTranslator()
    translators.register(survey)
    assert translators.active() is survey
    with pytest.raises(TypeError, match=r"must be a \S*\.Translator \(or a subclass\), got str"):
        translators.register("survey")  # type: ignore[arg-type]
    translators.clear()
    assert translators.active() is made[1]


# -- read-backs -----------------------------------------------------------------------------

ORCHESTRATOR_SETTING: contextvars.ContextVar[str] = contextvars.ContextVar("setting")


def test_background_read_backs_record_and_flush(dpt_env: Any) -> None:
    work = BackgroundWork("dpt-test-readback", workers=2)
    release = threading.Event()
    tracker = dpt_core.get_tracker()

    def read_back(n: int) -> None:
        release.wait()
        # runs in the submitter's context (orchestrators keep their API URL there)
        tracker.start("flow", task=f"{ORCHESTRATOR_SETTING.get()}-{n}", orchestrator="test").finish(
            "success"
        )

    ORCHESTRATOR_SETTING.set("api")
    futures = [work.submit(lambda n=n: read_back(n)) for n in range(3)]
    assert work.flush(timeout=0.05) is False  # still waiting
    release.set()
    assert work.flush() is True
    assert all(f.done() for f in futures)
    assert sorted(r.task for r in runs(dpt_env)) == ["api-0", "api-1", "api-2"]

    def strict_failure() -> None:
        raise dpt_core.TrackingError("read-back failed")

    work.submit(strict_failure)
    with pytest.raises(dpt_core.TrackingError, match="read-back failed"):
        work.flush()
    assert work.flush() is True  # raised once


def test_poll_until() -> None:
    reads: list[int] = []

    def read() -> int:
        reads.append(len(reads))
        return reads[-1]

    assert poll_until(read, lambda n: n >= 3, timeout=10, pause=0.001) == (3, True)
    assert reads == [0, 1, 2, 3]
    value, settled = poll_until(read, lambda n: False, timeout=0.05, pause=0.01, max_pause=0.01)
    assert settled is False and value == reads[-1] and len(reads) > 5


# -- what dpt_core does not need ------------------------------------------------------------


def test_the_kit_imports_no_orchestrator() -> None:
    code = (
        "import sys, dpt_core.adapter;"
        "print(sorted(m for m in ('airflow', 'prefect', 'dagster') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_dpt_core_works_without_deal(tmp_path: Any) -> None:
    code = (
        "import sys, warnings; sys.modules['deal'] = None\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import dpt_core\n"
        "    from dpt_core import contracts, uri\n"
        "print(contracts.ENABLED, uri.uri_to_path('file:///tmp/x'),"
        " [str(w.message)[:29] for w in caught if 'deal' in str(w.message)])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"DPT_CONTRACTS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert out.stdout.strip() == ("False /tmp/x [\"DPT_CONTRACTS=1 but 'deal' is\"]")


def test_variables_starting_with_reads_the_process_s_variables_of_that_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    for name in [k for k in os.environ if k.startswith("DPTKIT_")]:
        monkeypatch.delenv(name)
    assert kit.variables_starting_with("DPTKIT_") == {}
    monkeypatch.setenv("DPTKIT_RUN_ID", "run-7")
    monkeypatch.setenv("DPTKIT_TASK", "tâche")
    monkeypatch.setenv("NOT_DPTKIT_RUN_ID", "other")
    os.environb[b"DPTKIT_LATIN1"] = b"caf\xe9"  # (not UTF-8: decoded as os.environ does)
    try:
        assert kit.variables_starting_with("DPTKIT_") == {
            k: v for k, v in os.environ.items() if k.startswith("DPTKIT_")
        }
        assert kit.variables_starting_with("DPTKIT_")["DPTKIT_TASK"] == "tâche"
        assert set(kit.variables_starting_with("DPTKIT_")) == {
            "DPTKIT_RUN_ID",
            "DPTKIT_TASK",
            "DPTKIT_LATIN1",
        }
        monkeypatch.delenv("DPTKIT_RUN_ID")
        assert "DPTKIT_RUN_ID" not in kit.variables_starting_with("DPTKIT_")
    finally:
        del os.environb[b"DPTKIT_LATIN1"]
