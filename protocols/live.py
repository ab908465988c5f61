"""Live call events: what a caller's own screen shows while the call runs (the web page, the
widget, a LiveKit room's data channel), and what that screen may send back.

These are not the call's lifecycle records (protocols/events.py: JetStream, webhooks): they go
to the one caller of the call, over its media path (a WebRTC data channel), best effort and in
order, and are never stored. A media leg that can carry them implements `LiveEventSink`; the
call actor (issue 4's conversation loop) feeds transcripts and latencies through it, and the
leg itself publishes the call's state (it knows when the agent's audio plays).

Wire form: JSON objects tagged by `"type"` (msgspec `tag_field`), one per data channel message:

    {"type": "state", "state": "greeting"}
    {"type": "transcript", "speaker": "caller", "text": "...", "final": true, "turn": 2}
    {"type": "latency", "turn": 2, "total_ms": 640.0, "stages": {"stt_ms": 120.0, ...}}
    {"type": "hangup"}                        page -> server
    {"type": "dtmf", "digit": "5"}            page -> server

A transcript's text and a key pressed are personal data: they go to the caller's own screen,
never into a log. New fields get defaults and tags are never reused (msgspec's rules).
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import msgspec

CallStateName = Literal["connecting", "greeting", "listening", "speaking", "reconnecting",
                        "ended"]
Speaker = Literal["caller", "agent"]  # as protocols.conversation.Speaker


class CallState(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="state"):
    """Where the call is, as the caller should see it. `reason` is set with `ended` (the
    call.ended reason: caller_hangup, agent_hangup, max_duration, ...)."""

    state: CallStateName
    reason: str = ""
    v: int = 1


class LiveTranscript(msgspec.Struct, frozen=True, kw_only=True, tag_field="type",
                     tag="transcript"):
    """One side's words in one turn, live (the stored record is protocols.conversation's
    `TranscriptLine`). Partials (`final=False`) are replaced by the next line with the same
    `turn` and `speaker`. Personal data."""

    speaker: Speaker
    text: str
    final: bool = True
    turn: int = 0
    v: int = 1


class TurnLatency(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="latency"):
    """How long the agent took to answer turn `turn`: from the end of the caller's speech to
    the agent's first audio (`total_ms`), and the stages that made it up (names are free:
    `eot_ms`, `stt_ms`, `llm_ms`, `tts_ms`...)."""

    turn: int
    total_ms: float
    stages: dict[str, float] = {}
    v: int = 1


LiveEvent = CallState | LiveTranscript | TurnLatency


class PageHangup(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="hangup"):
    """The caller pressed Hang up (sent before the page closes its connection)."""

    v: int = 1


class PageDtmf(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="dtmf"):
    """The caller pressed a key on the page's keypad. Personal data."""

    digit: str
    v: int = 1


PageMessage = PageHangup | PageDtmf


@runtime_checkable
class LiveEventSink(Protocol):
    """A media leg whose caller has a screen. `publish` never blocks and never raises for a
    caller who is gone: live events are best effort."""

    def publish(self, event: LiveEvent) -> None: ...
