"""Streaming content hashes and a per-host stat cache that skips unchanged files.

A content hash is ``"<algorithm>:<hex>"`` with algorithm ``xxh3_128`` (the
default: fast, not cryptographic), ``blake3`` or ``sha256``. Files are read in
1 MiB chunks, so memory stays bounded whatever their size.

A directory is hashed as a tree: its entries are visited depth first in byte
order of their names, and for each one its path relative to the directory, its
kind and (for a file) its content hash or (for a symlink) its target text feed
one digest. Symlinks inside a tree are not followed, so a tree cannot loop.

:class:`StatCache` remembers, per host, the hash of each file together with its
size, mtime, inode and device; :func:`observe` re-reads a file only when one of
those changed. Entries are trusted only once the file's mtime is older than the
moment it was hashed (minus :data:`RACY_WINDOW_NS`), so a file rewritten in the
same timestamp tick as it was hashed is never served a stale hash (git calls
this the "racy" case). So a file changed within that window (an output just
written) is hashed without asking the cache or storing in it: neither an entry
there nor one stored now could be trusted.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Final, Protocol

import xxhash

from dpt_core import contracts
from dpt_core.config import HASH_ALGORITHMS, Settings, get_settings
from dpt_core.errors import ConfigError, HashError
from dpt_core.frozen import Frozen, set_field
from dpt_core.log import deferred_logger

__all__ = [
    "CHUNK_SIZE",
    "FileFacts",
    "HASH_PATTERN",
    "RACY_WINDOW_NS",
    "StatCache",
    "hash_file",
    "observe",
    "observe_many",
]

CHUNK_SIZE: Final = 1 << 20
_SMALL_CHUNK_SIZE: Final = 1 << 16
HASH_PATTERN: Final = re.compile(r"^(xxh3_128|blake3|sha256):[0-9a-f]+$")
#: A cached hash is trusted only for files whose mtime is this much older than the hash.
RACY_WINDOW_NS: Final = 2_000_000_000
_TREE_HEADER: Final = b"dpt-tree-v1\0"

PathArg = str | bytes | os.PathLike[str] | os.PathLike[bytes]

log = deferred_logger(__name__)


class _Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> object: ...

    def hexdigest(self) -> str: ...


def _blake3() -> _Hasher:
    import blake3  # (imported when used: most processes hash with the default)

    return blake3.blake3()


_HASHERS: Final[dict[str, Callable[[], _Hasher]]] = {
    "xxh3_128": xxhash.xxh3_128,
    "blake3": _blake3,
    "sha256": hashlib.sha256,
}


class FileFacts(Frozen):
    """What :func:`observe` saw: all None (and ``exists=False``) for a missing path."""

    __slots__ = ("content_hash", "size", "mtime", "exists")
    content_hash: str | None
    size: int | None
    mtime: float | None
    exists: bool

    def __init__(
        self, content_hash: str | None, size: int | None, mtime: float | None, exists: bool
    ) -> None:
        set_field(self, "content_hash", content_hash)
        set_field(self, "size", size)
        set_field(self, "mtime", mtime)
        set_field(self, "exists", exists)


def _resolve_algorithm(algorithm: str | None) -> str:
    name = get_settings().hash_algorithm if algorithm is None else algorithm
    if name not in HASH_ALGORITHMS:
        raise ConfigError(
            f"hash algorithm {name!r} is not supported: use one of {', '.join(HASH_ALGORITHMS)}"
        )
    return name


def _require_enabled(algorithm: str, path: bytes) -> None:
    if algorithm == "none":
        raise HashError(
            f"cannot hash {os.fsdecode(path)!r}: hashing is disabled (DPT_HASH=none); "
            "set DPT_HASH to xxh3_128, blake3 or sha256"
        )


def _hasher(algorithm: str, path: bytes) -> _Hasher:
    _require_enabled(algorithm, path)
    return _HASHERS[algorithm]()


def _error(path: bytes, exc: OSError) -> HashError:
    name = os.fsdecode(path)
    if exc.errno == errno.ELOOP:
        return HashError(f"cannot hash {name!r}: symlink loop; fix or remove the link")
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return HashError(f"cannot hash {name!r}: no such file; check the path")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return HashError(f"cannot hash {name!r}: permission denied; make it readable by this user")
    return HashError(f"cannot hash {name!r}: {exc.strerror or exc}")


def _special_file(path: bytes, mode: int) -> HashError:
    kind = stat.filemode(mode)[0]
    names = {"p": "a named pipe", "s": "a socket", "c": "a character device", "b": "a block device"}
    what = names.get(kind, "not a regular file or directory")
    return HashError(
        f"cannot hash {os.fsdecode(path)!r}: it is {what}; only files and directories are hashed"
    )


def _stream(fd: int, hasher: _Hasher, size_hint: int = CHUNK_SIZE) -> None:
    """Feed ``fd`` to ``hasher`` in chunks of at most :data:`CHUNK_SIZE` bytes.

    :param size_hint: the expected size; small files get a small buffer, because
        allocating 1 MiB costs more than hashing a 4 KiB file.
    """
    buffer = bytearray(min(CHUNK_SIZE, max(_SMALL_CHUNK_SIZE, size_hint + 1)))
    view = memoryview(buffer)
    while count := os.readv(fd, [buffer]):
        hasher.update(view[:count])


def _hash_regular(path: bytes, algorithm: str) -> tuple[str, os.stat_result, os.stat_result]:
    """(digest, stat before reading, stat after reading) of a regular file."""
    hasher = _hasher(algorithm, path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _error(path, exc) from None
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise _special_file(path, before.st_mode)
        _stream(fd, hasher, before.st_size)
        after = os.fstat(fd)
    except OSError as exc:
        raise _error(path, exc) from None
    finally:
        os.close(fd)
    return f"{algorithm}:{hasher.hexdigest()}", before, after


def _tree_record(hasher: _Hasher, relative: bytes, kind: bytes, payload: bytes) -> None:
    """One length-prefixed record, so no two different trees feed the same bytes."""
    for part in (kind, relative, payload):
        hasher.update(b"%d:" % len(part))
        hasher.update(part)


def _walk_tree(
    root: bytes, relative: bytes, algorithm: str, hasher: _Hasher, seen: set[tuple[int, int]]
) -> None:
    directory = os.path.join(root, relative) if relative else root
    try:
        with os.scandir(directory) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError as exc:
        raise _error(directory, exc) from None
    for entry in entries:
        name = os.path.join(relative, entry.name) if relative else entry.name
        _hash_tree_entry(root, name, entry, algorithm, hasher, seen)


def _hash_tree_entry(
    root: bytes,
    relative: bytes,
    entry: os.DirEntry[bytes],
    algorithm: str,
    hasher: _Hasher,
    seen: set[tuple[int, int]],
) -> None:
    try:
        info = entry.stat(follow_symlinks=False)
        if stat.S_ISLNK(info.st_mode):
            _tree_record(hasher, relative, b"l", os.readlink(entry.path))
        elif stat.S_ISREG(info.st_mode):
            _tree_record(hasher, relative, b"f", _hash_regular(entry.path, algorithm)[0].encode())
        elif stat.S_ISDIR(info.st_mode):
            _tree_record(hasher, relative, b"d", b"")
            _enter_directory(root, relative, info, algorithm, hasher, seen)
        else:
            raise _special_file(entry.path, info.st_mode)
    except OSError as exc:
        raise _error(entry.path, exc) from None


def _enter_directory(
    root: bytes,
    relative: bytes,
    info: os.stat_result,
    algorithm: str,
    hasher: _Hasher,
    seen: set[tuple[int, int]],
) -> None:
    identity = (info.st_dev, info.st_ino)
    if identity in seen:
        raise HashError(
            f"cannot hash {os.fsdecode(os.path.join(root, relative))!r}: directory loop (bind mount?)"
        )
    seen.add(identity)
    try:
        _walk_tree(root, relative, algorithm, hasher, seen)
    finally:
        seen.discard(identity)


def _hash_directory(path: bytes, info: os.stat_result, algorithm: str) -> str:
    hasher = _hasher(algorithm, path)
    hasher.update(_TREE_HEADER)
    _enter_directory(path, b"", info, algorithm, hasher, set())
    return f"{algorithm}:{hasher.hexdigest()}"


def _stat(path: bytes) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as exc:
        raise _error(path, exc) from None


def _hash_stat(path: bytes, info: os.stat_result, algorithm: str) -> str:
    if stat.S_ISDIR(info.st_mode):
        return _hash_directory(path, info, algorithm)
    if stat.S_ISREG(info.st_mode):
        return _hash_regular(path, algorithm)[0]
    raise _special_file(path, info.st_mode)


@contracts.post(
    lambda result: HASH_PATTERN.match(result) is not None,
    message="hash must be '<algorithm>:<hex>'",
)
def hash_file(path: PathArg, algorithm: str | None = None) -> str:
    """The content hash ``"<algorithm>:<hex>"`` of a file, or of a directory tree.

    :param path: a file or directory; a symlink given here is followed.
    :param algorithm: ``xxh3_128``, ``blake3`` or ``sha256``; None means the
        configured one (``DPT_HASH``).
    :raises HashError: the path is missing, unreadable, a symlink loop or a special
        file, or hashing is disabled (``none``).
    :raises ConfigError: the algorithm is unknown.
    """
    name = _resolve_algorithm(algorithm)
    raw = os.fsencode(path)
    _require_enabled(name, raw)
    return _hash_stat(raw, _stat(raw), name)


# --------------------------------------------------------------------------- stat cache

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS statcache (
    path BLOB NOT NULL,
    algorithm TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    dev INTEGER NOT NULL,
    digest TEXT NOT NULL,
    hashed_ns INTEGER NOT NULL,
    PRIMARY KEY (path, algorithm)
) WITHOUT ROWID
"""
_SELECT_ENTRY: Final = (
    "SELECT path, size, mtime_ns, inode, dev, digest, algorithm = ? AND mtime_ns + ? < hashed_ns "
    "FROM statcache "
)
_LOOKUP_RANGE: Final = _SELECT_ENTRY + "WHERE path BETWEEN ? AND ? LIMIT ?"
_LOOKUP_MANY: Final = _SELECT_ENTRY + "WHERE path IN ({marks}) AND algorithm = ?"
_LOOKUP_CHUNK: Final = 500
#: A range scan may read this many rows per key asked for before it gives way to point lookups.
_RANGE_ROWS_PER_KEY: Final = 2
_RANGE_SLACK: Final = 16
_UPSERT: Final = "INSERT OR REPLACE INTO statcache VALUES (?, ?, ?, ?, ?, ?, ?, ?)"

#: A stored entry: (path, algorithm, size, mtime_ns, inode, dev, digest, hashed_ns).
CacheRow = tuple[bytes, str, int, int, int, int, str, int]
#: An entry as looked up: (path, size, mtime_ns, inode, dev, digest, usable), where
#: usable means: for the algorithm asked for, and hashed after the racy window.
_Entry = tuple[bytes, int, int, int, int, str, int]


def _key_paths(paths: Iterable[bytes]) -> list[bytes]:
    """``os.path.abspath`` of each path, reading the working directory at most once.

    On POSIX a path that is absolute and already normal (no ``//``, no component
    starting with ``.``, no trailing ``/``) is its own key and skips ``normpath``,
    which costs about as much per path as reading its cache entry.
    """
    if os.name != "posix":
        return [os.path.abspath(path) for path in paths]
    cwd: bytes | None = None
    keys: list[bytes] = []
    for path in paths:
        key = path
        if not key.startswith(b"/"):
            cwd = os.getcwdb() if cwd is None else cwd
            key = os.path.join(cwd, key)
        if b"//" in key or b"/." in key or key.endswith(b"/"):
            key = os.path.normpath(key)
        keys.append(key)
    return keys


def _cache_row(
    key: bytes, algorithm: str, info: os.stat_result, digest: str, hashed_ns: int
) -> CacheRow:
    """The stored entry for ``digest`` of the file at ``key`` in the state ``info``."""
    return (
        key,
        algorithm,
        info.st_size,
        info.st_mtime_ns,
        info.st_ino,
        info.st_dev,
        digest,
        hashed_ns,
    )


def _trusted(entry: _Entry | None, info: os.stat_result) -> str | None:
    """The entry's digest if the file is still in the state it was hashed in."""
    if (
        entry is not None
        and entry[1] == info.st_size
        and entry[2] == info.st_mtime_ns
        and entry[3] == info.st_ino
        and entry[4] == info.st_dev
    ):
        return entry[5]
    return None


def _read_chunk(connection: sqlite3.Connection, part: list[bytes], algorithm: str) -> list[_Entry]:
    """The entries for the sorted keys ``part``, plus any others between them."""
    limit = _RANGE_ROWS_PER_KEY * len(part) + _RANGE_SLACK
    entries: list[_Entry] = connection.execute(
        _LOOKUP_RANGE, (algorithm, RACY_WINDOW_NS, part[0], part[-1], limit)
    ).fetchall()
    if len(entries) < limit:
        return entries
    query = _LOOKUP_MANY.format(marks=", ".join("?" * len(part)))
    return connection.execute(query, (algorithm, RACY_WINDOW_NS, *part, algorithm)).fetchall()


def _is_busy(exc: BaseException) -> bool:
    """A lock another process holds (transient), not a broken cache."""
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


class StatCache:
    """Per-host cache of content hashes keyed by (absolute path, algorithm).

    Stored in ``<cache_dir>/statcache.sqlite3`` (stdlib SQLite in WAL mode, created
    on first use). Safe to share between processes and threads. Any trouble with
    the cache file (locked too long, corrupt, read-only disk) is logged once and
    the cache then behaves as empty: it never fails the caller.
    """

    def __init__(
        self,
        path: Path | str | None = None,
        *,
        settings: Settings | None = None,
        timeout: float = 5.0,
    ):
        if path is None:
            path = (settings or get_settings()).cache_dir / "statcache.sqlite3"
        self.path = Path(path)
        self.timeout = timeout
        self._connection: sqlite3.Connection | None = None
        self._broken = False
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            try:
                self._set_up(connection)
            except BaseException:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def _set_up(self, connection: sqlite3.Connection) -> None:
        """WAL mode and the table. Switching a new file to WAL answers "database is locked"
        at once, without the busy timeout, while another process does the same: so many
        processes opening one new cache together retry here until the timeout."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")
                connection.execute(_SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    @contextlib.contextmanager
    def _transaction(self, write: bool) -> Iterator[sqlite3.Connection | None]:
        """The connection inside one transaction, or None once the cache is broken."""
        with self._lock:
            if self._broken:
                yield None
                return
            try:
                connection = self._connect()
                connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except (sqlite3.Error, OSError) as exc:
                self._trouble(exc)
                yield None
                return
            try:
                yield connection
                connection.execute("COMMIT")
            except (sqlite3.Error, OSError) as exc:
                self._rollback(connection)
                self._trouble(exc)
            except BaseException:
                self._rollback(connection)
                raise

    @staticmethod
    def _rollback(connection: sqlite3.Connection) -> None:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")

    def _trouble(self, exc: BaseException) -> None:
        if _is_busy(exc):  # another process holds the cache past the timeout: skip it this once
            log.debug("dpt stat cache %s busy (%s); not used this time", self.path, exc)
        else:
            self._give_up(exc)

    def _give_up(self, exc: BaseException) -> None:
        log.warning("dpt stat cache %s is unusable (%s); hashing without it", self.path, exc)
        self._broken = True

    @property
    def usable(self) -> bool:
        """False once trouble made the cache give up for this process."""
        return not self._broken

    def lookup(self, path: PathArg, st: os.stat_result, algorithm: str) -> str | None:
        """The cached hash of ``path`` if its size, mtime, inode and device still match ``st``."""
        return self.lookup_many([(path, st)], algorithm)[0]

    def lookup_many(
        self, items: Sequence[tuple[PathArg, os.stat_result]], algorithm: str
    ) -> list[str | None]:
        """:meth:`lookup` for many paths in one read transaction."""
        keys = _key_paths([os.fsencode(path) for path, _ in items])
        entries = self._entries(keys, algorithm)
        return [
            _trusted(entries.get(key), info) for key, (_, info) in zip(keys, items, strict=True)
        ]

    def _entries(self, keys: Sequence[bytes], algorithm: str) -> dict[bytes, _Entry]:
        """The usable entries for ``keys`` (absolute, normalised paths), by key.

        One read transaction. The keys are sorted and read :data:`_LOOKUP_CHUNK` at a
        time, each chunk as one range scan of the primary key (a pass of a directory
        asks for neighbouring paths); a range that holds many more entries than were
        asked for is read by point lookups instead, so the scan never grows with the
        size of the cache.
        """
        found: dict[bytes, _Entry] = {}
        ordered = sorted(keys)
        if not ordered:
            return found
        with self._transaction(write=False) as connection:
            if connection is not None:
                for start in range(0, len(ordered), _LOOKUP_CHUNK):
                    part = ordered[start : start + _LOOKUP_CHUNK]
                    for entry in _read_chunk(connection, part, algorithm):
                        if entry[6]:
                            found[entry[0]] = entry
        return found

    def store(
        self,
        path: PathArg,
        st: os.stat_result,
        algorithm: str,
        digest: str,
        hashed_ns: int | None = None,
    ) -> None:
        """Remember ``digest`` for ``path`` in the state ``st``.

        :param hashed_ns: when the file was read (``time.time_ns()`` before opening
            it); defaults to now, which is the conservative choice.
        """
        self.store_many([(path, st, algorithm, digest, hashed_ns)])

    def store_many(
        self, items: Iterable[tuple[PathArg, os.stat_result, str, str, int | None]]
    ) -> None:
        """:meth:`store` for many entries in one write transaction."""
        now = time.time_ns()
        listed = list(items)
        keys = _key_paths([os.fsencode(item[0]) for item in listed])
        self._write(
            [
                _cache_row(key, algo, st, digest, now if ns is None else ns)
                for key, (_, st, algo, digest, ns) in zip(keys, listed, strict=True)
            ]
        )

    def _write(self, rows: Sequence[CacheRow]) -> None:
        """Insert or replace ``rows`` in one write transaction; no transaction when empty."""
        if not rows:
            return
        with self._transaction(write=True) as connection:
            if connection is not None:
                connection.executemany(_UPSERT, rows)

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._connection.close()
                self._connection = None

    def __enter__(self) -> StatCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --------------------------------------------------------------------------- observe

_MISSING: Final = FileFacts(None, None, None, False)


def _stat_or_none(path: bytes) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise _error(path, exc) from None


def _facts(info: os.stat_result, content_hash: str | None) -> FileFacts:
    size = None if stat.S_ISDIR(info.st_mode) else info.st_size
    return FileFacts(content_hash=content_hash, size=size, mtime=info.st_mtime, exists=True)


def _hash_for_cache(path: bytes, key: bytes, algorithm: str) -> tuple[str, CacheRow | None]:
    """The hash of a regular file, and its cache row if the file held still while being read."""
    started = time.time_ns()
    digest, before, after = _hash_regular(path, algorithm)
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        return digest, None
    return digest, _cache_row(key, algorithm, before, digest, started)


def observe_many(
    paths: Iterable[PathArg], algorithm: str | None = None, cache: StatCache | None = None
) -> list[FileFacts]:
    """:func:`observe` for many paths, with one cache read and at most one cache write.

    A regular file whose cache entry matches its stat is not opened. Only the files
    hashed in this call are written back, in one transaction, so a pass over
    unchanged files writes nothing.

    :param cache: a :class:`StatCache` to skip unchanged files; None hashes every file.
    :raises HashError: a path exists but cannot be hashed (see :func:`hash_file`).
    """
    name = _resolve_algorithm(algorithm)
    raws = [os.fsencode(p) for p in paths]
    infos = [_stat_or_none(raw) for raw in raws]
    if name == "none":
        return [_MISSING if info is None else _facts(info, None) for info in infos]
    if cache is None:
        return [
            _MISSING if info is None else _facts(info, _hash_stat(raw, info, name))
            for raw, info in zip(raws, infos, strict=True)
        ]
    return _observe_cached(raws, infos, name, cache)


def _observe_cached(
    raws: list[bytes], infos: list[os.stat_result | None], algorithm: str, cache: StatCache
) -> list[FileFacts]:
    # A file changed within the racy window (one just written, the usual output) has no
    # entry the cache may trust: a trusted entry was hashed RACY_WINDOW_NS after the mtime
    # it records, so after now. Its entry, stored now, could never be trusted either. It is
    # hashed without reading or writing the cache (two SQLite transactions a file).
    recent = time.time_ns() - RACY_WINDOW_NS
    is_file = [
        info is not None and stat.S_ISREG(info.st_mode) and info.st_mtime_ns < recent
        for info in infos
    ]
    keys = _key_paths([raw for raw, regular in zip(raws, is_file, strict=True) if regular])
    entries = cache._entries(keys, algorithm)
    next_key = iter(keys).__next__
    results: list[FileFacts] = []
    pending: list[CacheRow] = []
    for raw, info, regular in zip(raws, infos, is_file, strict=True):
        if info is None:
            results.append(_MISSING)
        elif not regular:  # (a directory, a special file, or a file changed just now)
            results.append(_facts(info, _hash_stat(raw, info, algorithm)))
        else:
            key = next_key()
            digest = _trusted(entries.get(key), info)
            if digest is None:
                digest, row = _hash_for_cache(raw, key, algorithm)
                if row is not None:
                    pending.append(row)
            results.append(FileFacts(digest, info.st_size, info.st_mtime, True))
    cache._write(pending)
    return results


@contracts.post(
    lambda result: (
        result.content_hash is None or HASH_PATTERN.match(result.content_hash) is not None
    )
)
@contracts.post(
    lambda result: (
        result.exists or (result.content_hash, result.size, result.mtime) == (None, None, None)
    )
)
def observe(
    path: PathArg, algorithm: str | None = None, cache: StatCache | None = None
) -> FileFacts:
    """Stat ``path`` and hash it, unless ``cache`` holds its hash for the same state.

    A missing path (or a dangling symlink) gives ``FileFacts(None, None, None, False)``;
    with algorithm ``none`` the hash is None. A directory is hashed as a tree, never
    cached, and has size None.

    :raises HashError: the path exists but cannot be hashed (see :func:`hash_file`).
    """
    return observe_many([path], algorithm, cache)[0]
