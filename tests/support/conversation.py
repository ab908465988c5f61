"""Test support for conversations: a node-like environment with fake (or real) providers, a
real-time media leg, and providers that record cancellation.

    async with conversation_env(registry) as env:      # calls supervisor, tenant, pools, KV
        leg = await env.call("c1", agent="flow")        # admitted, registered, started
        leg.say(speech("what are your opening hours"))  # barcoded audio the fake STT reads
        await env.wait_heard(leg, "We're open")         # the fake TTS barcodes what it says

`RealtimeLeg` paces caller frames at 20 ms (silence between what the test says) and plays the
agent's audio out in real time, so barge-in, "what the caller heard" and dead air are
measured on the wall clock as a caller lives them.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from switchboard.actors import ActorSystem
from switchboard.actors.agent import AgentFactory
from switchboard.actors.call import CallServices
from switchboard.actors.call_state import snapshot_key
from switchboard.actors.conversation import ConversationBrain
from switchboard.actors.conversation_services import ConversationServices
from switchboard.actors.failover import FailoverSettings
from switchboard.actors.media_registry import MediaLegRegistry
from switchboard.actors.phrases import PhraseBook
from switchboard.actors.pool import ProviderPool
from switchboard.actors.pool_client import PoolClient
from switchboard.actors.provider_registry import ProviderRegistry
from switchboard.actors.tenant import TenantActor
from switchboard.actors.transport_local import LocalBus
from switchboard.actors.webhook import WebhookClient
from switchboard.protocols.audio import AudioChunk, AudioFormat, SynthesisChunk, Transcript
from switchboard.protocols.call import (
    CALLS_ID,
    CALLS_KIND,
    AdmitCall,
    Admitted,
    CallSpawned,
    GetUsage,
    StartCall,
    Usage,
)
from switchboard.protocols.conversation import CallSnapshot, ConversationState
from switchboard.protocols.events import CallEnded, CallEvent, CallTurn
from switchboard.protocols.llm import ChatMessage, LlmEvent, ToolSpec
from switchboard.protocols.media import LegClosed
from switchboard.protocols.pools import PoolLimits
from switchboard.protocols.tenants import (
    AgentConfig,
    Limits,
    NumberRoute,
    TenantConfig,
    dec_hook,
)
from switchboard.providers.base import LanguageModel, SpeechToText, TextToSpeech, Vad
from switchboard.providers.fakes import (
    FakeTextToSpeech,
    FakeTiming,
    FakeVad,
    decode_speech,
    encode_speech,
)
from switchboard.providers.tts.segment import sentence_chunks, split_sentences
from switchboard.storage.events import MemoryEvents
from switchboard.storage.kv_memory import MemoryKeyValue
from switchboard.storage.tenants_file import StaticTenantDirectory
from switchboard.supervisor.calls import CallsSupervisor

from tests.support.harness import actor_system, host_virtual, wait_until
from tests.support.media import FRAME, FakeMediaLeg, silence

RATE = 8000
DEMO_FLOW = Path(__file__).parents[2] / "configs" / "flows" / "demo.yaml"


def speech(text: str, rate: int = RATE, *, pause: float = 0.6) -> bytes:
    """A caller saying `text` (barcoded for the fake STT, 30 ms a character), then `pause`
    seconds of silence."""
    return encode_speech(text, rate, ms_per_char=30) + silence(pause, rate)


def heard_texts(pcm: bytes) -> list[str]:
    """The sentences the fake TTS put into agent audio, in order."""
    return decode_speech(pcm)


class QuickTextToSpeech(FakeTextToSpeech):
    """The fake TTS, talking fast (`ms_per_char`, 60 in the original) so tests do not wait
    seconds per sentence; still barcoded for `heard_texts`."""

    def __init__(self, *, sample_rate: int = RATE, timing: FakeTiming | None = None,
                 ms_per_char: float = 8.0) -> None:
        super().__init__(sample_rate=sample_rate, timing=timing or FakeTiming())
        self._ms_per_char = ms_per_char

    async def synthesize(self, text: str) -> AsyncIterator[SynthesisChunk]:
        self.requests.append(text)
        rate, index, timestamp, spoken = self.format.sample_rate, 0, 0.0, 0
        for sentence, end in split_sentences(text):
            pcm = encode_speech(sentence, rate, ms_per_char=self._ms_per_char)
            chunks = sentence_chunks(pcm, rate, start=timestamp, spoken=spoken, end=end)
            for chunk in chunks:
                await self._timing.before(index, "fake-tts")
                index += 1
                yield chunk
            timestamp, spoken = chunks[-1].timestamp + chunks[-1].duration, end


# -- providers that record what happened to their streams ---------------------------------


@dataclass
class StreamLog:
    started: int = 0
    finished: int = 0
    cancelled: int = 0
    failed: int = 0
    finished_at: list[float] = field(default_factory=list)


class RecordingLlm:
    def __init__(self, inner: LanguageModel) -> None:
        self.inner = inner
        self.log = StreamLog()

    async def stream(self, messages: Sequence[ChatMessage],
                     tools: Sequence[ToolSpec] = ()) -> AsyncIterator[LlmEvent]:
        self.log.started += 1
        try:
            async for event in self.inner.stream(messages, tools):
                yield event
        except (GeneratorExit, asyncio.CancelledError):
            self.log.cancelled += 1
            raise
        except Exception:
            self.log.failed += 1
            raise
        self.log.finished += 1
        self.log.finished_at.append(time.monotonic())


class RecordingTts:
    def __init__(self, inner: TextToSpeech) -> None:
        self.inner = inner
        self.log = StreamLog()

    @property
    def format(self) -> AudioFormat:
        return self.inner.format

    async def synthesize(self, text: str) -> AsyncIterator[SynthesisChunk]:
        self.log.started += 1
        try:
            async for chunk in self.inner.synthesize(text):
                yield chunk
        except (GeneratorExit, asyncio.CancelledError):
            self.log.cancelled += 1
            raise
        except Exception:
            self.log.failed += 1
            raise
        self.log.finished += 1


class RecordingStt:
    def __init__(self, inner: SpeechToText) -> None:
        self.inner = inner
        self.finals: list[str] = []

    async def stream(self, audio: AsyncIterator[AudioChunk]) -> AsyncIterator[Transcript]:
        async for transcript in self.inner.stream(audio):
            if transcript.is_final:
                self.finals.append(transcript.text)
            yield transcript


# -- a media leg that lives in real time ----------------------------------------------------


class RealtimeLeg(FakeMediaLeg):
    """Caller frames every 20 ms (silence unless the test `say`s something); agent audio
    plays out in real time, so `playout_queued` drains and `heard_pcm` is what the caller
    heard. `frames_sent` counts caller frames; `cleared_after` notes it at each clear."""

    def __init__(self, call_id: str, **options: Any) -> None:
        super().__init__(call_id, **options)
        self._script: deque[bytes] = deque()
        self._play_end = 0.0
        self.timeline: list[tuple[float, bytes]] = []  # (monotonic start, pcm) as played
        self.frames_sent = 0
        self.cleared_after: list[int] = []
        self.speech_ended_at: float | None = None  # last scripted frame sent (monotonic)

    def say(self, pcm: bytes) -> None:
        size = int(self.sample_rate * FRAME) * 2
        if len(pcm) % size:
            pcm += bytes(size - len(pcm) % size)
        self._script.extend(pcm[i:i + size] for i in range(0, len(pcm), size))

    async def run(self) -> None:
        """Send frames at real pace until the leg ends (the test owns this task)."""
        size = int(self.sample_rate * FRAME) * 2
        next_at = time.monotonic()
        while not self._ended:
            pcm = self._script.popleft() if self._script else bytes(size)
            if any(pcm):
                self.speech_ended_at = time.monotonic() + FRAME
            self._events.put_nowait(AudioChunk(pcm=pcm, sample_rate=self.sample_rate,
                                               timestamp=self._clock))
            self._clock = round(self._clock + FRAME, 6)
            self.frames_sent += 1
            next_at += FRAME
            await asyncio.sleep(max(next_at - time.monotonic(), 0))

    @property
    def speaking(self) -> bool:
        return bool(self._script)

    def play(self, pcm: bytes) -> None:
        if self._ended:
            raise LegClosed("the leg has ended")
        now = time.monotonic()
        start = max(now, self._play_end)
        self._play_end = start + len(pcm) / 2 / self.sample_rate
        self.played.append(pcm)
        self.timeline.append((start, pcm))

    @property
    def playout_queued(self) -> float:
        return max(self._play_end - time.monotonic(), 0.0)

    def clear_playout(self) -> float:
        now = time.monotonic()
        dropped = self.playout_queued
        self._play_end = now
        kept: list[tuple[float, bytes]] = []
        for start, pcm in self.timeline:
            if start >= now:
                continue
            played = int((now - start) * self.sample_rate) * 2
            kept.append((start, pcm[:played] if played < len(pcm) else pcm))
        self.timeline = kept
        self.cleared.append(dropped)
        self.cleared_after.append(self.frames_sent)
        return dropped

    def heard_pcm(self, until: float | None = None) -> bytes:
        now = time.monotonic() if until is None else until
        out = []
        for start, pcm in self.timeline:
            if start >= now:
                break
            played = int((now - start) * self.sample_rate) * 2
            out.append(pcm[:played] if played < len(pcm) else pcm)
        return b"".join(out)

    def first_audio_after(self, moment: float) -> float | None:
        for start, _ in self.timeline:
            if start >= moment:
                return start
        return None

    def longest_gap(self, since: float, until: float) -> float:
        """The longest stretch without agent audio between `since` and `until`."""
        gap, cursor = 0.0, since
        for start, pcm in self.timeline:
            end = start + len(pcm) / 2 / self.sample_rate
            if end <= cursor:
                continue
            if start > until:
                break
            gap = max(gap, start - cursor)
            cursor = max(cursor, end)
        return max(gap, until - cursor)


# -- the environment --------------------------------------------------------------------------


def flow_agent(agent_id: str = "flow", **options: Any) -> AgentConfig:
    values: dict[str, Any] = {"providers": {"stt": ["fake-stt"], "tts": ["fake-tts"]}}
    values.update(options)
    return msgspec.convert({"id": agent_id, "brain": "flow", "flow": str(DEMO_FLOW), **values},
                           AgentConfig, dec_hook=dec_hook)


def llm_agent(agent_id: str = "llm", **options: Any) -> AgentConfig:
    values: dict[str, Any] = {"providers": {"stt": ["fake-stt"], "tts": ["fake-tts"],
                                            "llm": ["fake-llm"]},
                              "greeting": "Hello, how can I help?"}
    values.update(options)
    return msgspec.convert({"id": agent_id, "brain": "llm", **values}, AgentConfig,
                           dec_hook=dec_hook)


@dataclass
class ConversationEnv:
    system: ActorSystem
    legs: MediaLegRegistry
    events: MemoryEvents
    states: MemoryKeyValue
    registry: ProviderRegistry
    pumps: list[asyncio.Task[None]] = field(default_factory=list)

    async def call(self, call_id: str, *, agent: str = "flow", realtime: bool = True,
                   sample_rate: int = RATE, leg_class: type[RealtimeLeg] | None = None,
                   **leg_options: Any) -> Any:
        leg: FakeMediaLeg = (
            (leg_class or RealtimeLeg)(call_id, sample_rate=sample_rate, **leg_options)
            if realtime else FakeMediaLeg(call_id, sample_rate=sample_rate, **leg_options))
        admitted = await self.system.ref("tenant", "acme").ask(
            AdmitCall(call_id=call_id, agent_id=agent), reply_type=Admitted)
        self.legs.register(leg)
        if isinstance(leg, RealtimeLeg):
            self.pumps.append(asyncio.get_running_loop().create_task(leg.run()))
        await self.system.ref(CALLS_KIND, CALLS_ID).ask(
            StartCall(call_id=call_id, tenant_id="acme", agent_id=agent, caller=leg.caller,
                      callee=leg.callee, media_node=self.system.node_id,
                      lease_seconds=admitted.lease_seconds),
            reply_type=CallSpawned)
        await asyncio.wait_for(leg.answered.wait(), 5)
        return leg

    async def active_calls(self) -> int:
        usage = await self.system.ref("tenant", "acme").ask(GetUsage(), reply_type=Usage)
        return usage.active_calls

    def of_call(self, call_id: str) -> list[CallEvent]:
        return [e for e in self.events.decoded(CallEvent) if e.call_id == call_id]

    def turns(self, call_id: str) -> list[CallTurn]:
        return [e for e in self.of_call(call_id) if isinstance(e, CallTurn)]

    def ended(self, call_id: str) -> list[CallEnded]:
        return [e for e in self.of_call(call_id) if isinstance(e, CallEnded)]

    async def greeted(self, leg: RealtimeLeg, text: str, timeout: float = 10.0) -> None:
        """Wait until the caller has heard the greeting (`text` in it) to its end."""
        await self.wait_heard(leg, text, timeout=timeout)
        await wait_until(lambda: leg.playout_queued == 0, timeout=timeout,
                         what="the greeting played out")

    async def wait_heard(self, leg: RealtimeLeg | FakeMediaLeg, text: str,
                         timeout: float = 10.0) -> float:
        """Wait until the agent audio handed to the leg says `text`; return when."""
        def said() -> bool:
            return any(text in sentence for sentence in heard_texts(leg.played_pcm))

        await wait_until(said, timeout=timeout, what=f"the agent saying {text!r}")
        return time.monotonic()


def saved_state(env: ConversationEnv, call_id: str) -> ConversationState | None:
    """The conversation the call actor last saved (None: nothing saved, or the call ended)."""
    item = env.states._data.get(snapshot_key(call_id))
    if item is None:
        return None
    snapshot = msgspec.msgpack.decode(item[0], type=CallSnapshot)
    return msgspec.msgpack.decode(snapshot.agent_state, type=ConversationState)


@asynccontextmanager
async def conversation_env(
    registry: ProviderRegistry, *, agents: Sequence[AgentConfig] = (),
    failover: FailoverSettings | None = None, limits: PoolLimits | None = None,
    brains: Callable[[ConversationServices], dict[str, AgentFactory]] | None = None,
    states: MemoryKeyValue | None = None, vad: Callable[[int], Vad] | None = None,
) -> AsyncIterator[ConversationEnv]:
    config = TenantConfig(
        id="acme", numbers=[NumberRoute(number="+15550200", agent="flow")],
        limits=Limits(max_concurrent_calls=10),
        agents=list(agents) or [flow_agent(), llm_agent()])
    directory = StaticTenantDirectory([config])
    legs, events = MediaLegRegistry(), MemoryEvents()
    kv = states if states is not None else MemoryKeyValue()
    async with actor_system(LocalBus()) as system:
        await host_virtual(system, TenantActor.bind(directory),
                           ProviderPool.bind(default=limits or PoolLimits(max_concurrent=64)),
                           leases=MemoryKeyValue(), states=MemoryKeyValue())
        webhooks = WebhookClient()
        services = ConversationServices(providers=registry, pools=PoolClient(system),
                                        webhooks=webhooks, phrases=PhraseBook(),
                                        failover=failover or FailoverSettings())
        made = brains(services) if brains is not None else {
            "flow": ConversationBrain(services, mode="flow"),
            "llm": ConversationBrain(services, mode="llm")}
        call_services = CallServices(legs=legs, directory=directory, events=events,
                                     brains=made, vad=vad or (lambda rate: FakeVad(rate)),
                                     states=kv)
        await system.spawn(CallsSupervisor, CALLS_ID,
                           factory=lambda: CallsSupervisor(call_services), expose=False)
        env = ConversationEnv(system, legs, events, kv, registry)
        try:
            yield env
        finally:
            for leg in list(legs._legs.values()):
                if isinstance(leg, FakeMediaLeg) and not leg._ended:
                    leg.hang_up()
            for pump in env.pumps:
                pump.cancel()
            await asyncio.gather(*env.pumps, return_exceptions=True)
            await asyncio.sleep(0.05)
            await webhooks.aclose()
