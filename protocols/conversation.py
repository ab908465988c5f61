"""A call's conversation as data: what is persisted per turn.

Persisted (JetStream KV bucket `sb_state`, key `call.<call_id>`, written by the call actor,
deleted when the call ends), so a call actor restarted by its supervisor resumes the same
conversation (actors/call.py, actors/call_state.py):

    CallSnapshot            the call actor's own record: when the call started and was
                            answered, the DTMF event counter, and the agent's state (bytes)
    ConversationState       a conversation brain's state (its `agent_state`): transcript,
                            LLM messages, tool calls not yet answered, the turn counter

Each turn's timing is a call event (`protocols.events.CallTurn`), published on the call events
stream with the lifecycle events. Schema evolution follows msgspec's rules (new fields have
defaults, tags are never reused).

Keys the caller typed (DTMF) are a caller turn like speech, written in words so every brain
reads them without a schema change: the user message says `keypad_message("12#")` ("The
caller pressed the keys: 12#", plain to any LLM, read back by the flow agent with
`keypad_keys`), the transcript line `keypad_line("12#")` ("[keypad] 12#"). Spoken words
committed with the keys come first in both ("my number is [keypad] 1234#").
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec
from switchboard.protocols.llm import ChatMessage, ToolCall

Speaker = Literal["caller", "agent"]

KEYPAD_MESSAGE = "The caller pressed the keys: "
KEYPAD_LINE = "[keypad] "
_KEYPAD_AT_END = re.compile(r"(?:^|\s)" + re.escape(KEYPAD_MESSAGE) + r"([0-9A-D*#]+)$")


def keypad_message(keys: str) -> str:
    """The user message (LLM context) of a keypad entry."""
    return KEYPAD_MESSAGE + keys


def keypad_line(keys: str) -> str:
    """The transcript text of a keypad entry."""
    return KEYPAD_LINE + keys


def keypad_keys(content: str) -> str | None:
    """The keys of a user message that ends with a keypad entry, else None."""
    found = _KEYPAD_AT_END.search(content.strip())
    return found.group(1) if found else None


class TranscriptLine(msgspec.Struct, frozen=True, kw_only=True):
    """One utterance. Agent lines hold only what the caller heard (cut at a barge-in)."""

    speaker: Speaker
    text: str
    turn: int
    interrupted: bool = False
    v: int = 1


class OpenReply(msgspec.Struct, kw_only=True):
    """The agent's reply still playing (not yet in the transcript, its turn event not yet
    published): from message `since`, the first `skip` characters already recorded; its
    turn's timing as ms from the end of the caller's speech (wall clock `at`)."""

    since: int
    skip: int = 0
    at: float = 0.0
    marks: dict[str, float] = {}
    v: int = 1


class ConversationState(msgspec.Struct, kw_only=True):
    """A conversation brain's state, saved after each turn (personal data throughout)."""

    turn: int = 0                          # caller turns committed so far
    greeted: bool = False                  # the greeting was started: never greet again
    transcript: list[TranscriptLine] = []
    messages: list[ChatMessage] = []       # the LLM context, system prompt first
    pending_tools: list[ToolCall] = []     # called and not answered yet
    open_reply: OpenReply | None = None
    v: int = 1


class CallSnapshot(msgspec.Struct, kw_only=True):
    """The call actor's persisted record; `started_at` / `answered_at` are wall-clock."""

    call_id: str
    started_at: float
    answered_at: float = 0.0
    dtmf_seq: int = 0
    agent_state: bytes = b""
    v: int = 1
