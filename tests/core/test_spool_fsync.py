"""When the spool fsyncs: with a background writer, on the writer's thread when it claims
the file, never on the caller's; without one, at each end of a run, not at every event
(a task's reads and writes reach the disk with its end), and whatever is left at a
flush."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

import dpt_core
from dpt_core.spool import Spool
from dpt_core.store.plugin import current_store


@pytest.fixture
def fsync_log(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    """The spool's fsyncs: the files synced and, in the same order, the threads' names
    (the real fsync still runs)."""
    paths: list[str] = []
    threads: list[str] = []
    real = os.fsync

    def counted(fd: int) -> None:
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        threads.append(threading.current_thread().name)
        real(fd)

    monkeypatch.setattr("dpt_core.spool.os.fsync", counted)
    return paths, threads


@pytest.fixture
def fsyncs(fsync_log: tuple[list[str], list[str]]) -> list[str]:
    """The files the spool fsynced, in order."""
    return fsync_log[0]


def _spooled_kinds(spool: Spool) -> list[str]:
    return [
        event.kind
        for path in spool.files()
        for batch, _ in spool._read(path, quarantine=False)
        for event in batch
    ]


def test_a_run_pays_one_fsync_at_each_end_not_one_per_event(
    dpt_env, tmp_path, monkeypatch, fsyncs
) -> None:
    monkeypatch.setenv("DPT_WRITE", "deferred")  # (no writer claiming the file meanwhile)
    raw, out = tmp_path / "raw.txt", tmp_path / "out.txt"
    raw.write_text("raw")
    out.write_text("out")
    store = current_store()
    with dpt_core.invocation("two ends") as inv:
        inv.read(raw)
        assert len(fsyncs) == 1  # the start; the read only in the kernel
        inv.write(out)
        inv.write(tmp_path / "missing.txt")
        assert len(fsyncs) == 1
    assert len(fsyncs) == 2  # the end, with the reads and writes before it
    assert set(fsyncs) == {str(store.spool.own_file)}
    assert _spooled_kinds(store.spool) == [
        "invocation_started",
        "products_read",
        "products_written",
        "products_written",
        "invocation_finished",
    ]
    assert dpt_core.flush() is True
    assert len(fsyncs) == 2  # nothing left unsynced


def test_events_appended_after_the_last_fsync_are_synced_by_a_flush(
    dpt_env, tmp_path, monkeypatch, fsyncs
) -> None:
    monkeypatch.setenv("DPT_WRITE", "deferred")
    out = tmp_path / "out.txt"
    out.write_text("out")
    run = dpt_core.invocation("open")
    inv = run.__enter__()
    inv.write(out)
    assert len(fsyncs) == 1
    dpt_core.flush()  # a run still open: its write reaches the disk now
    assert len(fsyncs) == 2
    dpt_core.flush()
    assert len(fsyncs) == 2
    run.__exit__(None, None, None)
    assert len(fsyncs) == 3


def test_with_a_background_writer_the_caller_never_fsyncs_the_writer_syncs_its_claims(
    dpt_env, tmp_path, fsync_log
) -> None:
    store = current_store()
    assert store.mode == "background"
    raw, out = tmp_path / "raw.txt", tmp_path / "out.txt"
    raw.write_text("raw")
    out.write_text("out")
    for n in range(3):
        with dpt_core.invocation(f"task {n}") as inv:  # both ends of each run
            inv.read(raw)
            inv.write(out)
    assert dpt_core.flush() is True
    synced = list(zip(fsync_log[1], fsync_log[0], strict=True))
    me = threading.current_thread().name
    assert [path for thread, path in synced if thread == me] == []
    assert synced, "nothing fsynced: the writer's claims must be"
    assert {thread for thread, _ in synced} == {"dpt-writer"}
    # each a claimed file, fsynced before its batches were written and the file deleted
    for _, path in synced:
        assert Path(path).parent == store.spool.directory
        assert ".w" in Path(path).name and not path.endswith("(deleted)"), path
    assert not store.spool._unsynced
    assert dpt_env.scalar("SELECT count(*) FROM invocations WHERE status = 'success'") == 3
    assert store.spool.is_empty()


def test_on_sqlite_a_commit_is_on_disk_before_the_spool_lets_its_events_go(dpt_env, tmp_path):
    """The writer deletes a spool file once its events are committed. In WAL mode with
    ``synchronous=NORMAL`` a commit is not fsynced, and a power loss may roll it back:
    the events would then be in neither place. dpt's connections commit with FULL."""
    out = tmp_path / "out.txt"
    out.write_text("out")
    with dpt_core.invocation("task") as inv:
        inv.write(out)
    assert dpt_core.flush() is True
    store = current_store()
    assert store.spool.is_empty()
    with store.engine.connect() as conn:  # a connection of the pool the writer used
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    assert dpt_env.scalar("SELECT count(*) FROM data_product_versions") == 1
