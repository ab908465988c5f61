"""The circuit breaker's transitions, on a clock the test moves: when it opens (consecutive
failures, failure rate over a window), when it lets probes through, and what closes it."""

from __future__ import annotations

import pytest
from switchboard.actors.circuit import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from switchboard.actors.ratelimit import TokenBucket
from switchboard.protocols.pools import BreakerSettings

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **settings: float) -> CircuitBreaker:
    base = {"failure_threshold": 3, "cool_down_seconds": 5.0, "max_cool_down_seconds": 20.0,
            "min_calls": 10, "failure_rate": 0.5, "window_seconds": 30.0}
    base.update(settings)
    return CircuitBreaker(BreakerSettings(**base), clock=clock)  # type: ignore[arg-type]


def fail(b: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        b.record(b.acquire(), ok=False)


def succeed(b: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        b.record(b.acquire(), ok=True)


def test_consecutive_failures_open_the_circuit_and_a_success_resets_the_count() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, 2)
    succeed(b)
    fail(b, 2)
    assert b.state == CLOSED
    fail(b)
    assert b.state == OPEN
    assert b.acquire() is None and not b.allows()
    assert b.retry_after() == pytest.approx(5.0)
    clock.now += 2
    assert b.retry_after() == pytest.approx(3.0)


def test_a_failure_rate_over_the_window_opens_it_without_consecutive_failures() -> None:
    clock = Clock()
    b = breaker(clock, min_calls=6, failure_rate=0.5)
    for _ in range(2):
        fail(b, 1)
        succeed(b, 1)
    assert b.state == CLOSED  # 2 of 4: too few outcomes to judge
    fail(b)
    succeed(b)  # 3 failures of 6, never two in a row
    fail(b)     # the next failure is judged on 4 of 7
    assert b.state == OPEN


def test_old_outcomes_leave_the_window() -> None:
    clock = Clock()
    b = breaker(clock, min_calls=4, failure_rate=0.5, window_seconds=10.0)
    fail(b)
    succeed(b)
    fail(b)
    succeed(b)
    clock.now += 11  # those four are history now
    fail(b)
    succeed(b)
    succeed(b)
    assert b.state == CLOSED
    fail(b)  # 2 of 4 within the window: at the rate
    assert b.state == OPEN


def test_after_the_cool_down_only_the_probes_go_through_and_a_success_closes() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, 3)
    clock.now += 5
    assert b.state == HALF_OPEN
    probe = b.acquire()
    assert probe is not None and probe.probe
    assert b.acquire() is None  # one probe at a time
    assert b.retry_after() > 0
    b.record(probe, ok=True)
    assert b.state == CLOSED
    assert b.acquire() is not None


def test_a_failed_probe_reopens_for_twice_as_long_up_to_the_maximum() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, 3)
    for expected in (10.0, 20.0, 20.0):
        clock.now += b.retry_after()
        b.record(b.acquire(), ok=False)
        assert b.state == OPEN
        assert b.retry_after() == pytest.approx(expected)
    clock.now += b.retry_after()
    b.record(b.acquire(), ok=True)
    fail(b, 3)  # closed resets the cool-down to its base
    assert b.retry_after() == pytest.approx(5.0)


def test_outcomes_of_streams_started_before_do_not_decide_the_half_open_circuit() -> None:
    clock = Clock()
    b = breaker(clock)
    early = b.acquire()  # a stream started while closed
    fail(b, 3)
    b.record(early, ok=True)  # its late success while open: ignored
    assert b.state == OPEN
    clock.now += 5
    stale_probe = b.acquire()
    clock.now += 1
    b.record(stale_probe, ok=False)  # reopened for 10 s
    clock.now += 10
    probe = b.acquire()
    assert probe is not None
    b.record(early, ok=True)         # neither a pre-open stream
    b.record(stale_probe, ok=True)   # nor a probe of the previous half-open period decides
    assert b.state == HALF_OPEN
    b.record(probe, ok=True)
    assert b.state == CLOSED


def test_a_probe_given_back_without_an_outcome_frees_its_place() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, 3)
    clock.now += 5
    probe = b.acquire()
    assert b.acquire() is None
    b.release(probe)  # the probing stream was cancelled (barge-in): nothing learnt
    assert b.state == HALF_OPEN
    assert b.acquire() is not None


def test_several_probe_successes_may_be_required() -> None:
    clock = Clock()
    b = breaker(clock, probes=2, probe_successes=2)
    fail(b, 3)
    clock.now += 5
    first, second = b.acquire(), b.acquire()
    assert first is not None and second is not None and b.acquire() is None
    b.record(first, ok=True)
    assert b.state == HALF_OPEN
    b.record(second, ok=True)
    assert b.state == CLOSED


def test_token_bucket_refills_at_its_rate_and_says_how_long_to_wait() -> None:
    clock = Clock()
    bucket = TokenBucket(2.0, 3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.take() == 0.0
    clock.now += 100
    assert bucket.tokens == pytest.approx(3.0)  # never more than the burst
    assert TokenBucket(0.0, clock=clock).take() == 0.0  # rate 0: unlimited
