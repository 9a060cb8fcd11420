"""Content hashes and the stat cache (dpt_core.hashing), on real files in tmp_path."""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import blake3
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpt_core.config import Settings, reset_settings
from dpt_core.errors import ConfigError, HashError
from dpt_core.hashing import (
    CHUNK_SIZE,
    HASH_PATTERN,
    RACY_WINDOW_NS,
    FileFacts,
    StatCache,
    _key_paths,
    hash_file,
    observe,
    observe_many,
)

ALGORITHMS = ("xxh3_128", "blake3", "sha256")
OLD_NS = 1_600_000_000 * 10**9  # 2020-09-13: long settled, so cache entries are trusted
fixture_settings = settings(
    max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def reference(algorithm: str, data: bytes) -> str:
    hashers = {"xxh3_128": xxhash.xxh3_128, "blake3": blake3.blake3, "sha256": hashlib.sha256}
    return f"{algorithm}:{hashers[algorithm](data).hexdigest()}"


def write_old(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    os.utime(path, ns=(OLD_NS, OLD_NS))
    return path


@pytest.fixture
def cache(tmp_path: Path) -> StatCache:
    with StatCache(tmp_path / "cache" / "statcache.sqlite3") as stat_cache:
        yield stat_cache


# --------------------------------------------------------------------------- hash_file


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(
    "size", [1, 65535, 65537, CHUNK_SIZE - 1, CHUNK_SIZE, 3 * CHUNK_SIZE + 12345]
)
def test_hash_matches_the_reference_implementation(
    tmp_path: Path, algorithm: str, size: int
) -> None:
    data = os.urandom(size)  # around the small and the full buffer sizes, and several chunks
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert hash_file(path, algorithm) == reference(algorithm, data)
    assert hash_file(str(path), algorithm) == hash_file(os.fsencode(path), algorithm)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    assert hash_file(tmp_path / "empty", "sha256") == "sha256:" + hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_default_algorithm_is_the_configured_one(tmp_path: Path, algorithm: str) -> None:
    path = write_old(tmp_path / "x", b"abc")
    reset_settings(Settings(hash_algorithm=algorithm, cache_dir=tmp_path, redaction_key=b"k"))
    try:
        assert hash_file(path) == reference(algorithm, b"abc")
        assert observe(path).content_hash == reference(algorithm, b"abc")
    finally:
        reset_settings(None)


@fixture_settings
@given(data=st.binary(max_size=4096))
def test_same_content_same_hash_in_every_algorithm(tmp_path: Path, data: bytes) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.write_bytes(data)
    two.write_bytes(data)
    for algorithm in ALGORITHMS:
        digest = hash_file(one, algorithm)
        assert HASH_PATTERN.match(digest)
        assert digest.startswith(f"{algorithm}:")
        assert digest == hash_file(two, algorithm) == reference(algorithm, data)


def test_symlink_given_directly_is_followed(tmp_path: Path) -> None:
    (tmp_path / "target").write_bytes(b"payload")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    assert hash_file(tmp_path / "link", "sha256") == reference("sha256", b"payload")


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: p, "no such file"),
        (
            lambda p: (p.symlink_to(p.with_name("other")), p.with_name("other").symlink_to(p), p)[
                2
            ],
            "symlink loop",
        ),
        (lambda p: (os.mkfifo(p), p)[1], "named pipe"),
    ],
    ids=["missing", "loop", "fifo"],
)
def test_unhashable_paths_raise_hash_error_naming_path_and_cause(
    tmp_path: Path, make: object, fragment: str
) -> None:
    path = make(tmp_path / "thing")  # type: ignore[operator]
    with pytest.raises(HashError) as info:
        hash_file(path, "xxh3_128")
    assert str(tmp_path / "thing") in str(info.value)
    assert fragment in str(info.value)


def test_socket_is_a_special_file(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "sock"))
        with pytest.raises(HashError, match="socket"):
            hash_file(tmp_path / "sock")


def test_none_algorithm_says_hashing_is_disabled(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"1")
    with pytest.raises(HashError, match="hashing is disabled"):
        hash_file(tmp_path / "x", "none")


def test_unknown_algorithm_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"1")
    with pytest.raises(ConfigError, match="md5"):
        hash_file(tmp_path / "x", "md5")


# --------------------------------------------------------------------------- directory trees


def make_tree(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha")
    (root / "sub" / "b.txt").write_bytes(b"beta")
    (root / "sub" / "deeper" / "c.txt").write_bytes(b"gamma")
    (root / "empty").mkdir()
    (root / "link").symlink_to("sub/b.txt")
    return root


def test_tree_hash_is_deterministic_and_independent_of_location(tmp_path: Path) -> None:
    first = make_tree(tmp_path / "first")
    second = make_tree(tmp_path / "second")
    digest = hash_file(first, "blake3")
    assert HASH_PATTERN.match(digest)
    assert digest == hash_file(second, "blake3")
    assert digest != hash_file(first / "a.txt", "blake3")


@pytest.mark.parametrize(
    "change",
    [
        lambda r: (r / "sub" / "deeper" / "c.txt").write_bytes(b"GAMMA"),
        lambda r: (r / "sub" / "deeper" / "c.txt").rename(r / "sub" / "deeper" / "d.txt"),
        lambda r: (r / "sub" / "b.txt").rename(r / "b.txt"),
        lambda r: (r / "empty").rmdir(),
        lambda r: (r / "empty" / "new").write_bytes(b""),
        lambda r: ((r / "link").unlink(), (r / "link").symlink_to("a.txt")),
        lambda r: ((r / "link").unlink(), (r / "link").write_bytes(b"sub/b.txt")),
    ],
    ids=[
        "nested-content",
        "nested-rename",
        "move-up",
        "empty-dir-removed",
        "file-added",
        "relink",
        "link-to-file",
    ],
)
def test_tree_hash_changes_with_any_change(tmp_path: Path, change: object) -> None:
    root = make_tree(tmp_path / "tree")
    before = hash_file(root, "xxh3_128")
    change(root)  # type: ignore[operator]
    assert hash_file(root, "xxh3_128") != before


def test_symlink_loop_inside_tree_is_not_followed(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    (root / "up").symlink_to("..")
    (root / "self").symlink_to("self")
    assert HASH_PATTERN.match(hash_file(root, "sha256"))


def test_special_file_inside_tree_names_the_nested_path(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    os.mkfifo(root / "sub" / "pipe")
    with pytest.raises(HashError, match=r"sub/pipe.*named pipe"):
        hash_file(root)


@fixture_settings
@given(
    names=st.lists(
        st.binary(min_size=1, max_size=8).filter(
            lambda b: b"\0" not in b and b"/" not in b and b not in (b".", b"..")
        ),
        min_size=1,
        max_size=5,
        unique=True,
    )
)
def test_tree_hash_sees_renames_of_non_utf8_names(tmp_path: Path, names: list[bytes]) -> None:
    root = os.path.join(os.fsencode(tmp_path), b"t%d" % len(os.listdir(tmp_path)))
    os.mkdir(root)
    for name in names:
        with open(os.path.join(root, name), "wb") as handle:
            handle.write(name)
    before = hash_file(root, "xxh3_128")
    os.rename(os.path.join(root, names[0]), os.path.join(root, names[0] + b"\xff"))
    assert hash_file(root, "xxh3_128") != before


# --------------------------------------------------------------------------- observe and the stat cache


def test_observe_missing_path(tmp_path: Path, cache: StatCache) -> None:
    assert observe(tmp_path / "nope", "xxh3_128", cache) == FileFacts(None, None, None, False)
    (tmp_path / "dangling").symlink_to(tmp_path / "nope")
    assert observe(tmp_path / "dangling", "xxh3_128", cache).exists is False


def test_observe_reports_hash_size_and_mtime(tmp_path: Path) -> None:
    path = write_old(tmp_path / "x.fits", b"12345")
    facts = observe(path, "sha256")
    assert facts == FileFacts(reference("sha256", b"12345"), 5, OLD_NS / 1e9, True)


def test_observe_with_hashing_disabled_still_stats(tmp_path: Path) -> None:
    path = write_old(tmp_path / "x", b"abc")
    assert observe(path, "none") == FileFacts(None, 3, OLD_NS / 1e9, True)


def test_cache_creates_its_file_in_cache_dir(tmp_path: Path) -> None:
    settings_ = Settings(cache_dir=tmp_path / "c", redaction_key=b"k")
    path = write_old(tmp_path / "x", b"abc")
    with StatCache(settings=settings_) as stat_cache:
        observe(path, "xxh3_128", stat_cache)
    database = tmp_path / "c" / "statcache.sqlite3"
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT path, algorithm, size, digest FROM statcache").fetchall()
        mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
    assert rows == [(os.fsencode(path), "xxh3_128", 3, reference("xxh3_128", b"abc"))]
    assert mode == "wal"


def test_second_pass_uses_the_cache_without_reading(tmp_path: Path, cache: StatCache) -> None:
    path = write_old(tmp_path / "x.fits", b"original")
    first = observe(path, "xxh3_128", cache)
    assert first.content_hash == reference("xxh3_128", b"original")
    inode = path.stat().st_ino
    # Same size, same inode, mtime put back: only a re-read could notice the new bytes.
    with open(path, "r+b") as handle:
        handle.write(b"CHANGED!")
    os.utime(path, ns=(OLD_NS, OLD_NS))
    assert path.stat().st_ino == inode
    assert observe(path, "xxh3_128", cache).content_hash == first.content_hash
    assert observe(path, "xxh3_128").content_hash == reference("xxh3_128", b"CHANGED!")


def test_cache_is_keyed_by_algorithm(tmp_path: Path, cache: StatCache) -> None:
    path = write_old(tmp_path / "x", b"data")
    assert observe(path, "xxh3_128", cache).content_hash == reference("xxh3_128", b"data")
    assert observe(path, "sha256", cache).content_hash == reference("sha256", b"data")


@pytest.mark.parametrize(
    "change",
    [
        lambda p: write_old(p, b"longer content"),
        lambda p: os.utime(p, ns=(OLD_NS, OLD_NS + 1)),
        lambda p: (p.unlink(), write_old(p, b"new data")),
    ],
    ids=["size", "mtime", "inode"],
)
def test_cache_misses_when_stat_changes(tmp_path: Path, cache: StatCache, change: object) -> None:
    path = write_old(tmp_path / "x", b"old data")
    keep = tmp_path / "keep"
    os.link(path, keep)  # holds the old inode so the new file cannot reuse its number
    observe(path, "xxh3_128", cache)
    change(path)  # type: ignore[operator]
    assert observe(path, "xxh3_128", cache).content_hash == reference("xxh3_128", path.read_bytes())


def test_racy_entry_is_not_trusted(tmp_path: Path, cache: StatCache) -> None:
    path = tmp_path / "fresh"
    path.write_bytes(b"version1")  # mtime is now: could change again within the same tick
    observe(path, "xxh3_128", cache)
    stamp = path.stat().st_mtime_ns
    path.write_bytes(b"version2")
    os.utime(path, ns=(stamp, stamp))
    assert observe(path, "xxh3_128", cache).content_hash == reference("xxh3_128", b"version2")


def test_a_file_changed_within_the_racy_window_bypasses_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No entry of a file changed just now can be trusted, nor one stored now: such a file
    (the usual output) is hashed without a cache transaction; an older one uses it."""
    database = tmp_path / "statcache.sqlite3"
    fresh = tmp_path / "fresh"
    fresh.write_bytes(b"just written")
    old = write_old(tmp_path / "old", b"written long ago")
    transactions: list[bool] = []
    with StatCache(database) as stat_cache:
        opened = stat_cache._transaction

        def counted(write: bool) -> Any:
            transactions.append(write)
            return opened(write)

        monkeypatch.setattr(stat_cache, "_transaction", counted)
        facts = observe_many([fresh, old], "xxh3_128", stat_cache)
        assert facts[0].content_hash == reference("xxh3_128", b"just written")
        assert facts[1].content_hash == reference("xxh3_128", b"written long ago")
        assert transactions == [False, True]  # one read and one write, for the old file only
        assert [row[0] for row in cache_rows(database)] == [os.fsencode(old)]
        transactions.clear()
        again = observe_many([fresh], "xxh3_128", stat_cache)
        assert again == facts[:1] and transactions == []  # nothing asked of the cache
        write_old(fresh, b"just written")  # older than the window now: cached from here
        observe_many([fresh], "xxh3_128", stat_cache)
        assert transactions == [False, True]
    assert len(cache_rows(database)) == 2


def test_store_and_lookup_respect_the_racy_window(tmp_path: Path, cache: StatCache) -> None:
    path = write_old(tmp_path / "x", b"abc")
    info = path.stat()
    cache.store(path, info, "sha256", "sha256:00", hashed_ns=OLD_NS + RACY_WINDOW_NS // 2)
    assert cache.lookup(path, info, "sha256") is None
    cache.store(path, info, "sha256", "sha256:11", hashed_ns=OLD_NS + 2 * RACY_WINDOW_NS)
    assert cache.lookup(path, info, "sha256") == "sha256:11"
    assert cache.lookup(path, info, "blake3") is None


def test_observe_many_matches_observe(tmp_path: Path, cache: StatCache) -> None:
    paths = [write_old(tmp_path / f"f{i}", b"x" * i) for i in range(20)]
    tree = make_tree(tmp_path / "tree")
    targets = [*paths, tmp_path / "missing", tree]
    batch = observe_many(targets, "blake3", cache)
    assert batch == [observe(p, "blake3") for p in targets]
    assert batch[-2] == FileFacts(None, None, None, False)
    assert batch[-1].size is None and batch[-1].content_hash == hash_file(tree, "blake3")
    assert observe_many(targets, "blake3", cache) == batch  # second pass from the cache


def test_corrupt_cache_degrades_to_no_cache(tmp_path: Path) -> None:
    database = tmp_path / "statcache.sqlite3"
    database.write_bytes(b"this is not a database" * 100)
    path = write_old(tmp_path / "x", b"abc")
    with StatCache(database) as broken:
        assert observe(path, "xxh3_128", broken).content_hash == reference("xxh3_128", b"abc")
        assert not broken.usable
        assert broken.lookup(path, path.stat(), "xxh3_128") is None


def test_a_cache_locked_past_the_timeout_is_skipped_that_time_not_given_up(
    tmp_path: Path,
) -> None:
    database = tmp_path / "statcache.sqlite3"
    paths = [write_old(tmp_path / f"f{i}", b"%d" % i) for i in range(5)]
    expected = [observe(p, "xxh3_128") for p in paths]
    with StatCache(database, timeout=0.2) as cache:
        assert observe_many(paths[:1], "xxh3_128", cache) == expected[:1]  # file set up
        holder = sqlite3.connect(database, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # another process holds the cache
        try:
            assert observe_many(paths, "xxh3_128", cache) == expected  # hashed without it
            assert cache.usable
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert observe_many(paths, "xxh3_128", cache) == expected
        assert all(
            cache.lookup(p, p.stat(), "xxh3_128") == f.content_hash
            for p, f in zip(paths, expected, strict=True)
        ), "once the lock is gone the cache is written again"


def test_unwritable_cache_location_degrades_to_no_cache(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    path = write_old(tmp_path / "x", b"abc")
    with StatCache(tmp_path / "file" / "statcache.sqlite3") as broken:  # parent is a file
        assert observe(path, "xxh3_128", broken).content_hash == reference("xxh3_128", b"abc")
        assert not broken.usable


def test_cache_is_shared_between_connections(tmp_path: Path) -> None:
    database = tmp_path / "statcache.sqlite3"
    path = write_old(tmp_path / "x", b"abc")
    with StatCache(database) as writer:
        observe(path, "xxh3_128", writer)
    with open(path, "r+b") as handle:
        handle.write(b"xyz")
    os.utime(path, ns=(OLD_NS, OLD_NS))
    with StatCache(database) as reader:
        assert observe(path, "xxh3_128", reader).content_hash == reference("xxh3_128", b"abc")


WORKER = """
import sys
from dpt_core.hashing import StatCache, observe_many
cache = StatCache(sys.argv[1], timeout=30)
for _ in range(5):
    observe_many(sys.argv[2:], "xxh3_128", cache)
print(cache.usable)
"""


def test_many_processes_share_one_cache(tmp_path: Path) -> None:
    database = tmp_path / "statcache.sqlite3"
    groups = [
        [write_old(tmp_path / f"p{w}-{i}", b"%d-%d" % (w, i)) for i in range(50)] for w in range(6)
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(database), *map(str, paths)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for paths in groups
    ]
    outputs = [worker.communicate(timeout=120)[0].strip() for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * len(groups)
    assert outputs == ["True"] * len(groups)  # no worker had to give up on the cache
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM statcache").fetchone()[0] == 300


# --------------------------------------------------------------------------- stat cache in batches


def rewrite_keeping_stat(path: Path, data: bytes) -> None:
    """New bytes of the same length, same inode, mtime put back: only a re-read can tell."""
    info = path.stat()
    assert len(data) == info.st_size
    with open(path, "r+b") as handle:
        handle.write(data)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


def cache_rows(database: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(database) as connection:
        return connection.execute("SELECT * FROM statcache ORDER BY path, algorithm").fetchall()


def test_unchanged_second_pass_writes_nothing(tmp_path: Path) -> None:
    database = tmp_path / "statcache.sqlite3"
    paths = [write_old(tmp_path / f"f{i:03d}", b"%03d" % i) for i in range(200)]
    with StatCache(database, timeout=0.2) as stat_cache:
        first = observe_many(paths, "xxh3_128", stat_cache)
        rows = cache_rows(database)
        assert len(rows) == 200
        blocker = sqlite3.connect(database, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # any write by the cache now fails and disables it
        try:
            assert observe_many(paths, "xxh3_128", stat_cache) == first
            assert stat_cache.usable
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
    assert cache_rows(database) == rows


def test_edited_file_among_a_thousand_unchanged_is_the_only_one_rehashed(tmp_path: Path) -> None:
    database = tmp_path / "statcache.sqlite3"
    paths = [write_old(tmp_path / f"f{i:04d}", b"%04d" % i) for i in range(1000)]
    with StatCache(database) as stat_cache:
        first = observe_many(paths, "xxh3_128", stat_cache)
        rows = cache_rows(database)
        edited, untouched = paths[517], paths[518]
        edited.write_bytes(b"EDIT")  # same size, new mtime
        os.utime(edited, ns=(OLD_NS, OLD_NS + 10**9))
        rewrite_keeping_stat(untouched, b"SAME")  # served from the cache, so still the old hash
        second = observe_many(paths, "xxh3_128", stat_cache)
    assert second[517] == FileFacts(reference("xxh3_128", b"EDIT"), 4, OLD_NS / 1e9 + 1, True)
    assert second[518] == first[518]
    assert second[518].content_hash != reference("xxh3_128", b"SAME")
    assert second[:517] == first[:517] and second[518:] == first[518:]
    after = cache_rows(database)
    assert [new[0] for old, new in zip(rows, after, strict=True) if old != new] == [
        os.fsencode(edited)
    ]


def test_few_paths_among_many_cached_entries_are_found(tmp_path: Path, cache: StatCache) -> None:
    # Two keys far apart with 300 entries between them: too many to scan, looked up by key.
    paths = [write_old(tmp_path / f"f{i:03d}", b"%03d" % i) for i in range(300)]
    first = observe_many(paths, "xxh3_128", cache)
    rewrite_keeping_stat(paths[0], b"xxx")
    rewrite_keeping_stat(paths[-1], b"yyy")
    new = write_old(tmp_path / "f150a", b"new")
    assert observe_many([paths[-1], new, paths[0]], "xxh3_128", cache) == [
        first[-1],
        FileFacts(reference("xxh3_128", b"new"), 3, OLD_NS / 1e9, True),
        first[0],
    ]


def test_entries_of_other_algorithms_are_never_served(tmp_path: Path, cache: StatCache) -> None:
    paths = [write_old(tmp_path / f"f{i:02d}", b"%02d" % i) for i in range(50)]
    for algorithm in ("sha256", "xxh3_128", "blake3"):
        facts = observe_many(paths, algorithm, cache)
        assert [f.content_hash for f in facts] == [
            reference(algorithm, p.read_bytes()) for p in paths
        ]
    for path in paths:
        rewrite_keeping_stat(path, b"--")
    for algorithm in ("blake3", "xxh3_128", "sha256"):  # from the cache, each its own
        assert [f.content_hash for f in observe_many(paths, algorithm, cache)] == [
            reference(algorithm, b"%02d" % i) for i in range(50)
        ]


def test_lookup_many_answers_in_the_order_asked(tmp_path: Path, cache: StatCache) -> None:
    a, b, c = (write_old(tmp_path / name, name.encode()) for name in ("a", "b", "c"))
    cache.store_many([(p, p.stat(), "sha256", f"sha256:{p.name * 2}", None) for p in (a, b, c)])
    settled = OLD_NS + 2 * RACY_WINDOW_NS
    cache.store(c, c.stat(), "sha256", "sha256:cc", hashed_ns=settled)
    cache.store(a, a.stat(), "sha256", "sha256:aa", hashed_ns=settled)
    os.utime(b, ns=(OLD_NS, OLD_NS + 1))
    items = [(c, c.stat()), (b, b.stat()), (a, a.stat()), (c, c.stat()), (tmp_path / "d", a.stat())]
    assert cache.lookup_many(items, "sha256") == ["sha256:cc", None, "sha256:aa", "sha256:cc", None]


def test_spellings_of_one_path_share_one_entry(
    tmp_path: Path, cache: StatCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "d").mkdir()
    path = write_old(tmp_path / "d" / "x", b"abc")
    monkeypatch.chdir(tmp_path / "d")
    observe(path, "xxh3_128", cache)
    rewrite_keeping_stat(path, b"ABC")
    spellings = ["x", "./x", f"{tmp_path}//d/./x", f"{tmp_path}/d/../d/x", os.fsencode(path)]
    assert {observe(s, "xxh3_128", cache).content_hash for s in spellings} == {
        reference("xxh3_128", b"abc")
    }
    assert [row[0] for row in cache_rows(cache.path)] == [os.fsencode(path)]


@given(
    parts=st.lists(
        st.sampled_from([b"", b".", b"..", b"a", b".a", b"a.", b"..a", b"\xff", b"b c"]),
        max_size=6,
    ),
    absolute=st.booleans(),
)
def test_cache_keys_are_abspath(parts: list[bytes], absolute: bool) -> None:
    path = (b"/" if absolute else b"") + b"/".join(parts)
    assert _key_paths([path, path]) == [os.path.abspath(path)] * 2
