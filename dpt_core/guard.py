"""The one rule every caller of dpt follows: tracking never fails the user's pipeline.

A :class:`Guard` runs a tracking step; when it fails, the failure is logged once per
kind of failure (not once per event) and swallowed, so the task, flow or sensor goes
on. In strict mode (``DPT_STRICT=1``) it raises :class:`~dpt_core.TrackingError`
instead. The tracker and every adapter share this class, so the rule and its
messages are the same everywhere.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from dpt_core.errors import DptError, TrackingError
from dpt_core.log import log

T = TypeVar("T")


def strict_mode() -> bool:
    """True when ``DPT_STRICT`` is on (read from the variable if the settings are broken)."""
    try:
        from dpt_core.config import get_settings

        return get_settings().strict
    except Exception:  # a broken configuration is reported elsewhere
        return os.environ.get("DPT_STRICT", "").strip().lower() in ("1", "true", "yes", "on")


#: Most keys a guard remembers (warnings keyed by a path: one per missing file).
MAX_KEYS = 10_000


class Guard:
    """Log-once-and-go-on for tracking failures.

    :param consequence: what happens instead, for the log line ("the task goes on
        untracked").
    :param logger: where the line goes (default: the ``dpt`` logger).
    """

    def __init__(self, consequence: str, logger: Any = None) -> None:
        self.consequence = consequence
        self.logger = logger or log
        self._logged: set[str] = set()
        self._lock = threading.Lock()

    def first_time(self, key: str) -> bool:
        """True the first time ``key`` is seen (then False until :meth:`reset`; the keys
        are forgotten after :data:`MAX_KEYS`, so a long-lived process stays bounded)."""
        with self._lock:
            first = key not in self._logged
            if first and len(self._logged) >= MAX_KEYS:
                self._logged.clear()
            self._logged.add(key)
        return first

    def failed(
        self,
        what: str,
        exc: BaseException,
        *,
        strict: bool | None = None,
        key: str | None = None,
        logger: Any = None,
    ) -> None:
        """Report that ``what`` failed with ``exc``: raise in strict mode, else log once."""
        if strict_mode() if strict is None else strict:
            if isinstance(exc, DptError):
                raise exc
            raise TrackingError(f"dpt: {what} failed: {type(exc).__name__}: {exc}") from exc
        if self.first_time(f"{key or what}:{type(exc).__name__}"):
            (logger or self.logger).warning(
                "dpt: %s failed, %s: %s: %s", what, self.consequence, type(exc).__name__, exc
            )

    def run(
        self,
        what: str,
        call: Callable[[], T],
        *,
        default: T | None = None,
        strict: bool | None = None,
        key: str | None = None,
        logger: Any = None,
    ) -> T | None:
        """``call()``, or ``default`` after :meth:`failed` when it raises."""
        try:
            return call()
        except Exception as exc:
            self.failed(what, exc, strict=strict, key=key, logger=logger)
            return default

    def reset(self) -> None:
        with self._lock:
            self._logged.clear()
