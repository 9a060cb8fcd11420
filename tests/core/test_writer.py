"""Events are durable in the spool first, then written by the background writer.

Write modes (``DPT_WRITE``): ``background`` (default), ``sync`` (opt-out, and always
under strict mode) and ``deferred`` (spool only; ``dpt spool drain`` writes).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy
from click.testing import CliRunner

import dpt_core
from dpt_core.cli import build_cli
from dpt_core.errors import TrackingError
from dpt_core.spool import Spool
from dpt_core.store import writer as writer_module
from dpt_core.store.plugin import current_store, last_outcome
from dpt_core.store.recorder import Recorder

REPO = Path(__file__).resolve().parents[2]
DEAD_URL = "postgresql://nobody@127.0.0.1:1/none"


def _slow_writes(monkeypatch, seconds: float) -> list[str]:
    """Make every database write take ``seconds`` longer; returns the writing threads' names."""
    threads: list[str] = []
    original = Recorder.record

    def slow(self, events):
        threads.append(threading.current_thread().name)
        time.sleep(seconds)
        return original(self, events)

    monkeypatch.setattr(Recorder, "record", slow)
    return threads


def _spooled(env) -> int:
    return Spool(env.path / "spool").status().events


def test_the_background_writer_writes_off_the_callers_thread(dpt_env, tmp_path, monkeypatch):
    threads = _slow_writes(monkeypatch, 0.3)
    out = tmp_path / "out.txt"
    out.write_text("x")
    started = time.monotonic()
    with dpt_core.invocation("job") as inv:
        inv.write(out)
    took = time.monotonic() - started
    assert current_store().mode == "background"
    assert dpt_core.flush() is True
    assert threads and set(threads) == {"dpt-writer"}
    assert took < 0.3 * len(threads)  # the caller did not wait for the writes
    assert dpt_env.scalar("SELECT count(*) FROM invocations WHERE job = 'job'") == 1
    assert dpt_env.scalar("SELECT count(*) FROM data_product_versions") == 1
    assert _spooled(dpt_env) == 0  # written, then taken out of the spool


def test_reads_through_dpt_see_what_the_process_just_recorded(dpt_env, tmp_path, monkeypatch):
    _slow_writes(monkeypatch, 0.3)
    out = tmp_path / "out.txt"
    out.write_text("x")
    with dpt_core.invocation("job") as inv:
        inv.write(out)
    # no flush: the reads wait for the writer themselves
    assert [r.job for r in dpt_core.runs()] == ["job"]
    assert dpt_core.show(out).versions
    result = CliRunner().invoke(build_cli(), ["runs", "--json"])
    assert result.exit_code == 0, result.output
    assert [r["job"] for r in json.loads(result.output)] == ["job"]


def test_the_outcome_waits_for_the_writer(dpt_env, monkeypatch):
    _slow_writes(monkeypatch, 0.2)
    with dpt_core.invocation("here"):
        pass
    assert last_outcome() == "recorded"
    assert dpt_env.scalar("SELECT count(*) FROM invocations") == 1


def test_sync_writes_on_the_callers_thread(dpt_env, monkeypatch):
    monkeypatch.setenv("DPT_WRITE", "sync")
    dpt_core.plugin_api.reset()
    threads = _slow_writes(monkeypatch, 0)
    with dpt_core.invocation("job"):
        pass
    assert current_store().mode == "sync"
    assert threads and set(threads) == {threading.current_thread().name}
    assert current_store().writer.thread is None
    assert dpt_env.scalar("SELECT count(*) FROM invocations") == 1


def test_strict_mode_writes_synchronously_and_raises(dpt_env, monkeypatch):
    monkeypatch.setenv("DPT_STRICT", "1")
    dpt_core.plugin_api.reset()
    threads = _slow_writes(monkeypatch, 0)
    with dpt_core.invocation("job"):
        pass
    assert current_store().mode == "sync"
    assert set(threads) == {threading.current_thread().name}
    monkeypatch.setenv("DPT_DATABASE_URL", DEAD_URL)
    monkeypatch.setenv("DPT_CONNECT_TIMEOUT", "1")
    dpt_core.plugin_api.reset()
    with pytest.raises(TrackingError, match="spooled"), dpt_core.invocation("away"):
        pass


def test_a_bad_write_mode_names_the_setting(dpt_env, monkeypatch):
    from dpt_core.config import load_settings
    from dpt_core.errors import ConfigError

    with pytest.raises(ConfigError, match="DPT_WRITE='later'.*background, sync, deferred"):
        load_settings({"DPT_WRITE": "later"})


def test_a_bad_write_delay_names_the_setting(dpt_env):
    from dpt_core.config import load_settings
    from dpt_core.errors import ConfigError

    with pytest.raises(ConfigError, match="DPT_WRITE_DELAY='-1' must be 0 .off. or a positive"):
        load_settings({"DPT_WRITE_DELAY": "-1"})
    assert load_settings({"DPT_WRITE_DELAY": "0"}).write_delay == 0
    assert load_settings({}).write_delay == 1.0


def _counted_claims(monkeypatch) -> list[Path | None]:
    """The files the background writer claims (Spool.claim_own, unchanged otherwise)."""
    claims: list[Path | None] = []
    original = Spool.claim_own

    def counted(self):
        claimed = original(self)
        claims.append(claimed)
        return claimed

    monkeypatch.setattr(Spool, "claim_own", counted)
    return claims


def _warm_writer() -> None:
    """One invocation written by the background writer: its next claims gather."""
    with dpt_core.invocation("warm-up"):
        pass
    assert dpt_core.flush() is True


def test_the_writer_takes_what_comes_within_the_write_delay_in_one_claim(
    dpt_env, tmp_path, monkeypatch
):
    monkeypatch.setenv("DPT_WRITE_DELAY", "30")
    monkeypatch.setattr(writer_module, "QUIET", 30.0)  # (the wait alone, not its quiet end)
    dpt_core.plugin_api.reset()
    _warm_writer()
    claims = _counted_claims(monkeypatch)
    outputs = [tmp_path / f"out{i}.txt" for i in range(3)]
    started = time.monotonic()
    with dpt_core.invocation("gathered") as inv:
        for out in outputs:
            out.write_text(out.name)
            inv.write(out)  # one event a call: 5 in all
    time.sleep(0.3)
    assert claims == []  # the writer waits for more
    assert _spooled(dpt_env) == 5
    outside = sqlalchemy.create_engine(dpt_env.url)  # (dpt_env's engine flushes first)
    with outside.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT count(*) FROM invocations")).scalar() == 1
    outside.dispose()
    assert dpt_core.flush() is True  # a flush does not wait for the delay
    assert time.monotonic() - started < 30
    assert len([c for c in claims if c is not None]) == 1  # one file for the 5 events
    assert dpt_env.scalar("SELECT count(*) FROM invocations WHERE status = 'success'") == 2
    assert dpt_env.scalar("SELECT count(*) FROM data_product_versions") == 3
    assert _spooled(dpt_env) == 0


def _waits_for_claim(claims: list[Path | None]) -> None:
    deadline = time.monotonic() + 10
    while not claims and time.monotonic() < deadline:  # no flush: the writer's own claim
        time.sleep(0.01)


def test_a_process_that_goes_quiet_is_written_without_waiting_the_whole_delay(dpt_env, monkeypatch):
    """A script that records and then runs ``dpt`` (another process) finds its runs: the
    gathering ends QUIET seconds after the last batch, not DPT_WRITE_DELAY after the first."""
    monkeypatch.setenv("DPT_WRITE_DELAY", "30")
    dpt_core.plugin_api.reset()
    _warm_writer()
    claims = _counted_claims(monkeypatch)
    started = time.monotonic()
    with dpt_core.invocation("then-quiet"):
        pass
    _waits_for_claim(claims)  # (10 s at most, no flush)
    assert [c for c in claims if c is not None]
    assert time.monotonic() - started < 10
    assert dpt_core.flush() is True
    assert dpt_env.scalar("SELECT count(*) FROM invocations WHERE status = 'success'") == 2


def test_a_process_recording_without_pause_is_gathered_past_the_quiet_interval(
    dpt_env, monkeypatch
):
    """Batches closer together than QUIET keep the writer gathering, up to the delay."""
    monkeypatch.setenv("DPT_WRITE_DELAY", "30")
    monkeypatch.setattr(writer_module, "QUIET", 1.0)  # (a loaded host may pause the loop)
    dpt_core.plugin_api.reset()
    _warm_writer()
    claims = _counted_claims(monkeypatch)
    started = time.monotonic()
    for i in range(8):  # 8 runs over ~1.6 s, longer than QUIET in all
        with dpt_core.invocation(f"steady-{i}"):
            pass
        time.sleep(0.2)
    assert time.monotonic() - started > writer_module.QUIET
    assert claims == []  # still gathering
    assert dpt_core.flush() is True
    assert len([c for c in claims if c is not None]) == 1
    assert dpt_env.scalar("SELECT count(*) FROM invocations WHERE status = 'success'") == 9


def test_without_a_write_delay_the_writer_claims_at_once(dpt_env, tmp_path, monkeypatch):
    monkeypatch.setenv("DPT_WRITE_DELAY", "0")
    dpt_core.plugin_api.reset()
    _warm_writer()
    claims = _counted_claims(monkeypatch)
    with dpt_core.invocation("at-once"):
        pass
    _waits_for_claim(claims)
    assert claims
    assert dpt_core.flush() is True
    assert dpt_env.scalar("SELECT count(*) FROM invocations") == 2


def test_a_process_s_first_claim_does_not_wait_for_the_write_delay(dpt_env, monkeypatch):
    """The first write carries the imports and the connection: in a short task process it
    must overlap the task, not come after it."""
    monkeypatch.setenv("DPT_WRITE_DELAY", "30")
    dpt_core.plugin_api.reset()
    claims = _counted_claims(monkeypatch)
    with dpt_core.invocation("first"):
        pass
    _waits_for_claim(claims)
    assert [c for c in claims if c is not None]
    outside = sqlalchemy.create_engine(dpt_env.url)
    with outside.connect() as conn:  # (dpt_env's own reads would flush first)
        deadline = time.monotonic() + 10
        while (
            time.monotonic() < deadline
            and not conn.execute(
                sqlalchemy.text("SELECT count(*) FROM invocations WHERE status = 'success'")
            ).scalar()
        ):
            time.sleep(0.01)
            conn.rollback()
        assert conn.execute(sqlalchemy.text("SELECT count(*) FROM invocations")).scalar() == 1
    outside.dispose()


def test_what_the_writer_gathers_is_on_the_disk_before_it_is_claimed(
    dpt_env, tmp_path, monkeypatch
):
    """Gathering moves when events reach the database, not when they reach the disk:
    each batch appended while the writer waits is fsynced as it comes."""
    monkeypatch.setenv("DPT_WRITE_DELAY", "30")
    monkeypatch.setattr(writer_module, "QUIET", 30.0)
    dpt_core.plugin_api.reset()
    _warm_writer()
    claims = _counted_claims(monkeypatch)
    synced: list[str] = []
    real_fsync = os.fsync

    def seen_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", seen_fsync)
    own = str(current_store().spool.own_file)
    for name in ("one", "two"):
        synced.clear()
        with dpt_core.invocation(name):
            pass
        deadline = time.monotonic() + 10
        while own not in synced and time.monotonic() < deadline:
            time.sleep(0.01)
        assert own in synced, f"the batches of {name!r} were not fsynced while the writer waited"
        assert claims == []  # (still waiting: the delay is 30 s)
    assert dpt_core.flush() is True
    assert len([c for c in claims if c is not None]) == 1
    assert dpt_env.scalar("SELECT count(*) FROM invocations WHERE status = 'success'") == 3


def test_an_away_database_leaves_the_events_in_the_spool(dpt_env, monkeypatch):
    monkeypatch.setenv("DPT_DATABASE_URL", DEAD_URL)
    monkeypatch.setenv("DPT_CONNECT_TIMEOUT", "1")
    dpt_core.plugin_api.reset()
    with dpt_core.invocation("away"):
        pass
    assert last_outcome() == "spooled"
    assert Spool(dpt_env.path / "spool", DEAD_URL).status().events == 2


def test_written_and_replayed_again_counts_once(dpt_env, tmp_path):
    """A process killed after the writer committed and before it removed the spool file
    leaves events already written: replaying them adds nothing."""
    out = tmp_path / "out.txt"
    out.write_text("x")
    store = current_store()
    copies: list[bytes] = []
    original = store.spool.replay

    def keep_a_copy(record, is_transient=lambda exc: True, files=None, **options):
        for item in store.spool.listing() if files is None else files:
            copies.append(getattr(item, "path", item).read_bytes())  # (a Listed or a Path)
        return original(record, is_transient, files, **options)

    store.spool.replay = keep_a_copy  # type: ignore[method-assign]
    with dpt_core.invocation("job") as inv:
        inv.read(out)
        inv.write(out, metadata={"n": 1})
    assert dpt_core.flush()
    before = {
        t: dpt_env.scalar(f"SELECT count(*) FROM {t}")
        for t in ("invocations", "data_product_versions", "invocation_inputs", "lineage_edges")
    }
    assert before["invocations"] == 1 and before["data_product_versions"] == 1
    assert copies
    store.spool.directory.mkdir(parents=True, exist_ok=True)
    for number, content in enumerate(copies):
        (store.spool.directory / f"left-{number}.jsonl").write_bytes(content)
    assert original(store.record) > 0
    after = {t: dpt_env.scalar(f"SELECT count(*) FROM {t}") for t in before}
    assert after == before
    assert _spooled(dpt_env) == 0


CHILD = """
import sys, time
import dpt_core
from dpt_core.store.recorder import Recorder
original = Recorder.record
def slow(self, events):
    time.sleep(0.5)
    return original(self, events)
Recorder.record = slow
with dpt_core.invocation("at-exit") as inv:
    inv.write(sys.argv[1])
print("returned", flush=True)
"""


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def test_the_process_flushes_the_writer_at_exit(dpt_env, tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("x")
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(out)],
        env=_child_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert "returned" in result.stdout
    assert dpt_env.rows("SELECT job, status FROM invocations") == [("at-exit", "success")]
    assert dpt_env.scalar("SELECT count(*) FROM data_product_versions") == 1
    assert _spooled(dpt_env) == 0


DEFERRED = """
import sys
import dpt_core
with dpt_core.invocation("deferred") as inv:
    inv.write(sys.argv[1])
print(sorted(m for m in sys.modules if m.split(".")[0] in ("sqlalchemy", "alembic")))
"""


def test_deferred_processes_only_spool_and_the_drain_writes(dpt_env, tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("x")
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-c", DEFERRED, str(out)],
            env=_child_env({"DPT_WRITE": "deferred"}),
            capture_output=True,
            text=True,
            check=True,
        )
        assert result.stdout.strip() == "[]", result.stdout  # no database stack loaded
    assert _spooled(dpt_env) == 2 * 3  # start, output, end
    assert dpt_env.scalar("SELECT count(*) FROM invocations") == 0
    drained = CliRunner().invoke(build_cli(), ["spool", "drain", "--json"])
    assert drained.exit_code == 0, drained.output
    assert json.loads(drained.output) == {"drained": 6}
    assert dpt_env.rows("SELECT job, status FROM invocations") == [("deferred", "success")] * 2
    assert _spooled(dpt_env) == 0
    again = CliRunner().invoke(build_cli(), ["spool", "drain"])
    assert again.exit_code == 0 and "drained 0 event(s)" in again.output


def test_the_next_process_writes_what_a_deferred_one_spooled(dpt_env, tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("x")
    subprocess.run(
        [sys.executable, "-c", DEFERRED, str(out)],
        env=_child_env({"DPT_WRITE": "deferred"}),
        check=True,
        capture_output=True,
    )
    assert _spooled(dpt_env) == 3
    with dpt_core.invocation("next"):
        pass
    assert sorted(r.job for r in dpt_core.runs()) == ["deferred", "next"]
    assert _spooled(dpt_env) == 0


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_drain_follow_writes_events_as_they_come(dpt_env, tmp_path, stop):
    """Until Ctrl-C, or SIGTERM (a service manager's stop), which end it the same way."""
    out = tmp_path / "out.txt"
    out.write_text("x")
    drainer = subprocess.Popen(
        [sys.executable, "-m", "dpt_core.cli", "spool", "drain", "--follow", "--interval", "0.1"],
        env=_child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        subprocess.run(
            [sys.executable, "-c", DEFERRED, str(out)],
            env=_child_env({"DPT_WRITE": "deferred"}),
            check=True,
            capture_output=True,
        )
        # written, and its spool file deleted (a Ctrl-C between the two would leave the
        # file for the next writer: harmless, but not what this test looks at)
        while (
            dpt_env.scalar("SELECT count(*) FROM invocations WHERE status = 'success'") != 1
            or _spooled(dpt_env) != 0
        ):
            assert drainer.poll() is None, drainer.stderr.read()
            time.sleep(0.1)
        time.sleep(0.5)  # (the drainer counts after deleting the file: let it get there)
    finally:
        drainer.send_signal(stop)
        output, _ = drainer.communicate()
    assert drainer.returncode == 0
    assert "drained 3 event(s)" in output
    assert _spooled(dpt_env) == 0


def test_a_forked_child_that_ends_with_os_exit_loses_nothing(dpt_env):
    """Airflow's task runner, multiprocessing and Celery prefork end their forked children
    with os._exit (no exit handler runs): such a child writes as it goes."""
    with dpt_core.invocation("parent"):
        pass
    assert dpt_core.flush()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            with dpt_core.invocation("child"):
                pass
            code = 0 if current_store().mode == "sync" else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert current_store().mode == "background"  # the parent still writes in the background
    assert sorted(r.job for r in dpt_core.runs()) == ["child", "parent"]
    assert _spooled(dpt_env) == 0


UNSEEN_FORK = """
import os, sys
pid = os.fork()  # (this parent never imports dpt: dpt cannot see the fork)
if pid:
    sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
code = 1
try:
    import dpt_core
    from dpt_core.store.plugin import current_store
    from dpt_core.adapter import ends_without_exit_handlers
    if sys.argv[1] == "declared":
        ends_without_exit_handlers()
    elif sys.argv[1] == "flushed":
        ends_without_exit_handlers(flushed_by_caller=True)
    with dpt_core.invocation("unseen fork") as inv:
        inv.write(sys.argv[2])
    print(current_store().mode)
    if sys.argv[1] == "flushed":
        dpt_core.flush()  # (the adapter's last hook)
    code = 0
finally:
    sys.stdout.flush()
    os._exit(code)
"""


@pytest.mark.parametrize("declared", ["declared", "flushed", "-"])
def test_a_fork_dpt_cannot_see_writes_before_its_os_exit_once_declared(dpt_env, tmp_path, declared):
    """A task process forked from a parent that never loaded dpt (Airflow's task runner
    under Celery or Kubernetes) looks like any process to dpt. Declared by its adapter as
    ending without exit handlers, it writes as it goes, or keeps its background writer,
    which the adapter flushes before the exit: either way nothing is left behind. Not
    declared, its events are left to a writer thread that os._exit cuts short: what it did
    not write waits in the spool for a later writer (lost where none comes)."""
    out = tmp_path / "out.txt"
    out.write_text("x")
    result = subprocess.run(
        [sys.executable, "-c", UNSEEN_FORK, declared, str(out)],
        env=_child_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    if declared != "-":
        assert result.stdout.strip() == {"declared": "sync", "flushed": "background"}[declared]
        assert [r.job for r in dpt_core.runs()] == ["unseen fork"]
        assert _spooled(dpt_env) == 0
    else:
        assert result.stdout.strip() == "background"
        # (kept durably either way: written, if the writer beat the exit, else spooled)
        recorded = dpt_env.scalar("SELECT count(*) FROM invocations")
        assert recorded == 1 or _spooled(dpt_env) >= 2, recorded


def test_the_writer_writes_what_of_this_process_waits_in_the_spool_before_its_claim(
    dpt_env, monkeypatch
):
    """A replay in another process took this process's file (the run's start) and failed
    or is still writing it; the writer's next claim (the run's end) waits for it, and
    writes it first when it was left behind: an end before its start finds no run, and
    the start written after it would leave the run running for ever."""
    from dpt_core.events import InvocationFinished, InvocationStarted, utcnow
    from dpt_core.spool import _move_aside

    monkeypatch.setenv("DPT_WRITE", "background")
    dpt_core.plugin_api.reset()
    with dpt_core.invocation("warm-up"):  # (the writer's first pass, which takes every file)
        pass
    assert dpt_core.flush()
    store = current_store()
    run = str(uuid.uuid4())
    store.spool.append(
        [InvocationStarted(uuid=run, orchestrator="test", job="left", started_at=utcnow())]
    )
    _move_aside(store.spool.own_file, "r999999-")  # (another process's replay, cut short)
    store.submit([InvocationFinished(run, "success", utcnow())])
    assert dpt_core.flush()
    assert dpt_env.scalar(f"SELECT status FROM invocations WHERE uuid = '{run}'") == "success"
    assert _spooled(dpt_env) == 0


@pytest.mark.parametrize("write", ["sync", "background"])
def test_a_refused_batch_with_none_behind_it_waits_for_the_next_write_in_both_modes(
    dpt_env, tmp_path, monkeypatch, write
):
    """As a synchronous write spools a refused batch and the next write sets it aside, the
    background writer keeps a refused batch that nothing follows in the spool, and sets it
    aside in the pass of the next write: the events the database refuses alone (the write
    whose lineage edge it refuses), not the run's start, read and end with them."""
    monkeypatch.setenv("DPT_WRITE", write)
    dpt_core.plugin_api.reset()
    raw = tmp_path / "raw"
    raw.write_text("raw")
    dpt_core.track(raw)
    dpt_core.flush()
    with dpt_env.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER dpt_test_reject BEFORE INSERT ON lineage_edges "
            "BEGIN SELECT RAISE(ABORT, 'rejected for good'); END"
        )
    with dpt_core.get_tracker().batch(), dpt_core.invocation("rejected") as inv:
        inv.read(raw)
        inv.write(tmp_path / "out")
    dpt_core.flush()
    assert current_store().mode == write
    waiting = Spool(dpt_env.path / "spool").status()
    assert (waiting.batches, waiting.bad_files) == (1, 0)  # spooled, not set aside yet
    with dpt_core.invocation("next"):
        pass
    dpt_core.flush()
    after = Spool(dpt_env.path / "spool").status()
    assert (after.batches, after.bad_files) == (0, 1)
    assert dpt_env.scalar("SELECT count(*) FROM invocations WHERE job = 'next'") == 1
    assert dpt_env.scalar("SELECT status FROM invocations WHERE job = 'rejected'") == "success"
    (bad,) = (dpt_env.path / "spool").rglob("*.bad")
    (line,) = bad.read_text().splitlines()
    assert [e["kind"] for e in json.loads(line)["events"]] == ["products_written"]
    assert "rejected for good" in json.loads(line)["error"]
