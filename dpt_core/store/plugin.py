"""The built-in ``dpt.store`` plugin: recording hooks on the SQL database, with the spool.

When the database cannot take a batch, the batch goes to the spool (one
warning per process) and the caller goes on; the next successful write
replays the spool first, so events reach the database in the order they
happened.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Sequence

from sqlalchemy import Engine

from dpt_core.config import Settings, settings_for_recording
from dpt_core.errors import DptError, TrackingError
from dpt_core.events import (
    Event,
    InvocationFinished,
    InvocationStarted,
    ProductsRead,
    ProductsWritten,
)
from dpt_core.hookspecs import hookimpl
from dpt_core.spool import Spool
from dpt_core.store.engine import describe_db_error, ensure_schema, make_engine, safe_url
from dpt_core.store.recorder import Recorder

log = logging.getLogger("dpt")


class Store:
    """One database plus its spool, for one set of settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.spool = Spool(settings.spool_dir)
        self._engine: Engine | None = None
        self._recorder: Recorder | None = None
        self._warned = False
        self._lock = threading.RLock()

    @property
    def engine(self) -> Engine:
        """The engine, with the schema checked (and SQLite upgraded) on first use."""
        if self._engine is None:
            engine = make_engine(
                self.settings.database_url,
                connect_timeout=self.settings.connect_timeout,
                statement_timeout=self.settings.statement_timeout,
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
        """Write ``events`` now or raise; never touches the spool."""
        self.recorder.record(events)

    def submit(self, events: Sequence[Event]) -> None:
        """Record ``events``, spooling them if the database cannot take them."""
        with self._lock:
            try:
                if not self.spool.is_empty():
                    self.spool.replay(self.record)
                self.record(events)
            except Exception as exc:
                self.spool.append(events)
                reason = exc.args[0] if isinstance(exc, DptError) else describe_db_error(exc)
                if not self._warned:
                    self._warned = True
                    log.warning(
                        "dpt: cannot record to %s (%s); events kept in the spool %s, "
                        "replayed on the next successful write or by 'dpt spool replay'",
                        safe_url(self.settings.database_url),
                        reason,
                        self.spool.directory,
                    )
                if self.settings.strict:
                    raise TrackingError(f"recording failed and was spooled: {reason}") from exc

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


_store: Store | None = None
_store_lock = threading.Lock()


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


def _submit(event: Event) -> None:
    pending = _pending.get()
    if pending is not None:
        pending.append(event)
    else:
        current_store().submit([event])


@hookimpl
def dpt_batch_started() -> None:
    _pending.set([])


@hookimpl
def dpt_batch_finished() -> None:
    events = _pending.get()
    _pending.set(None)
    if events:
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
