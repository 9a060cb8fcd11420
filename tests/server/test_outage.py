"""The database goes away under ``dpt serve``: accepted events are spooled (202), replayed
once it is back, without another request, and none is lost or stored twice.

A real PostgreSQL behind :class:`faultproxy.FaultProxy` (tests/reliability), which the
test makes refuse connections and then forward again.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import HANG, DptServer, run_event
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from dpt_core.spool import Spool
from dpt_core.testing import POSTGRES_URL, DptTestEnv, require_server

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))
from faultproxy import FaultProxy  # noqa: E402


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    require_server(POSTGRES_URL)
    url = make_url(POSTGRES_URL)
    with FaultProxy(url.host or "127.0.0.1", url.port or 5432) as running:
        yield running


def direct_scalar(url: str, sql: str) -> Any:
    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar()
    finally:
        engine.dispose()


def wait_for(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + HANG
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


def test_events_accepted_while_the_database_is_away_are_spooled_and_replayed(
    pg_dpt_env: DptTestEnv, proxy: FaultProxy, tmp_path: Path
) -> None:
    direct = pg_dpt_env.url
    environ = pg_dpt_env.environ() | {
        "DPT_DATABASE_URL": proxy.url_for(direct),
        "DPT_CONNECT_TIMEOUT": "2",
        "DPT_STATEMENT_TIMEOUT": "5",
    }
    server = DptServer(environ, tmp_path / "server")
    server.directory.mkdir()
    server.start()
    try:

        def post(job: str) -> Any:
            run_id = str(uuid.uuid4())
            events = [
                run_event(run_id, "START", job=job, inputs=(("s3://b", f"in/{job}.csv"),)),
                run_event(run_id, "COMPLETE", job=job, outputs=(("s3://b", f"out/{job}.csv"),)),
            ]
            return server.post("/api/v1/lineage", events)

        first = post("before")
        assert first.status_code == 200 and first.json()["status"] == "recorded"

        proxy.refuse()
        during = [post(f"during-{i}") for i in range(5)]
        assert [r.status_code for r in during] == [202] * 5, [r.text for r in during]
        assert {r.json()["status"] for r in during} == {"spooled"}
        health = server.get("/api/health").json()
        assert health["status"] == "degraded" and health["database"]["reachable"] is False
        assert health["spool"]["events"] > 0
        assert server.get("/api/runs").status_code == 503  # reads say so, in one line
        assert direct_scalar(direct, "SELECT COUNT(*) FROM invocations") == 1
        spool = Spool(Path(environ["DPT_SPOOL_DIR"]), environ["DPT_DATABASE_URL"])
        assert spool.status().events > 0

        proxy.restore()  # and no request comes: the server replays by itself
        wait_for(
            lambda: direct_scalar(direct, "SELECT COUNT(*) FROM invocations") == 6,
            "the spooled events to reach the database",
        )
        wait_for(lambda: spool.is_empty(), "the spool to empty")
        assert (
            direct_scalar(direct, "SELECT COUNT(*) FROM invocations WHERE status = 'success'") == 6
        )
        assert direct_scalar(direct, "SELECT COUNT(*) FROM lineage_edges") == 6
        assert direct_scalar(direct, "SELECT COUNT(*) FROM data_products") == 12
        assert server.get("/api/health").json()["status"] == "ok"

        after = post("after")
        assert after.status_code == 200 and after.json()["status"] == "recorded"
        assert direct_scalar(direct, "SELECT COUNT(DISTINCT uuid) FROM invocations") == 7
        assert direct_scalar(direct, "SELECT COUNT(*) FROM invocations") == 7
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.stderr
