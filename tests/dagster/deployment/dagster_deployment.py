"""dpt's Dagster sensor in a real deployment: ``dagster dev`` with its daemon ticking the sensor.

``dagster dev -f defs.py -h 127.0.0.1 -p PORT`` runs the webserver, the daemon and a code
server; ``DAGSTER_HOME`` is a temporary directory, so runs are queued, dequeued by the
daemon and launched as subprocesses (the default run coordinator and launcher). Through
the webserver's GraphQL API this script

1. launches a run of ``reference``;
2. launches an asset backfill: ``events`` 2023-01-21..23 and ``yesterday_event_stats``
   2023-01-22..23 (``TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)``), which
   the daemon turns into runs in dependency order;
3. launches ``regional_job`` for partitions ``us`` (succeeds) and ``jp`` (fails);

then waits for every run to end and for the daemon's sensor ticks to record them, and
reads dpt's database: the runs and their statuses, each partition's inputs, nothing left
``running``. It prints the figures (seconds): start-up, runs, recording lag.

Run it as a script (dagster-webserver must be installed next to dagster and dpt)::

    python tests/dagster/deployment/dagster_deployment.py            # prints the figures as JSON

``test_dagster_dev.py`` runs the same scenario in the suite (marked slow).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

DEFS = Path(__file__).with_name("defs.py")
FINAL_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}
FINAL_BACKFILL_STATUSES = {
    "COMPLETED",
    "COMPLETED_SUCCESS",
    "COMPLETED_FAILED",
    "FAILED",
    "CANCELED",
}
LAKE = "lake://deployment"


class DeploymentError(RuntimeError):
    """The deployment did not come up or did not do what was asked; the log tail says why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Deployment:
    """One ``dagster dev`` process group, and a GraphQL client for its webserver."""

    home: Path
    data: Path
    env: Mapping[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    location: str = ""
    repository: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- the process ----------------------------------------------------------------------

    def start(self) -> None:
        dagster = Path(sys.executable).with_name("dagster")
        self.log_path = self.home / "dagster-dev.log"
        log = self.log_path.open("wb")
        env = {**self.env, "DAGSTER_HOME": str(self.home), "DPT_DEPLOYMENT_DATA": str(self.data)}
        self.process = subprocess.Popen(
            [str(dagster), "dev", "-f", str(DEFS), "-h", "127.0.0.1", "-p", str(self.port)],
            cwd=self.home,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as one, by its id
        )
        log.close()

    def stop(self) -> None:
        """SIGTERM to the group we started (webserver, daemon, code server, run workers)."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def fail(self, message: str) -> DeploymentError:
        return DeploymentError(f"{message}\n--- dagster dev log (tail) ---\n{self.log_tail()}")

    # -- GraphQL ----------------------------------------------------------------------------

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = json.loads(response.read())
        if payload.get("errors"):
            raise self.fail(f"GraphQL errors: {payload['errors']}")
        data: dict[str, Any] = payload["data"]
        return data

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Until the webserver answers and the code location is loaded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise self.fail(f"dagster dev exited with {self.process.returncode}")
            try:
                data = self.graphql(
                    """{ workspaceOrError { __typename ... on Workspace { locationEntries {
                        name loadStatus locationOrLoadError { __typename
                          ... on RepositoryLocation { repositories { name } }
                          ... on PythonError { message } } } } } }"""
                )
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
                continue
            for entry in data["workspaceOrError"].get("locationEntries", []):
                loaded = entry["locationOrLoadError"] or {}
                if loaded.get("__typename") == "PythonError":
                    raise self.fail(f"the code location failed to load: {loaded['message']}")
                if entry["loadStatus"] == "LOADED" and loaded.get("repositories"):
                    self.location = entry["name"]
                    self.repository = loaded["repositories"][0]["name"]
                    return
            time.sleep(0.5)
        raise self.fail(f"dagster dev was not ready after {timeout:.0f} s")

    def launch_run(
        self,
        assets: list[str] | None = None,
        job: str = "__ASSET_JOB",
        partition: str | None = None,
    ) -> str:
        selector: dict[str, Any] = {
            "repositoryLocationName": self.location,
            "repositoryName": self.repository,
            "jobName": job,
        }
        if assets is not None:
            selector["assetSelection"] = [{"path": [a]} for a in assets]
        tags = [{"key": "dagster/partition", "value": partition}] if partition else []
        data = self.graphql(
            """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
                __typename ... on LaunchRunSuccess { run { runId } }
                ... on Error { message } } }""",
            {"p": {"selector": selector, "executionMetadata": {"tags": tags}}},
        )["launchRun"]
        if data["__typename"] != "LaunchRunSuccess":
            raise self.fail(f"launchRun failed: {data}")
        return str(data["run"]["runId"])

    def launch_backfill(self, ranges: Mapping[str, tuple[str, str]]) -> str:
        data = self.graphql(
            """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
                __typename ... on LaunchBackfillSuccess { backfillId }
                ... on Error { message } } }""",
            {
                "p": {
                    "partitionsByAssets": [
                        {
                            "assetKey": {"path": [asset]},
                            "partitions": {"range": {"start": a, "end": b}},
                        }
                        for asset, (a, b) in ranges.items()
                    ]
                }
            },
        )["launchPartitionBackfill"]
        if data["__typename"] != "LaunchBackfillSuccess":
            raise self.fail(f"launchPartitionBackfill failed: {data}")
        return str(data["backfillId"])

    def backfill_status(self, backfill_id: str) -> str:
        data = self.graphql(
            """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
                __typename ... on PartitionBackfill { status } ... on Error { message } } }""",
            {"id": backfill_id},
        )["partitionBackfillOrError"]
        return str(data.get("status") or data)

    def runs(self, tags: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
        """Every run (or those with ``tags``): run id -> status, tags, end time."""
        run_filter = {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
        data = self.graphql(
            """query($f: RunsFilter) { runsOrError(filter: $f) { __typename ... on Runs {
                results { runId status endTime jobName tags { key value } } } } }""",
            {"f": run_filter},
        )["runsOrError"]
        return {
            r["runId"]: {
                "status": r["status"],
                "end": r["endTime"],
                "job": r["jobName"],
                "tags": {t["key"]: t["value"] for t in r["tags"]},
            }
            for r in data["results"]
        }

    def sensor_ticks(self, name: str = "dpt_tracker") -> list[dict[str, Any]]:
        data = self.graphql(
            """query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { __typename
                ... on Sensor { sensorState { status ticks(limit: 200) {
                  status timestamp skipReason } } } } }""",
            {
                "s": {
                    "repositoryLocationName": self.location,
                    "repositoryName": self.repository,
                    "sensorName": name,
                }
            },
        )["sensorOrError"]
        return list(data["sensorState"]["ticks"])


# ---------------------------------------------------------------------------------------------
# Reading dpt's database
# ---------------------------------------------------------------------------------------------


def recorded(database_url: str) -> dict[str, Any]:
    """What dpt recorded: runs, steps with inputs/outputs, and what is still running."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            invocations = conn.execute(
                sa.text(
                    "SELECT id, external_id, job, task, status, parameters, environment_id "
                    "FROM invocations WHERE orchestrator = 'dagster'"
                )
            ).all()
            inputs = conn.execute(
                sa.text(
                    "SELECT i.invocation_id, p.uri, pi.external_id AS producer "
                    "FROM invocation_inputs i "
                    "JOIN data_product_versions v ON v.id = i.version_id "
                    "JOIN data_products p ON p.id = v.product_id "
                    "LEFT JOIN invocations pi ON pi.id = v.produced_by_id"
                )
            ).all()
            outputs = conn.execute(
                sa.text(
                    "SELECT v.produced_by_id, p.uri FROM data_product_versions v "
                    "JOIN data_products p ON p.id = v.product_id "
                    "WHERE v.produced_by_id IS NOT NULL"
                )
            ).all()
            products = [r.uri for r in conn.execute(sa.text("SELECT uri FROM data_products"))]
    finally:
        engine.dispose()
    runs = {r.external_id: r.status for r in invocations if r.task is None}
    steps: dict[tuple[str, str | None, str], dict[str, Any]] = {}
    for r in invocations:
        if r.task is None:
            continue
        params = json.loads(r.parameters) if isinstance(r.parameters, str) else r.parameters
        steps[(r.task, (params or {}).get("partition"), r.external_id)] = {
            "status": r.status,
            "in_worker": r.environment_id is not None,
            "inputs": sorted(
                (_short(i.uri), i.producer) for i in inputs if i.invocation_id == r.id
            ),
            "outputs": sorted(_short(o.uri) for o in outputs if o.produced_by_id == r.id),
        }
    running = sorted(
        (r.task or "(run)", r.external_id) for r in invocations if r.status == "running"
    )
    return {"runs": runs, "steps": steps, "running": running, "products": sorted(products)}


def _short(uri: str) -> str:
    if uri.startswith("file:///") and "/data/" in uri:
        return "file:data/" + uri.split("/data/", 1)[1]
    return uri


# ---------------------------------------------------------------------------------------------
# The scenario
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def deployment(home: Path, data: Path, env: Mapping[str, str]) -> Iterator[Deployment]:
    dep = Deployment(home=home, data=data, env=env)
    dep.start()
    try:
        yield dep
    finally:
        dep.stop()


def _wait(what: str, dep: Deployment, check: Any, timeout: float, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise dep.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        if dep.process is not None and dep.process.poll() is not None:
            raise dep.fail(f"dagster dev exited ({dep.process.returncode}) waiting for {what}")
        time.sleep(every)


def run_scenario(
    home: Path, data: Path, env: Mapping[str, str], database_url: str
) -> dict[str, Any]:
    """Start ``dagster dev``, launch the runs, wait for dpt to record them; the figures."""
    figures: dict[str, Any] = {}
    t0 = time.monotonic()
    with deployment(home, data, env) as dep:
        dep.wait_ready()
        figures["startup_seconds"] = round(time.monotonic() - t0, 1)

        t_launch = time.monotonic()
        labels: dict[str, str] = {}
        reference = dep.launch_run(["reference"])
        labels[reference] = "reference"
        _wait(
            "the reference run",
            dep,
            lambda: dep.runs().get(reference, {}).get("status") in FINAL_RUN_STATUSES,
            timeout=180,
        )
        backfill = dep.launch_backfill(
            {
                "events": ("2023-01-21", "2023-01-23"),
                "yesterday_event_stats": ("2023-01-22", "2023-01-23"),
            }
        )
        for region in ("us", "jp"):
            labels[dep.launch_run(job="regional_job", partition=region)] = f"regional-{region}"

        def settled() -> bool:
            return dep.backfill_status(backfill) in FINAL_BACKFILL_STATUSES

        _wait("the backfill", dep, settled, timeout=600)
        all_runs = _wait(
            "every run to end",
            dep,
            lambda: (
                (r := dep.runs())
                and all(v["status"] in FINAL_RUN_STATUSES for v in r.values())
                and r
            ),
            timeout=300,
        )
        figures["runs_seconds"] = round(time.monotonic() - t_launch, 1)
        last_end = max(r["end"] or 0 for r in all_runs.values())
        for run_id, run in all_runs.items():
            if run["tags"].get("dagster/backfill") == backfill:
                labels[run_id] = "backfill-" + run["tags"].get("dagster/partition", "range")
        figures["runs"] = {labels.get(k, k): v["status"] for k, v in all_runs.items()}
        figures["backfill_status"] = dep.backfill_status(backfill)

        def all_recorded() -> dict[str, Any] | None:
            found = recorded(database_url)
            finished = {k: v for k, v in found["runs"].items() if v != "running" and k in all_runs}
            if len(finished) == len(all_runs) and not found["running"]:
                return found
            return None

        found = _wait("dpt to record every run", dep, all_recorded, timeout=300)
        figures["recorded_after_last_run_end_seconds"] = round(time.time() - last_end, 1)
        ticks = dep.sensor_ticks()
        figures["sensor_ticks"] = len(ticks)
        figures["tick_statuses"] = sorted({t["status"] for t in ticks})
        figures["tick_messages"] = [t["skipReason"] for t in ticks if t["skipReason"]][:3]
    figures["total_seconds"] = round(time.monotonic() - t0, 1)
    figures["recorded"] = {
        "runs": {labels.get(k, k): v for k, v in found["runs"].items()},
        "steps": {
            f"{task}[{partition or ''}]": {
                **step,
                "run": labels.get(run, run),
                "inputs": [f"{uri} @ {labels.get(p, p or '-')}" for uri, p in step["inputs"]],
            }
            for (task, partition, run), step in sorted(
                found["steps"].items(), key=lambda i: (i[0][0], i[0][1] or "", i[0][2])
            )
        },
        "running": found["running"],
        "products": [_short(p) for p in found["products"]],
    }
    return figures


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="dpt-dagster-deployment-") as tmp:
        root = Path(tmp)
        home, data = root / "dagster_home", root / "data"
        home.mkdir()
        data.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        database_url = f"sqlite:///{root / 'dpt.sqlite3'}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DPT_", "DAGSTER_"))}
        env.update(
            {
                "DPT_DATABASE_URL": database_url,
                "DPT_SPOOL_DIR": str(root / "spool"),
                "DPT_CACHE_DIR": str(root / "cache"),
            }
        )
        figures = run_scenario(home, data, env, database_url)
    print(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
