"""Chat messages, tools and the events of a streaming LLM completion.

Vendor formats (OpenAI, Anthropic, llama.cpp) are translated to these at the provider edge, so
the call actor handles one shape. Tool calls arrive whole: adapters assemble the argument
fragments that some vendors stream, since nothing can run a half-received call.

Message text and tool arguments are personal data: never logged, never put in an exception.
Schema evolution follows msgspec's rules (new fields with defaults, tags never reused).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Role = Literal["system", "user", "assistant", "tool"]


class ToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """The model asks to run tool `name`; `arguments` is a JSON object as text."""

    id: str
    name: str
    arguments: str = "{}"
    v: int = 1


class ChatMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One turn of the conversation.

    An assistant message may carry `tool_calls`; the answer to a call is a `tool` message
    whose `tool_call_id` names it.
    """

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    v: int = 1


class ToolSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A tool offered to the model; `parameters` is a JSON Schema object."""

    name: str
    description: str
    parameters: dict[str, Any] = msgspec.field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    v: int = 1


class LlmText(msgspec.Struct, frozen=True, kw_only=True, tag="llm.text"):
    """The next piece of the reply's text (a token or a few)."""

    text: str
    v: int = 1


class LlmToolCall(msgspec.Struct, frozen=True, kw_only=True, tag="llm.tool_call"):
    """A complete tool call requested by the model."""

    call: ToolCall
    v: int = 1


FinishReason = Literal["stop", "length", "tool_calls"]


class LlmFinish(msgspec.Struct, frozen=True, kw_only=True, tag="llm.finish"):
    """The last event of a completion: why it stopped and what it cost."""

    reason: FinishReason = "stop"
    input_tokens: int = 0
    output_tokens: int = 0
    v: int = 1


LlmEvent = LlmText | LlmToolCall | LlmFinish
