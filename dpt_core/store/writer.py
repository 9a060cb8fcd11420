"""The background writer: events are made durable in the spool, then written off the caller's thread.

The spool is the write-ahead log. :meth:`BackgroundWriter.submit` appends a batch to
the process's spool file (one ``write``, in the kernel when it returns) and wakes the
writer thread; the caller goes on. The writer claims the file (renames it aside under
its lock, so new appends start a new file), fsyncs it (group commit: one fsync for
every batch appended since the last claim, off the caller's thread), records its
batches in order and deletes it. Woken, it first waits ``gather`` seconds
(``DPT_WRITE_DELAY``; default 0, none) for more batches to claim with it: a task's
events then go to the database in one file and one transaction instead of one each
(a new spool file made per event costs the caller's thread ~80 us an append under
``dag.test()``); a flush, a read or the process's exit does not wait. Off by default:
in a real Airflow task process it moved the writes past the try's end. A process killed
at any point leaves its events in a spool file, replayed exactly once by the next
writer (events are idempotent by UUID, and a file is deleted only after its batches
are in the database). A machine crash loses at most what was appended since the
writer's last claim: the batches of the last ``gather`` seconds and of the database
write in progress when they came.

:meth:`BackgroundWriter.flush` waits until everything submitted before it was handled
(recorded, or left in the spool when the database is away): every read through dpt
calls it first, and so does the process at exit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from dpt_core.events import Event
from dpt_core.log import log
from dpt_core.spool import Spool

#: How many failed drains a writer remembers, for :meth:`BackgroundWriter.outcome`.
_FAILURES_KEPT = 64


class BackgroundWriter:
    """One writer thread per store, started by the first submit.

    :param spool: the store's spool (the write-ahead log).
    :param write: records the batches of the given claimed spool files, or of the whole
        spool (argument None); returns True when they are in the database, False when
        they stay spooled (the database is away).
    :param gather: seconds to wait, once woken, for more batches to claim at once (a
        flush does not wait); 0 claims at once.
    """

    def __init__(
        self,
        spool: Spool,
        write: Callable[[Path | None], bool],
        gather: float = 0.0,
    ) -> None:
        self.spool = spool
        self._write = write
        self.gather = gather
        self._cond = threading.Condition()
        self._wake = threading.Event()
        #: A flush (or close) waits: claim now, do not gather.
        self._now = threading.Event()
        #: Batches this process appended, and how many of them the writer has handled.
        self._appended = 0
        self._done = 0
        #: ``(first, last)`` batch numbers of drains that left their batches spooled.
        self._failed: list[tuple[int, int]] = []
        self._thread: threading.Thread | None = None
        self._stop = False

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def submit(self, events: Sequence[Event]) -> int:
        """Append ``events`` durably and have the writer record them; returns their number."""
        with self._cond:
            self.spool.append(events, synced_by_claim=True)
            self._appended += 1
            number = self._appended
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="dpt-writer", daemon=True)
                self._thread.start()
        self._wake.set()
        return number

    def close(self, timeout: float) -> bool:
        """Flush (``timeout`` at most), then end the thread; a later submit starts a new one.
        True when nothing was left waiting."""
        done = self.flush(timeout)
        thread, self._stop = self._thread, True
        self._now.set()
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._cond:
            self._thread = None
            self._stop = False
        return done

    def _loop(self) -> None:
        while not self._stop:
            self._wake.wait()
            self._wake.clear()
            if self.gather > 0:  # (close() sets _now: a stopping writer does not wait)
                self._now.wait(self.gather)
            self._now.clear()  # (a flush from now on finds its batches after this claim)
            if self._stop:
                return
            try:
                self._drain()
            except BaseException as exc:  # noqa: BLE001 - the thread must live on
                log.debug("dpt: the background writer failed: %s", exc)

    def _drain(self) -> None:
        with self._cond:
            first, target = self._done + 1, self._appended
            if target < first:
                return
            claimed = self.spool.claim_own()
        ok = False
        try:
            if claimed is not None:  # (not under the lock submit waits for)
                self.spool.sync_claimed(claimed)
            ok = self._write(claimed) if claimed is not None else True
        finally:
            with self._cond:
                if not ok:
                    self._failed = [*self._failed[-_FAILURES_KEPT + 1 :], (first, target)]
                self._done = target
                self._cond.notify_all()

    def pending(self) -> int:
        """Batches submitted and not handled yet."""
        with self._cond:
            return self._appended - self._done

    def flush(self, timeout: float) -> bool:
        """Wait until every batch submitted so far is handled (or ``timeout``); True when
        none waits. Called from the writer thread itself it returns at once."""
        if threading.current_thread() is self._thread:
            return True
        with self._cond:
            target = self._appended
            if self._done >= target:
                return True
        self._now.set()
        self._wake.set()
        with self._cond:
            return self._cond.wait_for(lambda: self._done >= target, timeout)

    def outcome(self, number: int, timeout: float) -> str:
        """``recorded`` or ``spooled``: what became of batch ``number`` (waiting for it)."""
        self.flush(timeout)
        with self._cond:
            if self._done < number:
                return "spooled"
            failed = any(first <= number <= last for first, last in self._failed)
            return "spooled" if failed else "recorded"
