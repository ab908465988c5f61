"""A bounded two-lane mailbox.

The system lane (stop, supervisor directives, barge-in, lease lost) is always served first and
is never flushed or bounded by the data-lane limit. The data lane is bounded; what happens when
it is full is the actor's `Overflow` policy: REJECT raises `MailboxFull` to the sender, while
DROP_OLDEST (for real-time streams, where stale audio is worthless) evicts the oldest message
that is not marked must-deliver. `flush_data()` implements interruption: it drops pending data
messages except must-deliver ones (persisting a turn, usage events).
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from switchboard.actors.errors import MailboxFull


class Overflow(enum.Enum):
    REJECT = "reject"
    DROP_OLDEST = "drop_oldest"


Replier = Callable[[Any, BaseException | None], Any]
"""Completes an ask: called once with (reply, None) or (None, error); may return an awaitable
(a remote reply being published) that the caller awaits."""


@dataclass(slots=True)
class Envelope:
    message: Any
    reply: Replier | None = None
    must_deliver: bool = False
    system: bool = False


@dataclass(frozen=True, slots=True)
class MailboxStatistics:
    data_queued: int
    system_queued: int
    capacity: int
    received: int
    rejected: int
    dropped: int


class Mailbox:
    """Not thread-safe: used from one event loop. `get` is the only blocking operation."""

    def __init__(self, capacity: int = 1000, overflow: Overflow = Overflow.REJECT,
                 on_drop: Callable[[Envelope, str], None] | None = None) -> None:
        if capacity < 1:
            raise ValueError("mailbox capacity must be at least 1")
        self.capacity = capacity
        self.overflow = overflow
        self._data: deque[Envelope] = deque()
        self._system: deque[Envelope] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._on_drop = on_drop
        self._closed = False
        self._received = self._rejected = self._dropped = 0

    def put_nowait(self, env: Envelope) -> None:
        """Queue `env`; raise MailboxFull when the data lane is full and policy is REJECT."""
        if self._closed:
            raise MailboxFull("the mailbox is closed: the actor has stopped")
        if env.system:
            self._system.append(env)
        else:
            full = len(self._data) >= self.capacity
            if full and (self.overflow is Overflow.REJECT or not self._evict_oldest()):
                self._rejected += 1
                raise MailboxFull(
                    f"mailbox full ({self.capacity} messages): the actor is overloaded; "
                    "retry later or raise its mailbox capacity")
            self._data.append(env)
        self._received += 1
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _evict_oldest(self) -> bool:
        for i, old in enumerate(self._data):
            if not old.must_deliver:
                del self._data[i]
                self._dropped += 1
                if self._on_drop is not None:
                    self._on_drop(old, "dropped_oldest")
                return True
        return False

    async def get(self) -> Envelope:
        while True:
            if self._system:
                return self._system.popleft()
            if self._data:
                return self._data.popleft()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def get_nowait(self) -> Envelope | None:
        if self._system:
            return self._system.popleft()
        if self._data:
            return self._data.popleft()
        return None

    def flush_data(self) -> list[Envelope]:
        """Drop queued data messages except must-deliver ones; return the dropped ones."""
        kept = deque(e for e in self._data if e.must_deliver)
        dropped = [e for e in self._data if not e.must_deliver]
        self._data = kept
        self._dropped += len(dropped)
        return dropped

    def close(self) -> list[Envelope]:
        """Refuse new messages and hand back everything still queued (to fail their asks)."""
        self._closed = True
        rest = list(self._system) + list(self._data)
        self._system.clear()
        self._data.clear()
        return rest

    def reopen(self) -> None:
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._data) + len(self._system)

    def statistics(self) -> MailboxStatistics:
        return MailboxStatistics(len(self._data), len(self._system), self.capacity,
                                 self._received, self._rejected, self._dropped)
