"""A fork waits until no dpt thread is inside a database write.

A process forked (without exec) while another of its threads holds a lock has that lock
held for good in the child: the thread that would release it does not exist there.
dpt's background writer holds locks a child is likely to want while it writes: its
first write imports the recorder and may import SQLAlchemy and the driver (an import
holds the module's lock until the module has run) and declares dpt's models under
SQLAlchemy's one global mapper lock; every write takes the driver's locks. A bare
``os.fork()`` made while the writer imported SQLAlchemy gave a child that waited forever
on its own ``import sqlalchemy`` (6 times of 6). Airflow's OpenLineage provider forks
its process pool as a dag run starts, the moment dpt's listener hands the writer that
run's start; ``multiprocessing`` with the fork method and Celery's prefork pool fork
whenever they need a worker.

So each piece of database work (a transaction, with a first write's imports; the
engine's creation and schema check; the closing of dead runs) runs inside
:func:`working`, on whatever thread, and a fork (``os.register_at_fork``) first waits
until no other thread is inside one, at most :data:`FORK_WAIT` seconds. A piece about to
start meanwhile lets the fork go first (:data:`START_WAIT` seconds at most, in case the
work under way waits for it), so a writer that never runs dry lets a fork in between two
transactions. The wait is the transaction under way: milliseconds, a first write with
its imports up to a second on a loaded host, a big replay group more; an idle writer
costs a fork nothing (``benchmarks/bench_fork.py``).

Not covered: a watchdog thread a write was abandoned to (:class:`~dpt_core.store.plugin.Store`
gives up on a database that does not answer, leaving the thread stuck in the network call
with no import under way), and a piece longer than :data:`FORK_WAIT`, after which the
fork goes ahead.

The handler is registered by the first piece, after :mod:`logging` and the spool
(:mod:`dpt_core.spool`) registered theirs: handlers run in the reverse order of
registration, so a fork waits for dpt's work before it takes the logging module's lock
or the spool's descriptor lock, which a piece may need in order to end. (A process that
never writes, one that only spools, never imports :mod:`logging` for it.)
"""

from __future__ import annotations

import contextlib
import itertools
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
#: Set while a fork waits for the work under way. A piece about to start waits for the
#: fork first (else a thread that writes without pause would keep the fork waiting to
#: the end of FORK_WAIT), but only START_WAIT seconds: the work under way may be waiting
#: for a lock that thread holds.
_forking = 0
#: Whether this process's fork handler is registered (by the first piece of work), and
#: who registers it: the first to draw 0 (``next`` is atomic; a lock held by another
#: thread across a fork would be held for good in the child).
_registered = False
_tickets = itertools.count()
#: Seconds a piece of work waits at most for a fork to go first.
START_WAIT = 0.1


@contextlib.contextmanager
def working() -> Iterator[None]:
    """Mark a piece of database work: a fork waits until it ends."""
    if not _registered:
        _register()
    me = threading.get_ident()
    with _idle:
        if me not in _busy:  # (a piece inside a piece is part of the work under way)
            _idle.wait_for(lambda: _forking == 0, START_WAIT)
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
    global _forking
    _idle.acquire()
    _forking += 1  # (another thread's fork may be waiting too)
    if not _idle.wait_for(_others_idle, FORK_WAIT):
        log.debug(
            "dpt: forking while a dpt thread still works after %g s; the child may find a "
            "lock it held",
            FORK_WAIT,
        )


def _after_fork_in_parent() -> None:
    global _forking
    _forking -= 1
    _idle.notify_all()
    _idle.release()


def _after_fork_in_child() -> None:
    global _idle, _busy, _forking
    me = threading.get_ident()
    _busy = {me: _busy[me]} if me in _busy else {}  # (the forking thread's own work goes on)
    _forking = 0
    _idle = threading.Condition(threading.Lock())  # (the parent's was held across the fork)


def _register() -> None:
    global _registered
    if next(_tickets):
        return  # another thread registers it (a piece started meanwhile goes unguarded)
    import logging  # noqa: F401 - its fork handler (the module's lock) must run after ours

    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
    _registered = True
