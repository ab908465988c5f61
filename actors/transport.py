"""The small interface the actor runtime needs from a message transport.

Actors never import `nats`: the runtime talks to a `Transport`, implemented over NATS
(`switchboard.actors.transport_nats`) and in-process (`switchboard.actors.transport_local`, for
unit tests). Both pass one shared contract suite (tests/unit/test_transport_contract.py and its
integration twin), so they cannot drift.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol


class TransportError(Exception):
    """The transport could not carry a message (connection closed, server gone)."""


class NoResponders(TransportError):
    """Nobody subscribes to the subject: for an actor, it is not active anywhere."""


class TransportTimeout(TransportError, TimeoutError):
    """No reply before the deadline."""


@dataclass(slots=True)
class Inbound:
    """A message received on a subscription. `reply` is empty for fire-and-forget messages.

    `status` carries the NATS status code of control messages (503 = no responders for a
    message published with this reply subject); it is 0 for ordinary messages.
    """

    subject: str
    data: bytes
    reply: str = ""
    headers: dict[str, str] | None = None
    status: int = 0


@dataclass(slots=True)
class Reply:
    data: bytes
    headers: dict[str, str] | None = None


Handler = Callable[[Inbound], Awaitable[None]]


class Subscription(Protocol):
    async def unsubscribe(self) -> None: ...


class Transport(Protocol):
    async def publish(self, subject: str, data: bytes, *, reply: str = "",
                      headers: dict[str, str] | None = None) -> None: ...

    async def request(self, subject: str, data: bytes, *, timeout: float,
                      headers: dict[str, str] | None = None) -> Reply: ...

    async def subscribe(self, subject: str, handler: Handler, *,
                        queue: str = "") -> Subscription: ...

    def new_inbox(self) -> str: ...

    async def flush(self, timeout: float = 2.0) -> None: ...

    async def close(self) -> None: ...
