"""A client of the cluster: an actor system on its own NATS connection that hosts nothing.

Gateways, tools, tests and benchmarks use it to reach actors by ref from outside a node:
it reads membership to place and activate virtual actors, exactly as a node does.

    async with connect_client(["nats://127.0.0.1:4222"]) as client:
        count = await client.ref("counter", "c1").ask(Get(), reply_type=Count)
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

from switchboard.actors import ActorRef, ActorSystem
from switchboard.actors.membership import Membership
from switchboard.actors.transport_nats import NatsTransport
from switchboard.actors.virtual import VirtualHost
from switchboard.protocols.subjects import (
    LEASE_TTL,
    LEASES_BUCKET,
    NODE_TTL,
    NODES_BUCKET,
    STATE_BUCKET,
)
from switchboard.storage.jetstream import open_kv


@dataclass
class Client:
    system: ActorSystem
    host: VirtualHost
    membership: Membership
    transport: NatsTransport

    def ref(self, kind: str, actor_id: str) -> ActorRef:
        return self.system.ref(kind, actor_id)


@contextlib.asynccontextmanager
async def connect_client(urls: list[str], *, region: str = "local",
                         node_ttl: float = NODE_TTL, lease_ttl: float = LEASE_TTL,
                         membership_refresh: float = 0.5) -> AsyncIterator[Client]:
    transport = await NatsTransport.connect(urls, name="switchboard-client")
    try:
        js = transport.nc.jetstream()
        system = ActorSystem(transport, node_id=f"client-{secrets.token_hex(4)}", region=region)
        await system.start()
        membership = Membership(await open_kv(js, NODES_BUCKET, ttl=node_ttl),
                                refresh_interval=membership_refresh)
        await membership.refresh()
        system.tasks.spawn(membership.run(), name="membership")
        host = VirtualHost(system, leases=await open_kv(js, LEASES_BUCKET, ttl=lease_ttl),
                           states=await open_kv(js, STATE_BUCKET), membership=membership,
                           lease_ttl=lease_ttl)
        try:
            yield Client(system, host, membership, transport)
        finally:
            await system.shutdown()
    finally:
        await transport.close()
