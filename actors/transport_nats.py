"""The NATS implementation of `Transport` (nats-py core NATS: pub/sub and request/reply).

This is the only module of `actors/` that imports `nats`. Requests use nats-py's own
request multiplexer (one wildcard inbox subscription per connection), so an actor `ask` costs
what a raw nats-py request costs plus the actor layer, which is what bench/actors.py measures.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from switchboard.actors.transport import (
    Handler,
    Inbound,
    NoResponders,
    Reply,
    TransportError,
    TransportTimeout,
)

_STATUS = "Status"
log = logging.getLogger("switchboard.transport")


async def _log_error(exc: Exception) -> None:
    # nats-py's default handler logs a full traceback for every failed reconnect attempt.
    log.warning("NATS: %s", exc or type(exc).__name__)


def _disconnect_logger(connection: list[Client]) -> Callable[[], Awaitable[None]]:
    async def log_disconnected() -> None:
        # nats-py calls this on a deliberate close too (drain at shutdown): stay quiet then.
        if not (connection and connection[0].is_closed):
            log.warning("NATS: disconnected; reconnecting")
    return log_disconnected


async def _log_reconnected() -> None:
    log.info("NATS: reconnected")


class _NatsSubscription:
    def __init__(self, sub: Any) -> None:
        self._sub = sub

    async def unsubscribe(self) -> None:
        try:
            await self._sub.unsubscribe()
        except ConnectionClosedError:
            pass  # the server already dropped every subscription of a closed connection


class NatsTransport:
    def __init__(self, nc: Client, *, owns_connection: bool = False) -> None:
        self.nc = nc
        self._owns = owns_connection

    @classmethod
    async def connect(cls, servers: list[str] | str, *, name: str = "switchboard",
                      **options: Any) -> NatsTransport:
        """Connect with reconnects that never give up: a node outlives NATS server restarts."""
        options.setdefault("max_reconnect_attempts", -1)
        options.setdefault("reconnect_time_wait", 0.25)
        options.setdefault("connect_timeout", 2)
        options.setdefault("error_cb", _log_error)
        connection: list[Client] = []
        options.setdefault("disconnected_cb", _disconnect_logger(connection))
        options.setdefault("reconnected_cb", _log_reconnected)
        nc = await nats.connect(servers, name=name, **options)
        connection.append(nc)
        return cls(nc, owns_connection=True)

    async def publish(self, subject: str, data: bytes, *, reply: str = "",
                      headers: dict[str, str] | None = None) -> None:
        try:
            await self.nc.publish(subject, data, reply=reply, headers=headers)
        except ConnectionClosedError as exc:
            raise TransportError(f"NATS connection closed publishing to {subject}") from exc

    async def request(self, subject: str, data: bytes, *, timeout: float,
                      headers: dict[str, str] | None = None) -> Reply:
        try:
            msg = await self.nc.request(subject, data, timeout=timeout, headers=headers)
        except NoRespondersError:
            raise NoResponders(f"no responders on {subject}") from None
        except NatsTimeout:
            raise TransportTimeout(f"no reply on {subject} within {timeout:.3f}s") from None
        except ConnectionClosedError as exc:
            raise TransportError(f"NATS connection closed requesting {subject}") from exc
        return Reply(msg.data, msg.headers)

    async def subscribe(self, subject: str, handler: Handler, *,
                        queue: str = "") -> _NatsSubscription:
        async def on_msg(msg: Msg) -> None:
            hdrs = msg.headers
            status = 0
            if hdrs and _STATUS in hdrs:
                status = int(hdrs[_STATUS][:3] or 0)
            try:
                await handler(Inbound(msg.subject, msg.data, msg.reply, hdrs, status))
            except Exception as exc:  # noqa: BLE001 - a failing handler keeps its subscription
                # Handled here rather than by nats-py's error callback, so the subscription's
                # delivery task goes straight on to the next message. Type only: the message
                # text may carry personal data.
                log.error("handler for a subscription failed (%s)", type(exc).__name__)

        sub = await self.nc.subscribe(subject, queue=queue, cb=on_msg,
                                      pending_msgs_limit=1_000_000)
        return _NatsSubscription(sub)

    def new_inbox(self) -> str:
        return self.nc.new_inbox()

    async def flush(self, timeout: float = 2.0) -> None:
        await self.nc.flush(timeout=max(1, round(timeout)))

    async def close(self) -> None:
        if self._owns and not self.nc.is_closed:
            await self.nc.drain()
