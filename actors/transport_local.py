"""An in-process `Transport` with NATS semantics, for unit tests and single-process use.

It mirrors what the actor runtime relies on from NATS: subject wildcards (`*`, `>`), queue
groups (one member per group gets each message), request/reply with a deadline, and a
`NoResponders` answer (status 503 to the reply subject) when nobody listens.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import dataclass, field

from switchboard.actors.transport import (
    Handler,
    Inbound,
    NoResponders,
    Reply,
    TransportError,
    TransportTimeout,
)


def subject_matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)


@dataclass(eq=False)
class _LocalSubscription:
    bus: LocalBus
    subject: str
    handler: Handler
    queue: str
    active: bool = True

    async def unsubscribe(self) -> None:
        self.active = False
        self.bus.subs.discard(self)


@dataclass
class LocalBus:
    """What a NATS server is to connections: shared by every `LocalTransport` on it."""

    subs: set[_LocalSubscription] = field(default_factory=set)

    def deliver(self, msg: Inbound) -> int:
        plain: list[_LocalSubscription] = []
        groups: dict[str, list[_LocalSubscription]] = {}
        for sub in list(self.subs):
            if sub.active and subject_matches(sub.subject, msg.subject):
                if sub.queue:
                    groups.setdefault(sub.queue, []).append(sub)
                else:
                    plain.append(sub)
        targets = plain + [random.choice(members) for members in groups.values()]
        loop = asyncio.get_running_loop()
        for sub in targets:
            copy = Inbound(msg.subject, msg.data, msg.reply,
                           dict(msg.headers) if msg.headers else None, msg.status)
            loop.call_soon(_run_handler, sub, copy)
        return len(targets)


_tasks: set[asyncio.Task[None]] = set()


def _run_handler(sub: _LocalSubscription, msg: Inbound) -> None:
    # Like a NATS client's delivery task: the handler runs on its own; its errors are the
    # subscriber's to handle, so they must not kill the bus. The task set owns the tasks.
    task: asyncio.Task[None] = asyncio.ensure_future(sub.handler(msg))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


class LocalTransport:
    _ids = itertools.count(1)

    def __init__(self, bus: LocalBus) -> None:
        self.bus = bus
        self._name = f"local{next(self._ids)}"
        self._inbox_seq = itertools.count(1)
        self._subs: list[_LocalSubscription] = []
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise TransportError("transport closed")

    async def publish(self, subject: str, data: bytes, *, reply: str = "",
                      headers: dict[str, str] | None = None) -> None:
        self._check()
        delivered = self.bus.deliver(Inbound(subject, data, reply, headers))
        if not delivered and reply:
            self.bus.deliver(Inbound(reply, b"", "", None, 503))

    async def request(self, subject: str, data: bytes, *, timeout: float,
                      headers: dict[str, str] | None = None) -> Reply:
        self._check()
        inbox = self.new_inbox()
        fut: asyncio.Future[Inbound] = asyncio.get_running_loop().create_future()

        async def on_reply(msg: Inbound) -> None:
            if not fut.done():
                fut.set_result(msg)

        sub = _LocalSubscription(self.bus, inbox, on_reply, "")
        self.bus.subs.add(sub)
        try:
            if not self.bus.deliver(Inbound(subject, data, inbox, headers)):
                raise NoResponders(f"no responders on {subject}")
            try:
                async with asyncio.timeout(timeout):
                    msg = await fut
            except TimeoutError:
                raise TransportTimeout(f"no reply on {subject} within {timeout:.3f}s") from None
            if msg.status == 503:
                raise NoResponders(f"no responders on {subject}")
            return Reply(msg.data, msg.headers)
        finally:
            await sub.unsubscribe()

    async def subscribe(self, subject: str, handler: Handler, *,
                        queue: str = "") -> _LocalSubscription:
        self._check()
        sub = _LocalSubscription(self.bus, subject, handler, queue)
        self.bus.subs.add(sub)
        self._subs.append(sub)
        return sub

    def new_inbox(self) -> str:
        return f"_INBOX.{self._name}.{next(self._inbox_seq)}"

    async def flush(self, timeout: float = 2.0) -> None:
        await asyncio.sleep(0)

    async def close(self) -> None:
        self._closed = True
        for sub in self._subs:
            await sub.unsubscribe()
