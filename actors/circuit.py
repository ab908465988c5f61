"""A circuit breaker: stop sending streams to a provider that keeps failing, probe it later.

Pure logic with an injectable clock (no I/O, no tasks), so the pool actor can own it and tests
can drive time. The states, after Nygard's *Release It!*:

    CLOSED ──N consecutive failures, or failure rate ≥ r over the window──▶ OPEN
    OPEN ──cool-down elapsed──▶ HALF_OPEN          (evaluated lazily, on the next call)
    HALF_OPEN ──`probe_successes` probe successes──▶ CLOSED   (cool-down back to its base)
    HALF_OPEN ──a probe failure──▶ OPEN            (cool-down doubled, up to the maximum)

Every stream starts with `acquire()`, which returns a `Permit` or None (refused). In
HALF_OPEN only `probes` permits are out at once, and only their outcomes decide; outcomes of
streams started before (a late report from a slot granted while CLOSED) are ignored there,
as they are while OPEN. While CLOSED every outcome counts, even one reported without a permit
(the pool lost track of a slot but the provider's behaviour is still evidence).
A permit given back without an outcome (`release`: the stream was cancelled, its holder died)
frees its probe place and decides nothing.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from switchboard.protocols.pools import BreakerSettings, CircuitState

CLOSED: CircuitState = "closed"
OPEN: CircuitState = "open"
HALF_OPEN: CircuitState = "half_open"


@dataclass(frozen=True, slots=True)
class Permit:
    """Leave to run one stream. `probe` permits belong to one half-open period (`epoch`)."""

    probe: bool = False
    epoch: int = 0


_UNTRACKED = Permit()
DEFAULT_BREAKER = BreakerSettings()


class CircuitBreaker:
    def __init__(self, settings: BreakerSettings = DEFAULT_BREAKER, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._state: CircuitState = CLOSED
        self._epoch = 0
        self._consecutive = 0
        self._window: deque[tuple[float, bool]] = deque()
        self._opened_at = 0.0
        self._cool_down = settings.cool_down_seconds
        self._probes_out = 0
        self._probe_successes = 0
        self.transitions = 0

    # -- state ------------------------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """The current state (an OPEN circuit whose cool-down is over reads HALF_OPEN)."""
        if self._state == OPEN and self._clock() >= self._opened_at + self._cool_down:
            self._move(HALF_OPEN)
        return self._state

    def retry_after(self) -> float:
        """Seconds until the circuit may let a stream through; 0.0 when it does now."""
        state = self.state
        if state == OPEN:
            return max(self._opened_at + self._cool_down - self._clock(), 0.0)
        if state == HALF_OPEN and self._probes_out >= self.settings.probes:
            # The probes decide within a turn or two; ask again after a base cool-down.
            return self.settings.cool_down_seconds
        return 0.0

    def allows(self) -> bool:
        """Would `acquire()` give a permit now? (Takes nothing.)"""
        state = self.state
        return state == CLOSED or (state == HALF_OPEN
                                   and self._probes_out < self.settings.probes)

    # -- permits and outcomes ---------------------------------------------------------------

    def acquire(self) -> Permit | None:
        """A permit to run one stream, or None while the circuit refuses."""
        state = self.state
        if state == CLOSED:
            return _UNTRACKED
        if state == HALF_OPEN and self._probes_out < self.settings.probes:
            self._probes_out += 1
            return Permit(probe=True, epoch=self._epoch)
        return None

    def release(self, permit: Permit | None) -> None:
        """Give a permit back without an outcome (cancelled stream, reclaimed slot)."""
        if self._is_live_probe(permit):
            self._probes_out -= 1

    def record(self, permit: Permit | None, ok: bool) -> None:
        """The outcome of the stream that held `permit` (None: a slot nobody tracks now)."""
        state = self.state
        if state == CLOSED:
            self._record_closed(ok)
        elif state == HALF_OPEN and self._is_live_probe(permit):
            self._probes_out -= 1
            if not ok:
                self._cool_down = min(self._cool_down * 2, self.settings.max_cool_down_seconds)
                self._open()
                return
            self._probe_successes += 1
            if self._probe_successes >= self.settings.probe_successes:
                self._cool_down = self.settings.cool_down_seconds
                self._move(CLOSED)

    def _is_live_probe(self, permit: Permit | None) -> bool:
        return (permit is not None and permit.probe and permit.epoch == self._epoch
                and self._state == HALF_OPEN and self._probes_out > 0)

    def _record_closed(self, ok: bool) -> None:
        now = self._clock()
        window = self._window
        window.append((now, ok))
        horizon = now - self.settings.window_seconds
        while window and window[0][0] < horizon:
            window.popleft()
        if ok:
            self._consecutive = 0
            return
        self._consecutive += 1
        if self._consecutive >= self.settings.failure_threshold:
            self._open()
            return
        if len(window) >= self.settings.min_calls:
            failed = sum(1 for _, good in window if not good)
            if failed / len(window) >= self.settings.failure_rate:
                self._open()

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._move(OPEN)

    def _move(self, state: CircuitState) -> None:
        self._state = state
        self.transitions += 1
        self._consecutive = 0
        self._window.clear()
        self._probes_out = 0
        self._probe_successes = 0
        if state == HALF_OPEN:
            self._epoch += 1  # probes of an earlier half-open period no longer decide

    def statistics(self) -> dict[str, float | int | str]:
        return {"state": self.state, "consecutive_failures": self._consecutive,
                "window": len(self._window), "probes_out": self._probes_out,
                "cool_down": self._cool_down, "transitions": self.transitions}
