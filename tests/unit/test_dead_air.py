"""No dead air: a provider of each kind that stalls mid-turn is replaced and the caller hears
the agent again within a bound (a filler phrase fills the wait past 1.2 s); a provider that
fails mid-turn is replaced within the turn; when nothing works the caller hears a filler,
then an apology, never silence. Every recovery is counted in
`switchboard_dead_air_total{stage,recovery}`."""

from __future__ import annotations

import time

import pytest
from prometheus_client import REGISTRY
from switchboard.actors.provider_registry import ProviderRegistry
from switchboard.providers.fakes import (
    FakeLanguageModel,
    FakeSpeechToText,
    FakeTiming,
)

from tests.support.conversation import (
    QuickTextToSpeech,
    RealtimeLeg,
    conversation_env,
    heard_texts,
    llm_agent,
    speech,
)
from tests.support.harness import wait_until

pytestmark = pytest.mark.unit

REPLY = "Our kitchen opens at noon. We serve fresh pasta every day."
BOUND = 2.5  # generous: the budget is 2.0 s (detect at 1.2 s)


def dead_air(stage: str, recovery: str) -> float:
    return REGISTRY.get_sample_value("switchboard_dead_air_total",
                                     {"stage": stage, "recovery": recovery}) or 0.0


def failovers(kind: str, source: str, target: str) -> float:
    total = 0.0
    for reason in ("stalled", "unavailable"):
        total += REGISTRY.get_sample_value("switchboard_provider_failovers_total", {
            "kind": kind, "from": source, "to": target, "reason": reason}) or 0.0
    return total


def registry_with(*, stt: dict[str, FakeTiming] | None = None,
                  llm: dict[str, FakeTiming] | None = None,
                  tts: dict[str, FakeTiming] | None = None) -> ProviderRegistry:
    registry = ProviderRegistry()
    for name, timing in (stt or {"fake-stt": FakeTiming()}).items():
        registry.add_stt(name, lambda t=timing: FakeSpeechToText(timing=t), in_thread=False)
    for name, timing in (llm or {"fake-llm": FakeTiming()}).items():
        registry.add_llm(name, lambda t=timing: FakeLanguageModel([REPLY], timing=t),
                         in_thread=False)
    for name, timing in (tts or {"fake-tts": FakeTiming()}).items():
        registry.add_tts(name, lambda rate, t=timing: QuickTextToSpeech(sample_rate=rate,
                                                                        timing=t),
                         in_thread=False)
    return registry


async def ask_and_measure(registry: ProviderRegistry, agent_options: dict[str, object],
                          *, expect: str = "We serve fresh pasta every day."
                          ) -> tuple[RealtimeLeg, float, float]:
    """Ask a question; return the leg, when the caller stopped speaking, and the longest
    stretch of silence from then until the answer's last sentence was handed to the leg."""
    async with conversation_env(registry, agents=[llm_agent(**agent_options)]) as env:
        leg = await env.call("c1", agent="llm")
        await env.greeted(leg, "Hello, how can I help?")
        leg.say(speech("when does the kitchen open"))
        await wait_until(lambda: leg.speaking, timeout=1)
        await wait_until(lambda: not leg.speaking, timeout=5)
        assert leg.speech_ended_at is not None
        stopped = leg.speech_ended_at
        done = await env.wait_heard(leg, expect, timeout=15)
        await wait_until(lambda: leg.playout_queued == 0, timeout=15)
        return leg, stopped, leg.longest_gap(stopped, done)


@pytest.mark.parametrize("kind", ["stt", "llm", "tts"])
async def test_a_provider_stalling_mid_turn_is_replaced_and_the_caller_hears_the_agent(
        kind: str) -> None:
    stall = {"stt": FakeTiming(stall_after=0),   # never sends the final it owes
             "llm": FakeTiming(stall_after=3),   # stops after three words
             "tts": FakeTiming(stall_after=8)}[kind]  # stops mid-sentence
    providers = {kind: {f"{kind}-stall": stall, f"{kind}-good": FakeTiming()}}
    order = {"stt": ["fake-stt"], "llm": ["fake-llm"], "tts": ["fake-tts"]}
    order[kind] = [f"{kind}-stall", f"{kind}-good"]
    before = failovers(kind, f"{kind}-stall", f"{kind}-good")
    leg, stopped, gap = await ask_and_measure(registry_with(**providers),  # type: ignore[arg-type]
                                              {"providers": order})
    assert gap < BOUND, f"{gap:.2f}s without agent audio"
    first = leg.first_audio_after(stopped)
    assert first is not None and first - stopped < BOUND
    assert failovers(kind, f"{kind}-stall", f"{kind}-good") >= before + 1
    said = " ".join(heard_texts(leg.heard_pcm()))
    assert said.count("Our kitchen opens at noon.") <= 2  # at most the cut sentence again
    assert said.endswith("We serve fresh pasta every day.")


@pytest.mark.parametrize("kind", ["llm", "tts"])
async def test_a_provider_failing_mid_turn_is_replaced_within_the_turn(kind: str) -> None:
    fail = FakeTiming(fail_after=4)
    providers = {kind: {f"{kind}-bad": fail, f"{kind}-good": FakeTiming()}}
    order = {"stt": ["fake-stt"], "llm": ["fake-llm"], "tts": ["fake-tts"]}
    order[kind] = [f"{kind}-bad", f"{kind}-good"]
    started = time.monotonic()
    leg, _, gap = await ask_and_measure(registry_with(**providers),  # type: ignore[arg-type]
                                        {"providers": order})
    assert gap < 1.0  # replaced at once: no dead air at all
    assert failovers(kind, f"{kind}-bad", f"{kind}-good") >= 1
    said = heard_texts(leg.heard_pcm())
    assert said[-2:] == ["Our kitchen opens at noon.", "We serve fresh pasta every day."]
    assert time.monotonic() - started < 15


async def test_with_every_llm_stalled_the_caller_hears_a_filler_then_an_apology() -> None:
    filler, retry, apology = (dead_air("llm", r) for r in ("filler", "retry", "apology"))
    registry = registry_with(llm={"llm-stall": FakeTiming(stall_after=0)})
    async with conversation_env(registry, agents=[llm_agent(providers={
            "stt": ["fake-stt"], "llm": ["llm-stall"], "tts": ["fake-tts"]})]) as env:
        leg = await env.call("c1", agent="llm")
        await env.greeted(leg, "Hello, how can I help?")
        leg.say(speech("when does the kitchen open"))
        await wait_until(lambda: leg.speaking, timeout=1)
        await wait_until(lambda: not leg.speaking, timeout=5)
        stopped = leg.speech_ended_at
        assert stopped is not None
        filler_at = await env.wait_heard(leg, "One moment.", timeout=5)
        assert filler_at - stopped < 1.6  # 1.2 s plus a tick and the pacing of the fake leg
        apology_at = await env.wait_heard(leg, "Could you say that again?", timeout=10)
        assert apology_at - stopped < 6
    assert dead_air("llm", "filler") == filler + 1
    assert dead_air("llm", "retry") == retry + 1
    assert dead_air("llm", "apology") == apology + 1
