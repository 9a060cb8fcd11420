"""When the spool fsyncs: at each end of a run, not at every event (a task's reads and
writes reach the disk with its end), and whatever is left at a flush or a claim."""

from __future__ import annotations

import os

import pytest

import dpt_core
from dpt_core.spool import Spool
from dpt_core.store.plugin import current_store


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The spool's fsyncs, by the name of the file synced (the real fsync still runs)."""
    done: list[str] = []
    real = os.fsync

    def counted(fd: int) -> None:
        done.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr("dpt_core.spool.os.fsync", counted)
    return done


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


def test_the_writer_fsyncs_what_it_claims(dpt_env, tmp_path, fsyncs) -> None:
    store = current_store()
    out = tmp_path / "out.txt"
    out.write_text("out")
    run = dpt_core.invocation("claimed")
    inv = run.__enter__()
    assert dpt_core.flush() is True
    before = len(fsyncs)
    inv.write(out)  # appended without an fsync; the writer claims the file, synced first
    assert dpt_core.flush() is True
    assert len(fsyncs) == before + 1
    assert not store.spool._unsynced
    run.__exit__(None, None, None)
    assert dpt_core.flush() is True
    assert dpt_env.scalar("SELECT count(*) FROM data_product_versions") == 1
