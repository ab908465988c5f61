"""Failover within a turn: a provider that fails or stalls mid-stream is replaced by the next
of the tenant's order, and the caller hears one turn, nothing said twice. Slots go back to
their pools on every path; an open circuit is skipped without waiting."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import REGISTRY
from switchboard.actors import ActorSystem
from switchboard.actors.failover import (
    FailoverExhausted,
    FailoverLanguageModel,
    FailoverSettings,
    FailoverSpeechToText,
    FailoverTextToSpeech,
)
from switchboard.actors.pool import ProviderPool
from switchboard.actors.pool_client import PoolClient
from switchboard.actors.provider_registry import ProviderRegistry
from switchboard.actors.resume import TextResume
from switchboard.actors.transport_local import LocalBus
from switchboard.protocols.audio import AudioChunk, SynthesisChunk, Transcript
from switchboard.protocols.llm import (
    ChatMessage,
    LlmEvent,
    LlmFinish,
    LlmText,
    LlmToolCall,
    ToolCall,
    ToolSpec,
)
from switchboard.protocols.pools import (
    BreakerSettings,
    GetPoolStatus,
    PoolLimits,
    PoolStatus,
    ProviderKind,
    StreamDeadline,
)
from switchboard.providers import ProviderRejected
from switchboard.providers.fakes import (
    FakeLanguageModel,
    FakeSpeechToText,
    FakeTextToSpeech,
    FakeTiming,
    decode_speech,
    encode_speech,
)
from switchboard.providers.tts.segment import frames, split_sentences
from switchboard.storage.kv_memory import MemoryKeyValue

from tests.support.harness import actor_system, host_virtual, wait_until

pytestmark = pytest.mark.unit

RATE = 16000
REPLY = "Hello there, how can I help you today? Ask me anything."
QUESTION = [ChatMessage(role="user", content="Hi")]
FAST = FailoverSettings(deadlines={
    "stt": StreamDeadline(first_item_ms=250.0, stall_ms=250.0),
    "llm": StreamDeadline(first_item_ms=250.0, stall_ms=150.0),
    "tts": StreamDeadline(first_item_ms=250.0, stall_ms=150.0),
})


@dataclass
class Env:
    system: ActorSystem
    pools: PoolClient
    registry: ProviderRegistry = field(default_factory=ProviderRegistry)

    def llm(self, *order: str, **options: Any) -> FailoverLanguageModel:
        return FailoverLanguageModel(order, pools=self.pools, providers=self.registry,
                                     call_id="call-1", settings=FAST, **options)

    def tts(self, *order: str) -> FailoverTextToSpeech:
        return FailoverTextToSpeech(order, pools=self.pools, providers=self.registry,
                                    call_id="call-1", sample_rate=RATE, settings=FAST)

    def stt(self, *order: str) -> FailoverSpeechToText:
        return FailoverSpeechToText(order, pools=self.pools, providers=self.registry,
                                    call_id="call-1", settings=FAST)

    async def status(self, kind: ProviderKind, provider: str) -> PoolStatus:
        status: PoolStatus = await self.pools.pool_ref(kind, provider).ask(
            GetPoolStatus(), reply_type=PoolStatus)
        return status


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    limits = PoolLimits(max_concurrent=4, breaker=BreakerSettings(failure_threshold=1))
    async with actor_system(LocalBus()) as system:
        await host_virtual(system, ProviderPool.bind(default=limits),
                           leases=MemoryKeyValue(), states=MemoryKeyValue())
        yield Env(system, PoolClient(system))


def failovers(kind: str, source: str, target: str, reason: str) -> float:
    return REGISTRY.get_sample_value("switchboard_provider_failovers_total", {
        "kind": kind, "from": source, "to": target, "reason": reason}) or 0.0


async def collect(stream: AsyncIterator[Any]) -> list[Any]:
    async with aclosing(stream) as items:  # type: ignore[type-var]
        return [item async for item in items]


def text_of(events: Sequence[LlmEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, LlmText))


# -- LLM ----------------------------------------------------------------------------------


async def test_an_llm_that_fails_after_three_tokens_is_replaced_without_repeating(
        env: Env) -> None:
    first = FakeLanguageModel([REPLY], timing=FakeTiming(fail_after=3))
    second = FakeLanguageModel([REPLY])
    env.registry.add_llm("cloud", lambda: first)
    env.registry.add_llm("local", lambda: second)
    before = failovers("llm", "cloud", "local", "unavailable")

    events = await collect(env.llm("cloud", "local").stream(QUESTION))

    assert text_of(events) == REPLY  # the three tokens said are not said again
    assert isinstance(events[-1], LlmFinish)
    assert second.requests[0][0] == QUESTION  # the same turn, asked again
    assert failovers("llm", "cloud", "local", "unavailable") == before + 1
    cloud, local = await env.status("llm", "cloud"), await env.status("llm", "local")
    assert (cloud.failures, cloud.in_use, local.successes, local.in_use) == (1, 0, 1, 0)


async def test_an_llm_that_stalls_is_replaced_within_its_progress_deadline(env: Env) -> None:
    env.registry.add_llm("stuck", lambda: FakeLanguageModel([REPLY],
                                                            timing=FakeTiming(stall_after=2)))
    env.registry.add_llm("good", lambda: FakeLanguageModel([REPLY]))
    started = time.monotonic()
    events = await collect(env.llm("stuck", "good").stream(QUESTION))
    assert text_of(events) == REPLY
    assert time.monotonic() - started < 1.0  # 150 ms of stall, then the next provider
    assert failovers("llm", "stuck", "good", "stalled") >= 1


async def test_a_diverging_replacement_resumes_at_a_sentence_boundary(env: Env) -> None:
    for name in ("a", "a2"):  # a2: a's circuit is open after one failure
        env.registry.add_llm(name, lambda: FakeLanguageModel([REPLY],
                                                             timing=FakeTiming(fail_after=3)))
    env.registry.add_llm("b", lambda: FakeLanguageModel(["Hi! I can help with that. Go on."]))
    events = await collect(env.llm("a", "b").stream(QUESTION))
    # "Hello there, how" was said; b's first sentence stands for it, the rest follows.
    assert text_of(events) == "Hello there, how I can help with that. Go on."

    dropped: list[str] = []

    def drop(unfinished: str) -> bool:
        dropped.append(unfinished)
        return True  # the consumer had not spoken it: b's answer replaces it whole

    events = await collect(env.llm("a2", "b", on_diverge=drop).stream(QUESTION))
    assert dropped == ["Hello there, how"]
    # The stream still carries what was emitted; the consumer dropped that tail unspoken.
    assert text_of(events) == "Hello there, howHi! I can help with that. Go on."


async def test_a_tool_call_already_emitted_is_not_emitted_again(env: Env) -> None:
    tools = [ToolSpec(name="lookup", description="find an order")]

    def reply(call_id: str, arguments: str) -> list[str | LlmToolCall]:
        call = ToolCall(id=call_id, name="lookup", arguments=arguments)
        return ["Let me check.", LlmToolCall(call=call)]

    env.registry.add_llm("a", lambda: FakeLanguageModel([reply("a1", '{"q": 1, "r": 2}')],
                                                        timing=FakeTiming(fail_after=4)))
    env.registry.add_llm("b", lambda: FakeLanguageModel([reply("b1", '{"r":2,"q":1}')]))
    events = await collect(env.llm("a", "b").stream(QUESTION, tools))
    calls = [event.call.id for event in events if isinstance(event, LlmToolCall)]
    assert calls == ["a1"] and text_of(events) == "Let me check."
    assert isinstance(events[-1], LlmFinish)


async def test_a_non_retryable_error_fails_fast_without_trying_the_next(env: Env) -> None:
    bad_tool = LlmToolCall(call=ToolCall(id="x", name="not_offered"))
    second = FakeLanguageModel([REPLY])
    env.registry.add_llm("strict", lambda: FakeLanguageModel([["Sure.", bad_tool]]))
    env.registry.add_llm("other", lambda: second)
    with pytest.raises(ProviderRejected):
        await collect(env.llm("strict", "other").stream(QUESTION))
    assert second.requests == []
    strict = await env.status("llm", "strict")
    assert strict.in_use == 0 and strict.failures == 1
    assert strict.circuit == "closed"  # a refused input says nothing of the provider's health


async def test_when_every_provider_fails_the_error_names_each_one(env: Env) -> None:
    for name in ("x", "y"):
        env.registry.add_llm(name, lambda: FakeLanguageModel([REPLY],
                                                             timing=FakeTiming(fail_after=0)))
    before = failovers("llm", "y", "none", "unavailable")
    with pytest.raises(FailoverExhausted) as caught:
        await collect(env.llm("x", "y").stream(QUESTION))
    assert caught.value.attempts == [("x", "unavailable"), ("y", "unavailable")]
    assert caught.value.retryable
    assert failovers("llm", "y", "none", "unavailable") == before + 1


async def test_an_open_circuit_is_skipped_without_waiting(env: Env) -> None:
    stuck = FakeLanguageModel([REPLY], timing=FakeTiming(stall_after=0))
    env.registry.add_llm("flaky", lambda: stuck)
    env.registry.add_llm("steady", lambda: FakeLanguageModel([REPLY]))
    llm = env.llm("flaky", "steady")
    await collect(llm.stream(QUESTION))  # waits out flaky's deadline; its circuit opens
    assert (await env.status("llm", "flaky")).circuit == "open"

    for turn in range(2):
        started = time.monotonic()
        assert text_of(await collect(llm.stream(QUESTION))) == REPLY
        assert time.monotonic() - started < 0.1  # no deadline waited out
    assert len(stuck.requests) == 1
    # The first skipped turn asked the pool; the next one remembered its answer on this node.
    assert (await env.status("llm", "flaky")).refused == {"circuit_open": 1}
    assert failovers("llm", "flaky", "steady", "circuit_open") >= 2


def test_text_resume_ignores_spacing_and_cuts_divergence_at_whole_sentences() -> None:
    agree = TextResume("Hello there, how")
    pieces = [agree.feed(p) for p in (" Hello", "  there,", " how", " can", " I?")]
    assert pieces == ["", "", "", " can", " I?"] and not agree.diverged
    differ = TextResume("Sure. Your order")  # one whole sentence, one begun
    pieces = [differ.feed(p) for p in ("Sure!", " Your order is", " ready.", " Bye.")]
    assert "".join(pieces) == " Bye." and differ.diverged


# -- cancellation ----------------------------------------------------------------------------


async def test_cancelling_a_turn_releases_its_slot(env: Env) -> None:
    env.registry.add_llm("slow", lambda: FakeLanguageModel([REPLY],
                                                           timing=FakeTiming(each_ms=100)))
    first_token = asyncio.Event()

    async def consume() -> None:
        async with aclosing(env.llm("slow").stream(QUESTION)) as events:
            async for _ in events:
                first_token.set()

    task = asyncio.get_running_loop().create_task(consume())
    await asyncio.wait_for(first_token.wait(), 1.0)
    assert (await env.status("llm", "slow")).in_use == 1
    task.cancel()  # barge-in
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(_idle(env, "llm", "slow"), what="the slot's release")
    status = await env.status("llm", "slow")
    assert (status.successes, status.failures) == (0, 0)  # a barge-in is no verdict


async def test_closing_a_stream_early_releases_its_slot(env: Env) -> None:
    env.registry.add_tts("voice", lambda rate: FakeTextToSpeech(sample_rate=rate))
    async with aclosing(env.tts("voice").synthesize(REPLY)) as chunks:
        async for _ in chunks:
            break
    await wait_until(_idle(env, "tts", "voice"), what="the slot's release")


def _idle(env: Env, kind: ProviderKind, provider: str) -> Any:
    async def idle() -> bool:
        return (await env.status(kind, provider)).in_use == 0
    return idle


# -- TTS ------------------------------------------------------------------------------------


async def test_a_stalled_tts_is_replaced_and_the_next_speaks_only_what_was_not_spoken(
        env: Env) -> None:
    text = "Your table is booked. It is for two people. See you at seven."
    (first_sentence, first_end), *_ = split_sentences(text)
    first_frames = len(list(frames(encode_speech(first_sentence, RATE), RATE)))
    stalled_at = first_frames + 3  # three frames into the second sentence
    second = FakeTextToSpeech(sample_rate=RATE)
    env.registry.add_tts("cloud", lambda rate: FakeTextToSpeech(
        sample_rate=rate, timing=FakeTiming(stall_after=stalled_at)))
    env.registry.add_tts("local", lambda rate: second)

    chunks: list[SynthesisChunk] = await collect(env.tts("cloud", "local").synthesize(text))

    assert second.requests == [text[first_end:]]  # the first sentence is not spoken again
    offsets = [chunk.text_offset for chunk in chunks]
    assert offsets == sorted(offsets) and offsets[-1] == len(text)
    for previous, chunk in itertools.pairwise(chunks):  # one unbroken clock
        assert chunk.timestamp == pytest.approx(previous.timestamp + previous.duration)
    heard_first = decode_speech(b"".join(c.pcm for c in chunks[:first_frames]))
    heard_next = decode_speech(b"".join(c.pcm for c in chunks[stalled_at:]))
    assert heard_first == ["Your table is booked."]
    assert heard_next == ["It is for two people.", "See you at seven."]


# -- STT ------------------------------------------------------------------------------------


def utterance(text: str, start: float) -> list[AudioChunk]:
    """`text` as the fake caller says it, then 400 ms of silence, in 20 ms chunks."""
    pcm = encode_speech(text, RATE) + bytes(int(RATE * 0.4) * 2)
    chunks, at = [], start
    for piece in frames(pcm, RATE):
        chunks.append(AudioChunk(pcm=piece, sample_rate=RATE, timestamp=at))
        at += len(piece) / 2 / RATE
    return chunks


class Caller:
    """Live audio the test feeds; the source stays open until `hang_up`."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[AudioChunk | None] = asyncio.Queue()
        self.at = 0.0

    def say(self, text: str) -> None:
        for chunk in utterance(text, self.at):
            self.queue.put_nowait(chunk)
            self.at = chunk.end

    def hang_up(self) -> None:
        self.queue.put_nowait(None)

    async def audio(self) -> AsyncIterator[AudioChunk]:
        while (chunk := await self.queue.get()) is not None:
            yield chunk


async def test_a_stalled_stt_is_replaced_and_hears_the_utterance_replayed(env: Env) -> None:
    env.registry.add_stt("cloud", lambda: FakeSpeechToText(timing=FakeTiming(stall_after=0)))
    env.registry.add_stt("local", lambda: FakeSpeechToText())
    stt = env.stt("cloud", "local")
    caller = Caller()
    caller.say("book a table for two")
    async with aclosing(stt.stream(caller.audio())) as transcripts:
        stt.expect_final()  # the VAD saw the caller stop: a final is owed
        first: Transcript = await asyncio.wait_for(anext(transcripts), 2.0)
        assert first.text == "book a table for two" and first.is_final
        caller.say("at seven")  # live audio now goes to the replacement, nothing replayed
        stt.expect_final()
        second: Transcript = await asyncio.wait_for(anext(transcripts), 2.0)
        assert second.text == "at seven"
        caller.hang_up()
        assert [t async for t in transcripts] == []
    cloud, local = await env.status("stt", "cloud"), await env.status("stt", "local")
    assert (cloud.failures, local.successes, cloud.in_use, local.in_use) == (1, 3, 0, 0)
    assert failovers("stt", "cloud", "local", "stalled") >= 1


async def test_cancelling_an_stt_stream_releases_its_slot_and_stops_reading_audio(
        env: Env) -> None:
    env.registry.add_stt("whisper", lambda: FakeSpeechToText())
    caller = Caller()
    stt = env.stt("whisper")

    async def listen() -> None:
        async with aclosing(stt.stream(caller.audio())) as transcripts:
            async for _ in transcripts:
                pass

    task = asyncio.get_running_loop().create_task(listen())
    caller.say("hello")
    await wait_until(lambda: caller.queue.empty(), what="the audio being read")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(_idle(env, "stt", "whisper"), what="the slot's release")


async def test_a_pool_that_does_not_answer_fails_open_unless_told_otherwise() -> None:
    registry = ProviderRegistry()
    registry.add_llm("cloud", lambda: FakeLanguageModel([REPLY]))
    async with actor_system(LocalBus()) as system:  # no node hosts pools
        for fail_open in (True, False):
            llm = FailoverLanguageModel(
                ["cloud"], pools=PoolClient(system, fail_open=fail_open, acquire_timeout=0.2),
                providers=registry, call_id="call-1", settings=FAST)
            if fail_open:  # the call keeps its voice; the provider's own limits still apply
                assert text_of(await collect(llm.stream(QUESTION))) == REPLY
            else:
                with pytest.raises(FailoverExhausted) as caught:
                    await collect(llm.stream(QUESTION))
                assert caught.value.attempts == [("cloud", "pool_unavailable")]
