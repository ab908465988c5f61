"""The call actor with a fake media leg: the echo agent greets then echoes, DTMF and caller id
reach the agent, and every way a call ends (caller, agent, API, crash, max duration, RTP
inactivity, a call that cannot start) hangs up, releases the tenant's slot and publishes
call.ended once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from switchboard.actors import ActorSystem, RemoteError
from switchboard.actors.agent import CallControl, CallInfo, Greeting, VoiceActivity
from switchboard.actors.call import CallServices
from switchboard.actors.echo_agent import EchoBrain, GreetingAudio
from switchboard.actors.media_registry import MediaLegRegistry
from switchboard.actors.tenant import TenantActor
from switchboard.actors.transport_local import LocalBus
from switchboard.protocols.audio import AudioChunk, SpeechEnded
from switchboard.protocols.call import (
    CALLS_ID,
    CALLS_KIND,
    AdmitCall,
    Admitted,
    CallSpawned,
    GetUsage,
    HangUp,
    SendDtmf,
    StartCall,
    Transfer,
    Usage,
)
from switchboard.protocols.events import (
    CallAnswered,
    CallDtmf,
    CallEnded,
    CallEvent,
    CallStarted,
)
from switchboard.protocols.tenants import AgentConfig, Limits, NumberRoute, TenantConfig
from switchboard.providers.fakes import FakeVad
from switchboard.storage.events import MemoryEvents
from switchboard.storage.kv_memory import MemoryKeyValue
from switchboard.storage.tenants_file import StaticTenantDirectory
from switchboard.supervisor.calls import CallsSupervisor

from tests.support.harness import actor_system, host_virtual, wait_until
from tests.support.media import FakeMediaLeg, silence, tone

pytestmark = pytest.mark.unit

RATE = 8000
GREETING_WAV = Path(__file__).parents[2] / "configs" / "audio" / "echo-greeting.wav"


@dataclass
class Recorder:
    """A test agent (it stands in for the `flow` brain): records what reaches it."""

    info: CallInfo | None = None
    control: CallControl | None = None
    frames: int = 0
    vad_events: list[object] = field(default_factory=list)
    digits: list[str] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)
    hang_up_on: str = ""     # a DTMF key that makes the agent hang up
    crash_on: str = ""       # a DTMF key that makes the agent raise

    async def on_start(self, call: CallInfo, control: CallControl) -> Greeting | None:
        self.info, self.control = call, control
        return None

    def on_audio(self, frame: AudioChunk, vad: VoiceActivity) -> None:
        self.frames += 1
        if vad.event is not None:
            self.vad_events.append(vad.event)

    def on_dtmf(self, digit: str) -> None:
        self.digits.append(digit)
        if digit == self.crash_on:
            raise RuntimeError("the agent broke")
        if digit == self.hang_up_on and self.control is not None:
            self.control.hangup()

    async def on_end(self, reason: str) -> None:
        self.ended.append(reason)


def tenant(max_call_seconds: float = 3600.0) -> TenantConfig:
    return TenantConfig(
        id="acme",
        numbers=[NumberRoute(number="+15550200", agent="echo")],
        limits=Limits(max_concurrent_calls=5),
        agents=[AgentConfig(id="echo", brain="echo", greeting_audio=str(GREETING_WAV),
                            max_call_seconds=max_call_seconds),
                AgentConfig(id="rec", brain="flow", max_call_seconds=max_call_seconds),
                AgentConfig(id="thinker", brain="llm")],
    )


@dataclass
class Env:
    system: ActorSystem
    legs: MediaLegRegistry
    events: MemoryEvents
    recorders: list[Recorder]

    async def call(self, call_id: str, *, agent: str = "rec", admit: bool = True,
                   register: bool = True, **leg_options: object) -> FakeMediaLeg:
        """Set a call up as a gateway does: admit, register the leg, start the call actor."""
        leg = FakeMediaLeg(call_id, sample_rate=RATE, **leg_options)  # type: ignore[arg-type]
        lease_seconds = 30.0
        if admit:
            admitted = await self.system.ref("tenant", "acme").ask(
                AdmitCall(call_id=call_id, agent_id=agent), reply_type=Admitted)
            lease_seconds = admitted.lease_seconds
        if register:
            self.legs.register(leg)
        spawned = await self.system.ref(CALLS_KIND, CALLS_ID).ask(
            StartCall(call_id=call_id, tenant_id="acme", agent_id=agent, caller=leg.caller,
                      callee=leg.callee, media_node=self.system.node_id,
                      lease_seconds=lease_seconds),
            reply_type=CallSpawned)
        assert spawned.node_id == self.system.node_id
        return leg

    async def active_calls(self) -> int:
        usage = await self.system.ref("tenant", "acme").ask(GetUsage(), reply_type=Usage)
        return usage.active_calls

    def of_call(self, call_id: str) -> list[CallEvent]:
        return [e for e in self.events.decoded(CallEvent) if e.call_id == call_id]

    def ended(self, call_id: str) -> CallEnded | None:
        ends = [e for e in self.of_call(call_id) if isinstance(e, CallEnded)]
        assert len(ends) <= 1
        return ends[0] if ends else None

    async def wait_ended(self, call_id: str) -> CallEnded:
        await wait_until(lambda: self.ended(call_id) is not None, what=f"{call_id} ended")
        ended = self.ended(call_id)
        assert ended is not None
        await wait_until(lambda: self.system.cell(self.system.ref("call", call_id)) is None,
                         what=f"{call_id}'s actor stopped")
        return ended


@pytest.fixture
def config() -> TenantConfig:
    return tenant()


@pytest.fixture
async def env(config: TenantConfig) -> AsyncIterator[Env]:
    directory = StaticTenantDirectory([config])
    recorders: list[Recorder] = []

    def recorder(agent: AgentConfig) -> Recorder:
        recorders.append(Recorder(hang_up_on="#", crash_on="9"))
        return recorders[-1]

    legs, events = MediaLegRegistry(), MemoryEvents()
    services = CallServices(legs=legs, directory=directory, events=events,
                            brains={"echo": EchoBrain(), "flow": recorder},
                            vad=lambda rate: FakeVad(rate))
    async with actor_system(LocalBus()) as system:
        await host_virtual(system, TenantActor.bind(directory, lease_seconds=0.6),
                           leases=MemoryKeyValue(), states=MemoryKeyValue())
        await system.spawn(CallsSupervisor, CALLS_ID, factory=lambda: CallsSupervisor(services),
                           expose=False)
        yield Env(system, legs, events, recorders)


async def test_echo_agent_greets_then_plays_the_callers_speech_back(env: Env) -> None:
    leg = await env.call("c1", agent="echo")
    await asyncio.wait_for(leg.answered.wait(), 2)
    greeting = GreetingAudio.load(GREETING_WAV).at_rate(RATE)
    await wait_until(lambda: leg.played == [greeting], what="greeting played")

    spoken = tone(0.5, RATE)
    leg.say(silence(0.2, RATE) + spoken + silence(0.5, RATE))
    await wait_until(lambda: len(leg.played) == 2, what="speech echoed")
    assert leg.played[1] == spoken  # exactly the speech: no leading or trailing silence

    leg.hang_up()
    ended = await env.wait_ended("c1")
    assert ended.reason == "caller_hangup" and ended.answered
    assert [type(e) for e in env.of_call("c1")] == [CallStarted, CallAnswered, CallEnded]


async def test_the_caller_speaking_over_the_greeting_stops_it(env: Env) -> None:
    leg = await env.call("c1", agent="echo", hold_playout=True)
    await wait_until(lambda: leg.playout_queued > 0, what="greeting queued")
    leg.say(tone(0.2, RATE))
    await wait_until(lambda: leg.cleared != [], what="greeting cleared")
    assert leg.playout_queued == 0 and leg.cleared[0] > 1.0


async def test_caller_id_dialled_number_and_dtmf_reach_the_agent(env: Env) -> None:
    leg = await env.call("c1", caller="+15550177", callee="+15550200")
    leg.press("4")
    leg.press("2")
    leg.say(tone(0.3, RATE) + silence(0.4, RATE))
    (agent,) = env.recorders
    await wait_until(lambda: agent.digits == ["4", "2"] and len(agent.vad_events) == 2)
    assert agent.info is not None
    assert (agent.info.caller, agent.info.callee) == ("+15550177", "+15550200")
    assert agent.info.sample_rate == RATE and agent.info.agent.id == "rec"
    assert "15550177" not in repr(agent.info)  # personal data stays out of logs
    assert isinstance(agent.vad_events[-1], SpeechEnded)
    dtmf = [e for e in env.of_call("c1") if isinstance(e, CallDtmf)]
    assert [(e.seq, e.pii.digit if e.pii else None) for e in dtmf] == [(1, "4"), (2, "2")]
    assert len({e.event_id for e in dtmf}) == 2


async def test_caller_hang_up_releases_the_slot(env: Env) -> None:
    leg = await env.call("c1")
    assert await env.active_calls() == 1
    leg.hang_up()
    ended = await env.wait_ended("c1")
    assert ended.reason == "caller_hangup"
    assert leg.hangups == []  # the caller already left: nothing to hang up
    assert "c1" not in env.legs and await env.active_calls() == 0
    assert env.recorders[0].ended == ["caller_hangup"]


async def test_agent_hang_up_ends_the_call_and_releases_the_slot(env: Env) -> None:
    leg = await env.call("c1")
    leg.press("#")
    ended = await env.wait_ended("c1")
    assert ended.reason == "agent_hangup" and leg.hangups == ["agent_hangup"]
    assert await env.active_calls() == 0


async def test_a_crash_of_the_call_actor_hangs_up_and_releases_the_slot(env: Env) -> None:
    leg = await env.call("c1")
    other = await env.call("c2")
    leg.press("9")  # the agent raises on the media path: the call actor crashes
    ended = await env.wait_ended("c1")
    assert ended.reason == "error" and leg.hangups == ["error"]
    assert await env.active_calls() == 1  # only c1 released; c2 goes on
    other.press("1")
    await wait_until(lambda: env.recorders[1].digits == ["1"])


async def test_a_hang_up_from_the_api_ends_the_call(env: Env) -> None:
    leg = await env.call("c1")
    await env.system.ref("call", "c1").ask(HangUp())
    ended = await env.wait_ended("c1")
    assert ended.reason == "api_hangup" and leg.hangups == ["api_hangup"]
    assert await env.active_calls() == 0


@pytest.mark.parametrize("config", [tenant(max_call_seconds=0.2)])
async def test_the_maximum_call_length_hangs_up(env: Env) -> None:
    leg = await env.call("c1")
    ended = await env.wait_ended("c1")
    assert ended.reason == "max_duration" and leg.hangups == ["max_duration"]
    assert 0.2 <= ended.duration < 2.0
    assert await env.active_calls() == 0


async def test_rtp_inactivity_reported_by_the_leg_ends_the_call(env: Env) -> None:
    leg = await env.call("c1")
    leg.go_quiet()
    ended = await env.wait_ended("c1")
    assert ended.reason == "rtp_timeout" and leg.hangups == ["rtp_timeout"]
    assert await env.active_calls() == 0


async def test_a_long_call_keeps_its_slot_by_renewing_its_lease(env: Env) -> None:
    await env.call("c1")  # the tenant's lease is 0.6 s here: renewed every 0.2 s
    await asyncio.sleep(1.5)
    assert await env.active_calls() == 1  # never lapsed
    await env.system.ref("call", "c1").ask(HangUp())
    await env.wait_ended("c1")
    assert await env.active_calls() == 0


async def test_a_call_without_a_registered_leg_releases_its_slot(env: Env) -> None:
    await env.call("c1", register=False)
    ended = await env.wait_ended("c1")
    assert ended.reason == "error" and not ended.answered
    assert await env.active_calls() == 0


async def test_a_brain_not_available_here_ends_the_call_cleanly(env: Env) -> None:
    leg = await env.call("c1", agent="thinker")
    ended = await env.wait_ended("c1")
    assert ended.reason == "agent_unavailable" and leg.hangups == ["agent_unavailable"]
    assert await env.active_calls() == 0


async def test_transfer_and_dtmf_requests_reach_the_leg(env: Env) -> None:
    leg = await env.call("c1")
    await env.system.ref("call", "c1").ask(SendDtmf(digits="12#"))
    assert leg.dtmf_sent == ["12#"]
    await env.system.ref("call", "c1").ask(Transfer(target="sip:desk@example.com"))
    ended = await env.wait_ended("c1")
    assert leg.transfers == ["sip:desk@example.com"] and ended.reason == "transferred"
    assert await env.active_calls() == 0


async def test_a_leg_that_cannot_transfer_refuses_and_the_call_goes_on(env: Env) -> None:
    leg = await env.call("c1", can_transfer=False)
    with pytest.raises(RemoteError) as caught:
        await env.system.ref("call", "c1").ask(Transfer(target="sip:desk@example.com"))
    assert caught.value.code == "not_supported"
    leg.press("3")
    await wait_until(lambda: env.recorders[0].digits == ["3"])


async def test_events_are_retried_until_jetstream_takes_them(env: Env) -> None:
    env.events.fail_next = 3  # JetStream briefly unreachable
    leg = await env.call("c1")
    leg.hang_up()
    await env.wait_ended("c1")
    assert [type(e) for e in env.of_call("c1")] == [CallStarted, CallAnswered, CallEnded]
