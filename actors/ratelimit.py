"""A token bucket: at most `rate` operations per second on average, in bursts of `burst`.

Pure logic with an injectable clock, owned by one actor (no locking). A refused `take` says
how long until a token is due, which becomes the refusal's `retry_after`.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """`rate <= 0` means no limit."""

    def __init__(self, rate: float, burst: float = 0.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = burst if burst > 0 else max(rate, 1.0)
        self._clock = clock
        self._tokens = self.capacity
        self._updated = clock()

    @property
    def limited(self) -> bool:
        return self.rate > 0

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def _refill(self) -> None:
        now = self._clock()
        # A clock that stepped back (the wall clock after an NTP correction) adds nothing.
        elapsed = max(now - self._updated, 0.0)
        self._updated = now
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)

    def wait_time(self, n: float = 1.0) -> float:
        """Seconds until `n` tokens are available (0.0: now). Takes nothing."""
        if not self.limited:
            return 0.0
        self._refill()
        missing = n - self._tokens
        return 0.0 if missing <= 0 else missing / self.rate

    def take(self, n: float = 1.0) -> float:
        """Take `n` tokens and return 0.0, or take nothing and return the seconds to wait."""
        wait = self.wait_time(n)
        if wait == 0.0 and self.limited:
            self._tokens -= n
        return wait
