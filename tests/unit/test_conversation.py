"""The conversation loop with fake providers through a real-time fake media leg: the greeting,
a question answered in speech, sentence streaming, barge-in (within one frame, in-flight LLM
and TTS cancelled, only the heard words kept), blips that do not interrupt, smart end of turn,
the tools (hang up, transfer, DTMF, a webhook) and the per-turn timing events."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence

import pytest
from aiohttp import web
from prometheus_client import REGISTRY
from switchboard.actors.provider_registry import ProviderRegistry
from switchboard.protocols.live import LiveEvent, LiveTranscript, TurnLatency
from switchboard.protocols.llm import ChatMessage, LlmToolCall, ToolCall
from switchboard.protocols.tenants import AgentConfig
from switchboard.providers.fakes import FakeLanguageModel, FakeSpeechToText, FakeTiming

from tests.support.conversation import (
    RATE,
    ConversationEnv,
    QuickTextToSpeech,
    RealtimeLeg,
    RecordingLlm,
    RecordingStt,
    RecordingTts,
    conversation_env,
    flow_agent,
    heard_texts,
    llm_agent,
    saved_state,
    speech,
)
from tests.support.harness import wait_until
from tests.support.media import silence, tone

pytestmark = pytest.mark.unit

GREETING = "Hello, thanks for calling The Olive Tree."
HOURS = "We're open every day from noon to 10 PM"


def fakes(*, llm: object = None, tts_timing: FakeTiming | None = None,
          stt_silence_ms: float = 300.0) -> tuple[ProviderRegistry, dict[str, object]]:
    registry = ProviderRegistry()
    made: dict[str, object] = {}

    def stt() -> RecordingStt:
        made["stt"] = RecordingStt(FakeSpeechToText(min_silence_ms=stt_silence_ms))
        return made["stt"]  # type: ignore[return-value]

    def tts(rate: int) -> RecordingTts:
        made["tts"] = RecordingTts(QuickTextToSpeech(sample_rate=rate, timing=tts_timing))
        return made["tts"]  # type: ignore[return-value]

    registry.add_stt("fake-stt", stt, in_thread=False)
    registry.add_tts("fake-tts", tts, in_thread=False)
    if llm is not None:
        made["llm"] = RecordingLlm(llm)  # type: ignore[arg-type]
        registry.add_llm("fake-llm", lambda: made["llm"], in_thread=False)  # type: ignore
    return registry, made


async def test_greeting_then_a_question_is_answered_in_speech() -> None:
    registry, _ = fakes()
    async with conversation_env(registry) as env:
        leg = await env.call("c1")
        await env.greeted(leg, GREETING)
        leg.say(speech("what are your opening hours"))
        await env.wait_heard(leg, HOURS)
        said = heard_texts(leg.played_pcm)
        assert said[0] == GREETING and sum(GREETING in s for s in said) == 1
        await wait_until(lambda: len(_messages(env, "c1")) == 3, what="the turn saved")
        state = saved_state(env, "c1")
        assert state is not None and state.turn == 1 and state.greeted
        assert [m.role for m in state.messages] == ["assistant", "user", "assistant"]
        assert state.messages[1].content == "what are your opening hours"
        assert HOURS in state.messages[2].content
        assert [(line.speaker, line.turn) for line in state.transcript][:2] == [
            ("agent", 0), ("caller", 1)]
        leg.hang_up()
        await wait_until(lambda: env.ended("c1") != [], what="call ended")
        assert saved_state(env, "c1") is None  # the state goes with the call


class ScreenLeg(RealtimeLeg):
    """A leg whose caller has a screen (the web page): it records the live events."""

    def __init__(self, call_id: str, **options: object) -> None:
        super().__init__(call_id, **options)
        self.shown: list[LiveEvent] = []

    def publish(self, event: LiveEvent) -> None:
        self.shown.append(event)


async def test_the_callers_screen_gets_both_sides_of_the_transcript_and_the_latency() -> None:
    registry, _ = fakes()
    async with conversation_env(registry) as env:
        leg = await env.call("c1", leg_class=ScreenLeg)
        await env.greeted(leg, GREETING)
        leg.say(speech("what are your opening hours"))
        await env.wait_heard(leg, HOURS)
        await wait_until(lambda: any(isinstance(e, TurnLatency) for e in leg.shown),
                         what="the turn's latency on the screen")
        # The agent's line is shown once its reply is over (it records what was heard):
        # here, when the caller speaks again.
        leg.say(speech("where are you"))
        await wait_until(lambda: any(isinstance(e, LiveTranscript) and e.speaker == "agent"
                                     and e.turn == 1 for e in leg.shown),
                         timeout=10, what="the agent's words on the screen")
        lines = [(e.speaker, e.turn, e.text) for e in leg.shown
                 if isinstance(e, LiveTranscript)]
        assert ("caller", 1, "what are your opening hours") in lines
        assert any(s == "agent" and t == 1 and HOURS in text for s, t, text in lines)
        latency = next(e for e in leg.shown if isinstance(e, TurnLatency))
        assert latency.turn == 1 and latency.total_ms > 0 and "stt_final_ms" in latency.stages
        leg.hang_up()


async def test_each_turn_publishes_its_timing_with_the_words_only_under_pii() -> None:
    registry, _ = fakes()
    async with conversation_env(registry) as env:
        leg = await env.call("c1")
        await env.greeted(leg, GREETING)
        for question in ("what are your opening hours", "where are you"):
            leg.say(speech(question))
            await wait_until(lambda q=question: any(  # type: ignore[misc]
                q == m for m in _user_messages(env, "c1")), timeout=10, what=question)
        await env.wait_heard(leg, "Harbour Street")
        leg.hang_up()
        await wait_until(lambda: env.ended("c1") != [], what="call ended")
        turns = env.turns("c1")
        assert [t.turn for t in turns] == [1, 2]
        first = turns[0]
        assert first.event_id == "c1.turn.1"
        for value in (first.end_of_turn_ms, first.stt_final_ms, first.llm_first_token_ms,
                      first.tts_first_audio_ms, first.first_audio_ms, first.overhead_ms):
            assert value is not None
        assert first.stt_final_ms <= first.llm_first_token_ms <= first.first_audio_ms  # type: ignore[operator]
        assert first.overhead_ms < 50  # type: ignore[operator]  # zero-latency fakes
        assert first.pii is not None and first.pii.caller == "what are your opening hours"
        assert HOURS in first.pii.agent
        payload = json.dumps([t.event_id for t in turns])
        assert "opening" not in payload


def _messages(env: ConversationEnv, call_id: str) -> list[ChatMessage]:
    state = saved_state(env, call_id)
    return state.messages if state else []


def _user_messages(env: ConversationEnv, call_id: str) -> list[str]:
    state = saved_state(env, call_id)
    return [m.content for m in state.messages if m.role == "user"] if state else []


class _SlowWords(FakeLanguageModel):
    """A scripted model that takes `each_ms` per word: a reply still being written."""


async def test_the_first_sentence_plays_before_the_llm_has_finished() -> None:
    reply = ("Sure thing. Our kitchen makes fresh pasta every morning and bakes bread in a "
             "wood oven, and the menu changes every week with the season.")
    llm = FakeLanguageModel([reply], timing=FakeTiming(first_ms=5, each_ms=40))
    registry, made = fakes(llm=llm)
    async with conversation_env(registry) as env:
        leg = await env.call("c1", agent="llm")
        await env.greeted(leg, "Hello, how can I help?")
        asked = len(leg.played)
        leg.say(speech("tell me about the food"))
        first_play = None

        def answer_started() -> bool:
            return len(leg.played) > asked and "Sure thing." in heard_texts(
                b"".join(leg.played[asked:]))

        await wait_until(answer_started, timeout=10, what="the first sentence")
        first_play = time.monotonic()
        log = made["llm"].log  # type: ignore[attr-defined]
        assert log.finished == 0  # still writing the rest of the reply
        await wait_until(lambda: log.finished == 1, timeout=10, what="the reply finished")
        assert log.finished_at[0] - first_play > 0.3  # about 20 words at 40 ms after it
        await env.wait_heard(leg, "with the season.")


async def test_barge_in_stops_the_agent_within_one_frame_and_cancels_llm_and_tts() -> None:
    words = " ".join(f"word{i}." for i in range(60))  # a long reply, 50 ms per word
    llm = FakeLanguageModel([f"Let me tell you everything. {words}"],
                            timing=FakeTiming(each_ms=50))
    registry, made = fakes(llm=llm, tts_timing=FakeTiming(each_ms=15))  # TTS-bound
    async with conversation_env(registry) as env:
        leg = await env.call("c1", agent="llm")
        await env.greeted(leg, "Hello, how can I help?")
        leg.say(speech("tell me everything", pause=0.5))
        await env.wait_heard(leg, "Let me tell you everything.")
        await asyncio.sleep(0.6)  # the agent is talking; the LLM and TTS are still busy
        log_llm, log_tts = made["llm"].log, made["tts"].log  # type: ignore[attr-defined]
        assert leg.playout_queued > 0 and log_llm.finished == 0
        frames_before = leg.frames_sent
        leg.say(tone(0.5, RATE))  # the caller talks over the agent
        await wait_until(lambda: leg.cleared != [], timeout=3, what="agent audio cleared")
        # Barge-in is decided on the frame where the caller has spoken 250 ms
        # (the minimum): 13 frames of 20 ms (the first frame of speech is frame 1).
        assert leg.cleared_after[0] - frames_before <= 13 + 1
        assert leg.playout_queued == 0
        await wait_until(lambda: log_llm.cancelled == 1, timeout=2, what="LLM cancelled")
        await wait_until(lambda: log_tts.cancelled == 1, timeout=2, what="TTS cancelled")
        assert log_tts.cancelled + log_tts.finished == log_tts.started
        state = saved_state(env, "c1")
        assert state is not None
        assistant = [m.content for m in state.messages if m.role == "assistant"]
        said_to_caller = " ".join(heard_texts(leg.heard_pcm()))
        assert assistant[-1] and assistant[-1] in said_to_caller  # only what was heard
        assert state.transcript[-1].interrupted


async def test_a_short_blip_over_the_agent_does_not_interrupt() -> None:
    registry, made = fakes(llm=FakeLanguageModel(
        ["This is a rather long answer that keeps the agent talking for a while."]))
    async with conversation_env(registry) as env:
        leg = await env.call("c1", agent="llm")
        await env.greeted(leg, "Hello, how can I help?")
        leg.say(speech("talk to me", pause=0.5))
        await env.wait_heard(leg, "rather long answer")
        leg.say(tone(0.15, RATE) + silence(0.6, RATE))  # "uh-huh": 150 ms < 250 ms
        await asyncio.sleep(1.2)
        assert leg.cleared == []
        stt = made["stt"]
        assert len(stt.finals) == 2  # type: ignore[attr-defined]  # the blip was heard...
        assert _user_messages(env, "c1") == ["talk to me"]  # ...and not answered


async def test_an_utterance_that_ends_mid_phrase_waits_for_the_rest() -> None:
    registry, _ = fakes(llm=FakeLanguageModel(["Got it."]))
    async with conversation_env(registry) as env:
        leg = await env.call("c1", agent="llm")
        await env.greeted(leg, "Hello, how can I help?")
        # A 400 ms pause after "for": a complete sentence would end the turn there.
        leg.say(speech("i would like a table for", pause=0.45) + speech("four people"))
        await env.wait_heard(leg, "Got it.")
        assert _user_messages(env, "c1") == ["i would like a table for four people"]


async def test_a_complete_utterance_ends_the_turn_sooner_with_a_streaming_stt() -> None:
    registry, _ = fakes(llm=FakeLanguageModel(["Yes."]), stt_silence_ms=120)
    async with conversation_env(registry) as env:
        leg = await env.call("c1", agent="llm")
        await env.greeted(leg, "Hello, how can I help?")
        leg.say(speech("are you open today?", pause=1.0))
        await env.wait_heard(leg, "Yes.")
        restarts = REGISTRY.get_sample_value("switchboard_provider_failovers_total", {
            "kind": "stt", "from": "fake-stt", "to": "none", "reason": "stalled"}) or 0.0
        await asyncio.sleep(1.6)  # past the STT's deadline: no final is owed any more
        assert (REGISTRY.get_sample_value("switchboard_provider_failovers_total", {
            "kind": "stt", "from": "fake-stt", "to": "none", "reason": "stalled"}) or 0.0
        ) == restarts
        leg.hang_up()
        await wait_until(lambda: env.ended("c1") != [], what="call ended")
        (turn,) = env.turns("c1")
        # The final came after 120 ms of quiet and the sentence is complete: the turn ends
        # 150 ms after the speech (fast_end_ms), not after the 300 ms hangover.
        assert turn.end_of_turn_ms is not None and turn.end_of_turn_ms < 280


# -- tools ----------------------------------------------------------------------------------


async def test_goodbye_hangs_up_after_the_goodbye_has_played() -> None:
    registry, _ = fakes()
    async with conversation_env(registry) as env:
        leg = await env.call("c1")
        await env.greeted(leg, GREETING)
        leg.say(speech("goodbye"))
        await wait_until(lambda: leg.hangups != [], timeout=15, what="hang up")
        assert leg.hangups == ["agent_hangup"]
        assert "Thanks for calling The Olive Tree." in heard_texts(leg.heard_pcm())
        await wait_until(lambda: env.ended("c1") != [], what="call ended")
        assert await env.active_calls() == 0


async def test_asking_for_a_person_transfers_the_call_by_refer() -> None:
    registry, _ = fakes()
    async with conversation_env(registry) as env:
        leg = await env.call("c1")
        await env.greeted(leg, GREETING)
        leg.say(speech("can i speak to someone"))
        await wait_until(lambda: leg.transfers != [], timeout=15, what="transfer")
        assert leg.transfers == ["sip:frontdesk@olive-tree.example"]
        await wait_until(lambda: env.ended("c1") != [], what="call ended")
        assert env.ended("c1")[0].reason == "transferred"


def _tool_reply(messages: Sequence[ChatMessage]) -> list[object]:
    results = [m for m in messages if m.role == "tool"]
    if not results:
        return [LlmToolCall(call=ToolCall(id="t1", name="send_dtmf",
                                          arguments='{"digits": "12#"}'))]
    ok = json.loads(results[-1].content)["ok"]
    return ["The keys were sent." if ok else "The keys could not be sent."]


async def test_the_llm_presses_keys_with_send_dtmf() -> None:
    registry, _ = fakes(llm=FakeLanguageModel(_tool_reply))
    async with conversation_env(registry) as env:
        leg = await env.call("c1", agent="llm")
        await env.greeted(leg, "Hello, how can I help?")
        leg.say(speech("press one two hash"))
        await wait_until(lambda: leg.dtmf_sent == ["12#"], timeout=10, what="keys sent")
        await env.wait_heard(leg, "The keys were sent.")


@pytest.fixture
async def booking_server() -> AsyncIterator[tuple[str, list[dict[str, object]]]]:
    seen: list[dict[str, object]] = []

    async def book(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append({"body": body, "auth": request.headers.get("authorization")})
        if body["arguments"].get("slow"):
            await asyncio.sleep(2.3)  # past the tool's 2 s deadline
        return web.json_response({"ok": True, "reference": "B-42"})

    app = web.Application()
    app.router.add_post("/book", book)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/book", seen
    await runner.cleanup()


def _booking_agent(url: str, timeout: float = 2.0) -> AgentConfig:
    return llm_agent(tools=[{"name": "book", "description": "Book a table.", "url": url,
                             "timeout_seconds": timeout, "token": "s3cret",
                             "parameters": {"type": "object"}}])


async def test_a_webhook_tool_is_called_and_its_answer_goes_back_to_the_llm(
        booking_server: tuple[str, list[dict[str, object]]]) -> None:
    url, seen = booking_server

    def reply(messages: Sequence[ChatMessage]) -> list[object]:
        results = [m for m in messages if m.role == "tool"]
        if not results:
            return ["Let me book that.", LlmToolCall(call=ToolCall(
                id="b1", name="book", arguments='{"people": 4}'))]
        return [f"Booked, reference {json.loads(results[-1].content)['reference']}."]

    registry, _ = fakes(llm=FakeLanguageModel(reply))
    async with conversation_env(registry, agents=[_booking_agent(url), flow_agent()]) as env:
        leg = await env.call("c1", agent="llm")
        await env.greeted(leg, "Hello, how can I help?")
        leg.say(speech("book a table for four"))
        await env.wait_heard(leg, "Booked, reference B-42.")
        (call,) = seen
        assert call["auth"] == "Bearer s3cret"
        body = call["body"]
        assert body["tool"] == "book" and body["arguments"] == {"people": 4}  # type: ignore[index]
        assert body["call"]["id"] == "c1"  # type: ignore[index]


async def test_a_stalled_webhook_gets_a_filler_then_a_timeout_answer(
        booking_server: tuple[str, list[dict[str, object]]]) -> None:
    url, _ = booking_server

    def reply(messages: Sequence[ChatMessage]) -> list[object]:
        results = [m for m in messages if m.role == "tool"]
        if not results:
            return [LlmToolCall(call=ToolCall(id="b1", name="book",
                                              arguments='{"slow": true}'))]
        return [f"Sorry, the booking system said {json.loads(results[-1].content)['error']}."]

    registry, _ = fakes(llm=FakeLanguageModel(reply))
    agents = [_booking_agent(url, timeout=2.0), flow_agent()]
    async with conversation_env(registry, agents=agents) as env:
        leg = await env.call("c1", agent="llm")
        await env.greeted(leg, "Hello, how can I help?")
        leg.say(speech("book a table"))
        filler_at = await env.wait_heard(leg, "One moment.", timeout=5)
        await env.wait_heard(leg, "the booking system said timeout.", timeout=5)
        assert isinstance(leg, RealtimeLeg) and leg.speech_ended_at is not None
        assert filler_at - leg.speech_ended_at < 2.0


async def test_an_interruption_that_was_only_noise_does_not_leave_silence() -> None:
    reply = "First part of the answer. Second part of the answer. Third part, the end."
    registry, _ = fakes(llm=FakeLanguageModel([reply]), tts_timing=FakeTiming(each_ms=2))
    async with conversation_env(registry) as env:
        leg = await env.call("c1", agent="llm")
        await env.greeted(leg, "Hello, how can I help?")
        leg.say(speech("tell me", pause=0.5))
        await env.wait_heard(leg, "First part of the answer.")
        await wait_until(lambda: "First part of the answer." in heard_texts(leg.heard_pcm()),
                         timeout=5, what="the first sentence heard")
        leg.say(tone(0.4, RATE) + silence(0.6, RATE))  # a door slams: no words in it
        await wait_until(lambda: leg.cleared != [], timeout=3, what="barge-in")
        cut_at = time.monotonic()
        await wait_until(lambda: "Third part, the end." in heard_texts(leg.heard_pcm()),
                         timeout=10, what="the reply taken up again")
        after = heard_texts(leg.heard_pcm()[len(leg.heard_pcm(cut_at)):])
        assert "First part of the answer." not in after  # heard already: not said again
        assert leg.first_audio_after(cut_at) is not None
        assert leg.first_audio_after(cut_at) - cut_at < 2.0  # type: ignore[operator]
