"""Bounded memory: big writes go in chunks; long-lived processes keep their structures bounded.

Entries are counted, not RSS or time (benchmarks/bench_memory.py measures those).
"""

from __future__ import annotations

import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import dpt_core
import dpt_core.spool as spool_module
import dpt_core.tracker as tracker_module
from dpt_core import hookimpl
from dpt_core.events import InvocationStarted, ProductsWritten
from dpt_core.store import recorder as recorder_module
from dpt_core.store.plugin import current_store

BIG = 12_000


class WriteCounter:
    """Counts the ProductsWritten events and the outputs in each."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    @hookimpl
    def dpt_products_written(self, event: ProductsWritten) -> None:
        self.sizes.append(len(event.outputs))


def _files(root: Path, n: int, made: list[int]) -> Iterator[Path]:
    """Create the files one by one as they are asked for (a generator, never a list)."""
    root.mkdir()
    for i in range(n):
        path = root / f"f{i:05d}.dat"
        path.write_bytes(b"%d\n" % i)
        made.append(i)
        yield path


@pytest.mark.parametrize("dpt_backend", ["sqlite", "postgresql"], indirect=True)
def test_a_big_write_is_recorded_in_chunks_with_every_version_input_and_edge(
    dpt_backend, dpt_env, tmp_path
):
    source = tmp_path / "catalog.csv"
    source.write_bytes(b"catalog\n")
    counter = WriteCounter()
    tracker = dpt_core.get_tracker()
    tracker.pm.register(counter, name="write-counter")
    made: list[int] = []
    try:
        with dpt_core.invocation("survey") as inv:
            inv.read(source)
            uris = inv.write(_files(tmp_path / "out", BIG, made))
        dpt_core.flush()
    finally:
        tracker.pm.unregister(counter)
    chunk = tracker_module.WRITE_CHUNK
    assert counter.sizes == [chunk, chunk, BIG - 2 * chunk]
    assert len(uris) == BIG == len(made) and len(set(uris)) == BIG
    assert dpt_env.scalar("SELECT COUNT(*) FROM data_products") == BIG + 1
    assert dpt_env.scalar("SELECT COUNT(*) FROM data_product_versions") == BIG + 1
    assert (
        dpt_env.scalar("SELECT COUNT(*) FROM data_product_versions WHERE content_hash IS NULL") == 0
    )
    assert (
        dpt_env.scalar(
            "SELECT COUNT(*) FROM data_product_versions WHERE produced_by_id IS NOT NULL"
        )
        == BIG
    )
    assert dpt_env.scalar("SELECT COUNT(*) FROM invocation_inputs") == 1
    # every output derives from the one input
    assert dpt_env.scalar("SELECT COUNT(*) FROM lineage_edges") == BIG
    assert (
        dpt_env.scalar(
            "SELECT COUNT(DISTINCT e.child_version_id) FROM lineage_edges e "
            "JOIN data_product_versions v ON v.id = e.parent_version_id "
            "JOIN data_products p ON p.id = v.product_id WHERE p.uri = :u",
            u=source.as_uri(),
        )
        == BIG
    )


def test_track_takes_a_list_or_a_generator_and_opens_a_run_only_for_a_product(dpt_env, tmp_path):
    paths = [tmp_path / f"t{i}.dat" for i in range(3)]
    for p in paths:
        p.write_bytes(p.name.encode())
    assert dpt_core.track(p for p in paths) == [p.as_uri() for p in paths]
    assert dpt_core.track([paths[0], paths[1]]) == [paths[0].as_uri(), paths[1].as_uri()]
    assert dpt_core.track(iter([object()])) == []  # names no product: no one-off run

    class Key(tuple):  # a tuple subclass (Dagster's AssetKey) is one target, not a list
        pass

    assert dpt_core.track(Key((str(paths[2]),))) == []
    dpt_core.flush()
    assert dpt_env.scalar("SELECT COUNT(*) FROM invocations") == 2
    assert dpt_env.scalar("SELECT COUNT(*) FROM data_product_versions") == 5


def test_a_long_lived_process_keeps_its_registries_and_caches_bounded(
    dpt_env, tmp_path, monkeypatch
):
    cap = 50
    monkeypatch.setattr(recorder_module, "ID_CACHE_SIZE", cap)
    monkeypatch.setattr(recorder_module, "RUN_CACHE_SIZE", cap)
    import dpt_core.guard as guard_module

    monkeypatch.setattr(guard_module, "MAX_KEYS", cap)
    source = tmp_path / "in.dat"
    source.write_bytes(b"in\n")
    runs = 4 * cap
    for i in range(runs):
        with dpt_core.invocation("tick", parameters={"i": i}) as inv:
            inv.read(source)
            out = tmp_path / f"o{i}.dat"
            out.write_bytes(b"%d\n" % i)
            # a missing file is warned about once per path: a key per run
            inv.write(out, tmp_path / f"missing{i}.dat")
    dpt_core.flush()
    assert dpt_env.scalar("SELECT COUNT(*) FROM invocations WHERE status = 'success'") == runs
    assert (
        dpt_env.scalar(
            "SELECT COUNT(*) FROM data_product_versions WHERE produced_by_id IS NOT NULL"
        )
        == 2 * runs
    )
    assert dpt_env.scalar("SELECT COUNT(*) FROM lineage_edges") == 2 * runs
    assert tracker_module._unfinished == {}
    assert len(dpt_core.get_tracker()._failures._logged) <= cap
    rec = current_store()._recorder
    assert rec is not None
    sizes = {
        name: len(getattr(rec, name))
        for name in (
            "_environment_ids",
            "_invocation_ids",
            "_product_ids",
            "_version_ids",
            "_facts",
        )
    }
    assert all(size <= cap for size in sizes.values()), sizes
    # bounded after every batch, however the writer grouped the events (a set-based
    # batch adds all its runs at once), and the newest runs still known
    assert sizes["_invocation_ids"] > 0


def test_a_batch_with_more_runs_than_the_cache_holds_leaves_it_bounded_and_recent(
    dpt_env, monkeypatch
):
    # what the writer thread does when many runs end between two of its wake-ups (CI on
    # Python 3.12 ended the test above with 51 cached runs for a bound of 50)
    cap = 5
    monkeypatch.setattr(recorder_module, "RUN_CACHE_SIZE", cap)
    rec = current_store().recorder
    runs = [str(uuid.uuid4()) for _ in range(3 * cap)]
    for first in (0, cap + 2):
        batch = [
            InvocationStarted(uuid=run, orchestrator="python", job=f"j{i}")
            for i, run in enumerate(runs[first : first + cap + 2], start=first)
        ]
        rec.record(batch)
        assert len(rec._invocation_ids) <= cap
        assert len(rec._facts) <= cap
        # the newest stay known: a finish right after its start is not looked up again
        assert batch[-1].uuid in rec._invocation_ids
        assert batch[-1].uuid in rec._facts
    assert dpt_env.scalar("SELECT COUNT(*) FROM invocations") == 2 * (cap + 2)


def test_run_records_the_outputs_listed_in_a_file_and_names_the_missing(dpt_env, tmp_path):
    import subprocess
    import sys

    listing = tmp_path / "outputs.txt"
    names = [f"o{i}.dat" for i in range(7)]
    listing.write_text("\n".join([*names, "", "never1.dat", "never2.dat"]) + "\n")
    script = "import sys\nfor n in sys.argv[1:]: open(n, 'w').write(n)"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dpt_core.cli",
            "run",
            "--name",
            "many",
            "--outputs-from",
            str(listing),
            "-o",
            "first.dat",
            "--",
            sys.executable,
            "-c",
            script,
            "first.dat",
            *names,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "output(s) not written: never1.dat, never2.dat" in result.stderr
    (row,) = dpt_env.rows("SELECT id, status, error FROM invocations")
    assert row.status == "failed" and "never1.dat, never2.dat" in row.error
    produced = dpt_env.rows(
        "SELECT p.uri FROM data_product_versions v JOIN data_products p ON p.id = v.product_id "
        "WHERE v.produced_by_id = :i",
        i=row.id,
    )
    assert sorted(r.uri for r in produced) == sorted(
        (tmp_path / n).as_uri() for n in ["first.dat", *names]
    )


def _survey(root: Path, n: int) -> Iterator[Path]:
    """``n`` small files, made one by one as they are asked for (nothing kept)."""
    root.mkdir()
    for i in range(n):
        path = root / f"f{i:05d}.dat"
        path.write_bytes(b"%d\n" % i)
        yield path


def _traced(step: Callable[[], object]) -> tuple[int, int, object]:
    """Run ``step`` under tracemalloc: (the peak above where it started, what it left
    allocated, its result, kept alive as a caller keeps it)."""
    tracemalloc.reset_peak()
    start = tracemalloc.get_traced_memory()[0]
    result = step()
    current, peak = tracemalloc.get_traced_memory()
    return peak - start, current - start, result


@pytest.mark.parametrize("mode", ["background", "sync"])
def test_a_streamed_write_needs_no_more_memory_for_4n_outputs_than_for_n(
    dpt_env, tmp_path, monkeypatch, mode
):
    """Python memory of one ``write()`` of a generator does not grow with the outputs:
    what it returns included (a list of N URIs grew by ~150 bytes an output here)."""
    monkeypatch.setenv("DPT_WRITE", mode)
    # The writer claims at once, as each chunk comes: it then works beside both writes.
    # Gathering (DPT_WRITE_DELAY) it wrote the small one's chunks after the write had
    # ended and the big one's while it went on, and the peak of the big write added its
    # decoded group (~150 kB) to zlib's (~300 kB, each chunk's compression): two bounded
    # peaks, apart in one write and together in the other, not memory that grows.
    monkeypatch.setenv("DPT_WRITE_DELAY", "0")
    # small chunks and caches: the flat part is reached after a few hundred outputs
    monkeypatch.setattr(tracker_module, "WRITE_CHUNK", 100)
    monkeypatch.setattr(recorder_module, "ID_CACHE_SIZE", 200)
    monkeypatch.setattr(recorder_module, "RUN_CACHE_SIZE", 200)
    # and the background writer's groups: a writer that fell behind takes the batches
    # waiting in one transaction, up to REPLAY_GROUP (5 000) products, so under load a
    # write of 4n outputs could hold a group 3x the largest an n-output write can
    monkeypatch.setattr(spool_module, "REPLAY_GROUP", 200)
    dpt_core.plugin_api.reset()  # after: a recorder made earlier keeps its cache sizes
    n = 1_500

    def survey(name: str, count: int) -> object:
        with dpt_core.invocation(name) as inv:
            uris = inv.write(_survey(tmp_path / name, count))
        dpt_core.flush()
        return uris

    survey("warm", n)  # imports, statements compiled, caches full
    # Best of three on each side: CPython's table of interned strings (pathlib interns
    # path parts) is now and then reallocated whole, a one-off allocation of MBs that
    # lands in whichever write crosses the threshold.
    tracemalloc.start()
    try:
        small = [_traced(lambda i=i: survey(f"small{i}", n)) for i in range(3)]
        big = [_traced(lambda i=i: survey(f"big{i}", 4 * n)) for i in range(3)]
    finally:
        tracemalloc.stop()
    uris_n, uris_4n = small[-1][2], big[-1][2]
    assert list(uris_4n) == [(tmp_path / "big2" / f"f{i:05d}.dat").as_uri() for i in range(4 * n)]
    assert len(uris_n) == n  # (the results stay alive while measured, as a caller keeps them)
    assert dpt_env.scalar("SELECT COUNT(*) FROM data_product_versions") == 16 * n
    peak_n, held_n = min(r[0] for r in small), min(r[1] for r in small)
    peak_4n, held_4n = min(r[0] for r in big), min(r[1] for r in big)
    figures = f"peak {peak_n} -> {peak_4n} B, held {held_n} -> {held_4n} B"
    assert peak_4n < 1.5 * peak_n, figures  # (a list of the URIs: held grows ~150 B an output)
    assert held_4n < held_n + 100 * n, figures  # < 34 bytes an extra output


def test_replaying_a_spool_file_holds_one_batch_at_a_time(dpt_env, tmp_path, monkeypatch):
    """A writer that fell behind claims a file of many batches: it decodes and records
    them one by one (all decoded at once, a backlog of 5 000-output batches cost ~8 MB
    each)."""
    monkeypatch.setenv("DPT_WRITE", "deferred")  # batches wait in the spool
    dpt_core.plugin_api.reset()
    monkeypatch.setattr(tracker_module, "WRITE_CHUNK", 100)
    monkeypatch.setattr(recorder_module, "ID_CACHE_SIZE", 200)
    monkeypatch.setattr(recorder_module, "RUN_CACHE_SIZE", 200)
    n = 1_000
    store = current_store()

    def backlog(name: str, count: int) -> int:
        with dpt_core.invocation(name) as inv:
            inv.write(_survey(tmp_path / name, count))
        (own,) = store.spool.files()
        peak, _, _ = _traced(lambda: store.spool.replay(store.record))
        assert store.spool.is_empty() and not own.exists()
        return peak

    tracemalloc.start()
    try:
        backlog("warm", n)
        peak_n = backlog("small", n)
        peak_4n = backlog("big", 4 * n)
    finally:
        tracemalloc.stop()
    assert dpt_env.scalar("SELECT COUNT(*) FROM data_product_versions") == 6 * n
    assert peak_4n < 1.3 * peak_n, f"peak {peak_n} -> {peak_4n} B"


def test_written_uris_behave_as_a_read_only_list_of_the_uris():
    chunks = [[f"file:///data/d{c}/f{i}.dat" for i in range(300)] for c in range(3)]
    chunks.append(["s3://b/with\0nul", "s3://b/\udcff-undecodable"])  # kept as they are
    every = [uri for chunk in chunks for uri in chunk]
    uris = tracker_module.WrittenURIs()
    for chunk in chunks:
        uris._append(chunk)
    assert len(uris) == len(every) == 902 and uris == every and every == uris
    assert list(uris) == every and list(reversed(uris)) == every[::-1]
    assert [uris[i] for i in (0, 299, 300, 601, 900, -1, -902)] == [
        every[i] for i in (0, 299, 300, 601, 900, -1, -902)
    ]
    assert uris[298:303] == every[298:303] and uris[::-300] == every[::-300]
    assert "file:///data/d2/f7.dat" in uris and "file:///nowhere" not in uris
    assert uris.index("s3://b/with\0nul") == 900 and uris + ["x"] == [*every, "x"]
    assert uris != every[:-1] and uris != tuple(every)
    with pytest.raises(IndexError):
        uris[902]
    assert repr(uris) == f"WrittenURIs(['file:///data/d0/f0.dat', ... 900 more, {every[-1]!r}])"
    assert tracker_module.WrittenURIs() == [] and not tracker_module.WrittenURIs()
