"""When the database is unreachable, events spool; replay restores them exactly once."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

import dpt_core
from dpt_core.errors import MigrationRequired
from dpt_core.events import (
    InvocationFinished,
    InvocationStarted,
    ProductObservation,
    ProductsWritten,
)
from dpt_core.spool import Spool
from dpt_core.store.engine import make_engine
from dpt_core.store.plugin import current_store, failure_kind, is_transient
from dpt_core.testing import empty_tracking

DEAD_URL = "postgresql://postgres@127.0.0.1:9/unreachable"


def count_all(env):
    return {
        t: env.scalar(f"SELECT COUNT(*) FROM {t}")
        for t in (
            "invocations",
            "data_products",
            "data_product_versions",
            "lineage_edges",
            "invocation_inputs",
        )
    }


def test_unreachable_database_spools_and_user_code_goes_on(dpt_env, monkeypatch, tmp_path, caplog):
    good_url = dpt_env.url
    monkeypatch.setenv("DPT_WRITE", "sync")  # (counts the spool after each write)
    monkeypatch.setenv("DPT_DATABASE_URL", DEAD_URL)
    monkeypatch.setenv("DPT_CONNECT_TIMEOUT", "1")
    dpt_core.plugin_api.reset()
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("a")
    b.write_text("b")
    with dpt_core.invocation("offline") as inv:
        inv.read(a)
        inv.write(b)
    assert "events kept in the spool" in caplog.text
    assert caplog.text.count("events kept in the spool") == 1  # one warning, not one per event
    dpt_core.flush()  # (the background writer has tried, and left them in the spool)
    status = Spool(tmp_path / "spool", DEAD_URL).status()
    assert status.events == 4 and status.batches == 4

    monkeypatch.setenv("DPT_DATABASE_URL", good_url)
    dpt_core.plugin_api.reset()
    with dpt_core.invocation("online"):
        pass  # another database's successful write leaves the dead one's events alone
    assert Spool(tmp_path / "spool", DEAD_URL).status().events == 4
    assert [r.job for r in dpt_env.rows("SELECT job FROM invocations")] == ["online"]

    # Replayed (here by hand, as if the dead server came back here), they are complete.
    assert Spool(tmp_path / "spool", DEAD_URL).replay(current_store().record) == 4
    assert Spool(tmp_path / "spool").status().events == 0
    jobs = [r.job for r in dpt_env.rows("SELECT job FROM invocations ORDER BY id")]
    assert jobs == ["online", "offline"]
    assert dpt_env.scalar("SELECT status FROM invocations WHERE job = 'offline'") == "success"
    assert dpt_env.scalar("SELECT COUNT(*) FROM lineage_edges") == 1


def _events(n: int) -> list[list]:
    batches = []
    for i in range(n):
        inv = str(uuid.uuid4())
        batches.append([InvocationStarted(uuid=inv, orchestrator="python", job=f"j{i}")])
        batches.append(
            [
                ProductsWritten(
                    inv,
                    (ProductObservation(uri=f"s3://b/k{i % 3}", version_uuid=str(uuid.uuid4())),),
                )
            ]
        )
        batches.append([InvocationFinished(inv, "success")])
    return batches


@given(n=st.integers(1, 6), times=st.integers(2, 3))
def test_replaying_a_spool_twice_equals_once(dpt_env, n, times):
    store = current_store()
    empty_tracking(store.engine)
    batches = _events(n)
    for batch in batches:
        store.spool.append(batch)
    # Simulate a crash after replay recorded everything but before it deleted the file:
    # replay the same content again from a copy.
    content = store.spool.own_file.read_bytes()
    assert store.spool.replay(store.record) == 3 * n
    once = count_all(dpt_env)
    for _ in range(times - 1):
        store.spool.own_file.write_bytes(content)
        store.spool.replay(store.record)
    assert count_all(dpt_env) == once
    assert once["invocations"] == n and once["data_product_versions"] == n


def test_truncated_spool_line_is_quarantined_not_lost(dpt_env):
    store = current_store()
    batch = _events(1)[0]
    store.spool.append(batch)
    with open(store.spool.own_file, "ab") as handle:
        handle.write(b'[{"kind": "invocation_started", "uuid": "cut sho')
    assert store.spool.replay(store.record) == 1
    bad = list(store.spool.directory.glob("*.bad"))
    assert len(bad) == 1 and b"cut sho" in bad[0].read_bytes()
    assert dpt_env.scalar("SELECT COUNT(*) FROM invocations") == 1


def test_the_outcome_of_a_submit_says_recorded_or_spooled(dpt_env, monkeypatch):
    from dpt_core.store.plugin import last_outcome

    with dpt_core.invocation("here"):
        pass
    assert last_outcome() == "recorded"
    monkeypatch.setenv("DPT_DATABASE_URL", DEAD_URL)
    monkeypatch.setenv("DPT_CONNECT_TIMEOUT", "1")
    dpt_core.plugin_api.reset()
    with dpt_core.invocation("away"):
        pass
    assert last_outcome() == "spooled"


def test_a_replay_cut_short_keeps_the_older_file_first(tmp_path):
    """A replay that stops on a transient failure rewrites the file with the batches left;
    they are still replayed before the batches of a file started later (else a run's end
    could be recorded before its start, with no row to end: the run would stay running)."""
    import os

    import pytest

    url = "sqlite:////nowhere/dpt.sqlite3"
    spool = Spool(tmp_path / "spool", url)
    run = str(uuid.uuid4())
    start = InvocationStarted(uuid=run, orchestrator="python", job="j")
    write = ProductsWritten(run, (ProductObservation("s3://b/k", str(uuid.uuid4())),))
    spool.append([start])
    spool.append([write])
    older = spool.claim_own()  # (the background writer's claim)
    assert older is not None
    os.utime(older, ns=(1_000_000_000, 1_000_000_000))  # appended long ago
    spool.append([InvocationFinished(uuid=run, status="success")])  # a newer file
    seen: list[str] = []

    def record_until_cut(batch):
        if isinstance(batch[0], ProductsWritten) and not seen.count("cut"):
            seen.append("cut")
            raise ConnectionError("the server went away")
        seen.append(type(batch[0]).__name__)

    with pytest.raises(ConnectionError):
        spool.replay(record_until_cut)
    assert spool.files()[0] == older  # rewritten with what is left, and still first
    spool.replay(record_until_cut)
    assert seen == ["InvocationStarted", "cut", "ProductsWritten", "InvocationFinished"]
    assert spool.is_empty()


#: Statements after which the session's next write is refused as read-only, per backend.
READ_ONLY_SESSION = {
    "sqlite": "PRAGMA query_only = ON",
    "postgresql": "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    "mysql": "SET SESSION TRANSACTION READ ONLY",
}


def _error_of(engine, *statements: str) -> BaseException:
    """The error the database raises for the last of ``statements`` (in one connection)."""
    with engine.connect() as conn:
        for statement in statements[:-1]:
            conn.exec_driver_sql(statement)
            conn.commit()
        with pytest.raises(Exception) as raised:
            conn.exec_driver_sql(statements[-1])
        conn.rollback()
    return raised.value


def test_write_failures_are_classified_by_what_the_database_says(dpt_backend):
    """Real errors of each backend: a read-only session is ``denied`` (its events wait in the
    spool, like those of an unreachable database), a duplicate key is ``refused`` for good
    (set aside), an unreachable server or a schema behind dpt's is ``away``."""
    backend = make_engine(dpt_backend).dialect.name
    backend = "mysql" if backend == "mariadb" else backend
    engine = make_engine(dpt_backend)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE dpt_test_kinds (id INTEGER PRIMARY KEY)")
            conn.exec_driver_sql("INSERT INTO dpt_test_kinds (id) VALUES (1)")
        refused = _error_of(engine, "INSERT INTO dpt_test_kinds (id) VALUES (1)")
        denied = _error_of(  # (last: the pooled connection stays read-only)
            engine, READ_ONLY_SESSION[backend], "INSERT INTO dpt_test_kinds (id) VALUES (2)"
        )
    finally:
        engine.dispose()
    assert failure_kind(denied) == "denied", repr(denied)
    assert failure_kind(refused) == "refused", repr(refused)
    dead = make_engine(DEAD_URL, connect_timeout=1)
    with pytest.raises(Exception) as unreachable:
        dead.connect()
    dead.dispose()
    assert failure_kind(unreachable.value) == "away"
    assert failure_kind(MigrationRequired("run 'dpt db upgrade'")) == "away"
    assert is_transient(denied) and is_transient(unreachable.value)
    assert not is_transient(refused)
