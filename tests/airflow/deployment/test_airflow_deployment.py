"""A real Airflow deployment (scheduler, dag processor, API server, LocalExecutor, PostgreSQL)
runs a DAG; what dpt recorded is read back from its own PostgreSQL database.

``dag.test()`` runs every task in one process and hid what a worker does: there the
listener opens a try before Airflow exports ``AIRFLOW_CTX_*``, and the task runner
sets ``_AIRFLOW_PARSING_CONTEXT_*`` per task. See airflow_deployment.py for the steps.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from dpt_core.testing import POSTGRES_URL, require_server

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture(scope="module", params=["local", "celery", "local+drainer", "local+slow"])
def report(request: Any) -> Any:
    """The deployment with the LocalExecutor (its workers are multiprocessing children of
    the scheduler) and with the CeleryExecutor (an ``airflow celery worker``, whose pool
    processes are billiard's and never load dpt: a task process is a fork dpt cannot see,
    as under the Kubernetes executor), each task process writing its own events; as
    docs/airflow.md sets up workers to keep the database off the task's path: every
    process with DPT_WRITE=deferred, one ``dpt spool drain --follow`` writing; and on a
    slow host (slow_host/sitecustomize.py: writer threads slow to claim, slow writes),
    where the processes' writers and replays meet in the spool."""
    require_server(POSTGRES_URL)
    import airflow_deployment

    executor, _, variant = request.param.partition("+")
    if executor == "celery":
        require_server(airflow_deployment.REDIS_URL)
    extra_env = None
    if variant == "slow":
        path = [str(Path(__file__).with_name("slow_host")), os.environ.get("PYTHONPATH", "")]
        extra_env = {"DPT_TEST_SLOW_HOST": "1", "PYTHONPATH": os.pathsep.join(filter(None, path))}
    return airflow_deployment.run(
        extra_env=extra_env, drainer=variant == "drainer", executor=executor
    )


def test_every_task_process_writes_its_events_before_it_exits(report: Any) -> None:
    """A task process ends with os._exit: no exit handler runs. Its writer stays in the
    background and the listener flushes it when the task runner stops (or, with a
    drainer, it only spools): once every process stopped, nothing is left in the spool."""
    expected = "deferred" if report.drainer else "background"
    assert report.task_write_modes == {
        name: expected for name in ("calibrate_1", "calibrate_2", "calibrate_3", "extract")
    }
    assert report.spooled_left == 0


def test_the_write_mode_asked_for_is_the_one_that_ran(report: Any) -> None:
    if not report.drainer:
        assert report.write_mode == "sync"
        assert report.drained is None
        return
    assert report.write_mode == "deferred"
    # everything recorded went through the drainer: the dag run's two events and at least
    # a start and an end per try (the tries are checked below)
    assert report.drained is not None and report.drained >= 2 + 2 * len(report.airflow_tries)


def test_every_try_is_recorded_once_as_airflow_ran_it(report: Any) -> None:
    assert report.dag_run_state == "success"
    # 1 extract, 3 mapped calibrates, summarise twice (its first try fails), 1 report,
    # 1 deferred sensor (one try, two task processes)
    assert len(report.airflow_tries) == 8
    assert {k: v["status"] for k, v in report.dpt_tries.items()} == {
        key: {"up_for_retry": "failed"}.get(state, state)
        for key, state in report.airflow_tries.items()
    }, ([(k, v["error"]) for k, v in report.dpt_tries.items()], report.dpt_warnings)
    assert report.dpt_dag_runs == [
        {"run_id": "dpt_deployment_run_1", "status": "success", "ended": True}
    ]
    assert report.running == 0


def test_each_try_records_its_own_airflow_context(report: Any) -> None:
    for key, record in report.dpt_tries.items():
        task_id = key.split("[", 1)[0]
        try_number = key.rsplit(" ", 1)[1]
        variables = record["variables"]
        assert variables["AIRFLOW_CTX_DAG_ID"] == "dpt_deployment", key
        assert variables["AIRFLOW_CTX_TASK_ID"] == task_id, key
        assert variables["AIRFLOW_CTX_TRY_NUMBER"] == try_number, key
        assert variables["AIRFLOW_CTX_DAG_RUN_ID"] == "dpt_deployment_run_1", key
        # the worker's parsing context is this try's own, and per run, not per environment
        assert variables.get("_AIRFLOW_PARSING_CONTEXT_TASK_ID") in (None, task_id), key


def test_all_tries_on_this_host_share_one_environment(report: Any) -> None:
    environments = {r["environment_id"] for r in report.dpt_tries.values()}
    assert len(environments) == 1 and None not in environments, report.environment_differences
    assert {r["host"] for r in report.dpt_tries.values()} == {os.uname().nodename}
    assert report.environments == 1, report.environment_differences
    per_run = [
        name
        for name in report.environment_variable_names
        if name.startswith(("AIRFLOW_CTX_", "_AIRFLOW_PARSING_CONTEXT_"))
    ]
    assert per_run == []


def test_outputs_and_the_bash_command(report: Any) -> None:
    tries = report.dpt_tries
    assert [u.rsplit("/", 1)[1] for u in tries["extract[-1] try 1"]["outputs"]] == ["frames.csv"]
    assert tries["summarise[-1] try 1"]["outputs"] == []  # a failed try's outlets are not products
    assert [u.rsplit("/", 1)[1] for u in tries["summarise[-1] try 2"]["outputs"]] == ["summary.csv"]
    command = tries["report[-1] try 1"]["command"]
    assert command.startswith("echo chips=3 --token ")  # rendered in the worker
    assert "hunter3" not in command


def test_a_deferred_try_stays_running_between_its_task_processes(report: Any) -> None:
    """Its first task process exits when it defers: the try is handed over, not closed as
    crashed by that process's exit nor by another dpt process on the host, and the task
    process that resumes it owns it and records its end."""
    assert report.while_deferred, "the sensor was never seen deferred with a dpt record"
    assert set(report.while_deferred) == {"running"}, report.while_deferred
    assert report.dpt_tries["wait[-1] try 1"]["status"] == "success"
    assert (report.deferred_try_process or "").startswith("linux:")  # the resuming process
