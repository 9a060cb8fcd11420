"""Group commit: one thread records the events of every request waiting, in one batch.

The store records a batch per transaction and serialises its writers under one lock,
so a server that opened one transaction per request would spend its time in commits
(an fsync each on a server database). Instead every ``POST /api/v1/lineage`` hands its
events, already validated, to :class:`GroupWriter` and waits. The writer thread takes
everything queued at that moment (up to :data:`MAX_GROUP_EVENTS` OpenLineage events, more only when one request alone has more),
records it inside one ``tracker.batch()`` -- one transaction, or one spool append when
the database is away -- and answers each waiting request with what became of the
group: ``"recorded"`` (committed) or ``"spooled"`` (durably in the spool, replayed
later). A request is answered only after its group committed or reached the spool.

Validation happens before a request is queued (``parse_events`` in the request's own
worker thread), so an invalid event is its own request's 422 and never reaches a
group. Each request's events are mapped and collected apart
(:func:`dpt_core.store.plugin.collecting`), then the group is recorded with
:meth:`~dpt_core.store.plugin.Store.submit_or_raise`: the spool takes the group only when
the database is away. If the database refuses the group for good (a value its columns
cannot hold), each request is recorded alone and only the refused ones are answered 422:
one request's events never cost another's, and nothing is acknowledged that could not
be stored. A request whose mapping fails unexpectedly is answered 500 alone, with
nothing of it recorded.

While idle with events in the spool (the database came back and nobody posted since),
the writer replays the spool every :data:`REPLAY_INTERVAL` seconds, so acknowledged
events reach the database without waiting for the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("dpt.server")

#: Largest group (in OpenLineage events) recorded in one transaction. Kept small enough
#: that a group records well within the store's watchdog (DPT_CONNECT_TIMEOUT +
#: DPT_STATEMENT_TIMEOUT, 20 s by default) on a slow database: a batch that overruns it
#: is taken for an unreachable database and spooled, and would overrun it again on replay.
MAX_GROUP_EVENTS = 256
#: Seconds between replay attempts of a non-empty spool while no request comes.
REPLAY_INTERVAL = 5.0
#: Longest a group waits to fill up (seconds): while fewer requests are queued than the
#: largest of the last :data:`RECENT_GROUPS` groups, the writer waits this long at most
#: for the others, the clients it just answered, to post again. Without it, steady
#: clients split into two cohorts that alternate, each paying a transaction's fixed cost
#: (PostgreSQL's ``commit_delay``, for the same reason). A lone client never waits: its
#: groups are of one request.
GROUP_LINGER = 0.002
RECENT_GROUPS = 16

RECORDED, SPOOLED = "recorded", "spooled"


class Rejected(Exception):
    """The database refused a request's events for good (not because it is away): the
    request is answered 422 and nothing of it is stored or spooled."""


@dataclass
class _Pending:
    events: Sequence[Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[str]
    outcome: str | None = field(default=None)
    error: BaseException | None = field(default=None)


def _answer(pending: _Pending) -> None:
    def resolve() -> None:
        if pending.future.done():  # the request went away meanwhile
            return
        if pending.error is not None:
            pending.future.set_exception(pending.error)
        else:
            pending.future.set_result(pending.outcome or RECORDED)

    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
        pending.loop.call_soon_threadsafe(resolve)


class GroupWriter:
    """The server's only writer thread (see the module docstring). It records through the
    process's tracker and store, like every other dpt writer."""

    def __init__(self, *, max_group_events: int = MAX_GROUP_EVENTS) -> None:
        self.max_group_events = max_group_events
        self._queue: list[_Pending] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._last_outcome: str | None = None
        #: Requests per group of the last RECENT_GROUPS groups.
        self._recent: list[int] = []
        #: Counters for /api/health and the benchmark: groups, requests, events recorded.
        self.groups = 0
        self.requests = 0
        self.events = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dpt-serve-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Record whatever is queued, then stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()

    @property
    def last_outcome(self) -> str | None:
        return self._last_outcome

    async def submit(self, events: Sequence[Any]) -> str:
        """Queue ``events`` (parsed, valid) and wait: ``"recorded"`` or ``"spooled"``."""
        loop = asyncio.get_running_loop()
        pending = _Pending(events, loop, loop.create_future())
        with self._cond:
            if self._stopping:
                raise RuntimeError("the writer is stopping")
            self._queue.append(pending)
            self._cond.notify()
        return await pending.future

    # -- the thread -------------------------------------------------------------------

    def _take(self) -> list[_Pending]:
        group: list[_Pending] = []
        size = 0
        while self._queue and (
            not group or size + len(self._queue[0].events) <= self.max_group_events
        ):
            item = self._queue.pop(0)
            group.append(item)
            size += len(item.events)
        return group

    @staticmethod
    def _warm() -> None:
        """Load the plugins, the mapping and the database engine before the first request
        needs them (a second or so otherwise paid by whoever posts first)."""
        from dpt_core.export.openlineage_live import client
        from dpt_core.store.plugin import current_store
        from dpt_core.tracker import get_tracker

        try:
            get_tracker().pm  # noqa: B018 - loads the plugins
            client()  # imports openlineage-python once (forwarding itself is off: dpt serve)
            current_store().engine  # noqa: B018 - checks the schema
        except Exception as exc:  # noqa: BLE001 - the database may be away: the spool takes over
            log.warning("dpt serve: the database is not ready yet: %s", exc)

    def _run(self) -> None:
        self._warm()
        while True:
            with self._cond:
                if not self._queue and not self._stopping:
                    self._cond.wait(timeout=REPLAY_INTERVAL)
                if not self._queue and self._stopping:
                    return
                self._linger()
                group = self._take()
                if group:
                    self._recent = [*self._recent[1 - RECENT_GROUPS :], len(group)]
            if group:
                self._record(group)
            else:
                self._replay_idle()

    def _linger(self) -> None:
        """Wait (the condition held) up to GROUP_LINGER for as many requests as recent
        groups had, as long as they fit in one group."""
        wanted = max(self._recent, default=1)
        deadline = time.monotonic() + GROUP_LINGER
        while (
            0 < len(self._queue) < wanted
            and not self._stopping
            and sum(len(p.events) for p in self._queue) < self.max_group_events
        ):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

    def _record(self, group: list[_Pending]) -> None:
        try:
            contextvars.Context().run(self._record_group, group)
        except BaseException as exc:  # noqa: BLE001 - answered to every request of the group
            log.exception("dpt serve: recording a group of %d request(s) failed", len(group))
            for pending in group:
                if pending.error is None and pending.outcome is None:
                    pending.error = exc
        self.groups += 1
        for pending in group:
            if pending.error is None:
                self.requests += 1
                self.events += len(pending.events)
                self._last_outcome = pending.outcome
            _answer(pending)

    @staticmethod
    def _record_group(group: list[_Pending]) -> None:
        """Map each request's events on its own, then record the group in one transaction.

        A request whose mapping fails is answered with that error and nothing of it is
        recorded (its events are collected apart, then dropped). When the database refuses
        the group for good, each request is recorded alone, so only the requests it
        refuses are answered :class:`Rejected`. Runs in a fresh context.
        """
        from dpt_core.ingest import ingest
        from dpt_core.store.engine import describe_db_error
        from dpt_core.store.plugin import collecting, current_store

        mapped: list[tuple[_Pending, list[Any]]] = []
        for pending in group:
            with collecting() as events:
                try:
                    ingest(pending.events)
                except Exception as exc:  # noqa: BLE001 - this request's 500, not the group's
                    log.exception(
                        "dpt serve: mapping a request's %d event(s) failed", len(pending.events)
                    )
                    pending.error = exc
                    continue
            mapped.append((pending, events))
        store = current_store()
        try:
            outcome = store.submit_or_raise([e for _, events in mapped for e in events])
        except Exception:  # refused for good: find whose events the database refuses
            for pending, events in mapped:
                try:
                    pending.outcome = store.submit_or_raise(events)
                except Exception as exc:  # noqa: BLE001
                    log.warning("dpt serve: the database refused a request: %s", exc)
                    pending.error = Rejected(
                        f"the database refused these events: {describe_db_error(exc)}"
                    )
            return
        for pending, _ in mapped:
            pending.outcome = outcome

    def _replay_idle(self) -> None:
        """Replay this database's spool when it holds events and no request is waiting."""
        from dpt_core.store.plugin import current_store

        try:
            store = current_store()
            if store.spool.is_empty():
                return
            replayed = store.replay()
        except Exception as exc:  # noqa: BLE001 - still away: the next attempt comes
            log.debug("dpt serve: spool replay failed: %s", exc)
            return
        if replayed:
            log.warning("dpt serve: replayed %d spooled event(s) into the database", replayed)
