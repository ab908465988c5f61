"""Node processes killed (SIGKILL) or stopped (Ctrl-C) under their virtual actors: the actors
answer again from the surviving node with their persisted state, and asks caught on the dead
node fail at once with ActorDeadError instead of waiting for their deadline."""

from __future__ import annotations

import asyncio
import time

import pytest
from switchboard.actors import ActorDeadError
from switchboard.supervisor.nats_server import NatsServer

from tests.fixtures.nodes import COUNTER, NodeProcess, NodeProcesses
from tests.support.actors import Count, Get, Hold, Incr
from tests.support.client import ActorClient

pytestmark = pytest.mark.chaos

SLOW_COUNTER = "tests.support.actors:SlowCounter"
BACK_WITHIN = 10.0  # generous; the budget is 3 s and bench/actors.py reports the figure


async def two_nodes(node_processes: NodeProcesses, url: str,
                    kinds: list[str]) -> dict[str, NodeProcess]:
    a, b = await node_processes.start_nodes([url], ("a", "eu"), ("b", "eu"), kinds=kinds)
    return {"a": a, "b": b}


async def test_sigkill_brings_the_counter_back_elsewhere_with_its_state(
    nats_server: NatsServer, node_processes: NodeProcesses
) -> None:
    nodes = await two_nodes(node_processes, nats_server.url, [COUNTER])
    async with ActorClient.connect(nats_server.url) as client:
        await client.wait_for_nodes(nodes, kind="counter")
        counter = client.ref("counter", "survivor")
        for _ in range(5):
            count = await client.ask(counter, Incr(), reply_type=Count)
        assert count.value == 5
        host = count.node
        other = next(n for n in nodes if n != host)

        killed_at = time.monotonic()
        await nodes[host].kill()
        answered = await client.ask_until_answered(counter, Get(), within=BACK_WITHIN,
                                                   every=0.1, reply_type=Count)
        back_after = time.monotonic() - killed_at
        print(f"\nreactivation after SIGKILL: {back_after:.3f} s "
              f"({answered.attempts} attempts; errors: {answered.errors})")
        assert answered.reply == Count(value=5, node=other)
        assert await client.ask(counter, Incr(), reply_type=Count) == Count(value=6, node=other)
    assert nodes[other].running


async def test_ask_pending_on_a_killed_node_fails_fast_with_actor_dead(
    nats_server: NatsServer, node_processes: NodeProcesses
) -> None:
    nodes = await two_nodes(node_processes, nats_server.url, [SLOW_COUNTER])
    async with ActorClient.connect(nats_server.url) as client:
        await client.wait_for_nodes(nodes, kind="slow_counter")
        counter = client.ref("slow_counter", "busy")
        count = await client.ask(counter, Incr(n=3), reply_type=Count)
        host = count.node

        pending = asyncio.create_task(client.ask(counter, Hold(seconds=120), timeout=60))
        try:
            await asyncio.sleep(0.5)  # the actor is inside its handler now
            assert not pending.done()
            killed_at = time.monotonic()
            await nodes[host].kill()
            with pytest.raises(ActorDeadError):
                await asyncio.wait_for(asyncio.shield(pending), 10)
            failed_after = time.monotonic() - killed_at
        finally:
            pending.cancel()
        print(f"\npending ask (60 s deadline) failed {failed_after:.3f} s after SIGKILL")
        assert failed_after < 5.0

        answered = await client.ask_until_answered(counter, Get(), within=BACK_WITHIN,
                                                   reply_type=Count)
        assert answered.reply.value == 3 and answered.reply.node != host


async def test_ctrl_c_drains_exits_0_and_hands_the_counter_over(
    nats_server: NatsServer, node_processes: NodeProcesses
) -> None:
    nodes = await two_nodes(node_processes, nats_server.url, [COUNTER])
    async with ActorClient.connect(nats_server.url) as client:
        await client.wait_for_nodes(nodes, kind="counter")
        counter = client.ref("counter", "mover")
        for _ in range(4):
            count = await client.ask(counter, Incr(), reply_type=Count)
        host = count.node
        other = next(n for n in nodes if n != host)

        started = time.monotonic()
        assert await nodes[host].stop() == 0
        print(f"\ndrain and exit took {time.monotonic() - started:.3f} s")
        assert "stopped" in nodes[host].output(last=5)

        # A drained node released its lease and left the membership: one ask suffices.
        assert await client.ask(counter, Get(), reply_type=Count) == Count(value=4, node=other)
        assert await client.ask(counter, Incr(), reply_type=Count) == Count(value=5, node=other)
