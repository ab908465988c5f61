"""`EventOutbox`: an actor's queue of events for a JetStream stream, published in order.

An actor must not wait on JetStream in its message handler or on its media path, and its
events must not be lost when JetStream blips (a leader election takes a second or two). So
events are queued here and a task owned by the actor publishes them one after the other,
retrying a failed publish with the same message id (the stream drops the duplicate if the
first attempt had in fact landed). When the actor stops it `flush`es with a deadline; what is
still queued then is counted and logged (never its content), not silently dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from switchboard.storage.events import EventPublisher
from switchboard.storage.kv import StorageError

log = logging.getLogger("switchboard.actors")


class EventOutbox:
    def __init__(self, publisher: EventPublisher, *, retry_initial: float = 0.05,
                 retry_max: float = 2.0) -> None:
        self._publisher = publisher
        self._queue: deque[tuple[str, bytes, str]] = deque()
        self._wakeup = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self.published = 0
        self.failures = 0

    def put(self, subject: str, payload: bytes, *, msg_id: str) -> None:
        self._queue.append((subject, payload, msg_id))
        self._empty.clear()
        self._wakeup.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def run(self) -> None:
        """Publish until cancelled; the owner runs it as one of its tasks."""
        delay = self._retry_initial
        while True:
            if not self._queue:
                self._empty.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            subject, payload, msg_id = self._queue[0]
            try:
                await self._publisher.publish(subject, payload, msg_id=msg_id)
            except StorageError as exc:
                self.failures += 1
                log.warning("event %s not published yet (%s); retrying in %.2fs",
                            msg_id, type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
                continue
            self._queue.popleft()
            self.published += 1
            delay = self._retry_initial

    async def flush(self, timeout: float) -> bool:
        """Wait until every queued event is published; False if the deadline came first."""
        try:
            async with asyncio.timeout(timeout):
                await self._empty.wait()
        except TimeoutError:
            log.error("%d events still unpublished after %.1fs; they are lost with this "
                      "actor", len(self._queue), timeout)
            return False
        return True
