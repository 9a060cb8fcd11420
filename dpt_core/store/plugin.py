"""The built-in ``dpt.store`` plugin: recording hooks on the SQL database, with the spool.

By default (``DPT_WRITE=background``) a batch is appended to the spool, then fsynced
and written to the database by the process's background writer
(:mod:`dpt_core.store.writer`); every read through dpt waits for the writer first,
and the process flushes it at exit. With ``DPT_WRITE=sync`` (and always in strict
mode) the caller's thread writes; with ``DPT_WRITE=deferred`` the process only
spools, and the next dpt process, ``dpt spool drain`` or ``dpt serve`` writes.

When the database cannot take a batch, the batch stays in (or goes to) the spool
(one warning per process) and the caller goes on; the next successful write
replays the spool first, so events reach the database in the order they
happened.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dpt_core import spool as spool_module
from dpt_core.config import Settings, settings_for_recording
from dpt_core.errors import DatabaseUnavailable, DptError, TrackingError
from dpt_core.events import (
    Event,
    InvocationFinished,
    InvocationStarted,
    ProductsRead,
    ProductsWritten,
)
from dpt_core.forksafe import working
from dpt_core.hookspecs import hookimpl
from dpt_core.log import log
from dpt_core.spool import Listed, Spool
from dpt_core.store.breaker import Breaker
from dpt_core.store.writer import BackgroundWriter

if TYPE_CHECKING:
    # The database stack is imported when a write really happens: a process that only
    # spools (DPT_WRITE=deferred) never loads SQLAlchemy.
    from sqlalchemy import Engine

    from dpt_core.store.bulk import BulkRecorder


def describe_db_error(exc: BaseException) -> str:
    from dpt_core.store.engine import describe_db_error as describe

    return describe(exc)


def safe_url(url: str) -> str:
    from dpt_core.store.engine import safe_url as safe

    return safe(url)


class _Worker:
    """One daemon thread running calls handed to it, so a caller can stop waiting.

    A daemon thread, unlike a ThreadPoolExecutor's, never keeps the interpreter from
    exiting when it is stuck on a dead connection.
    """

    def __init__(self) -> None:
        import queue

        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], list[Any], threading.Event]] = (
            queue.SimpleQueue()
        )
        threading.Thread(target=self._loop, name="dpt-recorder", daemon=True).start()

    def _loop(self) -> None:
        while True:
            func, box, done = self._jobs.get()
            try:
                box.append((True, func()))
            except BaseException as exc:  # handed back to the caller
                box.append((False, exc))
            done.set()

    def call(self, func: Callable[[], Any], timeout: float) -> Any:
        box: list[Any] = []
        done = threading.Event()
        self._jobs.put((func, box, done))
        if not done.wait(timeout):
            raise TimeoutError
        ok, value = box[0]
        if ok:
            return value
        raise value


class Store:
    """One database plus its spool, for one set of settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.spool = Spool(settings.spool_dir, settings.database_url)
        self._engine: Engine | None = None
        self._recorder: BulkRecorder | None = None
        self._warned = False
        self._lock = threading.RLock()
        self._worker: _Worker | None = None
        self._dead_runs_closed = False
        self.breaker = Breaker(settings.retry_after, settings.retry_after_max)
        self.writer = BackgroundWriter(self.spool, self._write_spooled, gather=settings.write_delay)
        #: The whole spool is replayed before the writer's next claim: at the first
        #: write of the process (what others left) and after a failed one.
        self._replay_all = True
        #: Set at exit, after the writer was flushed: later events are written at once.
        self.exiting = False
        #: The events and products a replay writes in one transaction at most, when a
        #: group failed lately (see :meth:`record_many`); None: ``REPLAY_GROUP``.
        self.replay_group: int | None = None

    @property
    def mode(self) -> str:
        """How this store writes now: ``background``, ``sync`` or ``deferred``."""
        if self.settings.strict or self.exiting or not self.settings.database_url:
            return "sync"
        if self.settings.write == "background" and _child_process() and not _caller_flushes:
            # A child forked without exec (Airflow's task runner, Celery prefork) or started
            # by multiprocessing (Dagster's step workers) usually ends with os._exit, which
            # runs no exit handler: no writer could be flushed there, so it writes as it
            # goes, unless its adapter flushes the writer in the orchestrator's last hook.
            return "sync"
        return self.settings.write

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the background writer has handled every event submitted so far
        (recorded them, or left them in the spool when the database is away); True when
        nothing waits. ``timeout`` defaults to ``DPT_FLUSH_TIMEOUT``.

        Events another process's replay took from this process's spool file before the
        writer could (``dpt serve`` or a drainer sharing the spool) are waited for too: a
        read after a flush sees what this process recorded, whoever wrote it."""
        timeout = self.settings.flush_timeout if timeout is None else timeout
        start = time.monotonic()
        if self.writer.thread is None:  # (the writer fsyncs what it claims)
            self.spool.sync()  # a run's reads and writes appended since its last fsync
        done = self.writer.flush(timeout)
        left = max(0.0, timeout - (time.monotonic() - start))
        return self.spool.wait_for_others(left) and done

    @property
    def engine(self) -> Engine:
        """The engine, with the schema checked (and SQLite upgraded) on first use.

        A caller reading through it sees what this process recorded: the background
        writer is flushed first (not on the writer's own thread)."""
        if self.writer.thread is not None:
            self.flush()
        return self._get_engine()

    def _get_engine(self) -> Engine:
        if self._engine is None:
            with working():  # imports, the schema check (a fork waits: dpt_core.forksafe)
                self._engine = self._make_engine()
        return self._engine

    def _make_engine(self) -> Engine:
        from dpt_core.store.engine import ensure_schema, make_engine

        engine = make_engine(
            self.settings.database_url,
            connect_timeout=self.settings.connect_timeout,
            statement_timeout=self.settings.statement_timeout,
            # every use is through in_transaction(), which retries once on a fresh
            # connection when a pooled one is dead: no round trip per checkout
            pool_pre_ping=False,
        )
        ensure_schema(engine)
        return engine

    @property
    def recorder(self) -> BulkRecorder:
        if self._recorder is None:
            from dpt_core.store.bulk import BulkRecorder

            self._recorder = BulkRecorder(self._get_engine())
        return self._recorder

    def record(self, events: Sequence[Event]) -> None:
        """Write ``events`` now or raise; never touches the spool.

        On a server database the write runs on a watchdog thread: a server that
        accepts connections and then never answers (a dead link, a hung proxy) cannot
        hold the caller longer than the connect plus statement timeouts. The stuck
        connection is abandoned with its thread; the next write starts afresh.

        A write that worked (a replay's included) closes the circuit breaker.
        """
        self._record(events)
        if self.breaker.is_open:
            self.breaker.close()

    def record_many(self, batches: Sequence[Sequence[Event]]) -> None:
        """Write several batches (spooled ones, in order) in one transaction, or raise and
        write none of them (:meth:`BulkRecorder.record_many`); as :meth:`record` does, under
        the same watchdog, and closing the breaker when it works.

        A group that fails as if the database were away may only have been too big to
        write within the watchdog's deadline or a statement timeout (a loaded server): the
        next replay's groups are half as big (:attr:`replay_group`), down to one batch, so
        a replay always makes progress; each group written doubles it again, up to
        :data:`~dpt_core.spool.REPLAY_GROUP`."""
        full = spool_module.REPLAY_GROUP
        try:
            self._record_with(lambda: self.recorder.record_many(batches))
        except Exception as exc:
            if failure_kind(exc) == "away":
                self.replay_group = max(1, (self.replay_group or full) // 2)
            raise
        if self.replay_group is not None:
            self.replay_group = None if 2 * self.replay_group >= full else 2 * self.replay_group
        if self.breaker.is_open:
            self.breaker.close()

    def replay(self, spool: Spool | None = None) -> int:
        """Replay ``spool`` (this store's own by default) into this database; returns the
        events replayed. Its batches go in groups, one transaction each
        (:meth:`record_many`), and one by one where the database refuses a group for good
        (:meth:`Spool.replay`); raises as :meth:`Spool.replay` does."""
        return (spool or self.spool).replay(
            self.record, is_transient, record_many=self.record_many, group_size=self.replay_group
        )

    def _record(self, events: Sequence[Event]) -> None:
        self._record_with(lambda: self.recorder.record(events))

    def _record_with(self, write: Callable[[], None]) -> None:
        # One piece of work a fork waits for (dpt_core.forksafe): the imports of a first
        # write, SQLAlchemy's and the driver's locks. One transaction, not a whole drain:
        # a writer that never runs dry lets a fork in between two.
        with working():
            self._record_in_piece(write)

    def _record_in_piece(self, write: Callable[[], None]) -> None:
        if self.settings.database_url.startswith("sqlite"):
            write()
            return
        deadline = self.settings.connect_timeout + self.settings.statement_timeout
        if self._recorder is None:
            # The first write imports SQLAlchemy, the driver and the recorder: seconds on a
            # slow or busy host, and no network in it. Done before the watchdog starts, or
            # those seconds would count as a database that does not answer.
            import dpt_core.store.bulk
            import dpt_core.store.engine

            dpt_core.store.engine.load_driver(self.settings.database_url)
        if self._worker is None:
            try:
                self._worker = _Worker()
            except RuntimeError:  # interpreter shutdown: no thread starts (Python 3.12+)
                write()  # the last writes of an exiting process, without a watchdog
                return
        try:
            self._worker.call(write, timeout=deadline)
        except TimeoutError:
            self._worker = None  # abandoned, with its engine: both may be stuck for good
            self._engine = None
            self._recorder = None
            raise DatabaseUnavailable(
                f"timeout: the database {safe_url(self.settings.database_url)} did not answer "
                f"within {deadline:g} s (DPT_CONNECT_TIMEOUT + DPT_STATEMENT_TIMEOUT)"
            ) from None

    def submit(self, events: Sequence[Event]) -> None:
        """Record ``events``, spooling them if the database cannot take them.

        In ``background`` mode they are appended to the spool and the writer thread
        records them; in ``deferred`` mode they are only appended. In ``sync`` mode:
        while the breaker is open (the database was found away less than its back-off
        ago) they go straight to the spool: no caller waits on a database known to be
        away, and a background probe finds out when it is back.
        """
        mode = self.mode
        if mode == "deferred":
            self.spool.append(events)
            _outcome.set("spooled")
            return
        if mode == "background":
            number = self.writer.submit(events)
            _outcome.set(_Pending(self.writer, number, self.settings.flush_timeout))
            return
        if self._spool_if_away(events):
            return
        with self._lock:
            try:
                if not self.spool.is_empty():
                    self.replay()
                self.record(events)
                _outcome.set("recorded")
                self.breaker.close()
                if not self._dead_runs_closed:
                    self._close_dead_runs()
            except Exception as exc:
                self.spool.append(events)
                _outcome.set("spooled")
                if failure_kind(exc) == "away":
                    self.breaker.trip()
                reason = exc.args[0] if isinstance(exc, DptError) else describe_db_error(exc)
                self._warn(reason, failure_kind(exc))
                if self.settings.strict:
                    raise TrackingError(f"recording failed and was spooled: {reason}") from exc

    def submit_or_raise(self, events: Sequence[Event]) -> str:
        """Record ``events`` now (the spool replayed first), or spool them when the database
        is away: returns ``"recorded"`` or ``"spooled"``.

        Unlike :meth:`submit`, a batch the database rejects for good (a value out of a
        column's range, say) is neither stored nor spooled: the error is raised, for a
        caller that must tell its own client -- ``dpt serve`` answers that request 422 and
        records the other requests of its group -- where :meth:`submit` would spool a batch
        that can never be replayed.
        """
        if self._spool_if_away(events):
            return "spooled"
        with self._lock:
            try:
                if not self.spool.is_empty():
                    self.replay()
                self.record(events)
            except Exception as exc:
                kind = failure_kind(exc)
                if kind == "refused":
                    raise
                self.spool.append(events)
                if kind == "away":
                    self.breaker.trip()
                self._warn(
                    exc.args[0] if isinstance(exc, DptError) else describe_db_error(exc), kind
                )
                return "spooled"
            self.breaker.close()
            if not self._dead_runs_closed:
                self._close_dead_runs()
            return "recorded"

    def _write_spooled(self, claimed: Path | None) -> bool:
        """On the writer thread: record the claimed spool file (the whole spool first when
        something may wait there); True when it is in the database, False when it stays
        spooled. Never raises: a failure is logged once like a failed synchronous write.

        Its batches are written as synchronous writes would be, one by one: a batch the
        database refuses for good is set aside as soon as a later batch is written (tried
        once more first), and stays in the spool when none follows; a permission error or
        an unreachable database (:func:`failure_kind`) leaves it and everything after it in
        the spool, in order."""
        if self.breaker.is_open and self.settings.retry_after != 0:
            if self.breaker.claim_probe():
                self._probe()
            return not self.breaker.is_open and (claimed is None or not claimed.exists())
        with self._lock:
            try:
                files: list[Path | Listed] = [] if claimed is None else [claimed]
                # (after the first pass, only this process's files: <host>-<pid>.w<n> /
                # .r<pid>-<n>; the claimed one is among them)
                mine = "" if self._replay_all else self.spool.own_file.stem + "."
                waiting = self.spool.listing(prefix=mine)
                paths = [item.path for item in waiting]
                cut = paths.index(claimed) if claimed in paths else len(waiting)
                if self._replay_all:  # what waits from before first: every file, in order
                    # (files started after the claim, e.g. by this process while it was
                    # written: after it, or a run's end could come before its start)
                    files = [*waiting[:cut], *files, *waiting[cut + 1 :]]
                else:
                    # This process's older events still in the spool come first: a file
                    # another process's replay took and is writing (waited for, under its
                    # lock) or left after a failure. Else a run's end written now would
                    # find no run, and its start, written later, leave it running.
                    files = [*waiting[:cut], *files]
                first_try = [] if claimed is None else [claimed]
                self.spool.replay(
                    self.record,
                    is_transient,
                    files=files,
                    first_try=first_try,
                    record_many=self.record_many,
                    group_size=self.replay_group,
                )
                self._replay_all = False
                self.breaker.close()
                if not self._dead_runs_closed:
                    self._close_dead_runs()
                return True
            except Exception as exc:
                self._replay_all = True
                kind = failure_kind(exc)
                if kind == "away":
                    self.breaker.trip()
                self._warn(
                    exc.args[0] if isinstance(exc, DptError) else describe_db_error(exc), kind
                )
                return False

    def _warn(self, reason: str, kind: FailureKind = "away") -> None:
        if self._warned or not self.settings.database_url:
            # (no URL: the configuration is broken and the tracker already said so)
            return
        self._warned = True
        if kind == "denied":
            log.warning(
                "dpt: cannot record to %s (%s): this role may not write; events kept in the "
                "spool %s until it may (grant it, or use a writing role), replayed on the next "
                "successful write or by 'dpt spool replay'",
                safe_url(self.settings.database_url),
                reason,
                self.spool.directory,
            )
            return
        log.warning(
            "dpt: cannot record to %s (%s); events kept in the spool %s, replayed on the next "
            "successful write or by 'dpt spool replay'; this process tries the database "
            "again in the background, every %g s at first",
            safe_url(self.settings.database_url),
            reason,
            self.spool.directory,
            self.settings.retry_after,
        )

    def _spool_if_away(self, events: Sequence[Event]) -> bool:
        """While the breaker is open: spool ``events`` (True), and start the one background
        probe when it is due."""
        if not self.breaker.is_open or self.settings.retry_after == 0:
            return False
        self.spool.append(events)
        _outcome.set("spooled")
        if self.breaker.claim_probe():
            try:
                threading.Thread(target=self._probe, name="dpt-probe", daemon=True).start()
            except RuntimeError:  # interpreter shutdown: no probe; the next writer replays
                self.breaker.trip()
                self.breaker.probe_finished()
        if self.settings.strict:
            raise TrackingError(
                f"recording was spooled: the database {safe_url(self.settings.database_url)} "
                f"was found away; next try in {self.breaker.seconds_left():.0f} s"
            )
        return True

    def _probe(self) -> None:
        """Try the database again by replaying the spool: closes the breaker when it works
        (the spool then holds nothing), else it stays open twice as long. Run by whoever
        claimed the probe (:meth:`Breaker.claim_probe`), which it reports finished."""
        try:
            try:
                with self._lock:
                    self.replay()
                    self.breaker.close()
                    # again, for what was spooled while it ran with the breaker open (it
                    # listed the spool before): from now on nothing is spooled so
                    self.replay()
            except Exception as exc:  # noqa: BLE001 - whatever it is, the events stay spooled
                if failure_kind(exc) == "away":
                    wait = self.breaker.trip()
                    log.debug("dpt: the database is still away (%s); next try in %g s", exc, wait)
                    return
                log.debug("dpt: probing the database failed: %s", exc)
                with self._lock:  # it answered: not away (a write's trip after this stands)
                    self.breaker.close()
            # (no close out of the lock: a write failing since, its trip under the lock,
            # found the database away again, and the breaker stays open for it)
            log.info("dpt: the database %s is back", safe_url(self.settings.database_url))
        finally:
            self.breaker.probe_finished()

    def wait_for_probe(self, timeout: float) -> bool:
        """Block until the breaker is closed and no probe runs (probing here when one is
        due), or ``timeout``; True when so. For callers about to exit that want the spool
        drained if the database is back.

        A probe closes the breaker with its first batch written and goes on replaying the
        rest: what counts is that it ended. And a write that fails after it (one that began
        before the database came back) opens the breaker again: then this waits for the
        next probe, as it did for the first."""
        deadline = time.monotonic() + timeout
        leftovers_tried = False
        while True:
            if self.breaker.claim_probe():
                self._probe()
                continue
            if not self.breaker.is_open and not self.breaker.probe_running:
                if leftovers_tried or self.spool.is_empty():
                    return True
                # spooled by a write that found the breaker still open as the probe
                # closed it: replayed here, once, as the next write would
                leftovers_tried = True
                self._replay_leftovers()
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(0.05, left))

    def _replay_leftovers(self) -> None:
        with self._lock:
            try:
                self.replay()
            except Exception as exc:  # noqa: BLE001 - whatever it is, the events stay spooled
                if failure_kind(exc) == "away":
                    self.breaker.trip()
                log.debug("dpt: replaying the spool after the probe failed: %s", exc)

    def _close_dead_runs(self) -> None:
        """Once per process, after its first successful write (its spool replayed first, so
        an end event that waited there wins): close this host's runs whose process died,
        but for a process whose events still wait in a spool file (another process may be
        replaying it right now: its end may be in there)."""
        with working():  # (its imports and queries: a fork waits, see dpt_core.forksafe)
            self._close_dead_runs_now()

    def _close_dead_runs_now(self) -> None:
        from dpt_core.process import hostname
        from dpt_core.store.liveness import close_dead_runs

        self._dead_runs_closed = True
        try:
            host = hostname()
            closed = close_dead_runs(
                self._get_engine(), host, lambda: self.spool.pids_waiting(host)
            )
        except Exception as exc:  # (a read-only role, say): the next process tries again
            log.debug("dpt: looking for runs whose process died failed: %s", exc)
            return
        if closed:
            log.warning(
                "dpt: closed %d run(s) of this host as crashed: their process ended without "
                "recording an end (%s%s)",
                len(closed),
                ", ".join(closed[:5]),
                ", ..." if len(closed) > 5 else "",
            )

    def dispose(self) -> None:
        """Flush and stop the background writer, then close the engine's connections."""
        if self.writer.thread is not None:
            self.writer.close(self.settings.flush_timeout)
        if self._engine is not None:
            self._engine.dispose()


_store: Store | None = None
_store_lock = threading.Lock()


class _Pending:
    """The outcome of a batch handed to the background writer, found out when asked."""

    def __init__(self, writer: BackgroundWriter, number: int, timeout: float) -> None:
        self.writer, self.number, self.timeout = writer, number, timeout

    def resolve(self) -> str:
        return self.writer.outcome(self.number, self.timeout)


#: What became of the last events this context submitted: "recorded" or "spooled" (or a
#: batch the background writer has, resolved by :func:`last_outcome`).
_outcome: contextvars.ContextVar[str | _Pending | None] = contextvars.ContextVar(
    "dpt_store_outcome", default=None
)


def last_outcome() -> str | None:
    """What became of the events this context (thread, task) submitted last: ``"recorded"``
    (in the database), ``"spooled"`` (kept durably, replayed later), or None (nothing
    submitted yet). For a receiver that must say which (``dpt serve``: 200 or 202).
    Events the background writer has are waited for (``DPT_FLUSH_TIMEOUT`` at most)."""
    outcome = _outcome.get()
    if isinstance(outcome, _Pending):
        return outcome.resolve()
    return outcome


def flush(timeout: float | None = None) -> bool:
    """Wait until the events this process recorded are written (or kept in the spool when
    the database is away); True when none waits. See :func:`dpt_core.flush`."""
    with _store_lock:
        store = _store
    return True if store is None else store.flush(timeout)


@atexit.register
def _flush_at_exit() -> None:
    """At exit: wait (``DPT_FLUSH_TIMEOUT`` at most) for the background writer, then write
    any later event (a run closed at exit) on the spot. What the writer could not write
    in time stays in the spool for the next writer."""
    with _store_lock:
        store = _store
    if store is None:
        return
    try:
        done = store.flush()
    finally:
        store.exiting = True
    if not done:
        log.warning(
            "dpt: %d batch(es) not written within %g s (DPT_FLUSH_TIMEOUT) at exit: kept in "
            "the spool %s for the next writer",
            store.writer.pending(),
            store.settings.flush_timeout,
            store.spool.directory,
        )


def _forget_writer_in_child() -> None:
    """A forked child has no writer thread: its store starts afresh (own spool file, own
    writer), and what its parent submitted stays the parent's to write."""
    global _store, _store_lock, _forked, _caller_flushes
    _store = None
    _store_lock = threading.Lock()  # (it may have been held by another thread at the fork)
    _forked = True
    _caller_flushes = False  # (the parent's adapter flushes the parent's writer)


#: True in a process forked (without exec) from one that had loaded dpt, or one an adapter
#: says ends without exit handlers (:func:`ends_without_exit_handlers`).
_forked = False


#: True once an adapter said it flushes the writer before this process's os._exit.
_caller_flushes = False


def ends_without_exit_handlers(*, flushed_by_caller: bool = False) -> None:
    """Declare that this process ends without running exit handlers (``os._exit``), as a
    forked task process does whose parent never loaded dpt (Airflow's task runner under
    the Celery and Kubernetes executors). It writes its events as they come (``sync``),
    as a child dpt saw forked does, never leaving them to a writer thread that the exit
    would cut short; or, with ``flushed_by_caller``, it keeps its background writer (any
    fork included) because the caller flushes it (:func:`flush`) in the orchestrator's
    last hook before the exit. Call it before the process's first event."""
    global _forked, _caller_flushes
    _forked = True
    _caller_flushes = flushed_by_caller


def _child_process() -> bool:
    """True in a forked child or a ``multiprocessing`` child (any start method)."""
    if _forked:
        return True
    process = sys.modules.get("multiprocessing.process")
    return process is not None and process.parent_process() is not None


os.register_at_fork(after_in_child=_forget_writer_in_child)


#: Why a write failed, which decides where its events go (docs/database.md, "Why a write
#: fails"): ``away``, ``denied`` or ``refused`` (see :func:`failure_kind`).
FailureKind = Literal["away", "denied", "refused"]

#: PostgreSQL: insufficient_privilege, read_only_sql_transaction (a read-only role's
#: default_transaction_read_only, a hot standby).
_DENIED_SQLSTATES = frozenset({"42501", "25006"})
#: MariaDB/MySQL: access denied to the database, a table, a column, a routine, a privilege;
#: the server runs --read-only; a read-only transaction.
_DENIED_MYSQL_ERRORS = frozenset({1044, 1142, 1143, 1227, 1290, 1370, 1792})
#: SQLite primary result codes: SQLITE_PERM, SQLITE_READONLY, SQLITE_AUTH.
_DENIED_SQLITE_CODES = frozenset({3, 8, 23})


def failure_kind(exc: BaseException) -> FailureKind:
    """What a failed write means, and so where its events go.

    - ``denied``: this role may not write (permission denied, a read-only transaction or
      server, a read-only SQLite file). The events wait in the spool, in order, until the
      role, its grants or the URL are fixed; the circuit breaker stays closed.
    - ``away``: the database is not there now (refused, reset, no answer), or dpt cannot
      use it as it is (its schema is behind, the configuration is broken: a
      :class:`~dpt_core.errors.DptError`). The events wait in the spool, in order, and
      the circuit breaker opens.
    - ``refused``: anything else: the database refuses this batch for good (a value its
      column cannot hold, a constraint or trigger of the user's). It is set aside, whole,
      in a ``.bad`` file, so it holds up nothing behind it.
    """
    if _is_denied(exc):
        return "denied"
    if isinstance(exc, DptError):
        return "away"
    from dpt_core.store.engine import is_connectivity_error

    return "away" if is_connectivity_error(exc) else "refused"


def _is_denied(exc: BaseException) -> bool:
    """A permission error, read from the driver's own error (SQLAlchemy's ``orig``)."""
    orig = getattr(exc, "orig", None) or exc
    if getattr(orig, "sqlstate", None) in _DENIED_SQLSTATES:  # psycopg
        return True
    sqlite_code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(sqlite_code, int) and sqlite_code & 0xFF in _DENIED_SQLITE_CODES:
        return True
    if type(orig).__module__.startswith("pymysql") and orig.args:
        return orig.args[0] in _DENIED_MYSQL_ERRORS
    return False


def is_transient(exc: BaseException) -> bool:
    """True when the events must wait in the spool, in order (the database is away, or this
    role may not write: both pass once fixed); False for a batch refused for good."""
    return failure_kind(exc) != "refused"


def current_store(settings: Settings | None = None) -> Store:
    """The process-wide store for the current settings (rebuilt when settings change)."""
    global _store
    settings = settings or settings_for_recording()
    with _store_lock:
        # (``is`` first: the settings are one cached object, and comparing their ~40
        # fields was ~20 us of every submit)
        if _store is None or (_store.settings is not settings and _store.settings != settings):
            if _store is not None:
                _store.dispose()
            _store = Store(settings)
        return _store


def reset_store() -> None:
    global _store
    with _store_lock:
        if _store is not None:
            _store.dispose()
        _store = None


#: Events buffered inside ``tracker.batch()``; None outside a batch.
_pending: contextvars.ContextVar[list[Event] | None] = contextvars.ContextVar(
    "dpt_store_pending", default=None
)
#: Inside :func:`collecting`: where the events go instead of the database.
_collector: contextvars.ContextVar[list[Event] | None] = contextvars.ContextVar(
    "dpt_store_collector", default=None
)


@contextlib.contextmanager
def collecting() -> Iterator[list[Event]]:
    """Inside the block the built-in store records nothing: every event it would submit
    (a ``tracker.batch()``'s at its end, or one by one) is appended to the yielded list.

    For a caller that records many callers' events together and must answer each of them
    on its own (``dpt serve``'s group commit): it collects each request's events, then
    records them in one transaction with :meth:`Store.submit_or_raise`. Other plugins
    receive their hook calls as usual.
    """
    events: list[Event] = []
    token = _collector.set(events)
    try:
        yield events
    finally:
        _collector.reset(token)


def _submit(event: Event) -> None:
    pending = _pending.get()
    if pending is not None:
        pending.append(event)
        return
    collector = _collector.get()
    if collector is not None:
        collector.append(event)
    else:
        current_store().submit([event])


@hookimpl
def dpt_batch_started() -> None:
    _pending.set([])


@hookimpl
def dpt_batch_finished() -> None:
    events = _pending.get()
    _pending.set(None)
    if not events:
        return
    collector = _collector.get()
    if collector is not None:
        collector.extend(events)
    else:
        current_store().submit(events)


@hookimpl
def dpt_invocation_started(event: InvocationStarted) -> None:
    _submit(event)


@hookimpl
def dpt_invocation_finished(event: InvocationFinished) -> None:
    _submit(event)


@hookimpl
def dpt_products_read(event: ProductsRead) -> None:
    _submit(event)


@hookimpl
def dpt_products_written(event: ProductsWritten) -> None:
    _submit(event)
