"""Call snapshots on a real JetStream server. A snapshot nobody deletes (its node died) expires
one max_age after its last save, large or small, while saves keep a live call's snapshot; a
snapshot larger than a KV value goes to the object store and comes back whole; a crashed call
actor resumes from JetStream either way; the node keeps calls in `sb_calls`, created with its
configured max_age, and virtual actors' `sb_state` without one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from switchboard.actors.call_state import CallBucket, CallStateStore, snapshot_key
from switchboard.protocols import StateRecord
from switchboard.protocols.call import CALLS_ID, CALLS_KIND, AdmitCall, Admitted, StartCall
from switchboard.protocols.conversation import CallSnapshot, ConversationState
from switchboard.protocols.subjects import CALLS_BUCKET, CALLS_OBJECTS, STATE_BUCKET
from switchboard.storage.jetstream import JetStreamKV, JetStreamObjects, open_kv, open_objects
from switchboard.storage.kv import StorageError
from switchboard.supervisor.nats_server import NatsServer
from switchboard.supervisor.node import Node, NodeConfig

from tests.support.conversation import conversation_env, heard_texts, llm_agent, speech
from tests.support.harness import wait_until
from tests.support.media import FakeMediaLeg
from tests.unit.test_call_resume import GREETING, crashing_brains, registry, restarts

pytestmark = pytest.mark.integration

TTL = 3.0  # the buckets' max_age here: seconds, where a node's is 24 h
CALLS_OBJECTS_STREAM = f"OBJ_{CALLS_OBJECTS}"
GREETING_WAV = Path(__file__).parents[2] / "configs" / "audio" / "echo-greeting.wav"


@dataclass
class Buckets:
    js: JetStreamContext
    kv: JetStreamKV            # the raw records (a pointer for a large snapshot)
    objects: JetStreamObjects
    calls: CallBucket          # what call actors are given


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    try:
        yield client
    finally:
        await client.close()


async def open_buckets(nc: Client, *, ttl: float = TTL, max_value: int | None = None) -> Buckets:
    js = nc.jetstream()
    kv = await open_kv(js, CALLS_BUCKET, ttl=ttl)
    objects = await open_objects(js, CALLS_OBJECTS, ttl=ttl)
    calls = CallBucket(kv, objects, max_value=max_value or nc.max_payload, node_id="test-node")
    return Buckets(js, kv, objects, calls)


@contextlib.asynccontextmanager
async def writing(*stores: CallStateStore) -> AsyncIterator[None]:
    """Run the stores' writer tasks (a call actor owns them in production)."""
    tasks = [asyncio.get_running_loop().create_task(store.run()) for store in stores]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def snapshot(call_id: str, agent_state: bytes = b"", dtmf_seq: int = 0) -> CallSnapshot:
    return CallSnapshot(call_id=call_id, started_at=time.time(), agent_state=agent_state,
                        dtmf_seq=dtmf_seq)


async def save(store: CallStateStore, snap: CallSnapshot) -> None:
    store.save(snap)
    assert await store.flush(10.0), "the snapshot was not written"


async def test_an_unended_calls_snapshot_expires_while_saves_keep_a_live_one(
    nc: Client,
) -> None:
    b = await open_buckets(nc)
    live, orphan, big = (CallStateStore(b.calls, call_id)
                         for call_id in ("live", "orphan", "orphan-big"))
    async with writing(live, orphan, big):
        await save(live, snapshot("live"))
        await save(orphan, snapshot("orphan"))
        await save(big, snapshot("orphan-big", os.urandom(2 * nc.max_payload)))
        saved_at = time.monotonic()
        assert await orphan.load(5) is not None and await big.load(10) is not None

        async def keep_saving() -> None:  # the live call's turns
            while True:
                await save(live, snapshot("live"))
                await asyncio.sleep(0.3)

        async def orphans_gone() -> bool:  # raw reads: never follow a pointer being expired
            return (await b.kv.get(snapshot_key("orphan")) is None
                    and await b.kv.get(snapshot_key("orphan-big")) is None)

        refresher = asyncio.get_running_loop().create_task(keep_saving())
        try:
            await wait_until(orphans_gone, timeout=TTL + 15, what="the orphans expired")
        finally:
            refresher.cancel()
            failed = (await asyncio.gather(refresher, return_exceptions=True))[0]
        if isinstance(failed, Exception):
            raise failed
        assert time.monotonic() - saved_at >= TTL - 0.5  # expired by age, not before
        assert await live.load(5) is not None  # saved as early, but refreshed since
        # The large orphan's object (chunks and metadata) expired with its pointer.
        await wait_until(lambda: stream_messages(b.js, CALLS_OBJECTS_STREAM, 0),
                         timeout=TTL + 15, what="the large snapshot's object expired")

    # With its saves stopped (its node died), the live call's snapshot expires too.
    await wait_until(lambda: absent(b.kv, "live"), timeout=TTL + 15,
                     what="the last snapshot expired")


async def stream_messages(js: JetStreamContext, stream: str, count: int) -> bool:
    return (await js.stream_info(stream)).state.messages == count


async def absent(kv: JetStreamKV, call_id: str) -> bool:
    return await kv.get(snapshot_key(call_id)) is None


async def test_a_snapshot_larger_than_a_kv_value_round_trips_through_the_object_store(
    nc: Client,
) -> None:
    b = await open_buckets(nc, ttl=60)
    store = CallStateStore(b.calls, "big")
    key = snapshot_key("big")
    large = snapshot("big", os.urandom(2 * nc.max_payload))  # twice what a KV value holds
    async with writing(store):
        await save(store, large)  # as a KV value this write fails, and is retried forever
        entry = await b.kv.get(key)
        assert entry is not None and len(entry.value) < 1024
        record = msgspec.msgpack.decode(entry.value, type=StateRecord)
        assert record.object_name == key and record.data == b""
        assert record.node_id == "test-node"
        assert await store.load(10) == large

        small = snapshot("big", dtmf_seq=3)  # fits again: inline, the stale object deleted
        await save(store, small)
        assert await store.load(10) == small
        assert await b.objects.get(key) is None

        await save(store, large)
        await store.delete(10)  # the call ended: pointer and object both go
        assert await b.kv.get(key) is None and await b.objects.get(key) is None
        assert b.calls.objects_written == 2


async def object_absent(objects: JetStreamObjects, call_id: str) -> bool:
    try:  # a read racing the deletion waits for purged chunks: give up, read again
        async with asyncio.timeout(1.0):
            return await objects.get(snapshot_key(call_id)) is None
    except (TimeoutError, StorageError):
        return False


async def saved_conversation(calls: CallBucket, call_id: str) -> ConversationState | None:
    try:  # an object read racing the call's next save (its object replaced) fails: read again
        async with asyncio.timeout(1.0):
            entry = await calls.get(snapshot_key(call_id))
    except (TimeoutError, StorageError):
        return None
    if entry is None:
        return None
    snap = msgspec.msgpack.decode(entry.value, type=CallSnapshot)
    return msgspec.msgpack.decode(snap.agent_state, type=ConversationState)


@pytest.mark.parametrize("max_value", [None, 64], ids=["kv-value", "object-store"])
async def test_a_crashed_call_actor_resumes_from_jetstream(nc: Client,
                                                           max_value: int | None) -> None:
    b = await open_buckets(nc, ttl=60, max_value=max_value)  # 64: every snapshot is "large"

    async def saved(turn: int, *questions: str) -> bool:
        state = await saved_conversation(b.calls, "c1")
        return (state is not None and state.turn == turn
                and [m.content for m in state.messages if m.role == "user"] == list(questions))

    async with conversation_env(registry(), agents=[llm_agent()], brains=crashing_brains,
                                states=b.calls) as env:  # type: ignore[arg-type]
        leg = await env.call("c1", agent="llm")
        await env.greeted(leg, GREETING)
        leg.say(speech("first question"))
        await env.wait_heard(leg, "Answer number 1.")
        await wait_until(lambda: saved(1, "first question"), timeout=5, what="turn 1 saved")
        leg.press("9")  # the call actor crashes
        await wait_until(lambda: restarts(env, "c1") == 1, what="the call actor restarted")
        await env.wait_heard(leg, "Where were we?")
        leg.say(speech("second question"))
        await env.wait_heard(leg, "Answer number 2.")
        await wait_until(lambda: saved(2, "first question", "second question"), timeout=5,
                         what="turn 2 saved, after turn 1's")
        assert heard_texts(leg.played_pcm).count(GREETING) == 1  # resumed, not restarted
        assert (b.calls.objects_written > 0) == (max_value is not None)
        leg.hang_up()
        await wait_until(lambda: env.ended("c1") != [], what="call ended")
        await wait_until(lambda: absent(b.kv, "c1"), what="the snapshot deleted")
        await wait_until(lambda: object_absent(b.objects, "c1"), what="its object deleted")


TENANTS = f"""
version: 1
tenants:
  - id: demo
    numbers: [{{number: "+15550100", agent: demo}}]
    agents: [{{id: demo, brain: echo, greeting_audio: "{GREETING_WAV}"}}]
"""


async def test_the_node_keeps_calls_in_expiring_buckets_apart_from_actor_state(
    nats_server: NatsServer, nc: Client, tmp_path: Path,
) -> None:
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(TENANTS)
    node = Node(NodeConfig(nats_urls=[nats_server.url], node_id="calls-node",
                           tenants_file=tenants, warm_up_models=False, call_state_ttl=600.0))
    await node.start()
    try:
        js = nc.jetstream()
        assert (await js.stream_info(f"KV_{CALLS_BUCKET}")).config.max_age == 600.0
        assert (await js.stream_info(CALLS_OBJECTS_STREAM)).config.max_age == 600.0
        assert not (await js.stream_info(f"KV_{STATE_BUCKET}")).config.max_age

        system = node.system
        assert system is not None
        admitted = await system.ref("tenant", "demo").ask(
            AdmitCall(call_id="n1", agent_id="demo"), reply_type=Admitted)
        leg = FakeMediaLeg("n1", caller="+15550123", callee="+15550100")
        node.legs.register(leg)
        await system.ref(CALLS_KIND, CALLS_ID).ask(StartCall(
            call_id="n1", tenant_id="demo", agent_id="demo", caller=leg.caller,
            callee=leg.callee, media_node=system.node_id, lease_seconds=admitted.lease_seconds))
        calls, states = await open_kv(js, CALLS_BUCKET), await open_kv(js, STATE_BUCKET)
        key = snapshot_key("n1")

        async def answered_saved() -> bool:
            entry = await calls.get(key)
            if entry is None:
                return False
            record = msgspec.msgpack.decode(entry.value, type=StateRecord)
            snap = msgspec.msgpack.decode(record.data, type=CallSnapshot)
            return record.node_id == "calls-node" and snap.answered_at > 0

        await wait_until(answered_saved, timeout=10, what="the answered call saved in sb_calls")
        assert await states.get(key) is None  # not in virtual actors' bucket
        leg.hang_up()
        await wait_until(lambda: absent(calls, "n1"), timeout=10, what="the snapshot deleted")
    finally:
        await node.drain(5.0)
