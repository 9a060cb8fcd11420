"""No run stays ``running`` after its process ended: find and close such runs.

A run records the process that started it (``invocations.process``, see
:mod:`dpt_core.process`). A process killed without a word (SIGKILL, the OOM
killer, a lost host, a reboot) never records its end; the next dpt process on the
same host that writes to the database closes those runs as ``crashed``
(:func:`close_dead_runs`, once per process, after its spool replayed, so an end
event that waited in the spool wins). Runs of other hosts cannot be judged from
here: ``dpt doctor`` lists them (:func:`running_elsewhere`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Engine, Table, and_, func, select, update

from dpt_core.events import utcnow
from dpt_core.process import is_alive, process_token
from dpt_core.store.models import Invocation

I = cast(Table, Invocation.__table__)  # noqa: E741

CRASHED_ERROR = (
    "the process that ran it ({process}) ended without recording an end "
    "(killed, out of memory, or the host restarted); closed as crashed by dpt"
)


def close_dead_runs(
    engine: Engine, host: str, waiting: Callable[[], Collection[str]] = frozenset
) -> list[str]:
    """Close as ``crashed`` the runs of ``host`` still ``running`` whose process is gone.

    A dead process whose events still wait in the spool (``waiting()``: the pids with a
    spool file here, :meth:`dpt_core.spool.Spool.pids_waiting`) is left alone: its end
    may be in there, and a replay another process is running right now will write it.

    :returns: the UUIDs of the runs closed.
    """
    own = process_token()
    with engine.connect() as conn:
        rows = conn.execute(
            select(I.c.id, I.c.uuid, I.c.process).where(
                and_(I.c.status == "running", I.c.host == host, I.c.process.is_not(None))
            )
        ).all()
    dead = [r for r in rows if r.process != own and is_alive(r.process) is False]
    if dead:
        pending = waiting()
        dead = [r for r in dead if _pid(r.process) not in pending]
    if not dead:
        return []
    now = utcnow()
    with engine.begin() as conn:
        for row in dead:
            pid = _pid(row.process)
            conn.execute(
                update(I)
                .where(and_(I.c.id == row.id, I.c.status == "running"))
                .values(
                    status="crashed",
                    ended_at=now,
                    error=CRASHED_ERROR.format(process=f"pid {pid} on {host}"),
                )
            )
    return [r.uuid for r in dead]


def _pid(token: str) -> str:
    """The pid a process token names (``linux:<boot>:<ns>:<pid>:<start>``, ``pid:<pid>``)."""
    return token.split(":")[-2] if token.startswith("linux:") else token.removeprefix("pid:")


@dataclass(frozen=True)
class RunningElsewhere:
    """Runs still ``running`` on one other host (this one cannot check their processes)."""

    host: str | None
    runs: int
    oldest_started_at: dt.datetime | None


def running_elsewhere(engine: Engine, host: str) -> list[RunningElsewhere]:
    """Per other host (or unknown host), how many runs are still ``running``, oldest first."""
    with engine.connect() as conn:
        rows: list[Any] = list(
            conn.execute(
                select(I.c.host, func.count(), func.min(I.c.started_at))
                .where(and_(I.c.status == "running", (I.c.host != host) | I.c.host.is_(None)))
                .group_by(I.c.host)
            ).all()
        )
    found = [RunningElsewhere(r[0], int(r[1]), r[2]) for r in rows]
    return sorted(found, key=lambda r: (r.oldest_started_at is None, r.oldest_started_at))
