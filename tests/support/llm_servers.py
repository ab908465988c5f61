"""Local servers that speak the OpenAI Chat Completions and Anthropic Messages wire protocols.

Cloud LLMs cannot be reached from here, so their adapters are tested through the vendors'
official SDKs against this server on 127.0.0.1, which replays scripted responses in the
documented server-sent-event formats:

- OpenAI: `POST /v1/chat/completions`, `data: {chat.completion.chunk}` lines, tool calls as
  `delta.tool_calls[i]` fragments, an optional usage chunk, then `data: [DONE]`; an error
  inside the stream is `data: {"error": {...}}`.
- Anthropic: `POST /v1/messages`, `event: <type>` + `data: {...}` pairs: message_start,
  content_block_start / _delta (text_delta, input_json_delta) / _stop, ping, message_delta,
  message_stop, and `event: error`.

A response is a list of steps: `Sse` events, `Pause`s, and `Stall` (hold the connection open
and send nothing, the dead-air case), or an HTTP error status with a JSON body. The server
records each request's JSON body and headers, and counts clients that hung up mid-response,
so a test can check that cancelling a stream really closed it.

    async with LlmServer() as server:
        server.push(Scripted(steps=openai_reply(["Hello there."])))
        model = OpenAICompatibleModel(model="m", base_url=server.openai_url, api_key="k")
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web
from switchboard.protocols.llm import ToolCall


@dataclass(frozen=True)
class Sse:
    """One server-sent event; `data` is JSON (a dict) or a raw string such as "[DONE]"."""

    data: dict[str, Any] | str
    event: str | None = None

    def encode(self) -> bytes:
        data = self.data if isinstance(self.data, str) else json.dumps(self.data)
        head = f"event: {self.event}\n" if self.event else ""
        return f"{head}data: {data}\n\n".encode()


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class Stall:
    """Send nothing more and keep the connection open until the client leaves."""


Step = Sse | Pause | Stall


@dataclass(frozen=True)
class Scripted:
    """One response: an SSE stream (`steps`) with status 200, or an error `status` + `body`."""

    steps: Sequence[Step] = ()
    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Recorded:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


class LlmServer:
    """An aiohttp server on a free loopback port; responses are served in the order pushed."""

    def __init__(self) -> None:
        self._scripts: deque[Scripted] = deque()
        self.requests: list[Recorded] = []
        self.hung_up = 0  # clients that closed the connection before the response ended
        self.hung_up_event = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def push(self, *responses: Scripted) -> None:
        self._scripts.extend(responses)

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/v1/messages", self._handle)
        # handler_cancellation: a client that hangs up cancels the handler, which counts it.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True,
                                     shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.requests.append(Recorded(request.path, body, headers))
        if not self._scripts:
            return web.json_response({"error": {"type": "test_error",
                                                "message": "no scripted response"}}, status=500)
        script = self._scripts.popleft()
        if script.status != 200:
            return web.json_response(script.body or {}, status=script.status,
                                     headers=script.headers)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache", **script.headers})
        try:
            await response.prepare(request)
            for step in script.steps:
                if isinstance(step, Sse):
                    await response.write(step.encode())
                elif isinstance(step, Pause):
                    await asyncio.sleep(step.seconds)
                else:
                    await asyncio.Event().wait()
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionResetError):
            self.hung_up += 1
            self.hung_up_event.set()
            raise
        return response


# -- OpenAI chat.completion.chunk streams -------------------------------------------------------


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words) if w or i == 0]


def _fragments(text: str, size: int = 7) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def _chunk(delta: dict[str, Any], finish: str | None = None, model: str = "test-model"
           ) -> Sse:
    return Sse({"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1764000000,
                "model": model, "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}]})


def openai_reply(parts: Sequence[str | ToolCall], *, usage: tuple[int, int] | None = (12, 7),
                 finish: str | None = None) -> list[Step]:
    """A whole streamed completion: role chunk, word chunks, tool call fragments, the finish
    chunk, the usage chunk (if `usage`), `[DONE]`."""
    steps: list[Step] = [_chunk({"role": "assistant", "content": ""})]
    calls = 0
    for part in parts:
        if isinstance(part, str):
            steps += [_chunk({"content": piece}) for piece in _pieces(part)]
            continue
        steps.append(_chunk({"tool_calls": [{"index": calls, "id": part.id, "type": "function",
                                             "function": {"name": part.name,
                                                          "arguments": ""}}]}))
        steps += [_chunk({"tool_calls": [{"index": calls, "function": {"arguments": piece}}]})
                  for piece in _fragments(part.arguments)]
        calls += 1
    steps.append(_chunk({}, finish or ("tool_calls" if calls else "stop")))
    if usage is not None:
        steps.append(Sse({"id": "chatcmpl-test", "object": "chat.completion.chunk",
                          "created": 1764000000, "model": "test-model", "choices": [],
                          "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                                    "total_tokens": sum(usage)}}))
    steps.append(Sse("[DONE]"))
    return steps


def openai_stream_error(kind: str = "server_error", message: str = "") -> Sse:
    return Sse({"error": {"message": message or "The server had an error.", "type": kind,
                          "param": None, "code": None}})


def openai_status(status: int, kind: str, message: str = "", *, retry_after: str = ""
                  ) -> Scripted:
    headers = {"retry-after": retry_after} if retry_after else {}
    headers["x-request-id"] = "req_test123"
    return Scripted(status=status, headers=headers, body={"error": {
        "message": message or f"error {status}", "type": kind, "param": None, "code": kind}})


# -- Anthropic Messages event streams ----------------------------------------------------------


def _event(kind: str, **data: Any) -> Sse:
    return Sse({"type": kind, **data}, event=kind)


def anthropic_reply(parts: Sequence[str | ToolCall], *, usage: tuple[int, int] = (12, 7),
                    stop_reason: str | None = None) -> list[Step]:
    """A whole streamed message: message_start, a ping, one content block per part (text
    deltas a word at a time, tool input JSON in fragments), message_delta, message_stop."""
    steps: list[Step] = [_event("message_start", message={
        "id": "msg_test", "type": "message", "role": "assistant", "model": "test-model",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": usage[0], "output_tokens": 1}})]
    steps.append(_event("ping"))
    called = False
    for index, part in enumerate(parts):
        if isinstance(part, str):
            steps.append(_event("content_block_start", index=index,
                                content_block={"type": "text", "text": ""}))
            steps += [_event("content_block_delta", index=index,
                             delta={"type": "text_delta", "text": piece})
                      for piece in _pieces(part)]
        else:
            called = True
            steps.append(_event("content_block_start", index=index, content_block={
                "type": "tool_use", "id": part.id, "name": part.name, "input": {}}))
            steps += [_event("content_block_delta", index=index,
                             delta={"type": "input_json_delta", "partial_json": piece})
                      for piece in _fragments(part.arguments)]
        steps.append(_event("content_block_stop", index=index))
    reason = stop_reason or ("tool_use" if called else "end_turn")
    steps.append(_event("message_delta", delta={"stop_reason": reason, "stop_sequence": None},
                        usage={"output_tokens": usage[1]}))
    steps.append(_event("message_stop"))
    return steps


def anthropic_stream_error(kind: str = "overloaded_error", message: str = "") -> Sse:
    return _event("error", error={"type": kind, "message": message or "Overloaded"})


def anthropic_status(status: int, kind: str, message: str = "", *, retry_after: str = ""
                     ) -> Scripted:
    headers = {"retry-after": retry_after} if retry_after else {}
    headers["request-id"] = "req_test123"
    return Scripted(status=status, headers=headers, body={
        "type": "error", "error": {"type": kind, "message": message or f"error {status}"}})
