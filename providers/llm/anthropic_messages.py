"""Anthropic Messages API, streamed, through the official `anthropic` SDK.

One `stream()` is one `POST /v1/messages` with `stream: true`. The SSE events map as follows:

    message_start                     input token count
    content_block_start (text)        its text, if any, as LlmText
    content_block_start (tool_use)    opens a tool call (id, name)
    content_block_delta text_delta    LlmText
    content_block_delta input_json_delta   a fragment of the open tool call's input JSON
    content_block_stop                closes the block (a tool call is kept until the end)
    message_delta                     stop_reason and output token count; tool calls go out
    message_stop                      LlmFinish
    ping                              skipped by the SDK
    error                             ProviderError, retryable for overloaded/api/rate-limit

System messages become the top-level `system` field; tool results become `tool_result` blocks
in a user turn; consecutive turns of one role are merged, as the API wants them alternating.
Unknown event and block types (thinking, citations) are skipped.

Deadlines, cancellation, retries and error mapping work as in openai_compat.py. Tested
against tests/support/llm_servers.py (a local server replaying the documented event
stream) through this SDK; never against the live service from here.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from typing import Any, cast

import anthropic
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

_REASONS: dict[str, FinishReason] = {"end_turn": "stop", "stop_sequence": "stop",
                                      "max_tokens": "length", "tool_use": "tool_calls"}


class AnthropicMessagesModel:
    """Implements `LanguageModel` over the Anthropic Messages API (or a compatible server).

    `api_key` None reads ANTHROPIC_API_KEY. `max_tokens` is required by the API; a spoken
    reply rarely needs more than a few hundred. `extra_body` passes other request fields
    (e.g. `temperature`).
    """

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | Secret | None = None,
        provider: str = "anthropic",
        max_tokens: int = 512,
        first_token_ms: float = 3000.0,
        stall_ms: float = 2000.0,
        connect_timeout_s: float = 3.0,
        max_retries: int = 0,
        extra_body: Mapping[str, Any] | None = None,
        client: anthropic.AsyncAnthropic | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self._base_url = base_url
        self._max_tokens = max_tokens
        self._first_token_ms = first_token_ms
        self._stall_ms = stall_ms
        self._extra_body = dict(extra_body or {})
        self._client = client or anthropic.AsyncAnthropic(
            api_key=_api_key(api_key, provider),
            base_url=base_url,
            max_retries=max_retries,
            timeout=anthropic.Timeout(
                connect=connect_timeout_s, read=max(first_token_ms, stall_ms) / 1000 + 1.0,
                write=connect_timeout_s, pool=connect_timeout_s),
        )

    def __repr__(self) -> str:
        return (f"AnthropicMessagesModel(provider={self.provider!r}, model={self.model!r}, "
                f"base_url={api_errors.redact_url(self._base_url)!r})")

    async def aclose(self) -> None:
        await self._client.close()

    async def stream(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[LlmEvent]:
        events = ProgressDeadline(
            self._events(messages, tools), stall_ms=self._stall_ms,
            first_item_ms=self._first_token_ms, provider=self.provider, what="event",
        )
        calls = ToolCallBuffer(self.provider)
        reason: FinishReason | None = None
        called = stopped = False
        input_tokens = output_tokens = 0
        async with aclosing(events):
            async for event in events:
                kind = getattr(event, "type", None)
                if kind == "message_start":
                    input_tokens = event.message.usage.input_tokens or 0
                elif kind == "content_block_start":
                    block = event.content_block
                    if block.type == "tool_use":
                        calls.add(event.index, call_id=block.id, name=block.name)
                    elif block.type == "text" and block.text:
                        yield LlmText(text=block.text)
                elif kind == "content_block_delta":
                    delta = event.delta
                    if delta.type == "text_delta" and delta.text:
                        yield LlmText(text=delta.text)
                    elif delta.type == "input_json_delta":
                        calls.add(event.index, arguments=delta.partial_json)
                elif kind == "message_delta":
                    reason = _REASONS.get(event.delta.stop_reason or "", "stop")
                    output_tokens = event.usage.output_tokens or 0
                    for call in calls.take(truncated=reason == "length"):
                        called = True
                        yield LlmToolCall(call=call)
                elif kind == "message_stop":
                    stopped = True
        if not stopped or reason is None:
            raise api_errors.truncated_error(self.provider)
        yield LlmFinish(reason="tool_calls" if called else reason,
                        input_tokens=input_tokens, output_tokens=output_tokens)

    async def _events(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]
                      ) -> AsyncIterator[Any]:
        """The SDK's events, with its errors mapped; runs under the progress deadline."""
        system, turns = _conversation(messages)
        options: dict[str, Any] = {}
        if system:
            options["system"] = system
        if tools:
            options["tools"] = [{"name": t.name, "description": t.description,
                                 "input_schema": t.parameters} for t in tools]
        if self._extra_body:
            options["extra_body"] = self._extra_body
        # Errors are mapped outside the `except` blocks, so the vendor's exception (whose
        # text may echo the prompt) is not chained to ours and never reaches a log.
        error: ProviderError | None = None
        try:
            sdk_stream = await self._client.messages.create(
                model=self.model, max_tokens=self._max_tokens, messages=cast(Any, turns),
                stream=True, **options,
            )
        except anthropic.AnthropicError as exc:
            error = self._error(exc)
        if error is not None:
            raise error
        try:
            async for item in sdk_stream:
                yield item
        except anthropic.AnthropicError as exc:
            error = self._error(exc)
        finally:
            await sdk_stream.close()
        if error is not None:
            raise error

    def _error(self, exc: anthropic.AnthropicError) -> ProviderError:
        if isinstance(exc, anthropic.APIStatusError):
            kind = api_errors.error_type(exc.body)
            if exc.status_code < 400:  # an `error` event inside a stream that had started
                return api_errors.stream_error(self.provider, kind, exc.request_id)
            return api_errors.status_error(
                self.provider, exc.status_code, error_kind=kind, request_id=exc.request_id,
                retry_after=exc.response.headers.get("retry-after"))
        if isinstance(exc, anthropic.APITimeoutError):
            return api_errors.timeout_error(self.provider, None)
        if isinstance(exc, anthropic.APIConnectionError):
            return api_errors.connection_error(self.provider)
        if isinstance(exc, anthropic.APIResponseValidationError):
            return ProviderRejected(
                f"{self.provider} answered in a shape the Anthropic SDK does not accept; check "
                "the base URL", provider=self.provider)
        return ProviderError(f"the Anthropic SDK failed ({type(exc).__name__})",
                             provider=self.provider, retryable=True)


def _api_key(api_key: str | Secret | None, provider: str) -> str:
    if isinstance(api_key, Secret):
        return api_key.reveal()
    key = api_key or os.environ.get("ANTHROPIC_API_KEY")
    if not key:
        raise ProviderRejected(
            f"no API key for {provider}: set ANTHROPIC_API_KEY or the provider's api_key",
            provider=provider)
    return key


def _conversation(messages: Sequence[ChatMessage]) -> tuple[str, list[dict[str, Any]]]:
    """(system text, alternating user/assistant turns of content blocks)."""
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _blocks(message: ChatMessage) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [{"type": "tool_result", "tool_use_id": message.tool_call_id,
                 "content": message.content}]
    blocks: list[dict[str, Any]] = []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        try:
            arguments = json.loads(call.arguments or "{}")
        except ValueError:
            arguments = {}
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name,
                       "input": arguments if isinstance(arguments, dict) else {}})
    return blocks
