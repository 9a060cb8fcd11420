"""A circuit breaker for an unreachable database.

After a write fails because the database is away (refused, reset, timed out), the
store stops trying for a back-off interval: events go straight to the spool, so an
outage costs a process one timeout, not one per event. When the interval has passed,
one probe at a time -- on a background thread, never on the caller's -- replays the
spool; if that works the breaker closes and writes go to the database again, else the
interval doubles, up to a cap.

The state is per process (per :class:`~dpt_core.store.plugin.Store`); nothing is
shared between processes, which each find out for themselves, once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Breaker:
    """Open after a failure, for ``initial`` seconds, doubling after each failed probe up
    to ``cap``; closed again by a success.

    :param clock: seconds, monotonic (for tests that step time by hand).
    """

    def __init__(
        self, initial: float, cap: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.initial = initial
        self.cap = max(cap, initial)
        self._clock = clock
        self._lock = threading.Lock()
        #: Seconds the breaker stays open after the last failure; 0 while closed.
        self.backoff = 0.0
        self._retry_at = 0.0
        self._probing = False
        self._probes_running = 0
        #: Failures that opened or kept it open, since it last closed (for messages).
        self.failures = 0

    @property
    def is_open(self) -> bool:
        return self.backoff > 0

    def trip(self) -> float:
        """A write or probe failed: open (or stay open, twice as long); returns the wait."""
        with self._lock:
            self.backoff = self.initial if self.backoff == 0 else min(self.cap, self.backoff * 2)
            self._retry_at = self._clock() + self.backoff
            self._probing = False
            self.failures += 1
            return self.backoff

    def close(self) -> None:
        """A write or probe succeeded."""
        with self._lock:
            self.backoff = 0.0
            self._retry_at = 0.0
            self._probing = False
            self.failures = 0

    def claim_probe(self) -> bool:
        """True for exactly one caller once the wait is over: that caller probes, reports
        with :meth:`close` or :meth:`trip`, then calls :meth:`probe_finished`. False while closed, while waiting, or
        while another probe runs."""
        with self._lock:
            if self.backoff == 0 or self._probing or self._clock() < self._retry_at:
                return False
            self._probing = True
            self._probes_running += 1
            return True

    def probe_finished(self) -> None:
        """The probe a :meth:`claim_probe` gave has ended (after its :meth:`close` or
        :meth:`trip`, whatever it did)."""
        with self._lock:
            self._probes_running = max(0, self._probes_running - 1)

    @property
    def probe_running(self) -> bool:
        """True from a successful :meth:`claim_probe` until its :meth:`probe_finished`.

        Unlike the open state, this outlasts the probe's first success: a probe replaying
        the spool closes the breaker with its first batch written and goes on with the
        rest."""
        with self._lock:
            return self._probes_running > 0

    def seconds_left(self) -> float:
        """How long until the next probe may run (0 when closed or due)."""
        with self._lock:
            if self.backoff == 0:
                return 0.0
            return max(0.0, self._retry_at - self._clock())
