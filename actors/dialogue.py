"""`Conversation`: the LLM messages and the transcript of one call, as the caller lived them.

It wraps `protocols.conversation.ConversationState` (what is persisted after each turn) with
the few edits a voice conversation needs:

- assistant text is added sentence by sentence as it is handed to the leg (`say`), and cut
  back to what the caller heard when they barge in (`cut`), so the LLM's context never holds
  words the caller did not hear;
- a caller turn committed too early (the caller went on before hearing any answer) is merged
  with what they said next (`add_user(..., merge=True)`);
- keys the caller typed are a caller turn too (`add_user(..., keys="12#")`), written as
  `protocols.conversation` says: "The caller pressed the keys: 12#" for the LLM,
  "[keypad] 12#" in the transcript;
- every tool call gets an answer: calls left without one by an interruption or a crash are
  answered `{"ok": false, "error": ...}` (`close_pending`), as LLM APIs require.

Messages and transcript are personal data: nothing here logs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import msgspec
from switchboard.protocols.conversation import (
    ConversationState,
    TranscriptLine,
    keypad_line,
    keypad_message,
)
from switchboard.protocols.llm import ChatMessage, ToolCall

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(ConversationState)


def tool_error(code: str) -> str:
    return json.dumps({"ok": False, "error": code})


class Conversation:
    def __init__(self, state: ConversationState | None = None, *, system_prompt: str = "") -> None:
        if state is None:
            state = ConversationState(
                messages=[ChatMessage(role="system", content=system_prompt)]
                if system_prompt else [])
        self.state = state

    @classmethod
    def decode(cls, data: bytes) -> Conversation:
        return cls(_DECODER.decode(data))

    def encode(self) -> bytes:
        return _ENCODER.encode(self.state)

    @property
    def messages(self) -> list[ChatMessage]:
        return self.state.messages

    @property
    def turn(self) -> int:
        return self.state.turn

    def owes_answer(self) -> bool:
        """The last word is the caller's (or a tool's): the agent must answer."""
        messages = self.state.messages
        return bool(messages) and messages[-1].role in ("user", "tool")

    # -- the caller --------------------------------------------------------------------------

    def add_user(self, text: str, *, merge: bool = False, keys: str = "") -> None:
        """A committed caller turn: words, then the `keys` typed; `merge` joins it to the last
        caller message when no answer to that one was heard."""
        content, line = caller_texts(text, keys)
        messages, transcript = self.state.messages, self.state.transcript
        if merge and messages and messages[-1].role == "user":
            joined = f"{messages[-1].content} {content}".strip()
            messages[-1] = msgspec.structs.replace(messages[-1], content=joined)
            if transcript and transcript[-1].speaker == "caller":
                said = f"{transcript[-1].text} {line}".strip()
                transcript[-1] = msgspec.structs.replace(transcript[-1], text=said)
            return
        self.state.turn += 1
        messages.append(ChatMessage(role="user", content=content))
        transcript.append(TranscriptLine(speaker="caller", text=line, turn=self.state.turn))

    # -- the agent ---------------------------------------------------------------------------

    def open_assistant(self, content: str = "") -> int:
        self.state.messages.append(ChatMessage(role="assistant", content=content))
        return len(self.state.messages) - 1

    def say(self, index: int, sentence: str) -> int:
        """Append a sentence handed to the leg; return where it starts in the content."""
        message = self.state.messages[index]
        start = len(message.content) + (1 if message.content else 0)
        content = f"{message.content} {sentence}" if message.content else sentence
        self.state.messages[index] = msgspec.structs.replace(message, content=content)
        return start

    def set_tool_calls(self, index: int, calls: Sequence[ToolCall]) -> None:
        message = self.state.messages[index]
        self.state.messages[index] = msgspec.structs.replace(message, tool_calls=tuple(calls))
        self.state.pending_tools = [*self.state.pending_tools, *calls]

    def add_tool_result(self, call: ToolCall, content: str) -> None:
        self.state.messages.append(ChatMessage(role="tool", content=content,
                                               tool_call_id=call.id))
        self.state.pending_tools = [c for c in self.state.pending_tools if c.id != call.id]

    def close_pending(self, code: str) -> None:
        """Answer every tool call still open with an error `code`."""
        for call in list(self.state.pending_tools):
            self.add_tool_result(call, tool_error(code))

    def cut(self, heard: dict[int, int]) -> None:
        """Cut assistant messages back to the offsets the caller heard (barge-in)."""
        for index in sorted(heard, reverse=True):
            if index >= len(self.state.messages):
                continue
            message = self.state.messages[index]
            content = message.content[:heard[index]].rstrip()
            self.state.messages[index] = msgspec.structs.replace(message, content=content)
        self.drop_empty()

    def drop_empty(self) -> None:
        """Remove assistant messages with neither words nor tool calls."""
        self.state.messages = [m for m in self.state.messages
                               if m.role != "assistant" or m.content or m.tool_calls]

    def forget_reply(self) -> None:
        """Drop the agent's messages after the last caller message (to answer again)."""
        messages = self.state.messages
        while messages and messages[-1].role in ("assistant", "tool"):
            messages.pop()
        self.state.pending_tools = []

    def record_agent(self, texts: Iterable[str], *, interrupted: bool) -> str:
        """Add the agent's words of this turn (as heard) to the transcript; return them."""
        text = " ".join(t for t in texts if t).strip()
        if text:
            self.state.transcript.append(TranscriptLine(
                speaker="agent", text=text, turn=self.state.turn, interrupted=interrupted))
        return text

    def assistant_texts(self, since: int) -> list[str]:
        return [m.content for m in self.state.messages[since:] if m.role == "assistant"]

    def last_caller_text(self) -> str:
        """The caller's last turn as the transcript has it ("[keypad] 12#" for keys)."""
        for line in reversed(self.state.transcript):
            if line.speaker == "caller":
                return line.text
        return ""


def caller_texts(text: str, keys: str) -> tuple[str, str]:
    """A caller turn's user message and transcript line: the words, then the keys."""
    if not keys:
        return text, text
    return (f"{text} {keypad_message(keys)}".strip(), f"{text} {keypad_line(keys)}".strip())
