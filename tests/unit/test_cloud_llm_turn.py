"""A `brain: llm` agent reaching a cloud LLM through the node's wiring: a providers file,
`add_llm_providers` into the node's registry and `build_brains`, driven by the conversation
harness, against a local server that speaks OpenAI's (or Anthropic's) streamed wire protocol
through the official SDK. The caller asks, the agent's answer is spoken; the request carries
the prompt, the caller's words and the key from the environment, and no log line shows the
key. Loopback only: no vendor is reached from here."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path

import pytest
from switchboard.actors.agent import AgentFactory
from switchboard.actors.conversation_services import ConversationServices, FlowLibrary
from switchboard.actors.provider_registry import ProviderRegistry
from switchboard.protocols.llm import ChatMessage, LlmText
from switchboard.protocols.providers_config import LlmProvider
from switchboard.providers.fakes import FakeLanguageModel, FakeSpeechToText, FakeVad
from switchboard.storage.providers_file import parse_providers
from switchboard.supervisor import brains

from tests.support.conversation import (
    ConversationEnv,
    QuickTextToSpeech,
    conversation_env,
    llm_agent,
    speech,
)
from tests.support.harness import wait_until
from tests.support.llm_servers import (
    LlmServer,
    Scripted,
    Stall,
    anthropic_reply,
    openai_reply,
)

pytestmark = pytest.mark.unit

KEY = "sk-test-wiring-0123456789SECRET"
PROMPT = "You answer the phone for The Olive Tree."
QUESTION = "what are your opening hours"
ANSWER = "We're open every day from noon to 10 PM."
GREETING = "Hello, how can I help?"


def providers_file(tmp_path: Path, server: LlmServer, *, extra: str = "") -> Path:
    path = tmp_path / "providers.yaml"
    path.write_text(f"""\
version: 1
llm:
  - name: openai
    adapter: openai-compatible
    base_url: {server.openai_url}
    model: gpt-test-mini
    api_key_env: SB_TEST_LLM_KEY
    max_tokens: 200
{extra}
  - name: anthropic
    adapter: anthropic
    base_url: {server.anthropic_url}
    model: claude-test-haiku
    api_key_env: SB_TEST_LLM_KEY
""")
    return path


def node_registry(providers: list[LlmProvider]) -> ProviderRegistry:
    """The node's registry (embedded, nothing loaded) plus the cloud LLMs, with fake STT/TTS
    so the caller's words and the agent's speech can be read without models."""
    registry = brains.embedded_registry(lambda rate: FakeVad(rate))
    brains.add_llm_providers(registry, providers)
    registry.add_stt("fake-stt", FakeSpeechToText, in_thread=False)
    registry.add_tts("fake-tts", lambda rate: QuickTextToSpeech(sample_rate=rate),
                     in_thread=False)
    registry.add_llm("fake-llm", lambda: FakeLanguageModel(["Sorry, one moment."]),
                     in_thread=False)
    return registry


@asynccontextmanager
async def node_env(providers: list[LlmProvider], llm: list[str]
                   ) -> AsyncIterator[ConversationEnv]:
    """The conversation harness with the node's own `build_brains` over that registry."""
    registry = node_registry(providers)
    made: list[brains.Conversations] = []

    def build(services: ConversationServices) -> dict[str, AgentFactory]:
        made.append(brains.build_brains(services.pools.system, registry, FlowLibrary(),
                                        llm=providers))
        return made[0].brains

    agent = llm_agent("llm", prompt=PROMPT, greeting=GREETING,
                      providers={"stt": ["fake-stt"], "tts": ["fake-tts"], "llm": llm})
    try:
        async with conversation_env(registry, agents=[agent], brains=build) as env:
            yield env
    finally:
        for conversations in made:
            await conversations.aclose()


async def one_turn(env: ConversationEnv) -> None:
    leg = await env.call("c1", agent="llm")
    await env.greeted(leg, GREETING)
    leg.say(speech(QUESTION))
    await env.wait_heard(leg, "open every day from noon", timeout=10)


@pytest.mark.parametrize("vendor", ["openai", "anthropic"])
async def test_an_llm_agent_answers_through_a_configured_cloud_provider(
        vendor: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with LlmServer() as server:
        reply = openai_reply([ANSWER]) if vendor == "openai" else anthropic_reply([ANSWER])
        server.push(Scripted(steps=reply))
        providers = brains.node_llm_providers(providers_file(tmp_path, server),
                                              {"SB_TEST_LLM_KEY": KEY})
        async with node_env(providers, [vendor]) as env:
            await one_turn(env)
        request = server.requests[0]
        if vendor == "openai":
            assert request.path == "/v1/chat/completions"
            assert request.headers["authorization"] == f"Bearer {KEY}"
            assert request.body["model"] == "gpt-test-mini" and request.body["stream"] is True
            assert request.body["max_tokens"] == 200
            sent = request.body["messages"]
            assert sent[0] == {"role": "system", "content": PROMPT}
        else:
            assert request.path == "/v1/messages"
            # This SDK version sends the key as a bearer token; older ones as x-api-key.
            assert KEY in (request.headers.get("x-api-key"),
                           request.headers.get("authorization", "")[7:])
            assert request.body["model"] == "claude-test-haiku"
            assert request.body["system"] == PROMPT
            sent = request.body["messages"]
        assert QUESTION in str(sent[-1]["content"])
    assert f"LLM provider {vendor}:" in caplog.text
    assert KEY not in caplog.text
    # At DEBUG too, no log line carries the prompt or the caller's words (the anthropic SDK
    # logs request bodies at DEBUG unless the node keeps it at INFO).
    assert QUESTION not in caplog.text and PROMPT not in caplog.text


async def test_a_stalled_cloud_provider_fails_over_to_the_next_in_the_agents_order(
        tmp_path: Path) -> None:
    async with LlmServer() as server:
        server.push(Scripted(steps=[Stall()]))  # headers, then nothing: dead air
        path = providers_file(tmp_path, server, extra="    first_token_ms: 400\n")
        providers = brains.node_llm_providers(path, {"SB_TEST_LLM_KEY": KEY})
        async with node_env(providers, ["openai", "fake-llm"]) as env:
            leg = await env.call("c1", agent="llm")
            await env.greeted(leg, GREETING)
            leg.say(speech(QUESTION))
            await wait_until(lambda: server.requests != [], timeout=10, what="the request")
            asked = time.monotonic()
            answered = await env.wait_heard(leg, "Sorry, one moment.", timeout=10)
        # The file's 400 ms first-token deadline moved the turn on (about 0.3 s after the
        # request here); without it the dead-air watchdog's retry does, after about 1.35 s.
        assert answered - asked < 1.0
        assert len(server.requests) == 1 and server.hung_up == 1


async def test_a_self_hosted_server_without_a_key_never_gets_the_vendors_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    async with LlmServer() as server:
        server.push(Scripted(steps=openai_reply(["Hi."])))
        providers = parse_providers(
            f"llm:\n  - {{name: vllm, adapter: openai-compatible, model: m, "
            f"base_url: '{server.openai_url}'}}\n", environ={"OPENAI_API_KEY": KEY})
        registry = node_registry(providers)
        model = await registry.llm("vllm")
        async with aclosing(model.stream([ChatMessage(role="user", content="hi")])) as events:
            texts = [e.text async for e in events if isinstance(e, LlmText)]
        assert "".join(texts) == "Hi."
        assert server.requests[0].headers["authorization"] == "Bearer no-key"
        await registry.aclose()
