"""Run dpt's Prefect flows in a real Prefect deployment: server, process work pool, worker.

What it does, each step a real Prefect command (the ``prefect`` of this Python):

1. ``prefect server start --host 127.0.0.1 --port P`` (a fresh PREFECT_HOME, SQLite);
2. ``prefect work-pool create NAME --type process``;
3. ``flow.from_source(<this folder>, "flows.py:<flow>").deploy(...)`` for each flow;
4. ``prefect worker start --pool NAME``: each flow run goes to a subprocess of the worker;
5. ``prefect deployment run``: one run that completes, one cancelled with
   ``prefect flow-run cancel`` while its task waits, one crashed by ``kill -9`` of the
   engine subprocess while its task waits.

dpt records into a fresh SQLite database (``DPT_DATABASE_URL``) that every process
(worker, flow-run subprocesses) is given. Run it as a script to see the figures::

    python tests/prefect/deployment/deployment.py [--keep DIR]

``tests/prefect/deployment/test_deployment.py`` runs it and asserts on what dpt
recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
POOL = "dpt-process-pool"
#: Longest wait for one step (a server start, a flow run to end); only a bound, never a figure.
STEP_TIMEOUT = 300.0


@dataclass
class Deployment:
    """A running Prefect server and worker, and where dpt records."""

    workdir: Path
    env: dict[str, str]
    api_url: str
    database_url: str
    data: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)

    def prefect(self, *args: str, timeout: float = STEP_TIMEOUT) -> str:
        """Run a ``prefect`` command against this deployment's server; its output."""
        result = subprocess.run(
            [str(Path(sys.executable).with_name("prefect")), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"prefect {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
            )
        return result.stdout

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - lives with the process
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("prefect")), *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @contextmanager
    def client(self) -> Iterator[Any]:
        """A Prefect client of this deployment's server (whatever this process was set up with)."""
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with (
            temporary_settings(updates={PREFECT_API_URL: self.api_url}),
            get_client(sync_client=True) as client,
        ):
            yield client

    def flow_run(self, flow_run_id: str) -> Any:
        with self.client() as client:
            return client.read_flow_run(flow_run_id)

    def task_runs(self, flow_run_id: str) -> list[Any]:
        """The task runs the Prefect API knows of a flow run."""
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        with self.client() as client:
            return list(
                client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
                )
            )

    def wait_for_state(self, flow_run_id: str, *types: str) -> Any:
        """The flow run once its state type is one of ``types``."""
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            run = self.flow_run(flow_run_id)
            if run.state is not None and run.state.type.value in types:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"flow run {flow_run_id} still {run.state_name} after {STEP_TIMEOUT:.0f} s;"
                    f" worker log:\n{self.log('worker')[-3000:]}"
                )
            time.sleep(0.25)

    def run_deployment(self, name: str, **parameters: Any) -> str:
        """``prefect deployment run NAME``: the new flow run's id."""
        args = ["deployment", "run", name]
        for key, value in parameters.items():
            args += ["--param", f"{key}={value}"]
        out = self.prefect(*args)
        for line in out.splitlines():
            if "UUID:" in line:
                return line.split("UUID:", 1)[1].strip()
        raise RuntimeError(f"no flow run id in the output of prefect deployment run:\n{out}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    import httpx

    deadline = time.monotonic() + STEP_TIMEOUT
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"prefect server exited {server.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Prefect server at {url} did not answer")
        time.sleep(0.2)


@contextmanager
def deployment(workdir: Path, database_url: str | None = None) -> Iterator[Deployment]:
    """A Prefect server, a process work pool, the flows deployed, a worker; all stopped after.

    :param database_url: where dpt records (default: a new SQLite file in ``workdir``).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    (workdir / "dpt.toml").write_text("# dpt's settings come from DPT_* variables here\n")
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    database_url = database_url or f"sqlite:///{workdir / 'dpt.sqlite3'}"
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_", "DPT_"))
    }
    env.update(
        {
            "PREFECT_HOME": str(workdir / "prefect-home"),
            "PREFECT_API_URL": api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": (
                f"sqlite+aiosqlite:///{workdir / 'prefect.db'}"
            ),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            "DPT_DATABASE_URL": database_url,
            "DPT_SPOOL_DIR": str(workdir / "dpt-spool"),
            "DPT_CACHE_DIR": str(workdir / "dpt-cache"),
            "DPT_CONFIG": str(workdir / "dpt.toml"),
            "DPT_REDACTION_KEY": "dpt-deployment-test-key",
            "DPT_TEST_PREFECT_DATA": str(data),
            "PYTHONUNBUFFERED": "1",
        }
    )
    d = Deployment(workdir, env, api_url, database_url, data)
    try:
        began = time.monotonic()
        server = d.start("server", "server", "start", "--host", "127.0.0.1", "--port", str(port))
        _wait_healthy(api_url, server, workdir / "server.log")
        d.figures["server start (s)"] = time.monotonic() - began

        began = time.monotonic()
        d.prefect("work-pool", "create", POOL, "--type", "process")
        deploy = subprocess.run(
            [sys.executable, str(Path(__file__)), "--deploy"],
            env=env,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
            check=False,
        )
        if deploy.returncode != 0:
            raise RuntimeError(f"deploying failed:\n{deploy.stdout}\n{deploy.stderr}")
        d.figures["work pool + 2 deployments (s)"] = time.monotonic() - began

        d.start("worker", "worker", "start", "--pool", POOL, "--type", "process")
        yield d
    finally:
        for process in reversed(d.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def _deploy() -> None:
    """Deploy the flows of ``flows.py`` from this folder to the process work pool."""
    from prefect import flow

    for entrypoint, name in (
        ("flows.py:clean_and_summarize", "item14"),
        ("flows.py:waits", "waiting"),
    ):
        flow.from_source(source=str(HERE), entrypoint=entrypoint).deploy(
            name=name, work_pool_name=POOL, print_next_steps=False
        )


@dataclass
class Outcome:
    """The three flow runs, as Prefect ended them, and the figures measured."""

    completed: str
    cancelled: str
    crashed: str
    states: dict[str, str]
    figures: dict[str, float]


def _wait_recorded(d: Deployment, flow_run_id: str, what: str) -> None:
    """Wait until dpt's database shows the flow run and its task runs closed; the figure is
    the time from Prefect's final state to dpt's record of it (the hooks that close a
    cancelled or crashed run run in the worker, after the state is set)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(d.database_url)
    uuid = _flow_run_uuid(flow_run_id)
    began = time.monotonic()
    deadline = began + STEP_TIMEOUT
    try:
        while True:
            try:
                with engine.connect() as conn:
                    rows = conn.execute(
                        text(
                            "SELECT i.status, i.external_id FROM invocations i LEFT JOIN"
                            " invocations f ON f.id = i.parent_id WHERE i.uuid = :u OR f.uuid = :u"
                        ),
                        {"u": uuid},
                    ).all()
            except Exception:  # the database is not created yet
                rows = []
            # the flow run and every task run Prefect knows of it (the worker reads those
            # back in the background once the flow run ended), none left running
            known = {str(t.id) for t in d.task_runs(flow_run_id)}
            recorded = {r.external_id for r in rows}
            if rows and known <= recorded and all(r.status != "running" for r in rows):
                d.figures[f"{what}: final state -> recorded by dpt (s)"] = time.monotonic() - began
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"dpt did not record the end of flow run {flow_run_id} ({rows});"
                    f" worker log:\n{d.log('worker')[-3000:]}"
                )
            time.sleep(0.25)
    finally:
        engine.dispose()


def _flow_run_uuid(flow_run_id: str) -> str:
    import dpt_core

    return dpt_core.invocation_uuid("prefect", "flow-run", flow_run_id)


def _wait_for_file(path: Path, d: Deployment, what: str) -> str:
    deadline = time.monotonic() + STEP_TIMEOUT
    while not path.exists() or not path.read_text().strip():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {path} never appeared; worker log:\n{d.log('worker')}")
        time.sleep(0.1)
    return path.read_text().strip()


def run_all(d: Deployment) -> Outcome:
    """The three runs: completed, cancelled, crashed."""
    (d.data / "raw.csv").write_text("a,1\n\nb,2\nc,3\n")

    began = time.monotonic()
    completed = d.run_deployment("clean-and-summarize/item14")
    done = d.wait_for_state(completed, "COMPLETED", "FAILED", "CRASHED")
    d.figures["completed run: deployment run -> final state (s)"] = time.monotonic() - began
    _wait_recorded(d, completed, "completed run")

    began = time.monotonic()
    pid_file = d.workdir / "cancel.pid"
    cancelled = d.run_deployment(
        "waits/waiting", path=str(d.workdir / "never"), pid_file=str(pid_file)
    )
    _wait_for_file(pid_file, d, "the task to cancel")
    d.prefect("flow-run", "cancel", cancelled)
    cancel_run = d.wait_for_state(cancelled, "CANCELLED", "CRASHED", "FAILED", "COMPLETED")
    d.figures["cancelled run: deployment run -> final state (s)"] = time.monotonic() - began
    _wait_recorded(d, cancelled, "cancelled run")

    began = time.monotonic()
    pid_file = d.workdir / "crash.pid"
    crashed = d.run_deployment(
        "waits/waiting", path=str(d.workdir / "never"), pid_file=str(pid_file)
    )
    engine_pid = int(_wait_for_file(pid_file, d, "the task to crash"))
    # Killed once Prefect's API knows the task run (it hears of it through events, a moment
    # after the task started): the run is then a crash of a task run Prefect knows.
    deadline = time.monotonic() + STEP_TIMEOUT
    while not d.task_runs(crashed) and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(engine_pid, signal.SIGKILL)
    crash_run = d.wait_for_state(crashed, "CRASHED", "FAILED", "CANCELLED", "COMPLETED")
    d.figures["crashed run: deployment run -> final state (s)"] = time.monotonic() - began
    _wait_recorded(d, crashed, "crashed run")
    return Outcome(
        completed,
        cancelled,
        crashed,
        {
            completed: done.state.type.value,
            cancelled: cancel_run.state.type.value,
            crashed: crash_run.state.type.value,
        },
        d.figures,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--deploy", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.deploy:
        _deploy()
        return
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="dpt-prefect-deployment-"))
    began = time.monotonic()
    try:
        with deployment(workdir) as d:
            outcome = run_all(d)
        outcome.figures["total (s)"] = time.monotonic() - began
        print(json.dumps({"states": outcome.states, "figures": outcome.figures}, indent=2))
        print(f"dpt database: {workdir / 'dpt.sqlite3'}")
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
