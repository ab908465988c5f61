"""OpenAI Chat Completions, streamed, through the official `openai` SDK: OpenAI itself and any
server that speaks the same API (vLLM, TGI, llama.cpp's server, LiteLLM): a base URL, an API
key and a model name.

One `stream()` is one `POST /chat/completions` with `stream: true`. Text deltas become
`LlmText`; `tool_calls` deltas are assembled into whole `LlmToolCall`s (tool_calls.py), sent
when the model says it is done; the usage chunk (`stream_options.include_usage`) fills
`LlmFinish`. Closing the iterator, or cancelling its consumer, closes the HTTP stream, so the
server stops generating.

Dead air: the SDK stream is read under a `ProgressDeadline` (first chunk within
`first_token_ms`, connect and headers included; then a chunk every `stall_ms`), so a server
that stalls mid-answer becomes `ProviderStalled` within the turn; the HTTP read timeout is a
backstop behind it. The SDK's own retries are off by default (`max_retries=0`): its backoff
would spend the turn's budget, and the pool fails over instead. Errors: api_errors.py.

Tested against tests/support/llm_servers.py, a local server that replays the documented SSE
wire format, driven through this SDK; never against the live service from here.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from typing import Any, cast

import openai
from openai.types.chat import ChatCompletionChunk
from switchboard.protocols.llm import (
    ChatMessage,
    FinishReason,
    LlmEvent,
    LlmFinish,
    LlmText,
    LlmToolCall,
    ToolSpec,
)
from switchboard.protocols.tenants import Secret
from switchboard.providers.deadline import ProgressDeadline
from switchboard.providers.errors import ProviderError, ProviderRejected
from switchboard.providers.llm import api_errors
from switchboard.providers.llm.tool_calls import ToolCallBuffer

_REASONS: dict[str, FinishReason] = {"stop": "stop", "length": "length",
                                      "tool_calls": "tool_calls", "function_call": "tool_calls"}


class OpenAICompatibleModel:
    """Implements `LanguageModel` over an OpenAI-compatible Chat Completions endpoint.

    `base_url` None means OpenAI's own; `api_key` None reads OPENAI_API_KEY (servers that
    need no key, like a default vLLM, get a placeholder). `extra_body` passes fields the
    server knows and the SDK does not (e.g. vLLM's `top_k`).
    """

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | Secret | None = None,
        provider: str = "openai",
        temperature: float | None = None,
        max_tokens: int | None = 512,
        first_token_ms: float = 3000.0,
        stall_ms: float = 2000.0,
        connect_timeout_s: float = 3.0,
        max_retries: int = 0,
        include_usage: bool = True,
        extra_body: Mapping[str, Any] | None = None,
        client: openai.AsyncOpenAI | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self._base_url = base_url
        self._temperature = temperature
        self._max_tokens = max_tokens
        self._first_token_ms = first_token_ms
        self._stall_ms = stall_ms
        self._include_usage = include_usage
        self._extra_body = dict(extra_body or {})
        self._client = client or openai.AsyncOpenAI(
            api_key=_api_key(api_key, base_url, provider),
            base_url=base_url,
            max_retries=max_retries,
            timeout=openai.Timeout(
                connect=connect_timeout_s, read=max(first_token_ms, stall_ms) / 1000 + 1.0,
                write=connect_timeout_s, pool=connect_timeout_s),
        )

    def __repr__(self) -> str:
        return (f"OpenAICompatibleModel(provider={self.provider!r}, model={self.model!r}, "
                f"base_url={api_errors.redact_url(self._base_url)!r})")

    async def aclose(self) -> None:
        """Close the HTTP connection pool (the adapter is unusable afterwards)."""
        await self._client.close()

    async def stream(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[LlmEvent]:
        chunks = ProgressDeadline(
            self._chunks(messages, tools), stall_ms=self._stall_ms,
            first_item_ms=self._first_token_ms, provider=self.provider, what="token",
        )
        calls = ToolCallBuffer(self.provider)
        reason: FinishReason | None = None
        called = False
        usage = (0, 0)
        async with aclosing(chunks):
            async for chunk in chunks:
                if chunk.usage is not None:
                    usage = (chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                delta = choice.delta
                if delta.content:
                    yield LlmText(text=delta.content)
                for part in delta.tool_calls or ():
                    function = part.function
                    calls.add(part.index, call_id=part.id,
                              name=function.name if function else None,
                              arguments=function.arguments if function else None)
                if choice.finish_reason is not None:
                    reason = _REASONS.get(choice.finish_reason, "stop")
                    for call in calls.take(truncated=reason == "length"):
                        called = True
                        yield LlmToolCall(call=call)
        if reason is None:
            raise api_errors.truncated_error(self.provider)
        yield LlmFinish(reason="tool_calls" if called else reason,
                        input_tokens=usage[0], output_tokens=usage[1])

    async def _chunks(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]
                      ) -> AsyncIterator[ChatCompletionChunk]:
        """The SDK's chunks, with its errors mapped; runs under the progress deadline."""
        options: dict[str, Any] = {}
        if tools:
            options["tools"] = [_tool(spec) for spec in tools]
        if self._temperature is not None:
            options["temperature"] = self._temperature
        if self._max_tokens is not None:
            options["max_tokens"] = self._max_tokens
        if self._include_usage:
            options["stream_options"] = {"include_usage": True}
        if self._extra_body:
            options["extra_body"] = self._extra_body
        # Errors are mapped outside the `except` blocks, so the vendor's exception (whose
        # text may echo the prompt) is not chained to ours and never reaches a log.
        error: ProviderError | None = None
        try:
            sdk_stream = await self._client.chat.completions.create(
                model=self.model, messages=cast(Any, [_message(m) for m in messages]),
                stream=True, **options,
            )
        except openai.OpenAIError as exc:
            error = self._error(exc)
        if error is not None:
            raise error
        try:
            async for item in sdk_stream:
                yield item
        except openai.OpenAIError as exc:
            error = self._error(exc)
        finally:
            await sdk_stream.close()
        if error is not None:
            raise error

    def _error(self, exc: openai.OpenAIError) -> ProviderError:
        if isinstance(exc, openai.APIStatusError):
            headers = exc.response.headers
            return api_errors.status_error(
                self.provider, exc.status_code, error_kind=api_errors.error_type(exc.body),
                request_id=exc.request_id, retry_after=headers.get("retry-after"))
        if isinstance(exc, openai.APITimeoutError):
            return api_errors.timeout_error(self.provider, None)
        if isinstance(exc, openai.APIConnectionError):
            return api_errors.connection_error(self.provider)
        if isinstance(exc, openai.APIResponseValidationError):
            return ProviderRejected(
                f"{self.provider} answered in a shape the OpenAI SDK does not accept; check "
                "that the base URL points at an OpenAI-compatible server", provider=self.provider)
        if isinstance(exc, openai.APIError):  # an error object inside the stream
            return api_errors.stream_error(self.provider, api_errors.error_type(exc.body))
        return ProviderError(f"the OpenAI SDK failed ({type(exc).__name__})",
                             provider=self.provider)


def _api_key(api_key: str | Secret | None, base_url: str | None, provider: str) -> str:
    if isinstance(api_key, Secret):
        return api_key.reveal()
    if api_key:
        return api_key
    from_env = os.environ.get("OPENAI_API_KEY")
    if from_env:
        return from_env
    if base_url is not None:
        return "no-key"  # a self-hosted server that checks no key still wants the header
    raise ProviderRejected(
        f"no API key for {provider}: set OPENAI_API_KEY or the provider's api_key",
        provider=provider)


def _tool(spec: ToolSpec) -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": spec.name, "description": spec.description, "parameters": spec.parameters}}


def _message(message: ChatMessage) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        return {"role": "assistant", "content": message.content or None, "tool_calls": [
            {"id": call.id, "type": "function",
             "function": {"name": call.name, "arguments": call.arguments}}
            for call in message.tool_calls]}
    return {"role": message.role, "content": message.content}
