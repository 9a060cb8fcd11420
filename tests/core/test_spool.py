"""When the database is unreachable, events spool; replay restores them exactly once."""

from __future__ import annotations

import json
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
from dpt_core.spool import SUFFIX, Spool
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


def test_a_file_left_under_two_names_by_a_killed_claim_is_replayed_once_and_gone(tmp_path):
    """A process killed inside a claim, between the link to the claimed name and the
    unlink of its own, leaves one file under two names: listed once, replayed once, and
    both names gone after (the one not replayed kept its events waiting: ci-local saw 4
    events left after a SIGKILL right after a task returned)."""
    import os

    spool = Spool(tmp_path / "spool", "sqlite:////nowhere/dpt.sqlite3")
    run = str(uuid.uuid4())
    spool.append([InvocationStarted(uuid=run, orchestrator="python", job="j")])
    spool.append([InvocationFinished(uuid=run, status="success")])
    own = spool.own_file
    os.link(own, own.with_name(f"{own.stem}.w1{own.suffix}"))  # (killed before the unlink)
    assert spool.status().events == 2  # one file, listed once
    seen: list[str] = []
    assert spool.replay(lambda batch: seen.append(type(batch[0]).__name__)) == 2
    assert seen == ["InvocationStarted", "InvocationFinished"]
    assert spool.is_empty()
    assert spool.status().events == 0


def test_the_files_of_one_process_are_listed_oldest_first_without_the_others(tmp_path):
    """What the background writer looks for before each claim after its first pass: this
    process's own files (``<host>-<pid>.``), not every process's in a shared spool."""
    import os

    url = "sqlite:////nowhere/dpt.sqlite3"
    spool = Spool(tmp_path / "spool", url)
    other = Spool(tmp_path / "spool", url)
    theirs = spool.own_file.with_name(f"{spool.own_file.stem}9{SUFFIX}")  # (pid + "9")
    other._own = (os.getpid(), theirs)
    run = str(uuid.uuid4())
    other.append([InvocationStarted(uuid=run, orchestrator="python", job="theirs")])
    spool.append([InvocationStarted(uuid=run, orchestrator="python", job="mine")])
    claimed = spool.claim_own()
    assert claimed is not None
    spool.append([InvocationFinished(uuid=run, status="success")])  # a new own file
    os.utime(claimed, ns=(2_000_000_000, 2_000_000_000))
    os.utime(spool.own_file, ns=(1_000_000_000, 1_000_000_000))  # the older of the two
    os.link(claimed, claimed.with_name(f"{spool.own_file.stem}.w99{SUFFIX}"))  # two names
    mine = spool.files(prefix=spool.own_file.stem + ".")
    assert len(mine) == 2
    assert mine[0] == spool.own_file
    assert os.stat(mine[1]).st_ino == os.stat(claimed).st_ino  # (either of its names)
    assert len(spool.files()) == 3  # theirs too, the file under two names once
    assert theirs in spool.files()


def test_a_replay_leaves_a_file_started_since_it_listed_the_spool_to_its_writer(dpt_env):
    """A replay lists the spool (a process's first write, a drainer). While it writes the
    first file, another process's background writer claims that process's file (a run's
    start) and, still writing it, the run ends: its end goes to a new file under the name
    listed. The replay leaves that file to the writer, which writes it after the start.
    Taken by the replay, the end found no run and the start, committed after it, left the
    run running until a dead-run check closed it as crashed (an Airflow try that
    succeeded, twice in the real deployment under the parallel suite's load)."""
    import os

    store = current_store()
    spool = store.spool
    theirs = Spool(spool.root, store.settings.database_url)  # (another process's file)
    theirs._own = (os.getpid(), spool.own_file.with_name(f"{spool.own_file.stem}9{SUFFIX}"))
    other, run = str(uuid.uuid4()), str(uuid.uuid4())
    theirs.append([InvocationStarted(uuid=other, orchestrator="python", job="theirs")])
    spool.append([InvocationStarted(uuid=run, orchestrator="python", job="mine")])
    os.utime(theirs.own_file, ns=(1_000_000_000, 1_000_000_000))  # listed first
    claimed: list = []
    recorded: list[str] = []

    def record(batch):
        store.record(batch)
        recorded.append(f"{type(batch[0]).__name__} {batch[0].uuid}")
        if not claimed:  # meanwhile, in the other process
            claimed.append(spool.claim_own())
            spool.append([InvocationFinished(uuid=run, status="success")])

    assert store.spool.replay(record) == 1
    assert recorded == [f"InvocationStarted {other}"]
    # the writer writes its claim, then what was appended since
    assert claimed[0] is not None
    store.spool.replay(record, files=[claimed[0], *spool.listing(spool.own_file.stem + ".")])
    assert recorded[1:] == [f"InvocationStarted {run}", f"InvocationFinished {run}"]
    assert dpt_env.scalar(f"SELECT status FROM invocations WHERE uuid = '{run}'") == "success"
    assert store.spool.is_empty()


def test_a_refused_batch_split_by_a_failure_that_may_pass_keeps_the_rest_in_order(tmp_path):
    """A batch refused for good is tried event by event; the database going away in the
    middle of that leaves in the spool exactly the events not tried yet, before the
    batches behind them, and in the ``.bad`` file only the event it refused."""
    spool = Spool(tmp_path / "spool", "sqlite:////nowhere/dpt.sqlite3")
    run, next_run = str(uuid.uuid4()), str(uuid.uuid4())
    write = ProductsWritten(run, (ProductObservation("s3://b/k", str(uuid.uuid4())),))
    start = InvocationStarted(uuid=run, orchestrator="python", job="j")
    spool.append([start, write, InvocationFinished(uuid=run, status="success")])  # one batch
    spool.append([InvocationStarted(uuid=next_run, orchestrator="python", job="next")])
    seen: list[str] = []
    away = ["once"]

    def record(batch):
        kinds = [type(e).__name__ for e in batch]
        if len(batch) > 1:
            raise ValueError("refused for good")
        if kinds == ["ProductsWritten"]:
            raise ValueError("this output, refused for good")
        if kinds == ["InvocationFinished"] and away:
            away.pop()
            raise ConnectionError("the server went away")
        seen.append(f"{kinds[0]} {batch[0].uuid}")

    def transient(exc):
        return isinstance(exc, ConnectionError)

    with pytest.raises(ConnectionError):
        spool.replay(record, transient)
    assert seen == [f"InvocationStarted {run}"]
    (bad,) = spool.directory.glob("*.bad")
    (line,) = bad.read_text().splitlines()
    assert [e["kind"] for e in json.loads(line)["events"]] == ["products_written"]
    assert "this output" in json.loads(line)["error"]
    assert spool.replay(record, transient) == 2
    assert seen[1:] == [f"InvocationFinished {run}", f"InvocationStarted {next_run}"]
    assert spool.is_empty()


def test_a_child_forked_while_a_replay_holds_a_spool_file_does_not_keep_it_locked(tmp_path):
    """A process forks (an orchestrator's process pool) while a thread of it replays a
    spool file under its lock: once the replay is done, the lock is free, though the child
    lives on. The child's copy of the descriptor held it until the child exited: a
    ``dpt serve`` waiting for that lock kept Airflow's OpenLineage provider, posting to it
    from such a child, waiting 5 x 60 s (ci-local, 2026-12-07)."""
    import fcntl
    import os
    import threading

    spool = Spool(tmp_path / "spool", "sqlite:////nowhere/dpt.sqlite3")
    spool.append([InvocationStarted(uuid=str(uuid.uuid4()), orchestrator="python", job="j")])
    holding, go_on = threading.Event(), threading.Event()

    def record(batch):
        holding.set()
        go_on.wait()

    replay = threading.Thread(target=spool.replay, args=(record,))
    replay.start()
    holding.wait()
    (taken,) = spool.files()  # moved aside by the replay, which holds its lock
    watcher = os.open(taken, os.O_RDONLY)
    child_waits, release_child = os.pipe()
    child_ready, ready = os.pipe()
    child = os.fork()
    if child == 0:  # (the child says it runs -- its fork handlers ran -- waits, leaves)
        os.write(ready, b"r")
        os.read(child_waits, 1)
        os._exit(0)
    try:
        assert os.read(child_ready, 1) == b"r"
        go_on.set()
        replay.join()
        assert not taken.exists()  # replayed and removed
        fcntl.flock(watcher, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: still held
    finally:
        os.write(release_child, b"x")
        os.waitpid(child, 0)
        for fd in (watcher, child_waits, release_child, child_ready, ready):
            os.close(fd)


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


def _commits(engine) -> list[int]:
    """A list that grows by one at each commit on ``engine``, from now on."""
    from sqlalchemy import event

    commits: list[int] = []
    event.listen(engine, "commit", lambda conn: commits.append(1))
    return commits


@pytest.mark.parametrize("dpt_backend", ["sqlite", "postgresql"], indirect=True)
def test_the_next_write_replays_a_spool_of_many_batches_in_one_transaction(
    dpt_backend, dpt_env, monkeypatch
):
    """200 invocations spooled one event a batch (600 batches, as a process recording
    without a batch leaves them): the next write records them in one transaction, then
    its own batch in another -- not one transaction per spooled batch."""
    monkeypatch.setenv("DPT_WRITE", "sync")
    dpt_core.plugin_api.reset()
    with dpt_core.invocation("before"):
        pass  # connected, schema checked, dead runs looked for
    store = current_store()
    batches = _events(200)
    for batch in batches:
        store.spool.append(batch)
    commits = _commits(store.engine)
    store.submit([InvocationStarted(uuid=str(uuid.uuid4()), orchestrator="python", job="next")])
    assert store.spool.is_empty()
    assert len(commits) == 2, f"{len(commits)} transactions for 600 spooled batches and one"
    assert dpt_env.scalar("SELECT COUNT(*) FROM invocations WHERE status = 'success'") == 201
    assert dpt_env.scalar("SELECT COUNT(*) FROM data_product_versions") == 200


#: A trigger that refuses, for good, to record a run whose job is ``refused``.
REFUSE_JOB = {
    "sqlite": [
        "CREATE TRIGGER dpt_test_refuse BEFORE INSERT ON invocations WHEN NEW.job = 'refused' "
        "BEGIN SELECT RAISE(ABORT, 'refused for good'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION dpt_test_refuse() RETURNS trigger AS $$ BEGIN "
        "IF NEW.job = 'refused' THEN RAISE EXCEPTION 'refused for good'; END IF; "
        "RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER dpt_test_refuse BEFORE INSERT ON invocations "
        "FOR EACH ROW EXECUTE FUNCTION dpt_test_refuse()",
    ],
}


@pytest.mark.parametrize("dpt_backend", ["sqlite", "postgresql"], indirect=True)
def test_a_batch_refused_in_the_middle_of_a_group_is_set_aside_and_the_rest_recorded_once(
    dpt_backend, dpt_env
):
    store = current_store()
    with store.engine.begin() as conn:
        for statement in REFUSE_JOB[dpt_env.backend]:
            conn.exec_driver_sql(statement)
    refused = str(uuid.uuid4())
    before, after = _events(4), _events(4)
    for batch in before:
        store.spool.append(batch)
    store.spool.append(  # one batch, as tracker.batch() spools a whole invocation
        [
            InvocationStarted(uuid=refused, orchestrator="python", job="refused"),
            ProductsWritten(refused, (ProductObservation("s3://b/refused", str(uuid.uuid4())),)),
            InvocationFinished(refused, "success"),
        ]
    )
    for batch in after:
        store.spool.append(batch)
    commits = _commits(store.engine)
    # the 8 good invocations' events, and of the refused batch what the database takes
    # alone: its output and its end, under the placeholder a start still to come fills in
    assert store.replay() == 24 + 2
    assert store.spool.is_empty()
    (bad,) = store.spool.directory.glob("*.bad")
    (line,) = bad.read_text().splitlines()
    assert "refused for good" in line and refused in line
    assert [e["kind"] for e in json.loads(line)["events"]] == ["invocation_started"]
    good = {b[0].uuid for b in [*before, *after] if isinstance(b[0], InvocationStarted)}
    recorded = dict(dpt_env.rows("SELECT uuid, status FROM invocations"))
    assert recorded == {**dict.fromkeys(good, "success"), refused: "success"}
    assert dpt_env.scalar("SELECT COUNT(*) FROM data_product_versions") == 9
    # the group, refused whole, then batch by batch, and the refused batch event by event
    assert len(commits) == 24 + 2


@pytest.mark.parametrize("dpt_backend", ["postgresql"], indirect=True)
def test_a_connection_lost_in_the_middle_of_a_group_loses_and_duplicates_nothing(
    dpt_backend, dpt_env, monkeypatch
):
    """The server ends the connection in the middle of the second group's transaction (on
    the retry on a fresh connection too): the file keeps exactly the batches of that group
    and after; a commit whose answer was lost is replayed without duplicating anything."""
    from sqlalchemy import create_engine, event
    from sqlalchemy.engine import make_url

    import dpt_core.spool as spool_module

    monkeypatch.setattr(spool_module, "REPLAY_GROUP", 20)  # 5 invocations a group
    store = current_store()
    engine = store.engine
    batches = _events(12)
    for batch in batches:
        store.spool.append(batch)
    killer = create_engine(
        make_url(dpt_env.url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    transactions = cuts = statements = 0

    def begin(conn):
        nonlocal transactions, statements
        transactions += 1
        statements = 0

    def cut_the_second_group(conn, cursor, statement, *args):
        nonlocal statements, cuts
        statements += 1
        if transactions >= 2 and statements == 3 and cuts < 2:
            cuts += 1
            with killer.connect() as kill:
                pid = cursor.connection.info.backend_pid
                kill.exec_driver_sql(f"SELECT pg_terminate_backend({pid}, 10000)")

    event.listen(engine, "begin", begin)
    event.listen(engine, "before_cursor_execute", cut_the_second_group)
    try:
        with pytest.raises(Exception) as lost:
            store.replay()
    finally:
        event.remove(engine, "before_cursor_execute", cut_the_second_group)
        killer.dispose()
    assert is_transient(lost.value) and cuts == 2
    assert store.spool.status().batches == len(batches) - 15  # the first group's 15 recorded
    assert dpt_env.scalar("SELECT COUNT(*) FROM invocations") == 5

    recorded: list[list] = []

    def answer_lost(groups):
        store.record_many(groups)
        recorded.extend(groups)
        if len(recorded) == 15:  # the commit of the second group happened; its answer not
            raise ConnectionError("the server went away")

    with pytest.raises(ConnectionError):
        store.spool.replay(store.record, is_transient, record_many=answer_lost)
    assert store.spool.status().batches == len(batches) - 15
    assert store.replay() == 3 * 12 - 15
    assert store.spool.is_empty()
    assert dpt_env.scalar("SELECT COUNT(*) FROM invocations WHERE status = 'success'") == 12
    assert dpt_env.scalar("SELECT COUNT(*) FROM data_product_versions") == 12
    assert dpt_env.scalar("SELECT COUNT(*) FROM data_products") == 3


def test_a_grouped_replay_holds_one_group_at_a_time(dpt_env, tmp_path, monkeypatch):
    """Replayed in groups, a backlog of 4n outputs needs no more memory than one of n: a
    group is bounded (here to 300 events and products: 3 batches of 100 outputs), not the
    file (tests/core/test_memory.py checks the same of a replay batch by batch)."""
    import tracemalloc

    import dpt_core.spool as spool_module
    import dpt_core.tracker as tracker_module
    from dpt_core.store import recorder as recorder_module

    monkeypatch.setenv("DPT_WRITE", "deferred")  # batches wait in the spool
    dpt_core.plugin_api.reset()
    monkeypatch.setattr(tracker_module, "WRITE_CHUNK", 100)
    monkeypatch.setattr(recorder_module, "ID_CACHE_SIZE", 200)
    monkeypatch.setattr(recorder_module, "RUN_CACHE_SIZE", 200)
    monkeypatch.setattr(spool_module, "REPLAY_GROUP", 300)
    store = current_store()
    commits = _commits(store.engine)

    def backlog(name: str, count: int) -> int:
        root = tmp_path / name
        root.mkdir()
        with dpt_core.invocation(name) as inv:
            for i in range(count):  # small files, made one by one as they are asked for
                (root / f"f{i:05d}.dat").write_bytes(b"%d\n" % i)
            inv.write(root.glob("*.dat"))
        (own,) = store.spool.files()
        commits.clear()
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        store.replay()
        peak = tracemalloc.get_traced_memory()[1] - start
        assert store.spool.is_empty() and not own.exists()
        assert len(commits) < count / 100, "not replayed in groups"
        return peak

    tracemalloc.start()
    try:
        backlog("warm", 1_000)
        # best of three on each side, as in test_memory.py (a one-off reallocation of
        # CPython's interned strings lands in whichever replay crosses the threshold)
        peak_n = min(backlog(f"small{i}", 1_000) for i in range(3))
        peak_4n = min(backlog(f"big{i}", 4_000) for i in range(3))
    finally:
        tracemalloc.stop()
    assert dpt_env.scalar("SELECT COUNT(*) FROM data_product_versions") == 16_000
    assert peak_4n < 1.3 * peak_n, f"peak {peak_n} -> {peak_4n} B"


def test_a_group_that_fails_as_if_the_database_were_away_makes_the_next_groups_smaller(
    dpt_env, monkeypatch
):
    """A group the watchdog gave up on may only have been too big for its deadline: the
    next replay writes groups half as big (down to one batch: a replay always makes
    progress), and each group written doubles them again."""
    from dpt_core.errors import DatabaseUnavailable
    from dpt_core.spool import REPLAY_GROUP

    store = current_store()
    for batch in _events(10):
        store.spool.append(batch)
    recorder = store.recorder
    real = recorder.record_many
    sizes: list[int] = []

    def too_big_for_the_deadline(batches):
        sizes.append(len(batches))
        if len(batches) > 4:
            raise DatabaseUnavailable("timeout: did not answer within 2 s")
        real(batches)

    monkeypatch.setattr(recorder, "record_many", too_big_for_the_deadline)
    failures = 0
    for _ in range(100):  # (as many probes)
        try:
            store.replay()
        except DatabaseUnavailable:
            failures += 1
        if store.spool.is_empty():
            break
    assert store.spool.is_empty(), "the replay never made progress"
    tried = sizes[:failures]  # (30 one-event batches of 40 events and products)
    assert tried[0] == 30 and tried == sorted(tried, reverse=True) and tried[-1] > 4
    assert max(sizes[failures:]) <= 4  # from then on every group fits
    assert dpt_env.scalar("SELECT COUNT(*) FROM invocations WHERE status = 'success'") == 10
    assert store.replay_group is None or REPLAY_GROUP > store.replay_group > 4  # grown again


def test_a_forked_child_appends_to_a_file_of_its_own(tmp_path):
    """The process's file is named once per process: a child forked after the parent
    appended names its own (its pid), and both batches are there, each in its file."""
    import json
    import os

    spool = Spool(tmp_path / "spool", "sqlite:///nowhere.sqlite3")
    spool.append([InvocationFinished(str(uuid.uuid4()), "success")])
    parent_file = spool.own_file
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            spool.append([InvocationFinished("from-the-child", "success")])
            code = 0 if spool.own_file.name.endswith(f"-{os.getpid()}.jsonl") else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert spool.own_file == parent_file and parent_file.name.endswith(f"-{os.getpid()}.jsonl")
    child_file = parent_file.with_name(parent_file.name.replace(f"-{os.getpid()}.", f"-{pid}."))
    (line,) = child_file.read_text().splitlines()
    assert [e["uuid"] for e in json.loads(line)] == ["from-the-child"]
    assert len(parent_file.read_text().splitlines()) == 1


def test_a_file_a_replay_took_whole_leaves_nothing_to_sync(tmp_path):
    """A writer's first pass replays every spool file, this process's current one too (its
    appends since the claim): the next claim finds no file, and nothing is left unsynced
    (CI once saw the flag stay set after such a pass)."""
    spool = Spool(tmp_path / "spool", "sqlite:///nowhere.sqlite3")
    spool.append([InvocationFinished(str(uuid.uuid4()), "success")], synced_by_claim=True)
    assert spool._unsynced  # appended, not fsynced: the claimer will
    spool.own_file.unlink()  # what a replay does once the batches are recorded
    assert spool.claim_own() is None
    assert not spool._unsynced
