"""Database outages: the user's code goes on, events spool, replay restores them exactly once.

dpt talks to PostgreSQL through :class:`faultproxy.FaultProxy`, which the test
cuts (connections reset), refuses (port closed), black-holes (accepts, never
answers) and restores. Checks read the database over a direct connection, never
through the proxy. Timeouts are set to 1 s (``DPT_CONNECT_TIMEOUT``,
``DPT_STATEMENT_TIMEOUT``); a test never asserts a duration, but a wait that
does not end within :data:`conftest.HANG` seconds fails it.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading

import pytest
from conftest import (
    HANG,
    cli_json,
    direct_rows,
    direct_scalar,
    facts,
    subprocess_env,
    table_counts,
    worker,
)
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import dpt_core
from dpt_core.spool import Spool
from dpt_core.store.plugin import current_store


@pytest.fixture(autouse=True)
def sync_writes(request, monkeypatch):
    """These tests follow each write as it happens (recorded live, then the server goes
    away): they run the synchronous write path (``DPT_WRITE=sync``), whose writes,
    spooling, breaker and replay the background writer uses one batch at a time; the
    chaos test runs both modes, and test_durability.py covers the background writer."""
    if "pg_env" in request.fixturenames:
        request.getfixturevalue("pg_env")  # (which clears every DPT_* variable)
    monkeypatch.setenv("DPT_WRITE", "sync")
    dpt_core.plugin_api.reset()


@pytest.fixture
def via_proxy(pg_env, proxy, monkeypatch):
    """``pg_env`` with dpt's connections going through ``proxy``; yields (env, proxy)."""
    monkeypatch.setenv("DPT_DATABASE_URL", proxy.url_for(pg_env.url))
    monkeypatch.setenv("DPT_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("DPT_STATEMENT_TIMEOUT", "1")
    monkeypatch.setenv("DPT_RETRY_AFTER", "0.1")  # the breaker's probe comes soon
    dpt_core.plugin_api.reset()
    yield pg_env, proxy
    dpt_core.plugin_api.reset()


def spool(env) -> Spool:
    return Spool(env.path / "spool")


def files(tmp_path, *names):
    paths = []
    for name in names:
        path = tmp_path / name
        path.write_text(name)
        paths.append(path)
    return paths


def statuses(url):
    return dict(direct_rows(url, "SELECT job, status FROM invocations"))


def test_server_going_down_mid_run_then_coming_back(via_proxy, tmp_path, caplog):
    env, proxy = via_proxy
    raw, cal, flat = files(tmp_path, "raw.fits", "cal.fits", "flat.fits")
    went_on = []
    with dpt_core.invocation("calibrate") as inv:
        inv.read(raw)  # recorded live
        proxy.refuse()  # the server goes away: open connections reset, new ones refused
        inv.read(flat)
        inv.write(cal)
        went_on.append("calibrate")
    with dpt_core.invocation("offline") as inv:
        inv.write(tmp_path / "other")
        went_on.append("offline")
    assert went_on == ["calibrate", "offline"]
    assert spool(env).status().events > 0
    assert caplog.text.count("events kept in the spool") == 1
    # what reached the database before the outage is consistent: the run shows as running
    assert statuses(env.url) == {"calibrate": "running"}
    assert direct_scalar(env.url, "SELECT COUNT(*) FROM invocation_inputs") == 1
    assert direct_scalar(env.url, "SELECT COUNT(*) FROM data_product_versions") == 1

    proxy.restore()
    with dpt_core.invocation("after"):
        pass  # spooled too: the breaker is open; its background probe replays the spool
    assert current_store().wait_for_probe(HANG), "the database is back, the breaker stays open"
    assert spool(env).status().events == 0
    assert statuses(env.url) == {"calibrate": "success", "offline": "success", "after": "success"}
    counts = table_counts(env.url)
    assert counts["invocations"] == 3
    assert counts["data_products"] == 4 and counts["data_product_versions"] == 4
    assert counts["invocation_inputs"] == 2 and counts["lineage_edges"] == 2
    assert cli_json("spool", "replay") == {"replayed": 0}
    assert table_counts(env.url) == counts


def test_stale_pooled_connection_after_an_outage_is_replaced(via_proxy, tmp_path, caplog):
    env, proxy = via_proxy
    a, b = files(tmp_path, "a", "b")
    dpt_core.track(a)
    assert proxy.open_connections == 1  # the pool keeps it
    proxy.cut()  # the server restarted: the pooled connection is dead, new ones work
    assert proxy.open_connections == 0
    dpt_core.track(b)
    assert spool(env).status().events == 0, "the dead pooled connection made a write spool"
    assert "spool" not in caplog.text
    assert direct_scalar(env.url, "SELECT COUNT(*) FROM invocations WHERE status = 'success'") == 2
    assert proxy.stats.forwarded_connections == 2


def test_server_that_accepts_and_never_answers_is_bounded_by_the_connect_timeout(
    pg_env, proxy, tmp_path
):
    proxy.blackhole()
    (tmp_path / "in.txt").write_text("in")
    settings = {
        "DPT_DATABASE_URL": proxy.url_for(pg_env.url),
        "DPT_CONNECT_TIMEOUT": "1",
        "DPT_STATEMENT_TIMEOUT": "1",
    }
    proc = worker(
        "one", {"input": str(tmp_path / "in.txt"), "output": "s3://bucket/out"}, env=settings
    )
    out, err = proc.communicate(timeout=HANG)  # a task that hangs fails here
    assert proc.returncode == 0, err
    assert {"user_code": "went on"} in facts(out)
    assert "timeout" in err.lower() and "Traceback" not in err
    assert proxy.stats.held_connections >= 1 and proxy.stats.forwarded_connections == 0
    spooled = spool(pg_env).status().events
    assert spooled > 0
    # Another route to the server is, for dpt, another database: nothing goes there.
    assert cli_json("spool", "replay") == {"replayed": 0}
    assert direct_scalar(pg_env.url, "SELECT COUNT(*) FROM invocations") == 0
    # back to a server that answers on that route: the CLI replays everything, once
    proxy.restore()
    assert cli_json("spool", "replay", env=settings) == {"replayed": spooled}
    (uuid,) = [f["uuid"] for f in facts(out) if "uuid" in f]
    assert direct_rows(pg_env.url, "SELECT uuid, status FROM invocations") == [(uuid, "success")]
    assert direct_scalar(pg_env.url, "SELECT COUNT(*) FROM lineage_edges") == 1
    assert direct_scalar(pg_env.url, "SELECT COUNT(*) FROM data_product_versions") == 2


def test_server_that_stops_answering_mid_session_does_not_hang_the_task(pg_env, proxy, tmp_path):
    gate = tmp_path / "frozen"
    settings = {
        "DPT_DATABASE_URL": proxy.url_for(pg_env.url),
        "DPT_CONNECT_TIMEOUT": "1",
        "DPT_STATEMENT_TIMEOUT": "1",
    }
    script = (
        "import os, sys, time, json, dpt_core\n"
        "with dpt_core.invocation('frozen') as inv:\n"
        "    print('started', flush=True)\n"
        "    while not os.path.exists(sys.argv[1]): time.sleep(0.01)\n"
        "    inv.write('s3://bucket/after-freeze')\n"
        "print('user code went on', flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(gate)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(settings),
    )
    assert proc.stdout.readline().strip() == "started"
    proxy.freeze()  # the connection stays open, nothing comes back
    gate.touch()
    try:
        out, err = proc.communicate(timeout=15)  # over 10x the configured timeouts
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("the task hung on a server that stopped answering") from None
    assert proc.returncode == 0 and "user code went on" in out, err


def test_statement_timeout_bounds_a_write_the_server_never_finishes(
    pg_env, monkeypatch, tmp_path, caplog
):
    """A server that holds a statement forever (here: a lock it never grants) is cut off."""
    monkeypatch.setenv("DPT_STATEMENT_TIMEOUT", "1")
    monkeypatch.setenv("DPT_RETRY_AFTER", "0.1")
    dpt_core.plugin_api.reset()
    dpt_core.track(files(tmp_path, "warm")[0])  # connected, schema checked
    locker = create_engine(make_url(pg_env.url).set(drivername="postgresql+psycopg"))
    held = locker.connect()
    held.execute(text("LOCK TABLE invocations IN ACCESS EXCLUSIVE MODE"))  # until rollback
    try:
        went_on = False
        with dpt_core.invocation("blocked") as inv:
            inv.write("s3://bucket/blocked")
            went_on = True
        assert went_on
        assert spool(pg_env).status().events > 0
        assert "statement timeout" in caplog.text
    finally:
        held.rollback()
        held.close()
        locker.dispose()
    dpt_core.track("s3://bucket/unblocked")  # spooled while the breaker is open
    assert current_store().wait_for_probe(HANG)  # then the probe replays the spool
    assert spool(pg_env).status().events == 0
    assert statuses(pg_env.url)["blocked"] == "success"
    assert direct_scalar(pg_env.url, "SELECT COUNT(*) FROM data_products") == 3


STALL_EDGES_PG = """
CREATE FUNCTION dpt_test_stall() RETURNS trigger AS $$
BEGIN PERFORM pg_sleep(60); RETURN NEW; END $$ LANGUAGE plpgsql;
CREATE TRIGGER dpt_test_stall BEFORE INSERT ON lineage_edges FOR EACH ROW EXECUTE FUNCTION dpt_test_stall();
"""


def test_transaction_failing_half_way_leaves_nothing_behind_and_is_replayed(
    pg_env, monkeypatch, tmp_path, caplog
):
    """The server stalls half way through a batch (products and versions in, the edges
    never): the statement timeout ends the transaction, nothing of it stays, it is replayed."""
    monkeypatch.setenv("DPT_STATEMENT_TIMEOUT", "1")
    dpt_core.plugin_api.reset()
    env = pg_env
    raw, out1, out2 = files(tmp_path, "raw", "out1", "out2")
    dpt_core.track(files(tmp_path, "warm")[0])
    engine = create_engine(make_url(env.url).set(drivername="postgresql+psycopg"))
    with engine.begin() as conn:
        conn.exec_driver_sql(STALL_EDGES_PG)
    before = table_counts(env.url)
    went_on = False
    with dpt_core.invocation("half") as inv:
        inv.read(raw)
        inv.write(out1, out2)  # products and versions go in, then the edges stall
        went_on = True
    assert went_on
    assert "statement timeout" in caplog.text
    after = table_counts(env.url)
    # the failed batch left no trace: no product, version or edge from it
    assert after["data_products"] == before["data_products"] + 1  # raw, from the read batch
    assert after["data_product_versions"] == before["data_product_versions"] + 1
    assert after["lineage_edges"] == before["lineage_edges"]
    assert statuses(env.url)["half"] == "running"  # the finish waits behind the write
    spooled = spool(env).status().events
    assert spooled > 0

    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER dpt_test_stall ON lineage_edges")
    engine.dispose()
    assert cli_json("spool", "replay") == {"replayed": spooled}
    final = table_counts(env.url)
    assert final["data_products"] == before["data_products"] + 3
    assert final["data_product_versions"] == before["data_product_versions"] + 3
    assert final["lineage_edges"] == before["lineage_edges"] + 2
    assert statuses(env.url)["half"] == "success"
    assert not list((env.path / "spool").rglob("*.bad"))


@pytest.mark.parametrize("mode", ["sync", "background"])
def test_chaos_outages_during_writes_lose_and_duplicate_nothing(
    via_proxy, tmp_path, monkeypatch, mode
):
    """A thread cuts and refuses the server at random moments -- mid-transaction included --
    while the main thread records; after the last outage everything is there exactly once."""
    env, proxy = via_proxy
    monkeypatch.setenv("DPT_WRITE", mode)
    dpt_core.plugin_api.reset()
    spooled: list[int] = []
    real_append = Spool.append

    def counting_append(self, events, **options):
        spooled.append(len(events))
        real_append(self, events, **options)

    monkeypatch.setattr(Spool, "append", counting_append)
    inputs = files(tmp_path, *[f"in{k}" for k in range(5)])
    rng, chaos_rng = random.Random(8), random.Random(9)
    stop = threading.Event()
    outages = []

    def chaos():
        while not stop.is_set():
            stop.wait(chaos_rng.uniform(0.02, 0.15))
            fault = chaos_rng.choice(["cut", "cut", "refuse"])
            getattr(proxy, fault)()
            outages.append(fault)
            if fault == "refuse":
                stop.wait(chaos_rng.uniform(0.02, 0.2))
                proxy.restore()

    expected_versions = 0
    uuids = []
    thread = threading.Thread(target=chaos)
    thread.start()
    try:
        # at least 40 invocations, and on until the server has gone away 5 times
        for i in range(2000):
            if i >= 40 and outages.count("refuse") >= 5:
                break
            # (a pipeline works between its records: without a pause, the number of
            # invocations, and the test's time, grew with how fast the writer let it go,
            # 1 254 in 3 s with a writer that gathers its claims)
            stop.wait(0.002)
            with dpt_core.invocation("chaos", task=f"t{i}") as inv:
                inv.read(*rng.sample(inputs, 2))
                inv.write(*[f"s3://bucket/chaos/{i}/{k}" for k in range(25)])
                inv.write(*files(tmp_path, f"out{i}"))
                uuids.append(inv.uuid)
                expected_versions += 26
    finally:
        stop.set()
        thread.join()
    proxy.restore()
    dpt_core.track("s3://bucket/chaos/final")  # recorded, or spooled while the breaker is open
    assert current_store().wait_for_probe(HANG)
    dpt_core.flush(HANG)  # (background: the writer's last claim)
    assert current_store().wait_for_probe(HANG)
    assert spool(env).status().events == 0
    rows = direct_rows(env.url, "SELECT uuid, status FROM invocations WHERE job = 'chaos'")
    assert sorted(u for u, _ in rows) == sorted(uuids)
    assert {s for _, s in rows} == {"success"}
    produced = direct_scalar(
        env.url,
        "SELECT COUNT(*) FROM data_product_versions v JOIN invocations i ON v.produced_by_id = i.id "
        "WHERE i.job = 'chaos'",
    )
    assert produced == expected_versions
    assert direct_scalar(env.url, "SELECT COUNT(*) FROM invocation_inputs") == len(uuids) * 2
    print(
        f"chaos: {len(outages)} outages ({outages.count('refuse')} refused, {outages.count('cut')} cut), "
        f"{sum(spooled)} events spooled in {len(spooled)} batches, {len(uuids)} invocations, "
        f"{expected_versions} versions, all present once"
    )
    assert outages.count("refuse") >= 5 and sum(spooled) > 0


def test_replay_interrupted_half_way_then_resumed_records_each_event_once(via_proxy, tmp_path):
    """A new outage during a replay: the next replay records exactly what is left, and a
    read that reaches the database twice (its commit acknowledgement lost) stays one input
    even though a newer version of the same content was written in between."""
    env, proxy = via_proxy
    (shared,) = files(tmp_path, "shared.dat")
    dpt_core.track(shared)  # version 1 of shared.dat, recorded live
    proxy.refuse()
    with dpt_core.invocation("reader") as reader:
        reader.read(shared)  # sees version 1
    with dpt_core.invocation("rewriter") as rewriter:
        rewriter.write(shared)  # version 2, same content
    proxy.restore()
    store = current_store()
    status = store.spool.status()
    assert status.batches >= 2
    recorded = []

    def outage_before_the_last_batch(batch):
        if len(recorded) == status.batches - 1:
            raise ConnectionError("the server went away again during the replay")
        store.record(batch)
        recorded.append(batch)

    with pytest.raises(ConnectionError):
        store.spool.replay(outage_before_the_last_batch)
    left = status.events - sum(len(batch) for batch in recorded)
    assert store.spool.replay(store.record) == left  # the rest, not the whole file again
    for batch in recorded:  # as if each commit had happened but its answer was lost
        store.record(batch)
    inputs = direct_rows(
        env.url,
        "SELECT v.uuid FROM invocation_inputs ii JOIN invocations i ON i.id = ii.invocation_id "
        "JOIN data_product_versions v ON v.id = ii.version_id WHERE i.job = 'reader'",
    )
    assert len(inputs) == 1, f"one read of shared.dat became {len(inputs)} inputs"


def test_a_black_holed_database_costs_a_process_one_timeout_not_one_per_event(
    via_proxy, tmp_path, monkeypatch, caplog
):
    """The circuit breaker: after the first write times out, the next 99 invocations go
    straight to the spool (no connection attempted); once the server answers again, the
    spool replays every one of them exactly once."""
    env, proxy = via_proxy
    monkeypatch.setenv("DPT_RETRY_AFTER", "600")  # no probe during the test
    dpt_core.plugin_api.reset()
    dpt_core.track(files(tmp_path, "warm")[0])  # connected, schema checked
    proxy.blackhole()
    proxy.cut()  # the pooled connection is gone too: every write must connect anew
    uuids = []
    for i in range(100):
        with dpt_core.invocation("small", task=f"t{i}") as inv:
            inv.write(f"s3://bucket/small/{i}")
            uuids.append(inv.uuid)
    assert proxy.stats.held_connections == 1, "a connection was attempted after the first timeout"
    store = current_store()
    assert store.breaker.is_open and store.breaker.failures == 1
    assert spool(env).status().events == 300  # start, output, end of each
    assert caplog.text.count("events kept in the spool") == 1
    assert direct_scalar(env.url, "SELECT COUNT(*) FROM invocations WHERE job = 'small'") == 0

    proxy.restore()
    assert cli_json("spool", "replay") == {"replayed": 300}
    rows = direct_rows(env.url, "SELECT uuid, status FROM invocations WHERE job = 'small'")
    assert sorted(rows) == sorted((u, "success") for u in uuids)
    assert direct_scalar(env.url, "SELECT COUNT(*) FROM data_products") == 101


def test_the_breaker_off_tries_the_database_at_every_write(via_proxy, tmp_path, monkeypatch):
    """DPT_RETRY_AFTER=0: no breaker; each write connects again (and waits its timeout)."""
    env, proxy = via_proxy
    monkeypatch.setenv("DPT_RETRY_AFTER", "0")
    dpt_core.plugin_api.reset()
    dpt_core.track(files(tmp_path, "warm")[0])
    proxy.blackhole()
    proxy.cut()
    for i in range(3):
        dpt_core.track(f"s3://bucket/off/{i}")
    # one connection attempt, and one timeout, per batch of events spooled
    batches = spool(env).status().batches
    assert batches >= 3 and proxy.stats.held_connections == batches
    assert not current_store().breaker.is_open
    proxy.restore()
    dpt_core.track("s3://bucket/off/back")  # the first write replays the spool at once
    assert spool(env).status().events == 0
    assert direct_scalar(env.url, "SELECT COUNT(*) FROM data_products") == 5
