"""A call's conversation as data: what is persisted per turn, and the per-turn timing event.

Persisted (JetStream KV bucket `sb_state`, key `call.<call_id>`, written by the call actor,
deleted when the call ends), so a call actor restarted by its supervisor resumes the same
conversation (actors/call.py, actors/call_state.py):

    CallSnapshot            the call actor's own record: when the call started and was
                            answered, the DTMF event counter, and the agent's state (bytes)
    ConversationState       a conversation brain's state (its `agent_state`): transcript,
                            LLM messages, tool calls not yet answered, the turn counter

Published on the call events stream (protocols/events.py), subject
`sb.events.call.<tenant_id>.<call_id>.turn`, message id `<call_id>.turn.<n>`:

    CallTurn                one turn's timing, measured from the end of the caller's speech;
                            the words said sit only under `pii`

`CallTurn` belongs with the other call events; `CallEventOrTurn` is the union a consumer of
the whole stream decodes with until it joins `protocols.events.CallEvent`.
Schema evolution follows msgspec's rules (new fields have defaults, tags are never reused).

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
from switchboard.protocols.events import CallEvent
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


class TurnWords(msgspec.Struct, frozen=True, kw_only=True):
    """What was said in a turn: personal data."""

    caller: str = ""
    agent: str = ""   # what the caller heard
    v: int = 1


class CallTurn(msgspec.Struct, frozen=True, kw_only=True, tag="call_event.turn"):
    """One turn, timed in ms from the end of the caller's speech (None: the stage did not
    happen, e.g. no audio because the caller hung up). `overhead_ms` is the platform's
    share plus the LLM's and TTS's: from the final transcript (or the turn's commit, when
    the turn was held for more words) to the first audio handed to the leg."""

    event_id: str
    call_id: str
    tenant_id: str
    at: float                      # wall clock at the end of the caller's speech
    turn: int
    end_of_turn_ms: float | None = None      # the turn was committed
    stt_final_ms: float | None = None
    llm_first_token_ms: float | None = None
    tts_first_audio_ms: float | None = None
    first_audio_ms: float | None = None      # first audio handed to the media leg
    overhead_ms: float | None = None
    interrupted: bool = False
    dead_air: int = 0              # dead-air recoveries during the turn
    pii: TurnWords | None = None
    v: int = 1


CallEventOrTurn = CallEvent | CallTurn
