"""`AudioTap`: reads a call's audio once, keeps the current utterance, and feeds one STT.

STT failover (actors/failover.py) must replay the utterance a failed provider was hearing to
the next one, and must never lose or close the live audio source when a provider stream is
torn down: cancelling a provider that is waiting inside `anext(source)` would end an async
generator source for good. So one task (`pump`) reads the source; a provider reads a `Feed`,
a queue that `replay_and_follow()` primes with the buffered utterance and that the pump
extends. Switching providers is synchronous (snapshot of the buffer, then the new feed is
current), so no chunk is lost or doubled between them.

The buffer holds the audio since the last final transcript (`trim`), at most `max_seconds`
(oldest dropped first): a caller who talks for minutes without a final gets the last part.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable

from switchboard.protocols.audio import AudioChunk


class Feed:
    """An async iterator over replayed then live chunks (one provider's input)."""

    def __init__(self, replay: Iterable[AudioChunk]) -> None:
        self._items: deque[AudioChunk] = deque(replay)
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._error: BaseException | None = None

    def put(self, chunk: AudioChunk) -> None:
        self._items.append(chunk)
        self._wake()

    def end(self, error: BaseException | None = None) -> None:
        self._ended, self._error = True, error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __aiter__(self) -> Feed:
        return self

    async def __anext__(self) -> AudioChunk:
        while not self._items:
            if self._ended:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()


class AudioTap:
    def __init__(self, *, max_seconds: float = 30.0,
                 on_chunk: Callable[[], None] | None = None) -> None:
        self.max_seconds = max_seconds
        self._on_chunk = on_chunk
        self._buffer: deque[AudioChunk] = deque()
        self._buffered = 0.0
        self._feed: Feed | None = None
        self._ended = False
        self._error: BaseException | None = None

    @property
    def buffered_seconds(self) -> float:
        return self._buffered

    async def pump(self, source: AsyncIterator[AudioChunk]) -> None:
        """Read `source` to its end (run as a task owned by the STT stream)."""
        error: BaseException | None = None
        try:
            async for chunk in source:
                self._keep(chunk)
                if self._feed is not None:
                    self._feed.put(chunk)
                if self._on_chunk is not None:
                    self._on_chunk()
        except Exception as exc:  # noqa: BLE001 - the source's failure goes to the provider
            error = exc               # reading it, and from there to the STT stream's owner
        self._ended, self._error = True, error
        if self._feed is not None:
            self._feed.end(error)

    def _keep(self, chunk: AudioChunk) -> None:
        self._buffer.append(chunk)
        self._buffered += chunk.duration
        while self._buffered > self.max_seconds and len(self._buffer) > 1:
            self._buffered -= self._buffer.popleft().duration

    def trim(self, until: float) -> None:
        """Forget audio that ends by `until` (a final transcript covered it)."""
        while self._buffer and self._buffer[0].end <= until:
            self._buffered -= self._buffer.popleft().duration
        if not self._buffer:
            self._buffered = 0.0

    def replay_and_follow(self) -> Feed:
        """A new provider's input: the buffered utterance, then live audio. The previous
        feed stops receiving (its provider is being replaced)."""
        if self._feed is not None:
            self._feed.end()
        feed = Feed(self._buffer)
        if self._ended:
            feed.end(self._error)
        self._feed = feed
        return feed
