"""Publishing events that must not be lost: JetStream streams with message-id dedup.

`EventPublisher` is what actors use (they never import `nats`): publish bytes on a subject
with a message id, and return once the stream stored it (a JetStream ack) or raise
`StorageError`. The publisher retries nothing itself; the caller retries with the same id and
the stream's duplicate window drops the copies, so an event lands once.

Two implementations: `JetStreamEvents` (every deployment) and `MemoryEvents` (unit tests),
which keeps the same dedup rule so tests of "exactly once" mean something.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError
from switchboard.storage.kv import StorageError

MSG_ID_HEADER = "Nats-Msg-Id"


class EventPublisher(Protocol):
    async def publish(self, subject: str, payload: bytes, *, msg_id: str) -> bool:
        """Store one event; True if new, False if the stream already had `msg_id`."""
        ...


class JetStreamEvents:
    def __init__(self, js: JetStreamContext, *, timeout: float = 2.0) -> None:
        self._js = js
        self._timeout = timeout

    async def publish(self, subject: str, payload: bytes, *, msg_id: str) -> bool:
        try:
            ack = await self._js.publish(subject, payload, timeout=self._timeout,
                                         headers={MSG_ID_HEADER: msg_id})
        except (NatsTimeout, NatsError) as exc:
            raise StorageError(f"event publish on {subject} failed ({type(exc).__name__}): "
                               "JetStream unreachable or the stream has no leader; retry "
                               "with the same message id") from exc
        return not ack.duplicate


async def open_stream(js: JetStreamContext, name: str, subjects: list[str], *,
                      duplicate_window: float = 120.0, max_age: float | None = None,
                      replicas: int = 1) -> None:
    """Create the stream if absent (file storage); an existing one is left as configured."""
    try:
        await js.stream_info(name)
        return
    except NotFoundError:
        pass
    await js.add_stream(StreamConfig(
        name=name, subjects=subjects, duplicate_window=duplicate_window, max_age=max_age,
        num_replicas=replicas, storage=StorageType.FILE))


@dataclass(frozen=True, slots=True)
class StoredEvent:
    subject: str
    payload: bytes
    msg_id: str


class MemoryEvents:
    """In-memory `EventPublisher` with JetStream's dedup rule (no window: ids kept forever).

    `fail_next` makes the next N publishes raise `StorageError`, to test retries.
    """

    def __init__(self) -> None:
        self.events: list[StoredEvent] = []
        self._ids: set[str] = set()
        self.fail_next = 0

    async def publish(self, subject: str, payload: bytes, *, msg_id: str) -> bool:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise StorageError("event publish failed on purpose (MemoryEvents.fail_next)")
        if msg_id in self._ids:
            return False
        self._ids.add(msg_id)
        self.events.append(StoredEvent(subject, payload, msg_id))
        return True

    def decoded(self, type_: Any) -> list[Any]:
        """Every stored payload decoded (msgpack) as `type_`, in order."""
        decoder = msgspec.msgpack.Decoder(type_)
        return [decoder.decode(event.payload) for event in self.events]
