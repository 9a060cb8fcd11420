"""A real Prefect API for the adapter tests: one temporary server per test session.

Prefect reads its settings (the API URL, PREFECT_HOME) when it is first imported,
so the variables are set here, at import time, before any test module imports
Prefect; the server process starts here too, so it boots while the test modules
import Prefect (both take seconds), and the session fixture waits for it.

Measured here (Prefect 3.9.1, 2 shared and busy cores), seconds to a healthy API,
twice each: ``prefect server start`` 39 / 19, ``prefect_test_harness()`` 41 / 25
(including its ~10 s import of Prefect), uvicorn on Prefect's app factory (what
the harness runs) 29 / 17, and that last one overlaps the test modules' own
import of Prefect. All six started. The harness also keeps the API URL in a
context variable, which subprocesses (a process-pool task runner) do not see;
environment variables reach them.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
STARTUP_TIMEOUT = 240.0


def _prefect_installed() -> bool:
    try:
        return importlib.util.find_spec("prefect") is not None
    except ImportError:  # a finder that refuses it: as good as not installed
        return False


PREFECT_INSTALLED = _prefect_installed()


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


if not PREFECT_INSTALLED:
    if _in_ci():
        # As the Airflow and Dagster suites: under CI a missing orchestrator fails the run.
        raise ImportError(
            "CI=true and Prefect is not installed in this environment: the Prefect suite "
            "cannot run; run it with 'tox -e prefect' (or install data-product-tracker[prefect])"
        )
    # Elsewhere the suite is left out, and the header says why.
    collect_ignore_glob = ["test_*.py", "deployment/*.py"]


def pytest_report_header() -> str | None:
    if PREFECT_INSTALLED:
        return None
    return "tests/prefect: Prefect is not installed here, its tests are not collected"


PREFECT_HOME = Path(tempfile.mkdtemp(prefix="dpt-prefect-tests-"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    server_env = {
        **os.environ,
        "PREFECT_HOME": str(PREFECT_HOME),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": (
            f"sqlite+aiosqlite:///{PREFECT_HOME / 'prefect.db'}"
        ),
        "PREFECT_UI_ENABLED": "false",
    }
    server_env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "error"]
    log = open(PREFECT_HOME / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen(command, env=server_env, stdout=log, stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}/api"


_SERVER: subprocess.Popen[bytes] | None = None
if PREFECT_INSTALLED:
    _SERVER, _API_URL = _start_server()
    os.environ.update(
        {
            "PREFECT_HOME": str(PREFECT_HOME),
            "PREFECT_API_URL": _API_URL,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # Logs would go to the API too: keep the server for what the tests read.
            "PREFECT_LOGGING_TO_API_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
    )

    def _stop_server() -> None:
        if _SERVER is not None and _SERVER.poll() is None:
            _SERVER.terminate()
            try:
                _SERVER.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _SERVER.kill()
        shutil.rmtree(PREFECT_HOME, ignore_errors=True)

    atexit.register(_stop_server)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """The URL of the session's Prefect API, once it answers."""
    import httpx

    assert _SERVER is not None
    url = os.environ["PREFECT_API_URL"]
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if _SERVER.poll() is not None:
            log = (PREFECT_HOME / "server.log").read_text(errors="replace")[-3000:]
            pytest.fail(f"the Prefect server exited with {_SERVER.returncode}:\n{log}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the Prefect server at {url} did not answer in {STARTUP_TIMEOUT:.0f} s")
        time.sleep(0.2)
    yield url
    # Send what Prefect still holds before the server goes away.
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


@pytest.fixture(autouse=True)
def _prefect_session(prefect_api: str, dpt_env: Any) -> Iterator[None]:
    """Every test: the session's Prefect API and a fresh dpt database; read-backs done after."""
    yield
    import dpt_prefect

    dpt_prefect.flush(timeout=60)


class Recorded:
    """What dpt recorded, as plain dicts, for assertions."""

    def __init__(self, env: Any) -> None:
        self.env = env

    def invocations(self, **where: Any) -> list[dict[str, Any]]:
        rows = self.env.rows(
            "SELECT id, uuid, orchestrator, job, task, external_id, parent_id, status, "
            "started_at, ended_at, error, host, command, parameters, code_version, "
            "environment_id FROM invocations ORDER BY id"
        )
        out = []
        for row in rows:
            record = dict(row._mapping)
            if isinstance(record["parameters"], str):
                record["parameters"] = json.loads(record["parameters"])
            if all(record.get(k) == v for k, v in where.items()):
                out.append(record)
        return out

    def one(self, **where: Any) -> dict[str, Any]:
        found = self.invocations(**where)
        assert len(found) == 1, f"expected one invocation with {where}, found {found}"
        return found[0]

    def versions(self, uri: str) -> list[dict[str, Any]]:
        rows = self.env.rows(
            "SELECT v.id, v.uuid, v.content_hash, v.size, v.produced_by_id, v.metadata "
            "FROM data_product_versions v JOIN data_products p ON p.id = v.product_id "
            "WHERE p.uri = :uri ORDER BY v.id",
            uri=uri,
        )
        out = []
        for row in rows:
            record = dict(row._mapping)
            if isinstance(record["metadata"], str):
                record["metadata"] = json.loads(record["metadata"])
            out.append(record)
        return out

    def edges(self) -> set[tuple[str, str, int | None]]:
        """(parent URI, child URI, invocation id) of every lineage edge."""
        rows = self.env.rows(
            "SELECT pp.uri AS parent, cp.uri AS child, e.invocation_id AS invocation "
            "FROM lineage_edges e "
            "JOIN data_product_versions pv ON pv.id = e.parent_version_id "
            "JOIN data_products pp ON pp.id = pv.product_id "
            "JOIN data_product_versions cv ON cv.id = e.child_version_id "
            "JOIN data_products cp ON cp.id = cv.product_id"
        )
        return {(r.parent, r.child, r.invocation) for r in rows}

    def inputs(self, invocation_id: int) -> set[str]:
        rows = self.env.rows(
            "SELECT p.uri FROM invocation_inputs i "
            "JOIN data_product_versions v ON v.id = i.version_id "
            "JOIN data_products p ON p.id = v.product_id WHERE i.invocation_id = :inv",
            inv=invocation_id,
        )
        return {r.uri for r in rows}


@pytest.fixture
def recorded(dpt_env: Any) -> Recorded:
    return Recorded(dpt_env)


@pytest.fixture
def run_flow() -> Callable[..., Any]:
    """``run_flow(flow, *args, **kwargs)``: run it, wait for dpt's read-back; its final state."""

    def run(flow: Any, *args: Any, **kwargs: Any) -> Any:
        import dpt_prefect

        state = flow(*args, return_state=True, **kwargs)
        assert dpt_prefect.flush(timeout=60)
        return state

    return run


@pytest.fixture(scope="session")
def prefect_example() -> Any:
    """``examples/prefect_pipeline.py``, imported as a module."""
    path = REPO / "examples" / "prefect_pipeline.py"
    spec = importlib.util.spec_from_file_location("dpt_example_prefect_pipeline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
