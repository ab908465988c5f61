"""Assembles tool calls that vendors stream in fragments, so the call actor only sees whole ones.

OpenAI streams `tool_calls[i].function.arguments` in pieces keyed by index; Anthropic streams
`input_json_delta.partial_json` pieces keyed by content block. Either way nothing can run a
half-received call, so calls are buffered until the model says why it stopped: a call cut
off by the token limit (`length`) is dropped; a finished call whose arguments are not a JSON
object is an error (retryable: another sample may be fine).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from switchboard.protocols.llm import ToolCall
from switchboard.providers.llm.api_errors import bad_tool_call_error


@dataclass
class _Parts:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ToolCallBuffer:
    def __init__(self, provider: str) -> None:
        self._provider = provider
        self._parts: dict[int, _Parts] = {}

    def __bool__(self) -> bool:
        return bool(self._parts)

    def add(self, key: int, *, call_id: str | None = None, name: str | None = None,
            arguments: str | None = None) -> None:
        parts = self._parts.setdefault(key, _Parts())
        if call_id:
            parts.id = call_id
        if name:
            parts.name += name
        if arguments:
            parts.arguments.append(arguments)

    def take(self, *, truncated: bool) -> list[ToolCall]:
        """The buffered calls, in order, checked; the buffer is emptied."""
        calls: list[ToolCall] = []
        for key in sorted(self._parts):
            parts = self._parts[key]
            arguments = "".join(parts.arguments).strip() or "{}"
            try:
                valid = isinstance(json.loads(arguments), dict) and bool(parts.name)
            except ValueError:
                valid = False
            if not valid:
                if truncated:
                    continue
                self._parts.clear()
                raise bad_tool_call_error(self._provider)
            calls.append(ToolCall(id=parts.id or f"call_{key}", name=parts.name,
                                  arguments=arguments))
        self._parts.clear()
        return calls
