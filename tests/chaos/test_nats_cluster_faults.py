"""A three-server NATS JetStream cluster loses a server under running nodes (buckets with three
replicas, every node given all three URLs): actors keep answering, after a blip, with their
state, and the node processes stay up.

The server killed is the one the actor's node is connected to, and it leads the stream of the
state bucket, so writes wait for JetStream to elect a new leader (seconds, not milliseconds).
In the second test it leads every bucket's stream: the election can outlast the lease TTL, so
leases expire and actors are re-activated from their persisted state.
"""

from __future__ import annotations

import asyncio
import json
import time

import nats
import pytest
from switchboard.supervisor.nats_server import NatsCluster

from tests.fixtures.nodes import NodeProcess, NodeProcesses
from tests.support.actors import Count, Get, Incr
from tests.support.client import ActorClient

pytestmark = pytest.mark.chaos

BLIP_WITHIN = 20.0  # generous: a reconnect takes ms, a JetStream leader election 4-9 s
STATE, LEASES, NODES = "KV_sb_state", "KV_sb_leases", "KV_sb_nodes"


async def server_of_connection(cluster: NatsCluster, connection_name: str) -> int:
    """The index of the cluster member that the named client connection is attached to."""
    for index, server in enumerate(cluster.servers):
        connz = await server.monitor("connz")
        if any(c.get("name") == connection_name for c in connz.get("connections") or []):
            return index
    raise AssertionError(f"no cluster member has a connection named {connection_name!r}")


async def move_stream_leader(client: ActorClient, stream: str, server_name: str) -> None:
    """Make `server_name` the leader of `stream` (a leader step-down with a preference)."""
    nc = client.transport.nc
    js = nc.jetstream()
    async with asyncio.timeout(20):
        while (await js.stream_info(stream)).cluster.leader != server_name:  # type: ignore[union-attr]
            request = {"placement": {"preferred": server_name}}
            try:
                await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}",
                                 json.dumps(request).encode(), timeout=2)
            except nats.errors.TimeoutError:
                pass  # an election was under way: look again
            await asyncio.sleep(0.2)


async def kill_the_server_under(cluster: NatsCluster, client: ActorClient, host: str,
                                leads: tuple[str, ...]) -> tuple[int, float]:
    """Kill the server node `host` is connected to, once it leads the streams in `leads`
    (and no other): return its index and the time of the kill."""
    victim = await server_of_connection(cluster, f"switchboard-node-{host}")
    elsewhere = cluster[(victim + 1) % len(cluster.servers)].name
    for stream in (STATE, LEASES, NODES):
        await move_stream_leader(client, stream,
                                 cluster[victim].name if stream in leads else elsewhere)
    killed_at = time.monotonic()
    await cluster.kill(victim)
    return victim, killed_at


async def start(cluster: NatsCluster, node_processes: NodeProcesses) -> dict[str, NodeProcess]:
    a, b = await node_processes.start_nodes(cluster.urls, ("a", "eu"), ("b", "eu"), replicas=3)
    return {"a": a, "b": b}


async def test_losing_the_server_under_the_node_and_the_state_leader_keeps_actors_answering(
    nats_cluster: NatsCluster, node_processes: NodeProcesses
) -> None:
    nodes = await start(nats_cluster, node_processes)
    async with ActorClient.connect(nats_cluster.urls) as client:
        await client.wait_for_nodes(nodes, kind="counter")
        counter = client.ref("counter", "steady")
        for _ in range(3):
            count = await client.ask(counter, Incr(), reply_type=Count)
        assert count.value == 3

        victim, killed_at = await kill_the_server_under(nats_cluster, client, count.node,
                                                        leads=(STATE,))
        read = await client.ask_until_answered(counter, Get(), within=BLIP_WITHIN,
                                               reply_type=Count)
        read_after = time.monotonic() - killed_at
        assert read.reply.value == 3
        # The blip ends with the first increment answered: it was persisted, so the state
        # stream has a leader again. A failed attempt may have been persisted all the same
        # (its reply lost): at least once, never lost.
        wrote = await client.ask_until_answered(counter, Incr(), within=BLIP_WITHIN,
                                                reply_type=Count)
        print(f"\nNATS server {victim} (under node {count.node}, leading the state stream) "
              f"killed: reads answered after {read_after:.3f} s ({read.attempts} attempts), "
              f"writes after {time.monotonic() - killed_at:.3f} s ({wrote.attempts} attempts; "
              f"errors: {read.errors + wrote.errors})")
        value = wrote.reply.value
        assert 4 <= value < 4 + wrote.attempts

        # Past the blip every ask succeeds, across lease renewals (every lease_ttl / 3 = 2 s)
        # and heartbeats on the surviving servers.
        values = []
        for _ in range(12):
            values.append((await client.ask(counter, Incr(), reply_type=Count)).value)
            await asyncio.sleep(0.25)
        assert values == list(range(value + 1, value + 13))
        assert (await client.ask(counter, Get(), reply_type=Count)).value == value + 12
    for node in nodes.values():
        assert node.running, node.describe("a node exited when one NATS server of three died")


async def test_losing_the_leader_of_every_bucket_brings_actors_back_with_their_state(
    nats_cluster: NatsCluster, node_processes: NodeProcesses
) -> None:
    nodes = await start(nats_cluster, node_processes)
    async with ActorClient.connect(nats_cluster.urls) as client:
        await client.wait_for_nodes(nodes, kind="counter")
        counters = [client.ref("counter", f"all{i}") for i in range(4)]
        hosts = set()
        for ref in counters:
            for _ in range(3):
                count = await client.ask(ref, Incr(), reply_type=Count)
            hosts.add(count.node)
        victim, killed_at = await kill_the_server_under(nats_cluster, client, count.node,
                                                        leads=(STATE, LEASES, NODES))
        # Each counter takes writes again; each had 3, and a failed attempt may have been
        # persisted all the same (at least once, never lost).
        for ref in counters:
            wrote = await client.ask_until_answered(ref, Incr(), within=BLIP_WITHIN,
                                                    reply_type=Count)
            assert 4 <= wrote.reply.value < 4 + wrote.attempts, (ref, wrote)
        print(f"\nNATS server {victim} (leading every bucket) killed: {len(counters)} counters "
              f"on {sorted(hosts)} written again after {time.monotonic() - killed_at:.3f} s")

        # Then they stay: once leases expired during the election are seen as lost (at the
        # next renewal, within 2 s) and their actors re-activated, values only move by one.
        await asyncio.sleep(2.5)
        for ref in counters:
            before = await client.ask_until_answered(ref, Get(), within=BLIP_WITHIN,
                                                     reply_type=Count)
            after = await client.ask(ref, Incr(), reply_type=Count)
            assert after.value == before.reply.value + 1
    for node in nodes.values():
        assert node.running, node.describe("a node exited when one NATS server of three died")
