"""A crashed call actor is restarted by the calls supervisor and resumes the same conversation
on the same media leg: same turn counter and transcript, no second greeting, the owed answer
if the caller was waiting for one; the tenant's slot is held throughout and released once.
Past the restart limit, or without a state store, the crash ends the call cleanly."""

from __future__ import annotations

import asyncio

import pytest
from switchboard.actors.agent import AgentFactory
from switchboard.actors.call import MAX_CALL_RESTARTS
from switchboard.actors.conversation import ConversationAgent, ConversationBrain
from switchboard.actors.conversation_services import ConversationServices
from switchboard.actors.provider_registry import ProviderRegistry
from switchboard.protocols.events import CallAnswered, CallStarted
from switchboard.protocols.tenants import AgentConfig
from switchboard.providers.fakes import FakeLanguageModel, FakeSpeechToText, FakeTiming

from tests.support.conversation import (
    ConversationEnv,
    QuickTextToSpeech,
    conversation_env,
    heard_texts,
    llm_agent,
    saved_state,
    speech,
)
from tests.support.harness import wait_until

pytestmark = pytest.mark.unit

GREETING = "Hello, how can I help?"


class CrashingAgent(ConversationAgent):
    """Key 9 is a bug on the media path: the call actor crashes."""

    def on_dtmf(self, digit: str) -> None:
        if digit == "9":
            raise RuntimeError("a bug in the agent")


class CrashingBrain(ConversationBrain):
    def __call__(self, agent: AgentConfig) -> ConversationAgent:
        self.made = getattr(self, "made", 0) + 1
        return CrashingAgent(agent, self.services)


def crashing_brains(services: ConversationServices) -> dict[str, AgentFactory]:
    return {"llm": CrashingBrain(services, mode="llm")}


def registry(*, llm_first_ms: float = 0.0) -> ProviderRegistry:
    registry = ProviderRegistry()
    registry.add_stt("fake-stt", lambda: FakeSpeechToText(), in_thread=False)
    registry.add_tts("fake-tts", lambda rate: QuickTextToSpeech(sample_rate=rate),
                     in_thread=False)

    def reply(messages: object) -> str:
        users = [m for m in messages if m.role == "user"]  # type: ignore[attr-defined]
        return f"Answer number {len(users)}."

    registry.add_llm("fake-llm", lambda: FakeLanguageModel(
        reply, timing=FakeTiming(first_ms=llm_first_ms)), in_thread=False)
    return registry


def restarts(env: ConversationEnv, call_id: str) -> int:
    cell = env.system.cell(env.system.ref("call", call_id))
    return cell.restarts if cell is not None else -1


async def test_a_crashed_call_actor_resumes_the_same_conversation() -> None:
    async with conversation_env(registry(), agents=[llm_agent()],
                                brains=crashing_brains) as env:
        leg = await env.call("c1", agent="llm")
        await env.greeted(leg, GREETING)
        leg.say(speech("first question"))
        await env.wait_heard(leg, "Answer number 1.")
        await wait_until(lambda: (s := saved_state(env, "c1")) is not None
                         and len(s.messages) == 3, what="turn 1 saved")
        leg.press("9")  # the call actor crashes
        await wait_until(lambda: restarts(env, "c1") == 1, what="the call actor restarted")
        await env.wait_heard(leg, "Where were we?")  # the short resumption phrase
        leg.say(speech("second question"))
        await env.wait_heard(leg, "Answer number 2.")
        await wait_until(lambda: (s := saved_state(env, "c1")) is not None and s.turn == 2,
                         what="turn 2 saved")
        state = saved_state(env, "c1")
        assert state is not None
        assert [m.content for m in state.messages if m.role == "user"] == [
            "first question", "second question"]
        assert [(line.speaker, line.turn) for line in state.transcript] == [
            ("agent", 0), ("caller", 1), ("agent", 1), ("caller", 2)]
        said = heard_texts(leg.played_pcm)
        assert said.count(GREETING) == 1  # no second greeting
        assert await env.active_calls() == 1  # the slot was held through the restart
        assert leg.hangups == [] and leg.answered.is_set()
        leg.hang_up()
        await wait_until(lambda: env.ended("c1") != [], what="call ended")
        await asyncio.sleep(0.1)
        events = env.of_call("c1")
        assert sum(isinstance(e, CallStarted) for e in events) == 1
        assert sum(isinstance(e, CallAnswered) for e in events) == 1
        assert len(env.ended("c1")) == 1 and env.ended("c1")[0].reason == "caller_hangup"
        assert await env.active_calls() == 0
        assert [t.turn for t in env.turns("c1")] == [1, 2]


async def test_a_call_actor_crashing_while_an_answer_is_owed_gives_that_answer() -> None:
    async with conversation_env(registry(llm_first_ms=800), agents=[llm_agent()],
                                brains=crashing_brains) as env:
        leg = await env.call("c1", agent="llm")
        await env.greeted(leg, GREETING)
        leg.say(speech("first question"))
        await wait_until(lambda: (s := saved_state(env, "c1")) is not None and s.turn == 1,
                         timeout=5, what="the caller's turn saved")
        leg.press("9")  # crash while the model is still thinking
        await wait_until(lambda: restarts(env, "c1") == 1, what="the call actor restarted")
        await env.wait_heard(leg, "Answer number 1.", timeout=5)
        said = heard_texts(leg.played_pcm)
        assert "Sorry about that. Where were we?" not in said  # it answered instead
        assert said.count(GREETING) == 1


async def test_past_the_restart_limit_a_crash_ends_the_call_once() -> None:
    async with conversation_env(registry(), agents=[llm_agent()],
                                brains=crashing_brains) as env:
        leg = await env.call("c1", agent="llm")
        await env.greeted(leg, GREETING)
        for crash in range(MAX_CALL_RESTARTS + 1):
            leg.press("9")
            if crash < MAX_CALL_RESTARTS:
                await wait_until(lambda n=crash + 1: restarts(env, "c1") == n,  # type: ignore[misc]
                                 what=f"restart {crash + 1}")
        await wait_until(lambda: env.ended("c1") != [], what="call ended")
        assert env.ended("c1")[0].reason == "error" and leg.hangups == ["error"]
        await wait_until(lambda: env.system.cell(env.system.ref("call", "c1")) is None,
                         what="actor gone")
        assert await env.active_calls() == 0
        assert saved_state(env, "c1") is None
