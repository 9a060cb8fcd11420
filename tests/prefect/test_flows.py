"""Real Prefect flows against the session's Prefect server; assertions on the rows dpt recorded."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from prefect import flow, task, unmapped
from prefect.assets import Asset, AssetProperties, materialize
from prefect.context import AssetContext, TaskRunContext

import dpt_core
import dpt_prefect

DATA = Path(tempfile.mkdtemp(prefix="dpt-prefect-data-"))
atexit.register(shutil.rmtree, DATA, ignore_errors=True)
RAW = DATA / "raw.txt"
CAL = DATA / "cal.txt"
REPORT = DATA / "report.txt"

#: Task-run ids seen from inside the tasks, and attempt counters, reset by each test.
seen: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _reset() -> None:
    seen.clear()
    for path in (RAW, CAL, REPORT):
        path.unlink(missing_ok=True)


def note_task_run(name: str) -> None:
    context = TaskRunContext.get()
    assert context is not None
    seen.setdefault(name, []).append(str(context.task_run.id))


def flow_run_id(state: Any) -> str:
    return str(state.state_details.flow_run_id)


# -- tasks and flows ----------------------------------------------------------------------------


@task
def add(x: int, y: int = 1) -> int:
    note_task_run("add")
    return x + y


@task(**dpt_prefect.task_hooks())
def add_hooked(x: int, y: int = 1) -> int:
    note_task_run("add_hooked")
    return x + y


@task
def boom(message: str) -> None:
    raise RuntimeError(message)


@task
def after(value: Any) -> str:
    return "never runs"


@flow(**dpt_prefect.flow_hooks())
def arithmetic(a: int, b: str = "x") -> int:
    return add(a) + add(a, y=10)


@flow(**dpt_prefect.flow_hooks())
def failing(message: str) -> Any:
    upstream = boom.submit(message)
    downstream = after.submit(upstream)
    downstream.wait()
    return upstream.result()


class Crash(BaseException):
    """Not an Exception: Prefect reports the task run (and the flow run) as crashed."""


@task
def crashing_task() -> None:
    raise Crash("the machine went away")


@flow(**dpt_prefect.flow_hooks())
def crashing() -> None:
    add(1)
    crashing_task()


@task(retries=2)
def flaky(failures: int) -> str:
    seen["attempts"] = seen.get("attempts", 0) + 1
    if seen["attempts"] <= failures:
        raise ValueError(f"attempt {seen['attempts']} fails")
    return "ok"


@task(retries=2, **dpt_prefect.task_hooks())
def flaky_hooked(failures: int) -> str:
    seen["attempts"] = seen.get("attempts", 0) + 1
    if seen["attempts"] <= failures:
        raise ValueError(f"attempt {seen['attempts']} fails")
    return "ok"


@flow(**dpt_prefect.flow_hooks())
def retrying(failures: int, hooked: bool) -> str:
    return (flaky_hooked if hooked else flaky)(failures)


@task
def settings() -> dict[str, Any]:
    return {"gain": 1.5, "bands": ["g", "r"]}


@task(**dpt_prefect.task_hooks())
def configure(config: dict[str, Any], band: str) -> str:
    return f"{band}:{config['gain']}"


@flow(**dpt_prefect.flow_hooks())
def upstream_arguments() -> list[str]:
    config = settings.submit()
    futures = configure.map(unmapped(config), ["g", "r"])
    return [f.result() for f in futures]


@flow(**dpt_prefect.flow_hooks())
def mapping(values: list[int], hooked: bool) -> list[int]:
    futures = (add_hooked if hooked else add).map(values)
    return [f.result() for f in futures]


@materialize(
    Asset(
        key=RAW.as_uri(),
        properties=AssetProperties(name="raw frames", description="simulated raw data"),
    )
)
def make_raw() -> None:
    RAW.write_text("raw 1 2 3\n")


make_raw_hooked = make_raw.with_options(name="make_raw_hooked", **dpt_prefect.task_hooks())


@materialize(CAL.as_uri(), asset_deps=[RAW.as_uri()])
def make_cal() -> str:
    CAL.write_text(RAW.read_text().upper())
    return f"{CAL}"


@materialize(CAL.as_uri(), asset_deps=[RAW.as_uri()], **dpt_prefect.task_hooks())
def make_cal_hooked() -> str:
    CAL.write_text(RAW.read_text().upper())
    AssetContext.get().add_asset_metadata(CAL.as_uri(), {"rows": 1, "gain": 1.5})
    return f"{CAL}"


@materialize(REPORT.as_uri())
def make_report(calibrated: Any) -> None:
    REPORT.write_text("report\n")


@flow(**dpt_prefect.flow_hooks())
def assets(hooked: bool) -> None:
    (make_raw_hooked if hooked else make_raw)()
    calibrated = (make_cal_hooked if hooked else make_cal)()
    make_report(calibrated)


@task
def write_tracked(path: str) -> str:
    note_task_run("write_tracked")
    Path(path).write_text("tracked\n")
    dpt_core.track(path)
    return path


@task(**dpt_prefect.task_hooks())
def write_tracked_hooked(path: str) -> str:
    note_task_run("write_tracked_hooked")
    Path(path).write_text("tracked by a hooked task\n")
    dpt_core.track(Asset(key=Path(path).as_uri()))
    return path


@task
def derive(source: str, target: str) -> str:
    note_task_run("derive")
    with dpt_core.invocation() as inv:
        inv.read(source)
        Path(target).write_text(Path(source).read_text() * 2)
        inv.write(target)
    return target


@flow(**dpt_prefect.flow_hooks())
def tracking(directory: str) -> None:
    first = write_tracked(f"{directory}/a.txt")
    write_tracked_hooked(f"{directory}/b.txt")
    derive(first, f"{directory}/c.txt")


@flow(**dpt_prefect.flow_hooks())
def child(n: int) -> int:
    return add(n)


@flow(**dpt_prefect.flow_hooks())
def parent(n: int) -> int:
    return child(n) + add(0)


@flow
def untracked_parent(n: int) -> int:
    return child(n)


# -- tests --------------------------------------------------------------------------------------


def test_a_successful_flow_run_and_its_task_runs(run_flow: Any, recorded: Any) -> None:
    state = run_flow(arithmetic, 2, b="y")
    assert state.is_completed()

    flow_row = recorded.one(task=None)
    assert flow_row["orchestrator"] == "prefect"
    assert flow_row["job"] == "arithmetic"
    assert flow_row["parameters"] == {"a": 2, "b": "y"}
    assert flow_row["status"] == "success"
    assert flow_row["external_id"] == flow_run_id(state)
    assert flow_row["uuid"] == dpt_core.invocation_uuid("prefect", "flow-run", flow_run_id(state))
    assert flow_row["parent_id"] is None
    assert flow_row["code_version"] == arithmetic.version
    assert flow_row["environment_id"] is not None
    assert flow_row["error"] is None
    assert flow_row["started_at"] is not None and flow_row["ended_at"] is not None

    tasks = recorded.invocations(task="add")
    assert len(tasks) == 2
    assert {t["external_id"] for t in tasks} == set(seen["add"])
    for row in tasks:
        assert row["job"] == "arithmetic"
        assert row["parent_id"] == flow_row["id"]
        assert row["status"] == "success"
        assert row["uuid"] == dpt_core.invocation_uuid("prefect", "task-run", row["external_id"])
        assert row["started_at"] is not None and row["ended_at"] is not None
        # Read back from the API: the argument values were never there.
        assert row["parameters"] == {}
        # The task ran in the flow's process: its environment is that process's.
        assert row["environment_id"] == flow_row["environment_id"]
    assert len(recorded.invocations()) == 3


def test_a_failing_flow_run(run_flow: Any, recorded: Any) -> None:
    state = run_flow(failing, "kaput")
    assert state.is_failed()

    flow_row = recorded.one(task=None)
    assert flow_row["status"] == "failed"
    assert "kaput" in flow_row["error"]
    failed = recorded.one(task="boom")
    assert failed["status"] == "failed"
    assert failed["parent_id"] == flow_row["id"]
    assert "RuntimeError" in failed["error"] and "kaput" in failed["error"]
    # Its downstream task run never started: Prefect left it Pending (NotReady).
    skipped = recorded.one(task="after")
    assert skipped["status"] == "skipped"
    assert skipped["parent_id"] == flow_row["id"]


def test_a_crashing_task_run(run_flow: Any, recorded: Any) -> None:
    with pytest.raises(Crash):
        crashing()
    assert dpt_prefect.flush(timeout=60)

    flow_row = recorded.one(task=None)
    assert flow_row["job"] == "crashing"
    assert flow_row["status"] == "crashed"
    assert "the machine went away" in flow_row["error"]
    crashed = recorded.one(task="crashing_task")
    assert crashed["status"] == "crashed"
    assert crashed["parent_id"] == flow_row["id"]
    assert "Crash: the machine went away" in crashed["error"]
    assert recorded.one(task="add")["status"] == "success"


@pytest.mark.parametrize("hooked", [False, True], ids=["read-back", "task-hooks"])
def test_a_retried_task_run(run_flow: Any, recorded: Any, hooked: bool) -> None:
    state = run_flow(retrying, 2, hooked)
    assert state.is_completed()
    name = "flaky_hooked" if hooked else "flaky"

    flow_row = recorded.one(task=None)
    task_row = recorded.one(task=name)
    assert task_row["status"] == "success"
    assert task_row["parent_id"] == flow_row["id"]
    assert task_row["error"] is None

    attempts = [recorded.one(task=f"{name} attempt {n}") for n in (1, 2, 3)]
    assert [a["status"] for a in attempts] == ["failed", "failed", "success"]
    assert all(a["parent_id"] == task_row["id"] for a in attempts)
    assert [a["external_id"] for a in attempts] == [
        f"{task_row['external_id']}#{n}" for n in (1, 2, 3)
    ]
    assert [a["parameters"] for a in attempts] == [{"attempt": n} for n in (1, 2, 3)]
    assert all(a["started_at"] is not None and a["ended_at"] is not None for a in attempts)
    assert attempts[0]["started_at"] <= attempts[1]["started_at"] <= attempts[2]["started_at"]
    if hooked:
        # Inside the task's process the failed attempts' exceptions are known.
        assert attempts[0]["error"] == "ValueError: attempt 1 fails"
        assert attempts[1]["error"] == "ValueError: attempt 2 fails"
        assert task_row["parameters"] == {"failures": 2}
    else:
        assert "attempt 1 failed" in attempts[0]["error"]
    assert attempts[2]["error"] is None
    assert len(recorded.invocations()) == 5


def test_a_task_run_that_fails_after_its_retries(run_flow: Any, recorded: Any) -> None:
    state = run_flow(retrying, 5, True)
    assert state.is_failed()
    task_row = recorded.one(task="flaky_hooked")
    assert task_row["status"] == "failed"
    assert "attempt 3 fails" in task_row["error"]
    attempts = [recorded.one(task=f"flaky_hooked attempt {n}") for n in (1, 2, 3)]
    assert [a["status"] for a in attempts] == ["failed", "failed", "failed"]
    assert recorded.one(task=None)["status"] == "failed"


@pytest.mark.parametrize("hooked", [False, True], ids=["read-back", "task-hooks"])
def test_a_mapped_task(run_flow: Any, recorded: Any, hooked: bool) -> None:
    state = run_flow(mapping, [3, 4, 5], hooked)
    assert state.is_completed()
    name = "add_hooked" if hooked else "add"

    flow_row = recorded.one(task=None)
    assert flow_row["parameters"] == {"values": [3, 4, 5], "hooked": hooked}
    runs = recorded.invocations(task=name)
    assert len(runs) == 3
    assert {r["external_id"] for r in runs} == set(seen[name])
    assert all(r["parent_id"] == flow_row["id"] and r["status"] == "success" for r in runs)
    if hooked:
        assert sorted(r["parameters"]["x"] for r in runs) == [3, 4, 5]
        assert all(r["parameters"]["y"] == 1 for r in runs)
        assert all(r["environment_id"] is not None for r in runs)
    else:
        assert all(r["parameters"] == {} for r in runs)
    assert len(recorded.invocations()) == 4


def test_arguments_from_upstream_task_results(run_flow: Any, recorded: Any) -> None:
    state = run_flow(upstream_arguments)
    assert state.is_completed()
    runs = recorded.invocations(task="configure")
    config = {"gain": 1.5, "bands": ["g", "r"]}
    assert sorted((r["parameters"]["band"], r["parameters"]["config"] == config) for r in runs) == [
        ("g", True),
        ("r", True),
    ]
    assert recorded.one(task="settings")["parameters"] == {}


@pytest.mark.parametrize("hooked", [False, True], ids=["read-back", "task-hooks"])
def test_materialised_assets_with_dependencies(run_flow: Any, recorded: Any, hooked: bool) -> None:
    state = run_flow(assets, hooked)
    assert state.is_completed()

    raw_task = recorded.one(task="make_raw_hooked" if hooked else "make_raw")
    cal_task = recorded.one(task="make_cal_hooked" if hooked else "make_cal")
    report_task = recorded.one(task="make_report")

    (raw,) = recorded.versions(RAW.as_uri())
    (cal,) = recorded.versions(CAL.as_uri())
    (report,) = recorded.versions(REPORT.as_uri())
    # file:// keys are files: dpt hashed them.
    assert raw["content_hash"] == dpt_core.hash_file(RAW)
    assert cal["content_hash"] == dpt_core.hash_file(CAL)
    assert raw["size"] == RAW.stat().st_size
    assert raw["produced_by_id"] == raw_task["id"]
    assert cal["produced_by_id"] == cal_task["id"]
    assert report["produced_by_id"] == report_task["id"]

    # asset_deps are parents; an upstream materialisation passed as an argument is one too.
    assert recorded.edges() == {
        (RAW.as_uri(), CAL.as_uri(), cal_task["id"]),
        (CAL.as_uri(), REPORT.as_uri(), report_task["id"]),
    }
    assert recorded.inputs(cal_task["id"]) == {RAW.as_uri()}

    assert raw["metadata"] == {
        "prefect_asset": {
            "key": RAW.as_uri(),
            "name": "raw frames",
            "description": "simulated raw data",
        }
    }
    if not hooked:
        assert cal["metadata"] == {"prefect_asset": {"key": CAL.as_uri()}}
    else:
        # The task hooks see the materialisation metadata the task added.
        assert cal["metadata"] == {"prefect_asset": {"key": CAL.as_uri()}, "rows": 1, "gain": 1.5}


def test_track_inside_tasks_attaches_to_the_task_run(
    run_flow: Any, recorded: Any, tmp_path: Path
) -> None:
    state = run_flow(tracking, str(tmp_path))
    assert state.is_completed()

    flow_row = recorded.one(task=None)
    plain = recorded.one(task="write_tracked")
    hooked = recorded.one(task="write_tracked_hooked")
    derived = recorded.one(task="derive")
    assert {plain["external_id"]} == set(seen["write_tracked"])
    assert {hooked["external_id"]} == set(seen["write_tracked_hooked"])
    for row in (plain, hooked, derived):
        assert row["parent_id"] == flow_row["id"]
        assert row["status"] == "success"
        assert row["job"] == "tracking"
    # Started from inside the task (track() asked what runs here): arguments are known.
    assert plain["parameters"] == {"path": f"{tmp_path}/a.txt"}
    assert hooked["parameters"] == {"path": f"{tmp_path}/b.txt"}

    (a,) = recorded.versions((tmp_path / "a.txt").as_uri())
    (b,) = recorded.versions((tmp_path / "b.txt").as_uri())
    (c,) = recorded.versions((tmp_path / "c.txt").as_uri())
    assert a["produced_by_id"] == plain["id"]
    assert b["produced_by_id"] == hooked["id"]
    assert c["produced_by_id"] == derived["id"]
    assert recorded.edges() == {
        ((tmp_path / "a.txt").as_uri(), (tmp_path / "c.txt").as_uri(), derived["id"])
    }
    # One row per task run: nothing opened a one-off invocation of its own.
    assert len(recorded.invocations()) == 4


def test_a_subflow_is_a_child_of_its_parent_flow(run_flow: Any, recorded: Any) -> None:
    state = run_flow(parent, 4)
    assert state.is_completed()

    parent_row = recorded.one(job="parent", task=None)
    child_row = recorded.one(job="child", task=None)
    assert child_row["parent_id"] == parent_row["id"]
    assert child_row["parameters"] == {"n": 4}
    assert child_row["status"] == "success"
    assert recorded.one(job="child", task="add")["parent_id"] == child_row["id"]
    assert recorded.one(job="parent", task="add")["parent_id"] == parent_row["id"]
    # The task run Prefect keeps for the subflow call is the child flow run, not a task.
    assert recorded.invocations(task="child") == []
    assert len(recorded.invocations()) == 4


def test_a_subflow_of_an_untracked_flow(run_flow: Any, recorded: Any) -> None:
    state = run_flow(untracked_parent, 1)
    assert state.is_completed()
    child_row = recorded.one(job="child", task=None)
    assert child_row["parent_id"] is None
    assert recorded.one(task="add")["parent_id"] == child_row["id"]
    assert len(recorded.invocations()) == 2


def test_blocking_read_back(run_flow: Any, recorded: Any) -> None:
    @flow(name="blocking", **dpt_prefect.flow_hooks(background=False))
    def blocking(a: int) -> int:
        return add(a)

    blocking(1)
    # No flush: the completion hook recorded the task runs before the flow returned.
    flow_row = recorded.one(task=None)
    assert flow_row["status"] == "success"
    assert recorded.one(task="add")["parent_id"] == flow_row["id"]
