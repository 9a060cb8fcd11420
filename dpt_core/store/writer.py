"""The background writer: events are made durable in the spool, then written off the caller's thread.

The spool is the write-ahead log. :meth:`BackgroundWriter.submit` appends a batch to
the process's spool file (one ``write``, in the kernel when it returns) and wakes the
writer thread; the caller goes on. The writer claims the file (renames it aside under
its lock, so new appends start a new file), fsyncs it (group commit: one fsync for
every batch appended since the last claim, off the caller's thread), records its
batches in order and deletes it. A process killed at any point leaves its events in a
spool file, replayed exactly once by the next writer (events are idempotent by UUID,
and a file is deleted only after its batches are in the database).

From its second claim on, the writer gathers: woken, it waits up to ``gather`` seconds
(``DPT_WRITE_DELAY``, default 1) for more batches to claim with it, so that a
process recording without pause (many task tries under Airflow's ``dag.test()``, a
sensor's tick, a flow's tasks) writes them in one file and one transaction, not one
each. The wait ends sooner once the process goes quiet (no batch for
:data:`QUIET` seconds): what a process recorded and then stopped recording for (a
script that runs ``dpt`` next, a notebook cell) reaches the database a quarter of a
second later, not a whole delay (a shorter quiet, 0.1 s, ended the gathers under
``dag.test()`` at Airflow's pauses between tasks: 10 – 14 claims a 40-task run, not
~5). A flush, a read or the process's exit does not wait. While it waits it fsyncs
each batch as it comes, so the wait moves when events reach the database, not when
they reach the disk: a machine crash loses at most what was appended while the writer
was writing its previous claim (or between an append and its fsync). The first claim
goes at once: it carries the imports and the connection of a process's first write,
which a short task process (one try on a real Airflow worker) should overlap with its
task, not pay after it.

:meth:`BackgroundWriter.flush` waits until everything submitted before it was handled
(recorded, or left in the spool when the database is away): every read through dpt
calls it first, and so does the process at exit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from dpt_core.events import Event
from dpt_core.log import log
from dpt_core.spool import Spool

#: Seconds without a new batch that end a gathering wait (see the module's text).
QUIET = 0.25

#: How many failed drains a writer remembers, for :meth:`BackgroundWriter.outcome`.
_FAILURES_KEPT = 64


class BackgroundWriter:
    """One writer thread per store, started by the first submit.

    :param spool: the store's spool (the write-ahead log).
    :param write: records the batches of the given claimed spool files, or of the whole
        spool (argument None); returns True when they are in the database, False when
        they stay spooled (the database is away).
    :param gather: seconds to wait, once woken, for more batches to claim at once (a
        flush does not wait; the first claim does not either); 0 claims at once.
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
        #: A claim was written (or tried): the next ones gather.
        self._warm = False

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
            if self.gather > 0 and self._warm:
                self._gather()
            self._now.clear()  # (a flush from now on finds its batches after this claim)
            if self._stop:
                return
            try:
                self._drain()
            except BaseException as exc:  # noqa: BLE001 - the thread must live on
                log.debug("dpt: the background writer failed: %s", exc)

    def _gather(self) -> None:
        """Wait up to :attr:`gather` seconds for more batches, fsyncing each as it comes;
        :data:`QUIET` seconds without one, or a flush or a close (which set ``_now``),
        end the wait at once."""
        deadline = time.monotonic() + self.gather
        while not self._now.is_set():
            self.spool.sync()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            # (a submit, a flush and a close all set it)
            if not self._wake.wait(min(remaining, QUIET)):
                return  # the process went quiet
            self._wake.clear()

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
            self._warm = True
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
