"""A durable local queue for events the database could not take.

Events belong to the database they were meant for. The spool directory
(``DPT_SPOOL_DIR``) holds one sub-directory per target database, named by a
digest of its identity (backend, user, host, port, database; never the
password) and holding a ``target.json`` that names it with the password hidden.
The store replays only its own database's directory; ``dpt spool status`` lists
every one. Events spooled while the configuration was broken have no known
target: they wait under ``unconfigured/`` (as do files an older dpt left at the
top level) until ``dpt spool replay`` is run by hand, which records them into the
database configured then.

Each process appends to its own JSON-lines file (``<host>-<pid>.jsonl``) in its
directory, one ``write`` per batch followed by ``fsync``, holding an exclusive
``flock`` on the file. Replay claims a file under the same lock, records its
batches in order and deletes it; a line cut short by a crash is moved to a
``.bad`` file, never silently dropped. Replaying twice is harmless: events are
idempotent by UUID.

A batch the database rejected for good is kept in the ``.bad`` file with its error.
Once the cause is fixed (a schema upgrade, a setting), ``dpt spool replay --bad``
records those batches (``--dry-run`` first says what it would write); what the database
rejects again stays, with the new error, and unreadable lines stay as they are.
"""

from __future__ import annotations

import _thread
import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from dpt_core.events import (
    Event,
    event_from_dict,
    event_to_dict,
    event_to_json,
    events_from_json,
)
from dpt_core.frozen import Frozen, set_field
from dpt_core.log import log
from dpt_core.process import hostname

SUFFIX = ".jsonl"
#: Quarantined lines: unreadable ones as they were, rejected batches with their error.
BAD_SUFFIX = ".bad"
#: The directory of events whose target database is not known.
UNCONFIGURED = "unconfigured"
TARGET_FILE = "target.json"

#: The spool files this process has open by descriptor, each maybe ``flock``ed. A
#: ``flock`` belongs to the open file, which a child forked meanwhile shares through its
#: copy of the descriptor: the lock would outlive the parent's ``close`` until the child
#: exits. A child that never exits while it waits for something else -- Airflow's
#: OpenLineage provider posting to a ``dpt serve`` from its process pool, while that
#: server waits for the lock -- held a replay for minutes. So a forked child closes its
#: copies at once (:func:`_close_in_child`), and no descriptor is opened or closed while
#: a fork happens (the lock below, taken around ``fork``).
_open_fds: set[int] = set()
_fds_lock = _thread.RLock()


def _open(path: Path, flags: int, mode: int = 0o600) -> int:
    """``os.open`` a spool file whose lock may be taken (see :data:`_open_fds`)."""
    with _fds_lock:
        fd = os.open(path, flags, mode)
        _open_fds.add(fd)
    return fd


def _close(fd: int) -> None:
    """Close a descriptor :func:`_open` gave (its lock, if taken, with it)."""
    with _fds_lock:
        _open_fds.discard(fd)
        os.close(fd)


def _close_in_child() -> None:
    global _fds_lock
    for fd in _open_fds:
        with contextlib.suppress(OSError):  # (closed by the program meanwhile)
            os.close(fd)
    _open_fds.clear()
    _fds_lock = _thread.RLock()  # (the parent's was held across the fork)


def _before_fork() -> None:
    _fds_lock.acquire()


def _after_fork_in_parent() -> None:
    _fds_lock.release()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_close_in_child
)


def database_identity(database_url: str) -> str:
    """What names one database, whatever the driver, options or password in its URL.

    ``postgresql://u:pw@h/db`` and ``postgresql+psycopg://u@h:5432/db?options=...`` are
    the same database; a SQLite URL is its file's absolute path.

    A plain URL is read without SQLAlchemy (a process that only spools never imports
    it); anything unusual (a bracketed host, an ``@`` or ``%`` in the user part) by
    SQLAlchemy's own parser.
    """
    parts = _plain_url(database_url)
    if parts is None:
        from sqlalchemy.engine import make_url

        url = make_url(database_url)
        parts = (url.get_backend_name(), url.username, url.host, url.port, url.database)
    backend, username, host, port, database = parts
    if backend == "sqlite":
        return f"sqlite:{os.path.realpath(os.path.expanduser(database or ''))}"
    backend = {"mariadb": "mysql", "postgres": "postgresql"}.get(backend, backend)
    default_port = {"postgresql": 5432, "mysql": 3306}.get(backend)
    return f"{backend}://{username or ''}@{(host or '').lower()}:{port or default_port}/{database or ''}"


_PLAIN_URL = re.compile(
    r"(?P<scheme>[a-z][a-z0-9]*)(?:\+[a-z0-9_]+)?://"
    r"(?:(?P<user>[^:@/%\[\]]*)(?::[^@/]*)?@)?"
    r"(?P<host>[^:/@?#\[\]%]*)(?::(?P<port>[0-9]+))?"
    r"(?:/(?P<database>[^?#]*))?(?:\?[^#]*)?",
    re.IGNORECASE,
)


def _plain_url(
    database_url: str,
) -> tuple[str, str | None, str | None, int | None, str | None] | None:
    """``(backend, user, host, port, database)`` of a URL plain enough to read by hand."""
    match = _PLAIN_URL.fullmatch(database_url.strip())
    if match is None or "%" in (match["database"] or ""):
        return None
    return (
        match["scheme"].lower(),
        match["user"] or None,
        match["host"] or None,
        int(match["port"]) if match["port"] else None,
        match["database"] or None,
    )


def target_key(database_url: str) -> str:
    """The spool sub-directory of ``database_url`` (``unconfigured`` for none)."""
    if not database_url:
        return UNCONFIGURED
    try:
        identity = database_identity(database_url)
    except Exception:  # an unparseable URL is a broken configuration
        return UNCONFIGURED
    return "db-" + hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()[:16]


class TargetStatus(Frozen):
    """The events waiting for one database; ``database`` is its URL with the password
    hidden, None for ``unconfigured``."""

    __slots__ = ("key", "database", "directory", "files", "batches", "events", "bytes", "bad_files")
    key: str
    database: str | None
    directory: str
    files: int
    batches: int
    events: int
    bytes: int
    bad_files: int

    def __init__(
        self,
        key: str,
        database: str | None,
        directory: str,
        files: int,
        batches: int,
        events: int,
        bytes: int,
        bad_files: int,
    ) -> None:
        set_field(self, "key", key)
        set_field(self, "database", database)
        set_field(self, "directory", directory)
        set_field(self, "files", files)
        set_field(self, "batches", batches)
        set_field(self, "events", events)
        set_field(self, "bytes", bytes)
        set_field(self, "bad_files", bad_files)


class SpoolStatus(Frozen):
    """What a spool directory holds (``dpt spool status``); ``databases``: per target
    database, those with anything waiting (or the current one)."""

    __slots__ = ("directory", "files", "batches", "events", "bytes", "bad_files", "databases")
    directory: str
    files: int
    batches: int
    events: int
    bytes: int
    bad_files: int
    databases: list[TargetStatus]

    def __init__(
        self,
        directory: str,
        files: int,
        batches: int,
        events: int,
        bytes: int,
        bad_files: int,
        databases: list[TargetStatus] | None = None,
    ) -> None:
        set_field(self, "directory", directory)
        set_field(self, "files", files)
        set_field(self, "batches", batches)
        set_field(self, "events", events)
        set_field(self, "bytes", bytes)
        set_field(self, "bad_files", bad_files)
        set_field(self, "databases", [] if databases is None else databases)


class Listed(NamedTuple):
    """A spool file as a listing found it: its path, and the identity (device, inode) of
    the file at that path then."""

    path: Path
    identity: tuple[int, int]


class Spool:
    """The spool of one target database, or (``database_url`` None) the whole spool root
    for status and inspection; only a database's own spool replays.

    :param directory: the spool root (``DPT_SPOOL_DIR``).
    :param database_url: the database these events are for ("" when the configuration
        is broken: they go to ``unconfigured``).
    """

    def __init__(self, directory: Path, database_url: str | None = None) -> None:
        self.root = Path(directory)
        self.database_url = database_url
        self.key = None if database_url is None else target_key(database_url)
        self.directory = self.root if self.key is None else self.root / self.key
        #: A batch was appended to this process's file without an fsync (see :meth:`append`).
        self._unsynced = False
        #: The directories and the target file were made by this process (:meth:`_prepare`).
        self._prepared = False
        #: (pid, this process's file): named once per process, not twice per append.
        self._own: tuple[int, Path] | None = None

    @property
    def own_file(self) -> Path:
        pid, own = os.getpid(), self._own
        if own is None or own[0] != pid:  # (a forked child names its own)
            own = self._own = (pid, self.directory / f"{hostname()}-{pid}{SUFFIX}")
        return own[1]

    def append(self, events: Sequence[Event], *, synced_by_claim: bool = False) -> None:
        """Append one batch (a JSON array on one line) to this process's file.

        Every batch is in the kernel before this returns, so it survives the process being
        killed. A batch that starts or ends a run is also fsynced, with everything appended
        before it: a run's reads and writes reach the disk with its end (or when the writer
        claims the file, or at :meth:`sync`), and a task pays one fsync at each end of its
        run rather than one per event. A machine that crashes mid-run loses at most the
        reads and writes since the run's start, which the run's outputs, not yet fsynced
        either, would not have outlived.

        ``synced_by_claim``: no fsync here at all; the caller's background writer has been
        woken to claim the file, and fsyncs it then, off the caller's thread (see
        :class:`dpt_core.store.writer.BackgroundWriter`).
        """
        if self.key is None:
            raise ValueError("the spool root takes no events: name the database they are for")
        data = _line(events) + b"\n"
        boundary = not synced_by_claim and any(e.kind in _RUN_BOUNDARIES for e in events)
        if not self._prepared:  # (once a process: two mkdirs and a stat per event else)
            self._prepare()
        own = self.own_file
        while True:
            try:
                fd = _open(own, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            except FileNotFoundError:  # the directory was removed since (dpt spool clear)
                self._prepare()
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if not _still_at(fd, own):  # replay or the writer took it meanwhile
                    continue
                os.write(fd, data)
                if boundary:
                    os.fsync(fd)
                self._unsynced = not boundary
                return
            finally:
                _close(fd)

    def sync(self) -> None:
        """fsync this process's file if a batch appended to it was not (see :meth:`append`).

        May run beside appends on other threads (the background writer, while it gathers):
        the mark is cleared before the fsync, so a batch appended after the fsync began
        marks the file again and the next call syncs it."""
        if not self._unsynced or self.key is None:
            return
        self._unsynced = False
        try:
            fd = os.open(self.own_file, os.O_RDONLY)
        except FileNotFoundError:  # claimed (fsynced then) or replayed by a drainer
            return
        try:
            os.fsync(fd)
        except OSError as exc:  # (the events are in the kernel; a flush never fails on it)
            self._unsynced = True
            log.warning("dpt: cannot fsync the spool file %s: %s", self.own_file, exc)
        finally:
            os.close(fd)

    def claim_own(self) -> Path | None:
        """Move this process's file aside for the background writer; None when it has none.

        The file is renamed under its lock to ``<host>-<pid>.w<n>.jsonl``: appends made
        from then on start a new file, and the claimed one stays a spool file like any
        other (a process killed while writing it leaves it for the next writer to replay).
        What was appended to it without an fsync is not synced here: the claimer calls
        :meth:`sync_claimed` before it writes the batches (and may delete the file), once
        it no longer holds what an append waits for.
        """
        if self.key is None:
            raise ValueError("the spool root has no file of its own: name the database")
        own = self.own_file
        try:
            fd = _open(own, os.O_RDWR)
        except FileNotFoundError:  # (none yet, or a replay took it whole: as in sync())
            self._unsynced = False
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if not _still_at(fd, own):
                return None
            self._unsynced = False  # (the claimer's sync_claimed)
            return _move_aside(own, "w")
        finally:
            _close(fd)

    @staticmethod
    def sync_claimed(path: Path) -> None:
        """fsync a file :meth:`claim_own` moved aside."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # (replayed and deleted by a drainer meanwhile)
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def wait_for_others(self, timeout: float) -> bool:
        """Wait (``timeout`` at most) until no other process still replays a file of this
        process's events; True when none of them waits in the spool any more.

        A drainer (``dpt serve``, ``dpt spool drain``, another process's replay) may take
        this process's file before its own background writer claims it: the events are
        then written by that drainer, under the file's lock, and this process's flush must
        wait for it, or a read right after would not see what the process recorded. Such a
        file keeps this process's name: ``<host>-<pid>.r<drainer pid>-<n>.jsonl``.
        """
        if self.key is None:
            return True
        import time

        deadline = time.monotonic() + timeout
        mine = f"{hostname()}-{os.getpid()}.r"
        own_replay = f"{mine}{os.getpid()}-"  # (this process's replays hold the store's lock)
        try:
            with os.scandir(self.directory) as entries:
                taken = [
                    Path(e.path)
                    for e in entries
                    if e.name.startswith(mine)
                    and e.name.endswith(SUFFIX)
                    and not e.name.startswith(own_replay)
                ]
        except FileNotFoundError:
            return True
        for path in taken:
            try:
                fd = _open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # written meanwhile
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            return False
                        time.sleep(0.01)
                if os.fstat(fd).st_nlink > 0:  # the drainer left it: not written
                    return False
            finally:
                _close(fd)
        return True

    def _prepare(self) -> None:
        """Make the directories and name the target database, before the first append."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._write_target()
        self._prepared = True

    def _write_target(self) -> None:
        """Name the target database (password hidden) beside its events, once."""
        path = self.directory / TARGET_FILE
        if self.key == UNCONFIGURED or path.exists():
            return
        url = self.database_url or ""
        if "sqlalchemy" in sys.modules or _plain_url(url) is None:
            from dpt_core.store.engine import safe_url

            shown = safe_url(url)
        else:  # (a spooling-only process does without SQLAlchemy)
            shown = re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", url)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"database": shown}) + "\n", encoding="utf-8")
        os.replace(temporary, path)

    def _directories(self) -> list[Path]:
        """The directories this spool covers: its own, or every target's under the root."""
        if self.key is not None:
            return [self.directory]
        if not self.root.is_dir():
            return []
        return [self.root] + sorted(p for p in self.root.iterdir() if p.is_dir())

    @staticmethod
    def _files_in(directory: Path, *, exact: bool = False, prefix: str = "") -> list[Listed]:
        """The spool files in ``directory`` whose names start with ``prefix``, oldest
        first, each with the identity of the file it named then. A file a writer moves
        aside or replays meanwhile is left out; with ``exact``, FileNotFoundError is
        raised instead (the listing may have missed the name it moved to: look again)."""
        try:
            entries = os.scandir(directory)
        except (FileNotFoundError, NotADirectoryError):
            return []
        found: dict[tuple[int, int], tuple[int, str, Path]] = {}
        with entries:
            for entry in entries:
                name = entry.name
                if not name.endswith(SUFFIX) or not name.startswith(prefix):
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:  # taken by a writer meanwhile
                    if exact:
                        raise
                    continue
                # (one file under two names while a writer moves it aside: counted once)
                found.setdefault((st.st_dev, st.st_ino), (st.st_mtime_ns, name, directory / name))
        return [
            Listed(path, identity)
            for identity, (_mtime, _name, path) in sorted(found.items(), key=lambda i: i[1])
        ]

    def listing(self, prefix: str = "") -> list[Listed]:
        """The spool files, oldest first, each with the identity of the file it named when
        listed (of one process: ``prefix`` ``<host>-<pid>.``): what :meth:`replay` takes."""
        return [item for d in self._directories() for item in self._files_in(d, prefix=prefix)]

    def files(self, prefix: str = "") -> list[Path]:
        """The spool files, oldest first (of one process: ``prefix`` ``<host>-<pid>.``)."""
        return [item.path for item in self.listing(prefix)]

    def pids_waiting(self, host: str) -> set[str]:
        """The pids (as text) of ``host``'s processes whose events still wait in a spool
        file for this database: a process's own file, or one a writer or a replay moved
        aside and may be writing right now (``<host>-<pid>.w<n>`` / ``.r<pid>-<n>``)."""
        prefix = f"{host}-"
        for _ in range(10):  # (a file renamed while listed: look again)
            try:
                paths = [
                    item.path for d in self._directories() for item in self._files_in(d, exact=True)
                ]
                break
            except FileNotFoundError:
                continue
        else:
            paths = self.files()
        waiting = set()
        for path in paths:
            stem = _TAKEN.sub("", path.stem)
            if stem.startswith(prefix) and stem[len(prefix) :].isdigit():
                waiting.add(stem[len(prefix) :])
        return waiting

    def is_empty(self) -> bool:
        try:
            with os.scandir(self.directory) as entries:
                return not any(e.name.endswith(SUFFIX) for e in entries)
        except FileNotFoundError:
            return True

    def status(self) -> SpoolStatus:
        """What waits here: in total and per target database (the root's own files, left by
        an older dpt, count as ``unconfigured``)."""
        per_target: dict[str, list[Path]] = {}
        for directory in self._directories():
            key = UNCONFIGURED if directory == self.root and self.key is None else directory.name
            per_target.setdefault(key, []).append(directory)
        targets = [self._target_status(key, dirs) for key, dirs in sorted(per_target.items())]
        shown = [t for t in targets if t.events or t.bad_files or t.key == self.key]
        return SpoolStatus(
            str(self.directory),
            sum(t.files for t in targets),
            sum(t.batches for t in targets),
            sum(t.events for t in targets),
            sum(t.bytes for t in targets),
            sum(t.bad_files for t in targets),
            shown,
        )

    def _target_status(self, key: str, directories: list[Path]) -> TargetStatus:
        files: list[Path] = []
        for _attempt in range(100):
            # a file a writer moves aside or deletes meanwhile: look again (its events are
            # then in the file it became, or in the database)
            batches = events = size = 0
            try:
                files = [item.path for d in directories for item in self._files_in(d, exact=True)]
                for path in files:
                    size += path.stat().st_size
                    for batch, _ in self._read(path, quarantine=False):
                        batches += 1
                        events += len(batch)
            except FileNotFoundError:
                continue
            break
        bad = sum(len(list(d.glob(f"*{BAD_SUFFIX}"))) for d in directories if d.is_dir())
        database = None
        try:
            target = json.loads((directories[-1] / TARGET_FILE).read_text(encoding="utf-8"))
            database = str(target["database"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        where = str(directories[-1]) if key != UNCONFIGURED else str(self.root / UNCONFIGURED)
        return TargetStatus(key, database, where, len(files), batches, events, size, bad)

    def unconfigured(self) -> list[Spool]:
        """Spools whose events name no database: ``unconfigured/`` and an older dpt's top-level
        files. Only ``dpt spool replay``, run by hand, records them (into this database)."""
        found = [Spool(self.root, "")]
        legacy = Spool(self.root)
        legacy.key = UNCONFIGURED
        legacy.directory = self.root
        return [s for s in [*found, legacy] if not s.is_empty()]

    def _read(self, path: Path, *, quarantine: bool) -> Iterator[tuple[list[Event], bytes]]:
        """Each batch of ``path`` with its line, decoded one at a time (a claimed file can
        hold many batches when the writer is behind: they are never all in memory)."""
        bad: list[bytes] = []
        with open(path, "rb") as handle:
            for raw in handle:
                if not raw.strip():
                    continue
                try:
                    batch = events_from_json(raw.decode("utf-8", "surrogateescape"))
                except (ValueError, TypeError, KeyError):
                    bad.append(raw.rstrip(b"\n"))
                    continue
                yield batch, raw
        if bad and quarantine:
            _append_locked(_bad_path(path), b"\n".join(bad) + b"\n")
            log.warning("dpt: %d unreadable spool line(s) kept in %s", len(bad), _bad_path(path))

    def replay(
        self,
        record: Callable[[Sequence[Event]], None],
        is_transient: Callable[[BaseException], bool] = lambda exc: True,
        files: Sequence[Path | Listed] | None = None,
        *,
        first_try: Sequence[Path] = (),
        record_many: Callable[[Sequence[Sequence[Event]]], None] | None = None,
        group_size: int | None = None,
    ) -> int:
        """Record every spooled batch with ``record``, in order; returns the events replayed.

        ``files`` narrows the replay to those spool files (the background writer's pass).
        A file listed (:meth:`listing`, as the replay of the whole spool does) is replayed
        only if it is still the file listed: a process's own file (``<host>-<pid>.jsonl``)
        may have been claimed by its background writer since, and a new one started under
        the same name, with events newer than those the writer is writing now (a run's end
        after its start). Such a file is left to that writer, or to the next replay.

        With ``record_many`` (which records several batches in one transaction, all or
        nothing), a file's consecutive batches go in groups of ``group_size`` (default
        :data:`REPLAY_GROUP`) events and products at most, one transaction per group; a
        group the database refuses for good is then recorded batch by batch with
        ``record``, so that only the batch it refuses is set aside. Only one group (and one
        batch after it) is decoded at a time.

        When ``record`` fails for a reason that may pass (``is_transient``: the database
        went away again, this role may not write), replay stops and the file keeps exactly
        the batches not yet recorded (a whole group when ``record_many`` failed so). A batch
        the database rejects for good (bad data) is moved to a ``.bad`` file with the
        error, so it never blocks the events behind it.

        The batches of the ``first_try`` files (the background writer's claim) are written
        for the first time, as a synchronous write would: one rejected for good is tried
        once more before it is set aside -- as a synchronous write's spooled batch is
        replayed first by the next write -- and, when no batch follows it in ``files``,
        it stays in the spool and the error is raised, as a synchronous write spools it.
        """
        if self.key is None:
            raise ValueError("the spool root does not replay: name the database (Spool(root, url))")
        replayed = 0
        limit = REPLAY_GROUP if group_size is None else group_size
        listed = self.listing() if files is None else list(files)
        paths = [item.path if isinstance(item, Listed) else item for item in listed]
        for index, path in enumerate(paths):
            fresh = path in first_try
            try:
                fd = _open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if not _still_at(fd, path, listed[index]):
                    continue  # another replay took it, or a newer file took its name (above)
                if _appendable(path):
                    # a process may still append to it: move it aside, so that appends
                    # made while its batches are written start a new file, never wait
                    path = _move_aside(path, f"r{os.getpid()}-")
                batches = self._read(path, quarantine=True)
                pending = next(batches, None)
                while pending is not None:
                    group = [pending]
                    weight = _weight(pending[0])
                    # one batch ahead of the group, no more: a claimed file can hold many
                    pending = next(batches, None)
                    while (
                        record_many is not None
                        and pending is not None
                        and weight + _weight(pending[0]) <= limit
                    ):
                        group.append(pending)
                        weight += _weight(pending[0])
                        pending = next(batches, None)
                    if record_many is not None and len(group) > 1:
                        error = _attempt_many(record_many, [batch for batch, _ in group])
                        if error is None:
                            replayed += sum(len(batch) for batch, _ in group)
                            continue
                        if is_transient(error):
                            self._keep(path, [raw for _, raw in group], pending, batches)
                            raise error
                        # refused for good: batch by batch, to find which
                    for position, (batch, raw) in enumerate(group):
                        following = group[position + 1] if position + 1 < len(group) else pending
                        error = _attempt(record, batch)
                        if error is not None and fresh and not is_transient(error):
                            # (its first try: a synchronous write spools it, and the next
                            # write replays it first)
                            if following is None and not any(
                                p.exists() for p in paths[index + 1 :]
                            ):
                                self._rewrite(path, [raw])
                                raise error
                            error = _attempt(record, batch)
                        if error is None:
                            replayed += len(batch)
                        elif is_transient(error):
                            self._keep(
                                path, [line for _, line in group[position:]], pending, batches
                            )
                            raise error
                        else:
                            recorded, left, error = self._set_aside(
                                path, batch, error, record, is_transient
                            )
                            replayed += recorded
                            if error is not None:  # transient: the rest stays, in order
                                rest = [line for _, line in group[position + 1 :]]
                                self._keep(path, [_line(left), *rest], pending, batches)
                                raise error
                _unlink_every_name(path, fd)
            finally:
                _close(fd)
        return replayed

    def _keep(
        self,
        path: Path,
        left: list[bytes],
        after: tuple[list[Event], bytes] | None,
        unread: Iterator[tuple[list[Event], bytes]],
    ) -> None:
        """A replay stopped: leave in ``path`` the batches ``left``, the one read ``after``
        them, and every one still ``unread``."""
        rest = [] if after is None else [after[1]]
        self._rewrite(path, itertools.chain(left, rest, (line for _, line in unread)))

    def _rewrite(self, path: Path, lines: Iterable[bytes]) -> None:
        """Atomically replace ``path`` with the batches' ``lines`` (the caller holds its lock).

        The file keeps its modification time, which orders spool files for replay: its
        batches are older than those of any file started since, and must still be replayed
        first (a run's end recorded before its start would have no row to end).
        """
        temporary = path.with_suffix(".tmp")
        before = os.stat(path)
        with open(temporary, "wb") as handle:
            for line in lines:
                handle.write(line if line.endswith(b"\n") else line + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.utime(temporary, ns=(before.st_atime_ns, before.st_mtime_ns))
        os.replace(temporary, path)

    def _set_aside(
        self,
        path: Path,
        batch: Sequence[Event],
        error: Exception,
        record: Callable[[Sequence[Event]], None],
        is_transient: Callable[[BaseException], bool],
    ) -> tuple[int, list[Event], Exception | None]:
        """A batch the database refused for good: each of its events is tried alone, and
        only those refused alone go to the ``.bad`` file (all of them: the batch as it was,
        with ``error``). A batch is one transaction for speed, not a unit of meaning: an
        Airflow try's outputs travel with its end, and an output the database refuses must
        not take the end with it (the try would stay running, then be closed as crashed).

        Returns how many events were recorded, and when a failure that may pass stopped
        it, the events neither recorded nor set aside (they stay in the spool) and its
        error."""
        if len(batch) == 1:
            self._reject(path, batch, error)
            return 0, [], None
        refused: list[tuple[Event, Exception]] = []
        for position, event in enumerate(batch):
            alone = _attempt(record, [event])
            if alone is None:
                continue
            if is_transient(alone):
                for kept, exc in refused:
                    self._reject(path, [kept], exc)
                return position - len(refused), list(batch[position:]), alone
            refused.append((event, alone))
        if len(refused) == len(batch):
            self._reject(path, batch, error)
        else:
            for event, exc in refused:
                self._reject(path, [event], exc)
        return len(batch) - len(refused), [], None

    def _reject(self, path: Path, batch: Sequence[Event], exc: BaseException) -> None:
        reason = _reason(exc)
        line = json.dumps(
            {"error": reason, "events": [event_to_dict(e) for e in batch]}, ensure_ascii=False
        )
        _append_locked(_bad_path(path), line.encode("utf-8", "surrogateescape") + b"\n")
        log.warning(
            "dpt: a spooled batch of %d event(s) was rejected by the database (%s); kept in %s",
            len(batch),
            reason,
            _bad_path(path),
        )


def _line(batch: Sequence[Event]) -> bytes:
    """A batch as a spool line (without its newline)."""
    return ("[" + ", ".join(map(event_to_json, batch)) + "]").encode("utf-8", "surrogateescape")


def _attempt(record: Callable[[Sequence[Event]], None], batch: Sequence[Event]) -> Exception | None:
    """Record ``batch``; None when it worked, else the error."""
    try:
        record(batch)
    except Exception as exc:
        return exc
    return None


def _attempt_many(
    record_many: Callable[[Sequence[Sequence[Event]]], None], batches: Sequence[Sequence[Event]]
) -> Exception | None:
    """Record ``batches`` in one transaction; None when it worked, else the error."""
    try:
        record_many(batches)
    except Exception as exc:
        return exc
    return None


#: Spooled batches replayed in one transaction (:meth:`Spool.replay` with ``record_many``)
#: weigh this much at most together (:func:`_weight`). A backlog of small invocations (a
#: start, a write of one output, an end: 4 each) goes ~1 250 of them a transaction; a
#: replay holds no more decoded than two of the biggest batches a write makes
#: (``dpt_core.tracker.WRITE_CHUNK`` outputs), as it did batch by batch.
REPLAY_GROUP = 5_000


def _weight(batch: Sequence[Event]) -> int:
    """What a batch weighs in a replay group: each event 1, plus the products it reads or
    writes."""
    return sum(1 + len(getattr(e, "inputs", ())) + len(getattr(e, "outputs", ())) for e in batch)


#: Event kinds that start or end a run: appending one fsyncs the file.
_RUN_BOUNDARIES = frozenset({"invocation_started", "invocation_finished"})

_TAKEN = re.compile(r"\.(w[0-9]+|r[0-9]+-[0-9]+)$")


def _appendable(path: Path) -> bool:
    """True for a process's own spool file (``<host>-<pid>.jsonl``), which it may still
    append to; False for one already moved aside by a writer or a replay."""
    return _TAKEN.search(path.stem) is None


_claims = itertools.count(1)


def _move_aside(path: Path, tag: str) -> Path:
    """Rename the spool file ``path`` (whose lock the caller holds) to a name no file has
    (``<stem>.<tag><n>.jsonl``), never replacing one a process with the same pid left."""
    while True:
        taken = path.with_name(f"{path.stem}.{tag}{next(_claims)}{SUFFIX}")
        try:
            os.link(path, taken)
        except FileExistsError:
            continue
        os.unlink(path)
        return taken


def _unlink_every_name(path: Path, fd: int) -> None:
    """Delete a replayed spool file under every name it has: a process killed inside
    :func:`_move_aside`, between its link and its unlink, leaves one file under two names
    (listed once), and the name not replayed would keep its events waiting for ever."""
    mine = os.fstat(fd)
    if mine.st_nlink > 1:
        for other in path.parent.glob(f"*{SUFFIX}"):
            if other == path:
                continue
            try:
                there = os.stat(other)
            except FileNotFoundError:
                continue
            if (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino):
                other.unlink(missing_ok=True)
    path.unlink()


def _bad_path(path: Path) -> Path:
    """The ``.bad`` file of a spool file: one per process, whatever claim it was under."""
    return path.with_name(_TAKEN.sub("", path.stem) + BAD_SUFFIX)


def _still_at(fd: int, path: Path, listed: Path | Listed | None = None) -> bool:
    """True when the open file ``fd`` is still the one at ``path`` (not unlinked by a replay,
    not renamed aside by the background writer while its opener waited for the lock) and,
    given a ``listed`` :class:`Listed`, the one that listing found there.

    An inode number is given again only once its file is gone: written, or rewritten
    with what was left after a failed write (:meth:`Spool._rewrite`, a new inode under
    the claimed name). That last case, between a listing and the open, is not told
    apart: a write failing for one process while another's works, in a window of
    milliseconds."""
    mine = os.fstat(fd)
    if mine.st_nlink == 0:
        return False
    if isinstance(listed, Listed) and (mine.st_dev, mine.st_ino) != listed.identity:
        return False
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return False
    return (there.st_ino, there.st_dev) == (mine.st_ino, mine.st_dev)


def _reason(exc: BaseException) -> str:
    """Why a batch was rejected: the exception's type and first line (500 characters)."""
    lines = str(exc).splitlines()
    return (f"{type(exc).__name__}: {lines[0]}" if lines and lines[0] else type(exc).__name__)[:500]


def _append_locked(path: Path, data: bytes) -> None:
    """Durably append ``data`` to ``path`` under its lock (a ``.bad`` file, which
    :meth:`Spool.replay_bad` rewrites under the same lock)."""
    while True:
        fd = _open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_nlink == 0:  # replaced by replay_bad while we waited
                continue
            os.write(fd, data)
            os.fsync(fd)
            return
        finally:
            _close(fd)


class BadBatch(Frozen):
    """One line of a ``.bad`` file and what ``replay_bad`` did (or would do) with it.

    :param file: the ``.bad`` file.
    :param line: its 1-based line number (before the file was rewritten).
    :param error: why the database rejected the batch when it was spooled; None for a
        line that could not be read.
    :param events: how many events it holds (0 for an unreadable line).
    :param runs: ``(uuid, job)`` of the runs it starts, and the uuids of runs it only
        finishes or adds to (job None).
    :param products: the product URIs it reads or writes.
    :param outcome: ``recorded``, ``would_record`` (dry run), ``rejected`` (again: stays,
        ``new_error`` says why) or ``unreadable`` (stays as it is).
    """

    __slots__ = ("file", "line", "error", "events", "runs", "products", "outcome", "new_error")
    file: str
    line: int
    error: str | None
    events: int
    runs: list[tuple[str, str | None]]
    products: list[str]
    outcome: str
    new_error: str | None

    def __init__(
        self,
        file: str,
        line: int,
        error: str | None,
        events: int,
        runs: list[tuple[str, str | None]],
        products: list[str],
        outcome: str,
        new_error: str | None = None,
    ) -> None:
        set_field(self, "file", file)
        set_field(self, "line", line)
        set_field(self, "error", error)
        set_field(self, "events", events)
        set_field(self, "runs", runs)
        set_field(self, "products", products)
        set_field(self, "outcome", outcome)
        set_field(self, "new_error", new_error)


def _describe(events: Sequence[Event]) -> tuple[list[tuple[str, str | None]], list[str]]:
    from dpt_core.events import InvocationFinished, InvocationStarted, ProductsRead, ProductsWritten

    runs: dict[str, str | None] = {}
    products: dict[str, None] = {}
    for event in events:
        if isinstance(event, InvocationStarted):
            runs[event.uuid] = event.job
        elif isinstance(event, InvocationFinished):
            runs.setdefault(event.uuid, None)
        elif isinstance(event, ProductsRead):
            runs.setdefault(event.invocation_uuid, None)
            products.update(dict.fromkeys(o.uri for o in event.inputs))
        elif isinstance(event, ProductsWritten):
            runs.setdefault(event.invocation_uuid, None)
            products.update(dict.fromkeys(o.uri for o in event.outputs))
    return list(runs.items()), list(products)


def replay_bad(
    spools: Sequence[Spool],
    record: Callable[[Sequence[Event]], None],
    is_transient: Callable[[BaseException], bool] = lambda exc: True,
    *,
    dry_run: bool = False,
) -> list[BadBatch]:
    """Record the batches the database rejected for good, once their cause is fixed.

    Each ``.bad`` file of ``spools`` is rewritten under its lock: a batch recorded now
    leaves it; one rejected again stays with its new error; an unreadable line stays as
    it was. A transient failure (the database went away) stops the replay and leaves
    every batch not yet recorded in place. With ``dry_run`` nothing is recorded or
    changed: the answer says what would be.
    """
    found: list[BadBatch] = []
    for spool in spools:
        if spool.key is None:
            raise ValueError("the spool root does not replay: name the database")
        if not spool.directory.is_dir():
            continue
        for path in sorted(spool.directory.glob(f"*{BAD_SUFFIX}")):
            found.extend(_replay_bad_file(path, record, is_transient, dry_run))
    return found


def _replay_bad_file(
    path: Path,
    record: Callable[[Sequence[Event]], None],
    is_transient: Callable[[BaseException], bool],
    dry_run: bool,
) -> list[BadBatch]:
    try:
        fd = _open(path, os.O_RDWR)
    except FileNotFoundError:
        return []
    found: list[BadBatch] = []
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink == 0:
            return []
        lines = path.read_bytes().splitlines()
        kept: list[bytes] = []
        stop: BaseException | None = None
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw.decode("utf-8", "surrogateescape"))
                error = str(entry["error"])
                events = [event_from_dict(d) for d in entry["events"]]
            except (ValueError, TypeError, KeyError, AttributeError):
                found.append(BadBatch(str(path), number, None, 0, [], [], "unreadable"))
                kept.append(raw)
                continue
            runs, products = _describe(events)
            batch = BadBatch(str(path), number, error, len(events), runs, products, "would_record")
            if dry_run or stop is not None:
                found.append(batch)
                kept.append(raw)
                continue
            try:
                record(events)
            except Exception as exc:
                if is_transient(exc):
                    stop = exc
                    found.append(batch)
                    kept.append(raw)
                    continue
                reason = _reason(exc)
                entry["error"] = reason
                kept.append(
                    json.dumps(entry, ensure_ascii=False).encode("utf-8", "surrogateescape")
                )
                found.append(batch.replace(outcome="rejected", new_error=reason))
                continue
            found.append(batch.replace(outcome="recorded"))
        changed = any(b.outcome in ("recorded", "rejected") for b in found)
        if changed and kept:
            temporary = path.with_suffix(".bad-tmp")
            with open(temporary, "wb") as handle:
                handle.write(b"\n".join(kept) + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        elif changed:
            path.unlink()
        if stop is not None:
            raise stop
    finally:
        _close(fd)
    return found
