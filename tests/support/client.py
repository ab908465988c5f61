"""An in-test client of a Switchboard cluster: asks virtual actors hosted by node processes.

It is the cluster client of supervisor/client.py (an `ActorSystem` on its own NATS connection
with a `VirtualHost` that reads membership, registers no kind and sends no heartbeat, so nothing
is ever placed on it), plus what tests need: waiting for nodes to join, and asking until an
actor answers again after a fault.

    async with ActorClient.connect(nats_server.url) as client:
        await client.wait_for_nodes({"a", "b"})
        count = await client.ask(client.ref("counter", "c1"), Incr(), reply_type=Count)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from switchboard.actors import ActorError, ActorRef
from switchboard.supervisor.client import Client, connect_client


@dataclass
class Answered:
    """What `ask_until_answered` saw: the reply, when it came, and the errors before it."""

    reply: Any
    elapsed: float
    attempts: int
    errors: list[str] = field(default_factory=list)


class ActorClient:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.transport = client.transport
        self.system = client.system
        self.host = client.host
        self.membership = client.membership

    @classmethod
    @asynccontextmanager
    async def connect(cls, urls: str | Sequence[str], *,
                      region: str = "local") -> AsyncIterator[ActorClient]:
        """`async with ActorClient.connect(url) as client:` (closed on exit). Nodes create
        the buckets: connect once one has started."""
        async with connect_client([urls] if isinstance(urls, str) else list(urls),
                                  region=region, membership_refresh=0.2) as client:
            yield cls(client)

    def ref(self, kind: str, actor_id: str) -> ActorRef:
        return self.system.ref(kind, actor_id)

    async def ask(self, ref: ActorRef, message: Any, *, timeout: float = 5.0,
                  reply_type: Any = None) -> Any:
        return await self.system.ask(ref, message, timeout=timeout, reply_type=reply_type)

    async def tell(self, ref: ActorRef, message: Any) -> None:
        await self.system.tell(ref, message)

    async def wait_for_nodes(self, node_ids: Collection[str], *, kind: str | None = None,
                             timeout: float = 10.0) -> None:
        """Until every node in `node_ids` is in the membership (hosting `kind`, if given)."""
        async with asyncio.timeout(timeout):
            while True:
                nodes = {n.node_id: n for n in (await self.membership.refresh()).values()}
                if all(i in nodes and (kind is None or kind in nodes[i].kinds)
                       for i in node_ids):
                    return
                await asyncio.sleep(0.05)

    async def ask_until_answered(self, ref: ActorRef, message: Any, *, within: float,
                                 every: float = 0.1, attempt_timeout: float = 1.0,
                                 reply_type: Any = None) -> Answered:
        """Ask every `every` seconds until an answer comes (an actor error is one more try);
        fail with every error seen if none came within `within` seconds."""
        start = time.monotonic()
        errors: list[str] = []
        attempts = 0
        while True:
            attempts += 1
            try:
                reply = await self.ask(ref, message, timeout=attempt_timeout,
                                       reply_type=reply_type)
            except (ActorError, TimeoutError) as exc:
                errors.append(f"{time.monotonic() - start:.3f}s {type(exc).__name__}: {exc}")
            else:
                return Answered(reply, time.monotonic() - start, attempts, errors)
            if time.monotonic() - start >= within:
                raise AssertionError(f"{ref} did not answer within {within} s; "
                                     "errors:\n" + "\n".join(errors))
            await asyncio.sleep(every)
