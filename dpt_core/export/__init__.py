"""Exports of the record to other formats.

* :mod:`dpt_core.export.openlineage` — OpenLineage RunEvents (START and
  COMPLETE/FAIL/ABORT per invocation) as JSON lines; needs no extra package.
* :mod:`dpt_core.export.openlineage_live` — a dpt plugin that emits the same
  events live through an OpenLineage client (extra ``openlineage``).
* :mod:`dpt_core.export.prov` — a W3C PROV-JSON document.
* :mod:`dpt_core.export.graph` — DOT and Mermaid renderings of a lineage graph.
"""

from __future__ import annotations

import datetime as dt
import re

from dpt_core.errors import DptError

__all__ = ["parse_since"]

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class BadSince(DptError):
    """A ``--since`` value that is neither a date/time nor a relative age."""


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """A timezone-aware UTC datetime from ``text``.

    Accepts an ISO 8601 date or date-time (``2024-05-01``, ``2024-05-01T12:00``,
    ``2024-05-01T12:00:00+02:00``; without an offset it is local time) or an age
    relative to now: ``30m``, ``12h``, ``7d``, ``2w``.

    :raises BadSince: anything else, with a message naming the value.
    """
    match = _RELATIVE.match(text)
    now = now or dt.datetime.now(dt.UTC)
    try:
        if match:
            amount, unit = float(match.group(1)), match.group(2).lower()
            return now - dt.timedelta(**{_UNITS[unit]: amount})
        try:
            parsed = dt.datetime.fromisoformat(text.strip())
        except ValueError:
            raise BadSince(
                f"--since {text!r} is not a date or an age: use e.g. 2024-05-01, "
                "2024-05-01T12:00+00:00, 12h, 7d or 2w"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.astimezone()
        return parsed.astimezone(dt.UTC)
    except OverflowError:  # an age before year 1, a date in UTC after 9999 (or before 1)
        raise BadSince(
            f"--since {text!r} is outside the calendar (years 1 to 9999, in UTC): "
            "give a smaller age or a date within it"
        ) from None
