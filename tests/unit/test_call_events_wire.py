"""The call events stream decodes with one type, `CallEvent`, turns included; a `CallTurn`
stored before it moved from `protocols.conversation` to `protocols.events` still decodes to the
same event and re-encodes to the same bytes (tag and field names unchanged)."""

from __future__ import annotations

from typing import get_args

import msgspec
import pytest
from switchboard.protocols.events import (
    EVENT_NAMES,
    CallAnswered,
    CallEnded,
    CallEvent,
    CallStarted,
    CallTurn,
    TurnWords,
)

pytestmark = pytest.mark.unit

# A `CallTurn` as the old layout (protocols/conversation.py at 5f8c001) wrote it to the
# stream, msgpack-encoded by msgspec: the bytes a consumer finds in SB_CALL_EVENTS today.
OLD_TURN_MSGPACK = bytes.fromhex(
    "de0010a474797065af63616c6c5f6576656e742e7475726ea86576656e745f6964a963312e7475726e2e32a7"
    "63616c6c5f6964a26331a974656e616e745f6964a461636d65a26174cb41da49772a100000a47475726e02ae"
    "656e645f6f665f7475726e5f6d73cb4073600000000000ac7374745f66696e616c5f6d73cb40727800000000"
    "00b26c6c6d5f66697273745f746f6b656e5f6d73cb4080020000000000b27474735f66697273745f61756469"
    "6f5f6d73cb4084000000000000ae66697273745f617564696f5f6d73cb4084140000000000ab6f7665726865"
    "61645f6d73cb4075b00000000000ab696e746572727570746564c2a8646561645f61697201a370696983a663"
    "616c6c6572bb776861742061726520796f7572206f70656e696e6720686f757273a56167656e74b05765206f"
    "70656e206174206e696e652ea17601a17601"
)
# The same event as JSON, written by hand from the old struct's tag and field names.
OLD_TURN_JSON = (
    b'{"type":"call_event.turn","event_id":"c1.turn.2","call_id":"c1","tenant_id":"acme",'
    b'"at":1764089000.25,"turn":2,"end_of_turn_ms":310.0,"stt_final_ms":295.5,'
    b'"llm_first_token_ms":512.25,"tts_first_audio_ms":640.0,"first_audio_ms":642.5,'
    b'"overhead_ms":347.0,"interrupted":false,"dead_air":1,'
    b'"pii":{"caller":"what are your opening hours","agent":"We open at nine.","v":1},"v":1}'
)
TURN = CallTurn(
    event_id="c1.turn.2", call_id="c1", tenant_id="acme", at=1764089000.25, turn=2,
    end_of_turn_ms=310.0, stt_final_ms=295.5, llm_first_token_ms=512.25,
    tts_first_audio_ms=640.0, first_audio_ms=642.5, overhead_ms=347.0, dead_air=1,
    pii=TurnWords(caller="what are your opening hours", agent="We open at nine."))


def test_a_turn_stored_by_the_old_layout_decodes_as_a_call_event() -> None:
    event = msgspec.msgpack.Decoder(CallEvent).decode(OLD_TURN_MSGPACK)
    assert event == TURN
    assert msgspec.msgpack.encode(event) == OLD_TURN_MSGPACK  # the wire format is unchanged


def test_a_turn_in_json_from_the_old_layout_decodes_as_a_call_event() -> None:
    assert msgspec.json.Decoder(CallEvent).decode(OLD_TURN_JSON) == TURN


def test_one_decoder_reads_a_whole_call_from_the_stream() -> None:
    call = [
        CallStarted(event_id="c1.started", call_id="c1", tenant_id="acme", agent_id="a",
                    direction="inbound", node_id="n1", at=1.0),
        CallAnswered(event_id="c1.answered", call_id="c1", tenant_id="acme", at=2.0),
        TURN,
        CallEnded(event_id="c1.ended", call_id="c1", tenant_id="acme", at=9.0,
                  reason="caller_hangup", duration=8.0, answered=True, talk_seconds=7.0),
    ]
    decoder = msgspec.msgpack.Decoder(CallEvent)
    assert [decoder.decode(msgspec.msgpack.encode(e)) for e in call] == call


def test_every_call_event_has_a_subject_name() -> None:
    assert set(EVENT_NAMES) == set(get_args(CallEvent))
    assert EVENT_NAMES[CallTurn] == "turn"
