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
