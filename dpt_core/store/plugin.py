"""The built-in ``dpt.store`` plugin: recording hooks on the SQL database, with the spool.

When the database cannot take a batch, the batch goes to the spool (one
warning per process) and the caller goes on; the next successful write
replays the spool first, so events reach the database in the order they
happened.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import Engine

from dpt_core.config import Settings, settings_for_recording
from dpt_core.errors import DatabaseUnavailable, DptError, TrackingError
from dpt_core.events import (
    Event,
    InvocationFinished,
    InvocationStarted,
    ProductsRead,
    ProductsWritten,
)
from dpt_core.hookspecs import hookimpl
from dpt_core.spool import Spool
from dpt_core.store.breaker import Breaker
from dpt_core.store.engine import (
    describe_db_error,
    ensure_schema,
    is_connectivity_error,
    make_engine,
    safe_url,
)
from dpt_core.store.recorder import Recorder

log = logging.getLogger("dpt")


class _Worker:
    """One daemon thread running calls handed to it, so a caller can stop waiting.

    A daemon thread, unlike a ThreadPoolExecutor's, never keeps the interpreter from
    exiting when it is stuck on a dead connection.
    """

    def __init__(self) -> None:
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
        self._recorder: Recorder | None = None
        self._warned = False
        self._lock = threading.RLock()
        self._worker: _Worker | None = None
        self._dead_runs_closed = False
        self.breaker = Breaker(settings.retry_after, settings.retry_after_max)

    @property
    def engine(self) -> Engine:
        """The engine, with the schema checked (and SQLite upgraded) on first use."""
        if self._engine is None:
            engine = make_engine(
                self.settings.database_url,
                connect_timeout=self.settings.connect_timeout,
                statement_timeout=self.settings.statement_timeout,
                # every use is through in_transaction(), which retries once on a fresh
                # connection when a pooled one is dead: no round trip per checkout
                pool_pre_ping=False,
            )
            ensure_schema(engine)
            self._engine = engine
        return self._engine

    @property
    def recorder(self) -> Recorder:
        if self._recorder is None:
            self._recorder = Recorder(self.engine)
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

    def _record(self, events: Sequence[Event]) -> None:
        if self.settings.database_url.startswith("sqlite"):
            self.recorder.record(events)
            return
        deadline = self.settings.connect_timeout + self.settings.statement_timeout
        if self._worker is None:
            self._worker = _Worker()
        try:
            self._worker.call(lambda: self.recorder.record(events), timeout=deadline)
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

        While the breaker is open (the database was found away less than its back-off
        ago) they go straight to the spool: no caller waits on a database known to be
        away, and a background probe finds out when it is back.
        """
        if self._spool_if_away(events):
            return
        with self._lock:
            try:
                if not self.spool.is_empty():
                    self.spool.replay(self.record, is_transient)
                self.record(events)
                _outcome.set("recorded")
                self.breaker.close()
                if not self._dead_runs_closed:
                    self._close_dead_runs()
            except Exception as exc:
                self.spool.append(events)
                _outcome.set("spooled")
                if is_transient(exc):
                    self.breaker.trip()
                reason = exc.args[0] if isinstance(exc, DptError) else describe_db_error(exc)
                self._warn(reason)
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
                    self.spool.replay(self.record, is_transient)
                self.record(events)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self.spool.append(events)
                self.breaker.trip()
                self._warn(exc.args[0] if isinstance(exc, DptError) else describe_db_error(exc))
                return "spooled"
            self.breaker.close()
            if not self._dead_runs_closed:
                self._close_dead_runs()
            return "recorded"

    def _warn(self, reason: str) -> None:
        if self._warned or not self.settings.database_url:
            # (no URL: the configuration is broken and the tracker already said so)
            return
        self._warned = True
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
            threading.Thread(target=self._probe, name="dpt-probe", daemon=True).start()
        if self.settings.strict:
            raise TrackingError(
                f"recording was spooled: the database {safe_url(self.settings.database_url)} "
                f"was found away; next try in {self.breaker.seconds_left():.0f} s"
            )
        return True

    def _probe(self) -> None:
        """Try the database again by replaying the spool: closes the breaker when it works
        (the spool then holds nothing), else it stays open twice as long."""
        try:
            with self._lock:
                self.spool.replay(self.record, is_transient)
        except Exception as exc:  # noqa: BLE001 - whatever it is, the events stay spooled
            if is_transient(exc):
                wait = self.breaker.trip()
                log.debug("dpt: the database is still away (%s); next try in %g s", exc, wait)
                return
            log.debug("dpt: probing the database failed: %s", exc)
        self.breaker.close()
        log.info("dpt: the database %s is back", safe_url(self.settings.database_url))

    def wait_for_probe(self, timeout: float) -> bool:
        """Block until no probe runs (or ``timeout``); True when the breaker is closed. For
        callers about to exit that want the spool drained if the database is back."""
        deadline = time.monotonic() + timeout
        while self.breaker.is_open and time.monotonic() < deadline:
            if self.breaker.claim_probe():
                self._probe()
                continue
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return not self.breaker.is_open

    def _close_dead_runs(self) -> None:
        """Once per process, after its first successful write (its spool replayed first, so
        an end event that waited there wins): close this host's runs whose process died."""
        import socket

        from dpt_core.store.liveness import close_dead_runs

        self._dead_runs_closed = True
        try:
            closed = close_dead_runs(self.engine, socket.gethostname())
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
        if self._engine is not None:
            self._engine.dispose()


_store: Store | None = None
_store_lock = threading.Lock()

#: What became of the last events this context submitted: "recorded" or "spooled".
_outcome: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "dpt_store_outcome", default=None
)


def last_outcome() -> str | None:
    """What became of the events this context (thread, task) submitted last: ``"recorded"``
    (in the database), ``"spooled"`` (kept durably, replayed later), or None (nothing
    submitted yet). For a receiver that must say which (``dpt serve``: 200 or 202)."""
    return _outcome.get()


def is_transient(exc: BaseException) -> bool:
    """True when recording may succeed later as it is (the database is away, the schema
    is behind, the configuration is being fixed); False for a batch it rejects for good."""
    return is_connectivity_error(exc) or isinstance(exc, DptError)


def current_store(settings: Settings | None = None) -> Store:
    """The process-wide store for the current settings (rebuilt when settings change)."""
    global _store
    settings = settings or settings_for_recording()
    with _store_lock:
        if _store is None or _store.settings != settings:
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
