"""Progress deadlines for provider streams: a silent stall becomes an error the caller can act on.

The most common cause of dead air in voice agents is a provider stream that stops sending
without failing. `ProgressDeadline` wraps any async iterator; while an item is *owed* (an LLM
or TTS stream always owes its next item; an STT stream owes a transcript only once the caller
has stopped speaking), each wait for the next item gets a deadline. When it passes, the
source is closed and `ProviderStalled` is raised, so the pool can fail over within the turn.

    stream = ProgressDeadline(tts.synthesize(text), stall_ms=800, first_item_ms=1500,
                              provider="piper")
    async for chunk in stream: ...

The clock of each wait starts when the consumer asks for the next item (or when the item
became owed, if later), so a slow consumer never makes the provider look stalled.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from switchboard.providers.errors import ProviderStalled

T = TypeVar("T")


class ProgressDeadline(Generic[T]):
    """An async iterator over `source` that raises `ProviderStalled` when progress stops.

    `first_item_ms` bounds the wait for the first item (time to first token/chunk), and
    `stall_ms` every later one. With `owed=False` waits are unbounded until `owe()`;
    `settle()` lifts the deadline again (e.g. the STT delivered the final transcript).
    """

    def __init__(
        self,
        source: AsyncIterator[T],
        *,
        stall_ms: float,
        first_item_ms: float | None = None,
        provider: str = "",
        what: str = "item",
        owed: bool = True,
    ) -> None:
        self._source = source
        self._stall = stall_ms / 1000
        self._first = (first_item_ms if first_item_ms is not None else stall_ms) / 1000
        self._provider = provider
        self._what = what
        self._owed = owed
        self._loop = asyncio.get_running_loop()
        self._owed_since = self._loop.time()
        self._wait_started = self._owed_since
        self._received = 0
        self._timeout: asyncio.Timeout | None = None

    @property
    def owed(self) -> bool:
        return self._owed

    def owe(self) -> None:
        """From now on an item is owed: the current and next waits get a deadline."""
        if not self._owed:
            self._owed = True
            self._owed_since = self._loop.time()
        self._reschedule()

    def settle(self) -> None:
        """Nothing is owed any more: waits are unbounded until the next `owe()`."""
        self._owed = False
        self._reschedule()

    def _deadline(self) -> float | None:
        if not self._owed:
            return None
        budget = self._first if self._received == 0 else self._stall
        return max(self._wait_started, self._owed_since) + budget

    def _reschedule(self) -> None:
        if self._timeout is not None:
            self._timeout.reschedule(self._deadline())

    def __aiter__(self) -> ProgressDeadline[T]:
        return self

    async def __anext__(self) -> T:
        self._wait_started = self._loop.time()
        timeout = asyncio.timeout_at(self._deadline())
        self._timeout = timeout
        try:
            async with timeout:
                item = await anext(self._source)
        except TimeoutError:
            if not timeout.expired():
                raise  # the source's own TimeoutError, not our deadline
            waited_ms = (self._loop.time() - max(self._wait_started, self._owed_since)) * 1000
            await self.aclose()
            raise ProviderStalled(
                f"provider {self._provider or '?'} sent no {self._what} for {waited_ms:.0f} ms "
                f"while one was owed (after {self._received} received); the stream was closed. "
                "Fail over to the next provider or retry; if the provider is just slow, raise "
                "its progress deadline in the tenant's provider settings.",
                provider=self._provider,
                waited_ms=waited_ms,
            ) from None
        finally:
            self._timeout = None
        self._received += 1
        return item

    async def aclose(self) -> None:
        """Close the source (its `finally` blocks run, its worker is released)."""
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()
