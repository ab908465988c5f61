"""Keys the caller presses (DTMF) reach the conversation brains as caller turns: one entry per
'#' or inter-digit pause, answered, timed and saved like speech; a key over the agent barges
in; the flow agent picks an intent by its `dtmf` keys, and a bad `dtmf` in a script file is
an error naming its line."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Sequence

import pytest
from switchboard.actors.provider_registry import ProviderRegistry
from switchboard.protocols.conversation import keypad_keys, keypad_message
from switchboard.protocols.llm import ChatMessage, LlmText, ToolSpec
from switchboard.providers.fakes import FakeLanguageModel, FakeSpeechToText, FakeTiming
from switchboard.providers.llm.flow import FlowAgent
from switchboard.providers.llm.flow_file import FlowFileError, parse_flow

from tests.support.conversation import (
    QuickTextToSpeech,
    RecordingLlm,
    RecordingTts,
    conversation_env,
    flow_agent,
    heard_texts,
    llm_agent,
    saved_state,
)
from tests.support.harness import wait_until

pytestmark = pytest.mark.unit

HELLO = "Hello, how can I help?"


def providers(llm: FakeLanguageModel, *, tts_timing: FakeTiming | None = None
              ) -> tuple[ProviderRegistry, dict[str, object]]:
    registry = ProviderRegistry()
    made: dict[str, object] = {"llm": RecordingLlm(llm)}

    def tts(rate: int) -> RecordingTts:
        made["tts"] = RecordingTts(QuickTextToSpeech(sample_rate=rate, timing=tts_timing))
        return made["tts"]  # type: ignore[return-value]

    registry.add_stt("fake-stt", lambda: FakeSpeechToText(min_silence_ms=300),
                     in_thread=False)
    registry.add_tts("fake-tts", tts, in_thread=False)
    registry.add_llm("fake-llm", lambda: made["llm"], in_thread=False)  # type: ignore
    return registry, made


def echo_keys(messages: Sequence[ChatMessage]) -> str:
    """A model that repeats the keys of the caller's last message, so a test hears them."""
    last = [m.content for m in messages if m.role == "user"][-1]
    return f"You pressed {keypad_keys(last)}."


def press(leg: object, keys: str) -> None:
    for key in keys:
        leg.press(key)  # type: ignore[attr-defined]


def user_messages(llm: FakeLanguageModel) -> list[list[str]]:
    return [[m.content for m in messages if m.role == "user"] for messages, _ in llm.requests]


async def test_keys_ended_by_hash_are_one_turn_answered_timed_and_saved() -> None:
    llm = FakeLanguageModel(echo_keys)
    registry, _ = providers(llm)
    agent = llm_agent(turn={"dtmf_timeout_ms": 5000})  # only '#' can end this entry soon
    async with conversation_env(registry, agents=[agent]) as env:
        leg = await env.call("c1", agent="llm")
        await env.greeted(leg, HELLO)
        press(leg, "12")
        await asyncio.sleep(0.3)
        press(leg, "#")
        pressed = time.monotonic()
        answered = await env.wait_heard(leg, "You pressed 12#.",
                                        timeout=3)
        assert answered - pressed < 1.5  # '#' ended the entry, not the 5 s pause
        assert user_messages(llm) == [[keypad_message("12#")]]  # one turn, all the keys
        await wait_until(lambda: (s := saved_state(env, "c1")) is not None
                         and s.messages[-1].role == "assistant", what="the turn saved")
        state = saved_state(env, "c1")
        assert state is not None and state.turn == 1
        assert [(line.speaker, line.text) for line in state.transcript] == [
            ("agent", HELLO), ("caller", "[keypad] 12#")]
        leg.hang_up()
        await wait_until(lambda: env.ended("c1") != [], what="call ended")
        (turn,) = env.turns("c1")
        assert turn.turn == 1 and turn.first_audio_ms is not None
        assert turn.stt_final_ms is None  # no speech-to-text in this turn
        assert turn.pii is not None and turn.pii.caller == "[keypad] 12#"


async def test_an_entry_without_hash_is_submitted_after_the_inter_digit_pause() -> None:
    llm = FakeLanguageModel(echo_keys, timing=FakeTiming(first_ms=300))  # a model thinking
    registry, _ = providers(llm)
    # Longer than the dead-air threshold (1.2 s): the pause is the caller's, not dead air.
    agent = llm_agent(turn={"dtmf_timeout_ms": 1500})
    async with conversation_env(registry, agents=[agent]) as env:
        leg = await env.call("c1", agent="llm")
        await env.greeted(leg, HELLO)
        press(leg, "4")
        await asyncio.sleep(0.8)  # shorter than the timeout: the same entry
        press(leg, "2")
        last_key = time.monotonic()
        await asyncio.sleep(1.2)
        assert llm.requests == []  # still waiting for more keys
        answered = await env.wait_heard(leg, "You pressed 42.",
                                        timeout=3)
        assert 1.4 <= answered - last_key < 2.8
        assert user_messages(llm) == [[keypad_message("42")]]
        assert not any("One moment." in s for s in heard_texts(leg.played_pcm))


async def test_a_key_over_the_agent_barges_in_like_speech() -> None:
    words = " ".join(f"word{i}." for i in range(60))
    replies = [f"Let me tell you everything. {words}", "Got your keys."]
    llm = FakeLanguageModel(replies, timing=FakeTiming(each_ms=50))
    registry, made = providers(llm, tts_timing=FakeTiming(each_ms=15))
    async with conversation_env(registry, agents=[llm_agent()]) as env:
        leg = await env.call("c1", agent="llm")
        await env.greeted(leg, HELLO)
        press(leg, "#")  # a first entry: the long answer starts
        await env.wait_heard(leg, "Let me tell you everything.")
        await asyncio.sleep(0.5)
        log_llm, log_tts = made["llm"].log, made["tts"].log  # type: ignore[attr-defined]
        assert leg.playout_queued > 0 and log_llm.finished == 0
        press(leg, "3")
        await wait_until(lambda: leg.cleared != [], timeout=1, what="agent audio cleared")
        assert leg.playout_queued == 0
        await wait_until(lambda: log_llm.cancelled == 1, timeout=2, what="LLM cancelled")
        await wait_until(lambda: log_tts.cancelled == 1, timeout=2, what="TTS cancelled")
        press(leg, "#")
        await env.wait_heard(leg, "Got your keys.", timeout=3)
        state = saved_state(env, "c1")
        assert state is not None
        cut = next(line for line in state.transcript if line.interrupted)
        assert cut.speaker == "agent" and cut.text.startswith("Let me tell you everything.")
        assert cut.text in " ".join(heard_texts(leg.heard_pcm()))  # only what was heard
        assert [line.text for line in state.transcript if line.speaker == "caller"] == [
            "[keypad] #", "[keypad] 3#"]
        assert user_messages(llm)[-1] == [keypad_message("#"), keypad_message("3#")]


async def test_the_flow_brain_takes_the_intent_whose_keys_were_pressed() -> None:
    registry, _ = providers(FakeLanguageModel())
    async with conversation_env(registry, agents=[flow_agent()]) as env:
        leg = await env.call("c1")
        await env.greeted(leg, "Hello, thanks for calling The Olive Tree.")
        press(leg, "0#")  # the demo script: 0 for a person
        await env.wait_heard(leg, "Of course, let me put you through to a colleague.")
        await wait_until(lambda: leg.transfers != [], timeout=10, what="transfer")
        assert leg.transfers == ["sip:frontdesk@olive-tree.example"]


# -- the flow agent and its script --------------------------------------------------------------

SCRIPT = """\
greeting: Hello. Press 1 for opening hours.
transfer_to: "sip:desk@example.org"
intents:
  - name: opening_hours
    phrases: [opening hours]
    dtmf: "1"
    say: We open at noon.
  - name: book
    phrases: [book a table]
    dtmf: "2"
    slots:
      - name: people
        kind: number
        prompt: For how many people?
        min: 1
        max: 12
    done: Booked for {people}.
fallback:
  reprompts: ["Sorry, press 1 for opening hours."]
  then: hang_up
"""
TOOLS = [ToolSpec(name="transfer", description="."), ToolSpec(name="hang_up", description=".")]


async def reply(agent: FlowAgent, messages: list[ChatMessage], content: str) -> str:
    messages.append(ChatMessage(role="user", content=content))
    events = [e async for e in agent.stream(messages, TOOLS)]
    text = "".join(e.text for e in events if isinstance(e, LlmText))
    messages.append(ChatMessage(role="assistant", content=text))
    return text


@pytest.mark.parametrize("keys", ["1", "1#"])
async def test_a_flow_intent_is_selected_by_its_keys(keys: str) -> None:
    agent = FlowAgent(parse_flow(SCRIPT), today=lambda: dt.date(2026, 11, 25))
    messages: list[ChatMessage] = []
    assert await reply(agent, messages, keypad_message(keys)) == (
        "We open at noon. Is there anything else I can help you with?")


async def test_keys_answer_a_number_slot_and_unknown_keys_are_a_miss() -> None:
    agent = FlowAgent(parse_flow(SCRIPT), today=lambda: dt.date(2026, 11, 25))
    messages: list[ChatMessage] = []
    assert await reply(agent, messages, keypad_message("9#")) == (
        "Sorry, press 1 for opening hours.")  # no fuzzy guess at "the caller pressed..."
    assert await reply(agent, messages, keypad_message("2")) == "For how many people?"
    assert await reply(agent, messages, keypad_message("4#")) == (
        "Booked for 4. Is there anything else I can help you with?")


BASE = """\
greeting: Hello.
transfer_to: "sip:desk@example.org"
intents:
  - name: hours
    phrases: [opening hours]
    dtmf: "1"
  - name: book
    phrases: [book a table]
"""


@pytest.mark.parametrize(("tail", "line", "message"), [
    ("    dtmf: 2\n", 9, ("intents[1].dtmf: Expected `str`, got `int`; write the keys "
                        '(0-9, *, A-D, or a lone #) in quotes, e.g. dtmf: "1"')),
    ('    dtmf: "2x"\n', 9, "intents[1].dtmf: Expected `str` matching regex"),
    ("    dtmf: #\n", 9, "intents[1].dtmf: Expected `str`, got `null`; write the keys"),
    ('    dtmf: "1"\n', 9, "intents[1].dtmf: these keys already select intents[0]"),
    ('    dtmf: "1#"\n', 9, "intents[1].dtmf: these keys already select intents[0]"),
])
def test_a_bad_dtmf_value_is_an_error_naming_its_line(tail: str, line: int,
                                                      message: str) -> None:
    with pytest.raises(FlowFileError) as error:
        parse_flow(BASE + tail, source="flow.yaml")
    assert str(error.value).startswith(f"flow.yaml:{line}:"), str(error.value)
    assert message in str(error.value)
