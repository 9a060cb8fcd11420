"""dpt's loggers, with :mod:`logging` imported at their first use.

dpt logs only what went wrong (a failed write, a plugin's error, a missing file), so a
process that records without a problem never needs :mod:`logging`: importing it cost a
fresh process ~5 ms, and its objects more at exit (docs/performance.md). A module on
the recording path does ``from dpt_core.log import log`` (the ``dpt`` logger) or
``log = deferred_logger(__name__)`` and calls ``log.warning(...)`` as on the logger;
handlers, levels and ``caplog`` see the real logger. The server, the CLI and the
adapters (which run where :mod:`logging` is loaded already) use :mod:`logging` directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from logging import Logger


class _DeferredLogger:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        import logging

        return getattr(logging.getLogger(self._name), attribute)


def deferred_logger(name: str) -> Logger:
    """``logging.getLogger(name)``, looked up (and :mod:`logging` imported) at each use."""
    return _DeferredLogger(name)  # type: ignore[return-value]


#: The ``dpt`` logger.
log = deferred_logger("dpt")
