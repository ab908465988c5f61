"""Node processes on a real NATS server: actors asked across processes, placement by kind,
actor-to-actor calls between nodes, bad messages dead-lettered, and the process exit status
when the root supervisor gives up."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import nats
import pytest
from switchboard.actors.system import ERROR_HEADER
from switchboard.protocols import DeadLetter, ErrorReply, actor_subject
from switchboard.supervisor.nats_server import NatsServer

from tests.fixtures.nodes import COUNTER, NodeProcesses
from tests.support.actors import Count, Crash, Echo, Forward, Get, Incr, Relayed, node_env
from tests.support.client import ActorClient

pytestmark = pytest.mark.integration

RELAY = "tests.support.actors:Relay"


async def test_tell_and_ask_reach_virtual_actors_in_other_processes(
    nats_server: NatsServer, node_processes: NodeProcesses
) -> None:
    # "a" hosts counters, "b" hosts relays: every counter must live on "a", every relay on
    # "b", and a relay on "b" must reach a counter on "a" (actor to actor, process to process).
    await asyncio.gather(
        node_processes.start_node([nats_server.url], node_id="a", region="eu", kinds=[COUNTER]),
        node_processes.start_node([nats_server.url], node_id="b", region="us", kinds=[RELAY]),
    )
    async with ActorClient.connect(nats_server.url, region="us") as client:
        await client.wait_for_nodes({"a", "b"})
        c1 = client.ref("counter", "c1")

        await client.tell(c1, Incr(n=2))  # first message a tell: activates, then delivered
        async with asyncio.timeout(5):
            while (await client.ask(c1, Get(), reply_type=Count)).value != 2:
                await asyncio.sleep(0.05)
        assert await client.ask(c1, Incr(n=3), reply_type=Count) == Count(value=5, node="a")

        # The client prefers its own region ("us" = "b"), but only "a" hosts counters.
        others = await asyncio.gather(*(client.ask(client.ref("counter", f"c{i}"), Incr(),
                                                   reply_type=Count) for i in range(2, 8)))
        assert {count.node for count in others} == {"a"}

        relayed = await client.ask(client.ref("relay", "r1"), Forward(counter_id="c1", n=10),
                                   reply_type=Relayed)
        assert relayed == Relayed(via="b", count=Count(value=15, node="a"))
        assert await client.ask(c1, Get(), reply_type=Count) == Count(value=15, node="a")


async def test_bad_messages_are_dead_lettered_and_the_actor_keeps_answering(
    nats_server: NatsServer, node_processes: NodeProcesses
) -> None:
    await node_processes.start_node([nats_server.url], node_id="a")
    raw = await nats.connect(nats_server.url)
    letters: list[DeadLetter] = []

    async def on_letter(msg: nats.aio.msg.Msg) -> None:
        letters.append(msgspec.msgpack.decode(msg.data, type=DeadLetter))

    try:
        await raw.subscribe("sb.deadletter.counter", cb=on_letter)
        async with ActorClient.connect(nats_server.url) as client:
            await client.wait_for_nodes({"a"}, kind="counter")
            counter = client.ref("counter", "victim")
            assert (await client.ask(counter, Incr(n=7), reply_type=Count)).value == 7

            bad = {
                "garbage": b"\xc1\xff not msgpack at all",
                "unknown tag": msgspec.msgpack.encode({"type": "test.no_such_message"}),
                "not accepted": msgspec.msgpack.encode(Echo(payload=b"hi")),
            }
            for what, data in bad.items():
                reply = await raw.request(actor_subject("counter", "victim"), data, timeout=3)
                assert reply.headers and ERROR_HEADER in reply.headers, what
                error = msgspec.msgpack.decode(reply.data, type=ErrorReply)
                assert error.code == "bad_message", (what, error)
            await raw.publish(actor_subject("counter", "victim"), b"\x00 a tell of garbage")
            await raw.flush()

            async with asyncio.timeout(5):
                while len(letters) < 4:
                    await asyncio.sleep(0.02)
            assert {(d.kind, d.actor_id, d.reason, d.node_id) for d in letters} == {
                ("counter", "victim", "bad_message", "a")}
            assert [d.payload for d in letters] == [*bad.values(), b"\x00 a tell of garbage"]

            # The actor is alive, with its state, on the same node.
            assert await client.ask(counter, Incr(), reply_type=Count) == Count(value=8, node="a")
    finally:
        await raw.close()


async def test_root_supervisor_giving_up_ends_the_node_process_with_status_1(
    nats_server: NatsServer, node_processes: NodeProcesses
) -> None:
    # The root supervisor allows 3 restarts in 5 s (RestartIntensity's default): a child that
    # crashes three times is restarted, a fourth crash makes the root give up, and the process
    # must exit non-zero so that systemd or Kubernetes restart it.
    node = await node_processes.start_node([nats_server.url], node_id="bomb-node",
                                           module="tests.support.bomb_node")
    async with ActorClient.connect(nats_server.url) as client:
        bomb = client.ref("bomb", "bomb")
        for _ in range(3):
            await client.tell(bomb, Crash())
        assert await client.ask(bomb, Echo(payload=b"alive"), reply_type=Echo, timeout=5) \
            == Echo(payload=b"alive")
        assert node.running

        started = time.monotonic()
        await client.tell(bomb, Crash())
        code = await node.wait(timeout=15)
    assert code == 1, node.describe("expected exit status 1")
    assert "root supervisor stopped" in node.output(), node.describe("no root-stopped log")
    print(f"node exited with status {code} {time.monotonic() - started:.2f}s after the crash")


def test_node_processes_are_gone_after_a_failing_test(tmp_path: Path) -> None:
    # The second inner test looks while pytest still runs: the fixture's teardown reaped the
    # node, not the kernel's parent-death signal at the end of the session.
    pid_file = tmp_path / "pid"
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n")
    (tmp_path / "test_inner.py").write_text(
        "import os\n"
        "async def test_node(nats_server, node_processes):\n"
        "    node = await node_processes.start_node([nats_server.url], node_id='doomed')\n"
        "    with open(os.environ['PID_FILE'], 'w') as f:\n"
        "        f.write(str(node.pid))\n"
        "    raise AssertionError('a failing test must not leak its node processes')\n"
        "def test_after():\n"
        "    pid = int(open(os.environ['PID_FILE']).read())\n"
        "    assert not os.path.exists(f'/proc/{pid}'), 'node process left running'\n"
    )
    env = {**node_env(), "PID_FILE": str(pid_file)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.fixtures.nats",
         "-p", "tests.fixtures.nodes", "-p", "no:cacheprovider", str(tmp_path)],
        check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert "1 failed, 1 passed" in result.stdout, result.stdout + result.stderr
    assert "doomed| switchboard: node doomed ready" in result.stdout  # its output is shown
    assert not Path(f"/proc/{pid_file.read_text()}").exists()
