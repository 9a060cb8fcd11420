"""Airflow's OpenLineage provider posting to a real ``dpt serve``, next to dpt's listener.

A real ``dpt serve`` (subprocess, a free port) records into the test's dpt database;
``airflow dags test`` runs tests/airflow/dags/openlineage_provider_dags.py in a process
of its own with both listeners on: dpt's (the entry-point plugin) and the provider's,
its HTTP transport pointed at the server (``[openlineage] transport``) and its task
events emitted on a thread the task runner waits for (``execute_in_thread``), so every
task event has reached the server when the task ends. The provider's dag-run events go
through its process pool, drained before the process exits. What the server spooled
(answered 202) is read once its idle replay has emptied the spool.

Asserted: one dpt run per task try and one per dag run, not two; the provider's run ids
linked; the statuses; dpt's environment and command kept; inputs and outputs, including
those only the provider's extractors know; one version per file.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dpt_core
from dpt_core.uri import normalize_uri

DAG_ID = "dpt_openlineage_provider"


class Server:
    """A ``dpt serve`` process on a free port."""

    def __init__(self, environ: dict[str, str], directory: Path) -> None:
        self.log = directory / "serve.out"
        self.errors = directory / "serve.err"
        with open(self.log, "wb") as out, open(self.errors, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dpt_core.cli", "serve", "--port", "0"],
                stdout=out,
                stderr=err,
                env=environ,
            )
        self.url = self._url()

    def _url(self) -> str:
        while True:  # the server prints its URL once it listens
            for line in self.log.read_text(errors="replace").splitlines():
                if line.startswith("dpt serve: http"):
                    return line.split()[2].rstrip("/")
            if self.proc.poll() is not None:
                raise AssertionError(f"dpt serve exited: {self.errors.read_text()}")
            time.sleep(0.05)

    def settle(self, within: float = 180.0) -> dict[str, Any]:
        """Wait until nothing waits in the server's spool: a post the server answered 202
        (spooled: on a loaded host SQLite can stay locked by the listener's writes past
        the server's timeout), or a listener's events its process left there at exit,
        is in the database only once the server's idle replay has written it."""
        deadline = time.monotonic() + within
        while True:
            with urllib.request.urlopen(f"{self.url}/api/health", timeout=30) as answer:
                health: dict[str, Any] = json.load(answer)
            if health["spool"]["events"] == 0 or time.monotonic() > deadline:
                return health
            time.sleep(0.5)

    def logs(self) -> str:
        return f"dpt serve's log:\n{self.errors.read_text(errors='replace')[-4000:]}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


@pytest.fixture
def dpt_serve(dpt_env: Any, tmp_path: Path) -> Iterator[Server]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OPENLINEAGE")}
    server = Server(environ, tmp_path)
    yield server
    server.close()


def run_or_dump_stacks(
    command: list[str], environ: dict[str, str], server: Server, within: float = 600.0
) -> str:
    """Run ``command`` to its end and return its output. A run that has not ended after
    600 s (one is seconds here) fails with every thread's stack in each of its processes
    (faulthandler, on SIGABRT to the process group) and the server's log: what it waits
    for is then in the CI log, not lost with a bare timeout."""
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**environ, "PYTHONFAULTHANDLER": "1"},
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGABRT)
        try:
            out, err = proc.communicate(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(
            f"{command} had not ended after {within:.0f} s; its stacks:\n{err[-20000:]}\n"
            f"its output:\n{out[-4000:]}\n{server.logs()}"
        )
    return out + err


def rows(env: Any, sql: str, **params: Any) -> list[Any]:
    return env.rows(sql, **params)


def as_dict(value: Any) -> dict[str, Any]:
    return (json.loads(value) if isinstance(value, str) else value) or {}


def test_a_task_try_reported_by_the_provider_and_by_dpt_is_one_run(dpt_env, dpt_serve, data_dir):
    (data_dir / "ol_raw.csv").write_text("alpha\nbeta\n")
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OPENLINEAGE")},
        # The client gives up on a post after 5 s by default; on a loaded CI host the
        # server's first answer (engine, migrations check, SQLite shared with the
        # listener's writes) can take longer, and the provider then drops the event.
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "http", "url": dpt_serve.url, "timeout": 60}
        ),
        "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "True",
        # The task runner waits for that thread 10 s by default, then leaves it running; on
        # a loaded host a post can take longer, and a thread left posting (and logging)
        # when the provider forks its process pool at the dag run's end could leave the
        # pool's worker a lock it never gets back. Wait for it to the end.
        "AIRFLOW__OPENLINEAGE__EXECUTION_TIMEOUT": "600",
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "survey-airflow",
    }
    airflow = Path(sys.executable).with_name("airflow")
    log = run_or_dump_stacks([str(airflow), "dags", "test", DAG_ID], environ, dpt_serve)
    assert "Successfully emitted OpenLineage" in log, log[-4000:]
    assert "Failed to emit OpenLineage" not in log, log[-4000:]
    health = dpt_serve.settle()
    assert health["spool"] == {"events": 0, "bad_files": 0}, (health, dpt_serve.logs())

    runs = rows(
        dpt_env,
        "SELECT uuid, orchestrator, job, task, status, parent_id, environment_id, command, "
        "parameters, external_id, error, id FROM invocations ORDER BY id",
    )
    by_task = {r.task: r for r in runs}
    # one run per task try and one for the dag run: not one more per reporter
    assert sorted((r.job, r.task or "") for r in runs) == [
        (DAG_ID, ""),
        (DAG_ID, "explode"),
        (DAG_ID, "extract"),
        (DAG_ID, "publish"),
        (DAG_ID, "transform"),
    ], (runs, dpt_serve.logs(), log[-4000:])
    assert {r.orchestrator for r in runs} == {"airflow"}
    dag_run = by_task[None]
    for task_id in ("extract", "transform", "publish", "explode"):
        run = by_task[task_id]
        parameters = as_dict(run.parameters)
        # the provider's run id is linked to dpt's run: its events were recorded on it
        assert parameters.get("openlineage/run_id"), (task_id, parameters, dpt_serve.logs())
        assert parameters["openlineage/job_namespace"] == "survey-airflow"
        assert parameters["try_number"] == 1  # dpt's listener's parameters, merged
        assert run.parent_id == dag_run.id
        assert run.environment_id is not None  # dpt's own record of where it ran
        assert run.uuid == dpt_core.invocation_uuid(
            "airflow", "task", DAG_ID, dag_run.external_id, task_id, -1, 1
        )
    assert {t: by_task[t].status for t in ("extract", "transform", "publish", "explode")} == {
        "extract": "success",
        "transform": "success",
        "publish": "success",
        "explode": "failed",
    }
    assert "boom" in by_task["explode"].error
    assert dag_run.status == "failed"
    assert dag_run.uuid == dpt_core.invocation_uuid(
        "airflow", "dag_run", DAG_ID, dag_run.external_id
    )
    assert as_dict(dag_run.parameters).get("openlineage/run_id")
    assert "tr a-z A-Z" in by_task["extract"].command

    def uri(name: str) -> str:
        return normalize_uri(data_dir / name)

    inputs = {
        (r.task, r.uri, r.content_hash)
        for r in rows(
            dpt_env,
            "SELECT i.task, p.uri, v.content_hash FROM invocation_inputs x "
            "JOIN invocations i ON i.id = x.invocation_id "
            "JOIN data_product_versions v ON v.id = x.version_id "
            "JOIN data_products p ON p.id = v.product_id",
        )
    }
    raw, mid, out = (
        dpt_core.hash_file(data_dir / n) for n in ("ol_raw.csv", "ol_mid.csv", "ol_out.csv")
    )
    assert inputs == {
        ("extract", uri("ol_raw.csv"), raw),
        ("transform", uri("ol_mid.csv"), mid),
        ("publish", uri("ol_out.csv"), out),  # from the provider's DefaultExtractor only
    }
    versions = sorted(
        (r.uri, r.content_hash, r.task)
        for r in rows(
            dpt_env,
            "SELECT p.uri, v.content_hash, i.task FROM data_product_versions v "
            "JOIN data_products p ON p.id = v.product_id "
            "LEFT JOIN invocations i ON i.id = v.produced_by_id",
        )
    )
    # one version per file (dpt's content hash), whoever reported it first
    assert versions == sorted(
        [
            (uri("ol_raw.csv"), raw, None),
            (uri("ol_mid.csv"), mid, "extract"),
            (uri("ol_out.csv"), out, "transform"),
            ("s3://survey-public/lightcurves/ol_out.csv", None, "publish"),
        ]
    )
