"""The circuit breaker's state machine, stepped with a hand-held clock (the store's use of
it, against a real black-holed server, is in tests/reliability/test_outages.py)."""

from __future__ import annotations

import threading

from dpt_core.store.breaker import Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_closed_until_a_failure_then_waits_before_one_probe() -> None:
    clock = Clock()
    breaker = Breaker(5, 60, clock)
    assert not breaker.is_open and not breaker.claim_probe()
    assert breaker.trip() == 5 and breaker.is_open
    assert not breaker.claim_probe() and breaker.seconds_left() == 5
    clock.now += 4.9
    assert not breaker.claim_probe()
    clock.now += 0.1
    assert breaker.claim_probe()
    assert not breaker.claim_probe(), "a second probe while the first runs"
    breaker.close()
    assert not breaker.is_open and breaker.failures == 0 and breaker.seconds_left() == 0


def test_each_failed_probe_doubles_the_wait_up_to_the_cap() -> None:
    clock = Clock()
    breaker = Breaker(5, 60, clock)
    waits = []
    breaker.trip()
    for _ in range(6):
        clock.now += breaker.seconds_left()
        assert breaker.claim_probe()
        waits.append(breaker.trip())
    assert waits == [10, 20, 40, 60, 60, 60]
    assert breaker.failures == 7


def test_only_one_of_many_threads_claims_the_probe() -> None:
    clock = Clock()
    breaker = Breaker(1, 1, clock)
    breaker.trip()
    clock.now += 1
    claimed: list[bool] = []
    start = threading.Barrier(16)

    def claim() -> None:
        start.wait()
        claimed.append(breaker.claim_probe())

    threads = [threading.Thread(target=claim) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == [False] * 15 + [True]


def test_a_cap_below_the_first_wait_is_the_first_wait() -> None:
    clock = Clock()
    breaker = Breaker(10, 3, clock)
    assert breaker.trip() == 10
    clock.now += 10
    assert breaker.claim_probe() and breaker.trip() == 10


def test_wait_for_probe_waits_until_the_probe_has_replayed_the_whole_spool(
    dpt_env, monkeypatch
) -> None:
    """A probe closes the breaker with its first write and goes on replaying the spool:
    ``wait_for_probe`` returns once it has ended, not once the breaker is closed (a caller
    about to exit saw events still in the spool). The probe is held after its first write,
    so the window is forced, not timed."""
    import uuid

    import dpt_core
    from dpt_core.events import InvocationFinished, InvocationStarted
    from dpt_core.store.plugin import current_store

    monkeypatch.setenv("DPT_WRITE", "sync")
    dpt_core.plugin_api.reset()
    store = current_store()
    with dpt_core.invocation("before"):
        pass  # connected, schema checked
    runs = [str(uuid.uuid4()) for _ in range(2)]
    store.spool.append([InvocationStarted(uuid=runs[0], orchestrator="python", job="older")])
    store.spool.append([InvocationFinished(runs[0], "success")])
    assert store.spool.claim_own() is not None  # (a file the probe replays first)
    clock = Clock()
    store.breaker = Breaker(1, 1, clock)
    store.breaker.trip()  # the database was away
    clock.now += 1  # and the probe is due

    recorder = store.recorder
    real_record = recorder.record
    first_written, go_on = threading.Event(), threading.Event()
    writes: list[int] = []

    def held_after_the_first_write(events, **kwargs):  # type: ignore[no-untyped-def]
        if writes:
            first_written.set()
            go_on.wait()
        real_record(events, **kwargs)
        writes.append(len(events))

    monkeypatch.setattr(recorder, "record", held_after_the_first_write)
    try:
        # spooled (the breaker is open), and the probe starts in the background
        store.submit([InvocationStarted(uuid=runs[1], orchestrator="python", job="newer")])
        assert first_written.wait(60), "the probe did not start"
        assert not store.breaker.is_open  # closed by the probe's first write
        assert not store.spool.is_empty()
        assert not store.wait_for_probe(0.05), "returned while the probe still replays"
    finally:
        go_on.set()
    assert store.wait_for_probe(60)
    assert store.spool.is_empty()
    assert not store.breaker.probe_running
    assert sorted(r.job for r in dpt_core.runs()) == ["before", "newer", "older"]


def test_what_a_write_spools_while_the_probe_runs_is_replayed_before_wait_for_probe_returns(
    dpt_env, monkeypatch
) -> None:
    """A write that finds the breaker open while the probe replays spools its events after
    the probe listed the spool: the probe (or wait_for_probe) replays them too, so that a
    caller about to exit finds the spool empty. The probe is held at its first write while
    the write spools, so the window is forced, not timed."""
    import uuid

    import dpt_core
    from dpt_core.events import InvocationFinished, InvocationStarted
    from dpt_core.store.plugin import current_store

    monkeypatch.setenv("DPT_WRITE", "sync")
    dpt_core.plugin_api.reset()
    store = current_store()
    with dpt_core.invocation("before"):
        pass  # connected, schema checked
    run = str(uuid.uuid4())
    store.spool.append([InvocationStarted(uuid=run, orchestrator="python", job="spooled")])
    assert store.spool.claim_own() is not None  # all the probe will list
    clock = Clock()
    store.breaker = Breaker(1, 1, clock)
    store.breaker.trip()
    clock.now += 1

    recorder = store.recorder
    real_record = recorder.record
    writing, go_on = threading.Event(), threading.Event()

    def held_at_the_first_write(events, **kwargs):  # type: ignore[no-untyped-def]
        if not writing.is_set():
            writing.set()
            go_on.wait()
        real_record(events, **kwargs)

    monkeypatch.setattr(recorder, "record", held_at_the_first_write)
    returned: list[bool] = []
    waiter = threading.Thread(target=lambda: returned.append(store.wait_for_probe(60)))
    waiter.start()  # it probes, being due
    try:
        assert writing.wait(60), "the probe did not start"
        assert store.breaker.is_open
        store.submit([InvocationFinished(run, "success")])  # spooled: the breaker is open
    finally:
        go_on.set()
        waiter.join()
    assert returned == [True]
    assert store.spool.is_empty(), "left in the spool by the probe"
    assert dpt_env.scalar("SELECT status FROM invocations WHERE job = 'spooled'") == "success"


class _TripOnRelease:
    """The store's lock, and a write that fails (trips the breaker, under the lock, as
    writes do) the moment the probe lets go of it: the window is forced, not timed."""

    def __init__(self, breaker_of: object) -> None:
        self.lock = threading.RLock()
        self.depth = 0
        self.breaker_of = breaker_of
        self.tripped = False

    def __enter__(self) -> _TripOnRelease:
        self.lock.acquire()
        self.depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.depth -= 1
        outermost = self.depth == 0
        self.lock.release()
        if outermost and not self.tripped:
            self.tripped = True
            with self.lock:
                self.breaker_of.breaker.trip()  # type: ignore[attr-defined]


def test_a_write_failing_as_the_probe_ends_leaves_the_breaker_open(dpt_env, monkeypatch) -> None:
    """The probe closed the breaker again after it let go of the store's lock: a write
    that found the database away meanwhile was overridden, and the next write waited
    for the database's timeout instead of spooling."""
    import dpt_core
    from dpt_core.store.plugin import current_store

    monkeypatch.setenv("DPT_WRITE", "sync")
    dpt_core.plugin_api.reset()
    store = current_store()
    with dpt_core.invocation("before"):
        pass  # connected, schema checked
    clock = Clock()
    store.breaker = Breaker(1, 1, clock)
    store.breaker.trip()  # the database was away
    clock.now += 1
    assert store.breaker.claim_probe()
    lock = _TripOnRelease(store)
    monkeypatch.setattr(store, "_lock", lock)
    store._probe()  # the database answers: the probe closes the breaker, under the lock
    assert lock.tripped  # then a write failed
    assert store.breaker.is_open, "the probe's end overrode the later failure"
    assert not store.breaker.probe_running
