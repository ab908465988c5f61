"""Call events: the JetStream stream they go to, their subjects, their shape.

    stream  SB_CALL_EVENTS    subjects sb.events.call.>
    subject sb.events.call.<tenant_id>.<call_id>.<event>
            event: started answered dtmf turn ended      (`EVENT_NAMES`)

`CallEvent` is every shape the stream holds: the lifecycle (started, answered, dtmf, ended)
and one `CallTurn` per turn of a conversation (its timing, published by the agent). A consumer
decodes any message of the stream with `msgspec.msgpack.Decoder(CallEvent)`.

A consumer filters one tenant (`sb.events.call.<tenant>.>`, webhooks) or one call
(`sb.events.call.*.<call_id>.>`). Every event has an `event_id` that is deterministic for what
happened (`<call_id>.started`, `<call_id>.dtmf.3`, ...) and is published as the JetStream
message id (`Nats-Msg-Id`): a retried publish, or a restarted call actor publishing again, is
dropped by the stream's duplicate window, so each event lands once.

Personal data (caller, callee, digits, words said) sits only under a `pii` field, so a collector
that must not keep it drops that one key. Schema evolution follows msgspec's rules (`v` per
struct; new fields have defaults, tags are never renamed or reused).
"""

from __future__ import annotations

import msgspec
from switchboard.protocols.media import Direction
from switchboard.protocols.subjects import EVENTS_PREFIX

CALL_EVENTS_STREAM = "SB_CALL_EVENTS"
CALL_EVENTS_SUBJECTS = f"{EVENTS_PREFIX}.call.>"
CALL_EVENTS_DUPLICATE_WINDOW = 120.0  # seconds; JetStream's default, stated on purpose


def call_event_subject(tenant_id: str, call_id: str, event: str) -> str:
    return f"{EVENTS_PREFIX}.call.{tenant_id}.{call_id}.{event}"


class CallParties(msgspec.Struct, frozen=True, kw_only=True):
    """Who called whom: personal data."""

    caller: str
    callee: str
    v: int = 1


class DtmfDigit(msgspec.Struct, frozen=True, kw_only=True):
    """A key pressed: personal data (PINs, card numbers)."""

    digit: str
    v: int = 1


class CallStarted(msgspec.Struct, frozen=True, kw_only=True, tag="call_event.started"):
    event_id: str
    call_id: str
    tenant_id: str
    agent_id: str
    direction: Direction
    node_id: str
    at: float  # wall-clock seconds (time.time())
    pii: CallParties | None = None
    v: int = 1


class CallAnswered(msgspec.Struct, frozen=True, kw_only=True, tag="call_event.answered"):
    event_id: str
    call_id: str
    tenant_id: str
    at: float
    v: int = 1


class CallDtmf(msgspec.Struct, frozen=True, kw_only=True, tag="call_event.dtmf"):
    event_id: str
    call_id: str
    tenant_id: str
    at: float
    seq: int  # 1 for the first key of the call
    pii: DtmfDigit | None = None
    v: int = 1


class CallEnded(msgspec.Struct, frozen=True, kw_only=True, tag="call_event.ended"):
    event_id: str
    call_id: str
    tenant_id: str
    at: float
    reason: str     # protocols.call's reason constants
    duration: float  # seconds from start to end
    answered: bool = False
    talk_seconds: float = 0.0  # from answer to end
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
    the turn was held for more words) to the first audio handed to the leg. Event id
    `<call_id>.turn.<n>`."""

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


CallEvent = CallStarted | CallAnswered | CallDtmf | CallTurn | CallEnded

EVENT_NAMES: dict[type, str] = {
    CallStarted: "started", CallAnswered: "answered", CallDtmf: "dtmf", CallTurn: "turn",
    CallEnded: "ended",
}
