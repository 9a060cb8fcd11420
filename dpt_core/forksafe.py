"""A fork waits until dpt's own threads are between two pieces of work.

A process forked (without exec) while another of its threads holds a lock has that lock
held for good in the child: the thread that would release it does not exist there.
dpt's background threads hold locks a child is likely to want: the background writer's
first write imports the recorder, declares its models (under SQLAlchemy's one global
mapper lock) and may import SQLAlchemy and the driver (an import holds the module's lock
until the module has run); every write takes the driver's and the logging module's
locks. A bare ``os.fork()`` made while the writer imported SQLAlchemy gave a child that
waited forever on its own ``import sqlalchemy`` (6 times of 6). Airflow's OpenLineage
provider forks its process pool as a dag run starts, the moment dpt's listener hands
the writer that run's start; ``multiprocessing`` with the fork method and Celery's
prefork pool fork whenever they need a worker.

So each piece of work on a dpt thread runs inside :func:`working`, and a fork
(``os.register_at_fork``) first waits until no other thread is inside it, at most
:data:`FORK_WAIT` seconds, and lets none start until the fork has returned. The wait is
the piece of work under way (a write: milliseconds; the first, with its imports: up to a
second on a loaded host); a thread idle between pieces holds none of those locks.

Not covered: a watchdog thread a write was abandoned to (:class:`~dpt_core.store.plugin.Store`
gives up on a database that does not answer, leaving the thread stuck in the network call
with no import under way), and a piece of work longer than :data:`FORK_WAIT`, after which
the fork goes ahead.

This module registers its fork handler after the spool's (it imports
:mod:`dpt_core.spool` first): handlers run in the reverse order of registration, so a
fork waits for dpt's threads before it takes the spool's descriptor lock, which a
thread's piece of work may need in order to end.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import dpt_core.spool  # noqa: F401 - its fork handler must be registered before ours
from dpt_core.log import log

#: Seconds a fork waits at most for dpt's threads to end their piece of work.
FORK_WAIT = 10.0

_idle = threading.Condition(threading.Lock())
#: Threads inside :func:`working`, by ident, with how deep.
_busy: dict[int, int] = {}


@contextlib.contextmanager
def working() -> Iterator[None]:
    """Mark a piece of work on a dpt thread: a fork waits until it ends."""
    me = threading.get_ident()
    with _idle:
        _busy[me] = _busy.get(me, 0) + 1
    try:
        yield
    finally:
        with _idle:
            depth = _busy.pop(me, 1) - 1
            if depth:
                _busy[me] = depth
            else:
                _idle.notify_all()


def _others_idle() -> bool:
    me = threading.get_ident()
    return all(ident == me for ident in _busy)


def _before_fork() -> None:
    _idle.acquire()
    if not _idle.wait_for(_others_idle, FORK_WAIT):
        log.debug(
            "dpt: forking while a dpt thread still works after %g s; the child may find a "
            "lock it held",
            FORK_WAIT,
        )


def _after_fork_in_parent() -> None:
    _idle.release()


def _after_fork_in_child() -> None:
    global _idle, _busy
    me = threading.get_ident()
    _busy = {me: _busy[me]} if me in _busy else {}  # (the forking thread's own work goes on)
    _idle = threading.Condition(threading.Lock())  # (the parent's was held across the fork)


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)
