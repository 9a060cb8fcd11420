"""The corpus: Prefect's workflow guides, written as the guides write them.

"How to run work concurrently" (``.submit``, futures, ``wait``, futures passed between
tasks, ``.map``, ``asyncio``), upstream dependencies without data (``wait_for``),
nested flows, "How to automatically rerun your workflow when it fails" (flow and task
retries, a retry condition) and failures, each with dpt's one line on the flows.
Sleeps are shortened and the guide's random HTTP failure is made deterministic; where
two examples share a name, the later one gets a suffix. Each test asserts exactly the
runs dpt recorded (job, task, status, parent, attempts) and that no product was.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from prefect import flow, task
from prefect.futures import wait

import dpt_prefect

#: How often each retried task ran, reset by each test that counts.
calls: Counter[str] = Counter()

# -- "Using .submit" -------------------------------------------------------------------------


@task
def stop_at_floor(floor: int):  # type: ignore[no-untyped-def]
    print(f"elevator moving to floor {floor}")
    time.sleep(floor / 100)
    print(f"elevator stops on floor {floor}")


@flow(**dpt_prefect.flow_hooks())
def elevator():  # type: ignore[no-untyped-def]
    floors = []
    for floor in range(3, 0, -1):
        floors.append(stop_at_floor.submit(floor))
    wait(floors)


# -- "Handling futures" and "Passing futures between tasks" ----------------------------------


@task
def cool_task():  # type: ignore[no-untyped-def]
    return "sup"


@flow(**dpt_prefect.flow_hooks())
def my_workflow():  # type: ignore[no-untyped-def]
    future = cool_task.submit()
    result = future.result()
    print(result)


@flow(**dpt_prefect.flow_hooks())
def my_workflow_waiting_for_many():  # type: ignore[no-untyped-def]
    futures = [cool_task.submit() for _ in range(3)]
    wait(futures)


@task
def what_did_cool_task_say(what_it_said: str):  # type: ignore[no-untyped-def]
    return f"cool task said {what_it_said}"


@flow(**dpt_prefect.flow_hooks())
def my_workflow_passing_futures():  # type: ignore[no-untyped-def]
    future = cool_task.submit()
    print(what_did_cool_task_say(future))


# -- "Using .map" ----------------------------------------------------------------------------


@flow(**dpt_prefect.flow_hooks())
def elevator_map():  # type: ignore[no-untyped-def]
    floors = list(range(3, 0, -1))
    floors = stop_at_floor.map(floors)
    wait(floors)


# -- "Using asyncio" ---------------------------------------------------------------------------


@task
async def stop_at_floor_async(floor: int):  # type: ignore[no-untyped-def]
    print(f"elevator moving to floor {floor}")
    await asyncio.sleep(floor / 100)
    print(f"elevator stops on floor {floor}")


@flow(**dpt_prefect.flow_hooks())
async def elevator_async():  # type: ignore[no-untyped-def]
    floors = list(range(3, 0, -1))
    await asyncio.gather(*[stop_at_floor_async(floor) for floor in floors])


# -- upstream dependencies without data: wait_for ----------------------------------------------


@task
def load_table() -> None:
    pass


@task
def refresh_dashboard() -> None:
    pass


@flow(**dpt_prefect.flow_hooks())
def ordered():  # type: ignore[no-untyped-def]
    loaded = load_table.submit()
    refreshed = refresh_dashboard.submit(wait_for=[loaded])
    refreshed.wait()


# -- nested flows ---------------------------------------------------------------------------


@task
def print_hello(name: str) -> str:
    return f"Hello {name}!"


@flow(**dpt_prefect.flow_hooks())
def hello_subflow(name: str) -> str:
    return print_hello(name)


@flow(**dpt_prefect.flow_hooks())
def hello_world(names: list[str]) -> list[str]:
    return [hello_subflow(name) for name in names]


# -- "How to automatically rerun your workflow when it fails" -----------------------------------


@flow(retries=1, retry_delay_seconds=0, **dpt_prefect.flow_hooks())
def troublesome_workflow():  # type: ignore[no-untyped-def]
    calls["troublesome_workflow"] += 1
    raise Exception("oopsie daisy")


@task
def consistent_task() -> dict:  # type: ignore[type-arg]
    print("I won't rerun even if the task after me fails")
    return {}


@task(retries=4, retry_delay_seconds=0)
def mercurial_task() -> dict:  # type: ignore[type-arg]
    # Fails the first time (the guide's example fails half of the time, over HTTP)
    calls["mercurial_task"] += 1
    if calls["mercurial_task"] == 1:
        raise RuntimeError("Server error '500 INTERNAL SERVER ERROR'")
    return {}


@flow(**dpt_prefect.flow_hooks())
def my_workflow_with_retries():  # type: ignore[no-untyped-def]
    consistent_task()
    mercurial_task()


class NotFound(Exception):
    pass


def retry_handler(task, task_run, state) -> bool:  # type: ignore[no-untyped-def]
    """Retry handler that skips retries if the error says 404 (the guide checks HTTP codes)."""
    try:
        state.result()
    except NotFound:
        return False
    except Exception:
        return True
    return True


@task(retries=1, retry_condition_fn=retry_handler)
def api_call_task(url):  # type: ignore[no-untyped-def]
    raise NotFound(f"404 for {url}")


@flow(**dpt_prefect.flow_hooks())
def my_workflow_with_condition(url):  # type: ignore[no-untyped-def]
    api_call_task(url=url)


# -- helpers ------------------------------------------------------------------------------------


def runs(recorded: Any) -> list[tuple[str, str | None, str, str | None]]:
    """(job, task, status, parent's task or job) of every recorded run, sorted."""
    rows = recorded.invocations()
    by_id = {r["id"]: r for r in rows}
    out = []
    for r in rows:
        parent = by_id.get(r["parent_id"])
        parent_name = None if parent is None else (parent["task"] or parent["job"])
        out.append((r["job"], r["task"], r["status"], parent_name))
    return sorted(out, key=str)


def assert_no_products(recorded: Any) -> None:
    assert recorded.env.scalar("SELECT count(*) FROM data_products") == 0
    assert recorded.edges() == set()


# -- the tests ------------------------------------------------------------------------------


def test_submit_and_wait(run_flow: Any, recorded: Any) -> None:
    assert run_flow(elevator).is_completed()
    assert runs(recorded) == sorted(
        [("elevator", None, "success", None)]
        + [("elevator", "stop_at_floor", "success", "elevator")] * 3,
        key=str,
    )
    assert_no_products(recorded)


def test_handling_futures(run_flow: Any, recorded: Any) -> None:
    assert run_flow(my_workflow).is_completed()
    assert runs(recorded) == [
        ("my-workflow", "cool_task", "success", "my-workflow"),
        ("my-workflow", None, "success", None),
    ]
    assert_no_products(recorded)


def test_waiting_for_many_futures(run_flow: Any, recorded: Any) -> None:
    assert run_flow(my_workflow_waiting_for_many).is_completed()
    job = "my-workflow-waiting-for-many"
    assert runs(recorded) == sorted(
        [(job, None, "success", None)] + [(job, "cool_task", "success", job)] * 3, key=str
    )


def test_passing_futures_between_tasks(run_flow: Any, recorded: Any) -> None:
    assert run_flow(my_workflow_passing_futures).is_completed()
    job = "my-workflow-passing-futures"
    assert runs(recorded) == sorted(
        [
            (job, None, "success", None),
            (job, "cool_task", "success", job),
            (job, "what_did_cool_task_say", "success", job),
        ],
        key=str,
    )
    assert_no_products(recorded)


def test_map(run_flow: Any, recorded: Any) -> None:
    assert run_flow(elevator_map).is_completed()
    assert runs(recorded) == sorted(
        [("elevator-map", None, "success", None)]
        + [("elevator-map", "stop_at_floor", "success", "elevator-map")] * 3,
        key=str,
    )
    assert_no_products(recorded)


def test_asyncio(recorded: Any) -> None:
    asyncio.run(elevator_async())
    assert dpt_prefect.flush(timeout=60)
    assert runs(recorded) == sorted(
        [("elevator-async", None, "success", None)]
        + [("elevator-async", "stop_at_floor_async", "success", "elevator-async")] * 3,
        key=str,
    )


def test_wait_for(run_flow: Any, recorded: Any) -> None:
    assert run_flow(ordered).is_completed()
    assert runs(recorded) == [
        ("ordered", "load_table", "success", "ordered"),
        ("ordered", "refresh_dashboard", "success", "ordered"),
        ("ordered", None, "success", None),
    ]
    load = recorded.one(task="load_table")
    refresh = recorded.one(task="refresh_dashboard")
    assert load["ended_at"] <= refresh["started_at"]
    assert_no_products(recorded)


def test_nested_flows(run_flow: Any, recorded: Any) -> None:
    assert run_flow(hello_world, ["Marvin", "Ford"]).is_completed()
    assert runs(recorded) == sorted(
        [("hello-world", None, "success", None)]
        + [("hello-subflow", None, "success", "hello-world")] * 2
        + [("hello-subflow", "print_hello", "success", "hello-subflow")] * 2,
        key=str,
    )
    subflows = recorded.invocations(job="hello-subflow", task=None)
    assert sorted(r["parameters"]["name"] for r in subflows) == ["Ford", "Marvin"]


def test_flow_retries(run_flow: Any, recorded: Any) -> None:
    calls.clear()
    state = run_flow(troublesome_workflow)
    assert state.is_failed()
    assert calls["troublesome_workflow"] == 2
    # Both attempts are one flow run, one invocation: failed with the last error.
    (row,) = recorded.invocations()
    assert (row["job"], row["task"], row["status"]) == ("troublesome-workflow", None, "failed")
    assert "oopsie daisy" in row["error"]


def test_task_retries(run_flow: Any, recorded: Any) -> None:
    calls.clear()
    assert run_flow(my_workflow_with_retries).is_completed()
    job = "my-workflow-with-retries"
    assert runs(recorded) == sorted(
        [
            (job, None, "success", None),
            (job, "consistent_task", "success", job),
            (job, "mercurial_task", "success", job),
            (job, "mercurial_task attempt 1", "failed", "mercurial_task"),
            (job, "mercurial_task attempt 2", "success", "mercurial_task"),
        ],
        key=str,
    )


def test_retry_condition(run_flow: Any, recorded: Any) -> None:
    state = run_flow(my_workflow_with_condition, "https://example.invalid/missing")
    assert state.is_failed()
    job = "my-workflow-with-condition"
    # The condition refused the retry: one attempt, no attempt children.
    assert runs(recorded) == [
        (job, "api_call_task", "failed", job),
        (job, None, "failed", None),
    ]
    assert (
        "NotFound: 404 for https://example.invalid/missing"
        in (recorded.one(task="api_call_task")["error"])
    )
