"""Run a DAG in a real Airflow deployment and read back what dpt recorded.

What it does, each step a real Airflow or dpt command (those of this Python):

1. creates two fresh PostgreSQL databases on ``DPT_TEST_POSTGRES_URL`` (default
   ``postgresql://postgres@127.0.0.1:5432/postgres``): one for Airflow's metadata, one
   for dpt's records (``dpt db upgrade``); both are dropped at the end;
2. ``airflow db migrate``;
3. starts ``airflow api-server --host 127.0.0.1 --port P``, ``airflow scheduler
   --skip-serve-logs`` (LocalExecutor: each task try in a task process of its own),
   ``airflow dag-processor`` and ``airflow triggerer``, every process with the same
   ``DPT_*`` environment;
4. waits for the dag processor to serialise ``dags/dpt_deployment_dag.py``, then
   ``airflow dags trigger dpt_deployment``; while the deferrable sensor ``wait`` is
   deferred (its first task process has exited), reads the status dpt holds for its
   try, over and over; then waits for the run to end;
5. stops the processes (SIGTERM to each, by its own pid) and reads, from both
   databases, every task try Airflow ran and every run dpt recorded.

Run it as a script to print the figures (wall times, tries run vs recorded) and the
checks as JSON::

    .tox/airflow/bin/python tests/airflow/deployment/airflow_deployment.py [--keep DIR]

``tests/airflow/deployment/test_airflow_deployment.py`` runs it and asserts on the report.
psycopg 3 drives both of Airflow's connections (``postgresql+psycopg`` and
``postgresql+psycopg_async``), so no other PostgreSQL driver is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DAG_ID = "dpt_deployment"
RUN_ID = "dpt_deployment_run_1"
#: Longest wait for one step (a server to answer, the run to end): a bound, never a figure.
STEP_TIMEOUT = 300.0
POSTGRES_URL = os.environ.get(
    "DPT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
#: The Celery broker of ``--executor celery`` (a database number of its own is picked).
REDIS_URL = os.environ.get("DPT_TEST_REDIS_URL", "redis://127.0.0.1:6379")


@dataclass
class Report:
    """What Airflow ran and what dpt recorded, with the figures of the run."""

    figures: dict[str, float] = field(default_factory=dict)
    dag_run_state: str | None = None
    #: ``"task_id[map_index] try N"`` -> the state Airflow gave that try
    airflow_tries: dict[str, str] = field(default_factory=dict)
    #: the same key -> ``{"status", "variables", "environment_id", "command", "host"}``
    dpt_tries: dict[str, dict[str, Any]] = field(default_factory=dict)
    dpt_dag_runs: list[dict[str, Any]] = field(default_factory=list)
    environments: int = 0
    #: variable names stored in environment rows (not per run)
    environment_variable_names: list[str] = field(default_factory=list)
    #: when there is more than one environment: variable -> its value in each (None: absent)
    environment_differences: dict[str, list[str | None]] = field(default_factory=dict)
    running: int = 0
    #: dpt's status of the deferred try, read while Airflow said it was deferred
    while_deferred: list[str] = field(default_factory=list)
    #: the process token dpt holds for that try at the end
    deferred_try_process: str | None = None
    #: per task try that ended in a task process: seconds from Airflow's ``end_date`` of
    #: the try to the worker's "Workload finished" (the task process reaped, the state
    #: sent): ``"task_id[map_index] try N"`` -> seconds
    worker_done_after_task_end: dict[str, float] = field(default_factory=dict)
    #: per task try, Airflow's own duration of it (``end_date - start_date``, the time in
    #: its task process, dpt's hooks included): ``"task_id[map_index] try N"`` -> seconds
    try_seconds: dict[str, float] = field(default_factory=dict)
    #: the write mode dpt's processes ran with, and whether a drainer wrote their events
    #: ``local`` (LocalExecutor: workers are multiprocessing children of the scheduler) or
    #: ``celery`` (CeleryExecutor: ``airflow celery worker``, whose pool processes are
    #: billiard's, the way Celery and Kubernetes workers start a task's supervisor)
    executor: str = "local"
    write_mode: str = "sync"
    drainer: bool = False
    #: the events the drainer wrote, as it said when stopped (SIGTERM); None: no drainer
    drained: int | None = None
    #: how dpt wrote in each Python task's process (the store's mode), by task
    task_write_modes: dict[str, str] = field(default_factory=dict)
    #: events left in dpt's spool once every process stopped (``dpt spool status``)
    spooled_left: int | None = None
    #: what dpt logged as a warning in any process (the components' and the tasks' logs)
    dpt_warnings: list[str] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _url(database: str, driver: str = "") -> str:
    from sqlalchemy.engine import make_url

    url = make_url(POSTGRES_URL).set(database=database)
    if driver:
        url = url.set(drivername=f"postgresql+{driver}")
    return url.render_as_string(hide_password=False)


@contextmanager
def _databases(*names: str) -> Iterator[None]:
    import psycopg

    admin = _url("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Deployment:
    """Airflow's components on PostgreSQL with LocalExecutor, dpt recording to PostgreSQL."""

    def __init__(
        self,
        workdir: Path,
        meta_db: str,
        dpt_db: str,
        extra_env: dict[str, str] | None = None,
        executor: str = "local",
    ) -> None:
        self.workdir = workdir
        self.meta_url = _url(meta_db, "psycopg")
        self.dpt_url = _url(dpt_db)
        self.port = _free_port()
        self.processes: list[subprocess.Popen[bytes]] = []
        home = workdir / "airflow"
        (home / "dags").mkdir(parents=True)
        shutil.copy(HERE / "dags" / "dpt_deployment_dag.py", home / "dags")
        (workdir / "dpt-config.toml").write_text("")
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW", "DPT_", "_AIRFLOW")) or k.startswith("DPT_TEST_")
        }
        self.env = {
            **base,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.meta_url,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": _url(meta_db, "psycopg_async"),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "DPT_DATABASE_URL": self.dpt_url,
            "DPT_SPOOL_DIR": str(workdir / "dpt-spool"),
            "DPT_CACHE_DIR": str(workdir / "dpt-cache"),
            "DPT_CONFIG": str(workdir / "dpt-config.toml"),
            "DPT_REDACTION_KEY": "dpt-deployment-test-key",
            "DPT_DEPLOYMENT_DATA": str(workdir / "data"),
        }
        if executor == "celery":
            self.env |= {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CELERY__BROKER_URL": f"{REDIS_URL}/{secrets.randbelow(15) + 1}",
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + _url_plain(self.meta_url),
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "4",
            }
        self.env |= extra_env or {}

    # -- commands ---------------------------------------------------------------------------

    def command(self, program: str, *args: str) -> str:
        """Run ``program`` (``airflow`` or ``dpt`` of this Python) to its end; its output."""
        result = subprocess.run(
            [str(Path(sys.executable).with_name(program)), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result.stdout

    def start(self, name: str, *args: str, program: str = "airflow") -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - lives with the process
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name(program)), *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its task processes stop with it
        )
        self.processes.append(process)
        return process

    def stop(self) -> None:
        """SIGTERM each process this deployment started (its own session), then SIGKILL."""
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name} ---\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.workdir.glob("*.log"))
        )

    # -- waiting on Airflow's database ------------------------------------------------------

    def meta(self, sql: str, **params: Any) -> list[Any]:
        import psycopg

        with psycopg.connect(_url_plain(self.meta_url)) as conn:
            return list(conn.execute(sql, params).fetchall())

    def wait(self, what: str, check: Any) -> Any:
        deadline = time.monotonic() + STEP_TIMEOUT
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{' '.join(map(str, process.args[:3]))} exited while waiting for {what}"
                    )
            try:
                value = check()
            except Exception:  # the schema may not be there yet, a server not up
                value = None
            if value:
                return value
            time.sleep(0.5)
        raise TimeoutError(f"no {what} after {STEP_TIMEOUT:.0f} s\n{self.logs()}")


def _url_plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _read_back(deployment: Deployment, report: Report) -> None:
    import psycopg

    history = deployment.meta(
        "SELECT task_id, map_index, try_number, state FROM task_instance_history"
        " WHERE dag_id = %(dag)s AND run_id = %(run)s",
        dag=DAG_ID,
        run=RUN_ID,
    )
    current = deployment.meta(
        "SELECT task_id, map_index, try_number, state FROM task_instance"
        " WHERE dag_id = %(dag)s AND run_id = %(run)s AND try_number > 0",
        dag=DAG_ID,
        run=RUN_ID,
    )
    for task_id, map_index, try_number, state in [*history, *current]:
        report.airflow_tries[f"{task_id}[{map_index}] try {try_number}"] = state
    durations = deployment.meta(
        "SELECT task_id, map_index, try_number, extract(epoch FROM end_date - start_date)"
        " FROM task_instance_history WHERE dag_id = %(dag)s AND run_id = %(run)s"
        " AND end_date IS NOT NULL"
        " UNION ALL SELECT task_id, map_index, try_number,"
        " extract(epoch FROM end_date - start_date) FROM task_instance"
        " WHERE dag_id = %(dag)s AND run_id = %(run)s AND try_number > 0"
        " AND end_date IS NOT NULL",
        dag=DAG_ID,
        run=RUN_ID,
    )
    for task_id, map_index, try_number, seconds in durations:
        report.try_seconds[f"{task_id}[{map_index}] try {try_number}"] = round(float(seconds), 3)

    with psycopg.connect(deployment.dpt_url) as conn:
        rows = conn.execute(
            "SELECT id, task, status, parameters, variables, environment_id, command, host,"
            " external_id, ended_at, error FROM invocations WHERE orchestrator = 'airflow'"
        ).fetchall()
        for row in rows:
            _id, task, status, parameters, variables, env_id, command, host, ext, ended = row[:10]
            if task is None:
                report.dpt_dag_runs.append(
                    {"run_id": ext, "status": status, "ended": ended is not None}
                )
                continue
            key = f"{task}[{parameters['map_index']}] try {parameters['try_number']}"
            report.dpt_tries[key] = {
                "status": status,
                "error": row[10],
                "variables": variables or {},
                "environment_id": env_id,
                "command": command,
                "host": host,
                "outputs": [
                    uri
                    for (uri,) in conn.execute(
                        "SELECT p.uri FROM data_product_versions v"
                        " JOIN data_products p ON p.id = v.product_id"
                        " WHERE v.produced_by_id = %(id)s",
                        {"id": _id},
                    )
                ],
            }
        report.environments = conn.execute("SELECT count(*) FROM environments").fetchone()[0]
        report.environment_variable_names = sorted(
            name
            for (name,) in conn.execute(
                "SELECT DISTINCT v.key FROM env_variables v"
                " JOIN environment_variables ev ON ev.variable_id = v.id"
            )
        )
        by_environment: dict[int, dict[str, str | None]] = {}
        for env_id, name, value in conn.execute(
            "SELECT ev.environment_id, v.key, coalesce(v.value, v.redacted_digest)"
            " FROM env_variables v JOIN environment_variables ev ON ev.variable_id = v.id"
        ):
            by_environment.setdefault(env_id, {})[name] = value
        for env_id, fingerprint, facets, hostname, user in conn.execute(
            'SELECT id, fingerprint, facets, hostname, "user" FROM environments'
        ):
            by_environment.setdefault(env_id, {}).update(
                {
                    "(fingerprint)": fingerprint,
                    "(facets)": json.dumps(facets, sort_keys=True),
                    "(host)": hostname,
                    "(user)": user,
                }
            )
        if len(by_environment) > 1:
            names = {n for variables in by_environment.values() for n in variables}
            for name in sorted(names):
                values = [by_environment[e].get(name) for e in sorted(by_environment)]
                if len(set(values)) > 1:
                    report.environment_differences[name] = values
        report.running = conn.execute(
            "SELECT count(*) FROM invocations WHERE status = 'running'"
        ).fetchone()[0]
    last = _deferred_try(deployment)
    report.deferred_try_process = None if last is None else last[1]


def run(
    keep: Path | None = None,
    extra_env: dict[str, str] | None = None,
    *,
    drainer: bool = False,
    executor: str = "local",
) -> Report:
    """Run the deployment once; the report of what Airflow ran and dpt recorded.

    ``extra_env`` is added to every process's environment (``AIRFLOW__DPT__ENABLED``,
    ``AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL``, ``DPT_WRITE``, ...). With ``drainer``,
    the set-up docs/airflow.md gives for workers: every process only spools
    (``DPT_WRITE=deferred``) and one ``dpt spool drain --follow`` writes the events.
    ``executor`` is ``local`` or ``celery`` (an ``airflow celery worker`` on Redis)."""
    if drainer:
        extra_env = {"DPT_WRITE": "deferred", **(extra_env or {})}
    workdir = Path(tempfile.mkdtemp(prefix="dpt-airflow-deployment-"))
    suffix = f"{os.getpid()}_{secrets.token_hex(3)}"
    meta_db, dpt_db = f"dpt_af_meta_{suffix}", f"dpt_af_records_{suffix}"
    report = Report()
    started = time.monotonic()
    try:
        with _databases(meta_db, dpt_db):
            deployment = Deployment(workdir, meta_db, dpt_db, extra_env, executor)
            report.write_mode = deployment.env.get("DPT_WRITE", "sync")
            report.drainer = drainer
            report.executor = executor
            clock = time.monotonic()
            deployment.command("airflow", "db", "migrate")
            deployment.command("dpt", "db", "upgrade")
            report.figures["migrate_s"] = time.monotonic() - clock
            try:
                clock = time.monotonic()
                deployment.start(
                    "api-server",
                    "api-server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(deployment.port),
                )
                deployment.start("scheduler", "scheduler", "--skip-serve-logs")
                deployment.start("dag-processor", "dag-processor")
                deployment.start("triggerer", "triggerer")
                if executor == "celery":
                    deployment.start("celery-worker", "celery", "worker")
                writer = (
                    deployment.start(
                        "dpt-drainer",
                        "spool",
                        "drain",
                        "--follow",
                        "--interval",
                        "0.2",
                        program="dpt",
                    )
                    if drainer
                    else None
                )
                deployment.wait(
                    "serialised DAG",
                    lambda: deployment.meta(
                        "SELECT 1 FROM serialized_dag WHERE dag_id = %(dag)s", dag=DAG_ID
                    ),
                )
                deployment.wait("API server", lambda: _answers(deployment.port))
                report.figures["start_to_dag_parsed_s"] = time.monotonic() - clock
                clock = time.monotonic()
                deployment.command("airflow", "dags", "trigger", DAG_ID, "--run-id", RUN_ID)
                _watch_the_deferral(deployment, report)
                state = deployment.wait(
                    "end of the DAG run",
                    lambda: _final(
                        deployment.meta(
                            "SELECT state FROM dag_run WHERE run_id = %(run)s", run=RUN_ID
                        )
                    ),
                )
                report.dag_run_state = state
                report.figures["trigger_to_run_end_s"] = time.monotonic() - clock
                if deployment.env.get("AIRFLOW__DPT__ENABLED", "True").lower() != "false":
                    deployment.wait(
                        "dpt's dag-run record closed", lambda: _dag_run_closed(deployment)
                    )
                # The workers log "Workload finished" after the try's end: a figure, not a
                # check, so it waits a bounded while and reports what it found.
                # (LocalExecutor's workers; a Celery worker logs otherwise)
                deadline = time.monotonic() + (30 if executor == "local" else 0)
                while not _worker_delays(deployment, report) and time.monotonic() < deadline:
                    time.sleep(0.5)
                if writer is not None:
                    report.drained = _stop_drainer(deployment, writer)
            finally:
                deployment.stop()
            _read_back(deployment, report)
            status = json.loads(deployment.command("dpt", "spool", "status", "--json"))
            report.spooled_left = int(status["events"])
            for log in sorted(workdir.rglob("*.log")):
                for line in log.read_text(errors="replace").splitlines():
                    if "dpt:" in line and "WARNING" in line.upper():
                        report.dpt_warnings.append(f"{log.name}: {line[-400:]}")
            modes = workdir / "data" / "write-modes"
            for path in sorted(modes.iterdir()) if modes.is_dir() else ():
                report.task_write_modes[path.name] = path.read_text()
    finally:
        if keep is not None:
            shutil.copytree(workdir, keep, dirs_exist_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)
    report.figures["wall_s"] = time.monotonic() - started
    return report


def _stop_drainer(deployment: Deployment, drainer: subprocess.Popen[bytes]) -> int | None:
    """Stop ``dpt spool drain --follow`` as a service manager would (SIGTERM); the count of
    events it says it wrote."""
    import re

    drainer.send_signal(signal.SIGTERM)
    drainer.wait(timeout=STEP_TIMEOUT)
    said = re.search(
        r"drained (\d+) event", (deployment.workdir / "dpt-drainer.log").read_text(errors="replace")
    )
    return None if said is None else int(said.group(1))


def _deferred_try(deployment: Deployment) -> tuple[str, str | None] | None:
    """(status, process) dpt holds for the ``wait`` sensor's try, or None before its start."""
    import psycopg

    with psycopg.connect(deployment.dpt_url) as conn:
        row = conn.execute("SELECT status, process FROM invocations WHERE task = 'wait'").fetchone()
    return None if row is None else (str(row[0]), row[1])


def _watch_the_deferral(deployment: Deployment, report: Report) -> None:
    """Read dpt's status of the sensor's try while Airflow says it is deferred: its task
    process has exited, but the try goes on (the triggerer, then another task process)."""

    def deferred() -> bool:
        rows = deployment.meta(
            "SELECT state FROM task_instance WHERE run_id = %(run)s AND task_id = 'wait'",
            run=RUN_ID,
        )
        return bool(rows) and rows[0][0] == "deferred"

    deployment.wait("the sensor deferred", deferred)
    time.sleep(2.0)  # the first task process has exited (its atexit handlers have run)
    while deferred():
        seen = _deferred_try(deployment)
        if seen is not None:
            report.while_deferred.append(seen[0])
        time.sleep(0.5)


def _workloads_finished(log: str) -> dict[str, list[float]]:
    """Task instance id -> times (epoch s) of the LocalExecutor worker's "Workload finished"
    lines in the scheduler's log (one per task process; a deferred try has two)."""
    import datetime as dt
    import re

    finished: dict[str, list[float]] = {}
    stamp = re.compile(r"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?)(Z|[+-]\d\d:?\d\d)?")
    ident = re.compile(r"workload_id=['\"]?([0-9a-f-]{36})|\"workload_id\": \"([0-9a-f-]{36})\"")
    for line in re.sub(r"\x1b\[[0-9;]*m", "", log).splitlines():
        if "Workload finished" not in line:
            continue
        when, found = stamp.search(line), ident.search(line)
        if when is None or found is None:
            continue
        at = dt.datetime.fromisoformat(when.group(1).replace(" ", "T"))
        if at.tzinfo is None:
            at = at.replace(tzinfo=dt.UTC)
        finished.setdefault(found.group(1) or found.group(2), []).append(at.timestamp())
    return finished


def _worker_delays(deployment: Deployment, report: Report) -> bool:
    """Fill ``report.worker_done_after_task_end``; True once every ended try has its line."""
    finished = _workloads_finished(
        (deployment.workdir / "scheduler.log").read_text(errors="replace")
    )
    tries = deployment.meta(
        "SELECT task_instance_id::text, task_id, map_index, try_number, end_date"
        " FROM task_instance_history WHERE dag_id = %(dag)s AND run_id = %(run)s"
        " UNION ALL SELECT id::text, task_id, map_index, try_number, end_date"
        " FROM task_instance WHERE dag_id = %(dag)s AND run_id = %(run)s AND try_number > 0",
        dag=DAG_ID,
        run=RUN_ID,
    )
    report.worker_done_after_task_end.clear()
    missing = 0
    for ti_id, task_id, map_index, try_number, end_date in tries:
        if end_date is None:
            continue
        if ti_id not in finished:
            missing += 1
            continue
        key = f"{task_id}[{map_index}] try {try_number}"
        report.worker_done_after_task_end[key] = round(
            max(finished[ti_id]) - end_date.timestamp(), 3
        )
    return missing == 0


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _final(rows: list[Any]) -> str | None:
    if rows and rows[0][0] in ("success", "failed"):
        return str(rows[0][0])
    return None


def _dag_run_closed(deployment: Deployment) -> bool:
    import psycopg

    with psycopg.connect(deployment.dpt_url) as conn:
        row = conn.execute(
            "SELECT status FROM invocations WHERE external_id = %(run)s AND task IS NULL",
            {"run": RUN_ID},
        ).fetchone()
    return row is not None and row[0] != "running"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="copy the work directory (logs) here")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="add to every process's environment, e.g. AIRFLOW__DPT__ENABLED=False or"
        " AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL=1 (repeatable)",
    )
    parser.add_argument(
        "--drainer",
        action="store_true",
        help="DPT_WRITE=deferred in every process and one 'dpt spool drain --follow' writing"
        " their events (the worker set-up docs/airflow.md gives)",
    )
    parser.add_argument(
        "--executor",
        choices=["local", "celery"],
        default="local",
        help="LocalExecutor, or CeleryExecutor with an 'airflow celery worker' on Redis"
        " (DPT_TEST_REDIS_URL; needs apache-airflow-providers-celery)",
    )
    args = parser.parse_args()
    report = run(
        args.keep,
        dict(item.split("=", 1) for item in args.env),
        drainer=args.drainer,
        executor=args.executor,
    )
    print(json.dumps(asdict(report), indent=2, default=str))


if __name__ == "__main__":
    main()
