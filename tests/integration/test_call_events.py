"""A call's lifecycle events on a real JetStream server: call.started, call.answered, each
DTMF key and call.ended land in the SB_CALL_EVENTS stream once per event id, on the subject
that names tenant, call and event, and a re-publish of the same ids (a retry after a lost
ack, or a restarted actor) adds nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import nats
import pytest
from nats.js import JetStreamContext
from switchboard.actors.call import CallServices
from switchboard.actors.echo_agent import EchoBrain
from switchboard.actors.media_registry import MediaLegRegistry
from switchboard.actors.tenant import TenantActor
from switchboard.protocols.call import CALLS_ID, CALLS_KIND, AdmitCall, Admitted, StartCall
from switchboard.protocols.events import (
    CALL_EVENTS_DUPLICATE_WINDOW,
    CALL_EVENTS_STREAM,
    CALL_EVENTS_SUBJECTS,
    CallAnswered,
    CallDtmf,
    CallEnded,
    CallEvent,
    CallStarted,
)
from switchboard.protocols.tenants import AgentConfig, NumberRoute, TenantConfig
from switchboard.providers.fakes import FakeVad
from switchboard.storage.events import MSG_ID_HEADER, JetStreamEvents, open_stream
from switchboard.storage.kv_memory import MemoryKeyValue
from switchboard.storage.tenants_file import StaticTenantDirectory
from switchboard.supervisor.calls import CallsSupervisor
from switchboard.supervisor.nats_server import NatsServer

from tests.support.harness import actor_system, host_virtual, wait_until
from tests.support.media import FakeMediaLeg, silence, tone

pytestmark = pytest.mark.integration

GREETING_WAV = Path(__file__).parents[2] / "configs" / "audio" / "echo-greeting.wav"
DIRECTORY = StaticTenantDirectory([TenantConfig(
    id="demo", numbers=[NumberRoute(number="+15550100", agent="demo")],
    agents=[AgentConfig(id="demo", brain="echo", greeting_audio=str(GREETING_WAV))])])


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_server.url)
    try:
        context = nc.jetstream()
        await open_stream(context, CALL_EVENTS_STREAM, [CALL_EVENTS_SUBJECTS],
                          duplicate_window=CALL_EVENTS_DUPLICATE_WINDOW)
        yield context
    finally:
        await nc.close()


async def stored(js: JetStreamContext) -> list[tuple[str, str, CallEvent]]:
    """(subject, message id, event) of every message in the stream, in order."""
    info = await js.stream_info(CALL_EVENTS_STREAM)
    decoder = msgspec.msgpack.Decoder(CallEvent)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(CALL_EVENTS_STREAM, seq)
        out.append((msg.subject, (msg.headers or {}).get(MSG_ID_HEADER, ""),
                    decoder.decode(msg.data or b"")))
    return out


async def test_lifecycle_events_land_once_per_event_id(js: JetStreamContext) -> None:
    publisher = JetStreamEvents(js)
    legs = MediaLegRegistry()
    services = CallServices(legs=legs, directory=DIRECTORY, events=publisher,
                            brains={"echo": EchoBrain()}, vad=lambda rate: FakeVad(rate))
    async with actor_system() as system:
        await host_virtual(system, TenantActor.bind(DIRECTORY), leases=MemoryKeyValue(),
                           states=MemoryKeyValue())
        await system.spawn(CallsSupervisor, CALLS_ID, factory=lambda: CallsSupervisor(services),
                           expose=False)
        admitted = await system.ref("tenant", "demo").ask(
            AdmitCall(call_id="call-1", agent_id="demo"), reply_type=Admitted)
        leg = FakeMediaLeg("call-1", caller="+15550123", callee="+15550100")
        legs.register(leg)
        await system.ref(CALLS_KIND, CALLS_ID).ask(StartCall(
            call_id="call-1", tenant_id="demo", agent_id="demo", caller=leg.caller,
            callee=leg.callee, media_node=system.node_id,
            lease_seconds=admitted.lease_seconds))
        leg.press("1")
        leg.say(tone(0.3, 8000) + silence(0.4, 8000))
        leg.press("2")
        await wait_until(lambda: len(leg.played) == 2, what="greeting and echo played")
        leg.hang_up()
        await wait_until(lambda: system.cell(system.ref("call", "call-1")) is None,
                         what="call actor stopped")

    events = await stored(js)
    assert [type(e) for _, _, e in events] == [CallStarted, CallAnswered, CallDtmf, CallDtmf,
                                                CallEnded]
    ids = [msg_id for _, msg_id, _ in events]
    assert ids == [e.event_id for _, _, e in events]  # the JetStream message id is the event id
    assert ids == ["call-1.started", "call-1.answered", "call-1.dtmf.1", "call-1.dtmf.2",
                   "call-1.ended"]
    assert [subject for subject, _, _ in events] == [
        f"sb.events.call.demo.call-1.{name}"
        for name in ("started", "answered", "dtmf", "dtmf", "ended")]
    started, ended = events[0][2], events[-1][2]
    assert isinstance(started, CallStarted) and started.pii is not None
    assert started.pii.caller == "+15550123"  # personal data only under `pii`
    assert isinstance(ended, CallEnded) and ended.reason == "caller_hangup" and ended.answered

    # The same events again, as after a lost ack or a restarted call actor: all dropped.
    for subject, msg_id, event in events:
        new = await publisher.publish(subject, msgspec.msgpack.encode(event), msg_id=msg_id)
        assert new is False
    assert len(await stored(js)) == len(events)


async def test_the_stream_is_created_once_with_its_duplicate_window(
    js: JetStreamContext,
) -> None:
    await open_stream(js, CALL_EVENTS_STREAM, [CALL_EVENTS_SUBJECTS])  # again: left as it is
    info = await js.stream_info(CALL_EVENTS_STREAM)
    assert info.config.subjects == [CALL_EVENTS_SUBJECTS]
    assert info.config.duplicate_window == pytest.approx(CALL_EVENTS_DUPLICATE_WINDOW)
