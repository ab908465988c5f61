"""SDP parsing/serialization and RFC 3264 offer/answer for one audio stream."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from switchboard.gateways.sip.codecs import G722, PCMA, PCMU
from switchboard.gateways.sip.errors import NoCommonCodec, SdpError, SdpParseError
from switchboard.gateways.sip.sdp import (
    Connection,
    MediaDescription,
    NegotiatedAudio,
    SessionDescription,
    accept_answer,
    answer_offer,
    create_offer,
)

pytestmark = pytest.mark.unit

# What a carrier SBC typically offers: G.729 first, then G.711, telephone-event 101.
CARRIER_OFFER = b"""v=0
o=SBC 1234 5678 IN IP4 203.0.113.10
s=SIP Call
c=IN IP4 203.0.113.20
t=0 0
m=audio 40000 RTP/AVP 18 0 8 101
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=sendrecv
m=video 40002 RTP/AVP 96
a=rtpmap:96 H264/90000
"""


def answer(
    offer: bytes | SessionDescription, **kwargs: Any
) -> tuple[SessionDescription, NegotiatedAudio]:
    sdp = offer if isinstance(offer, SessionDescription) else SessionDescription.parse(offer)
    return answer_offer(sdp, local_host="192.0.2.5", local_port=30000, session_id=42, **kwargs)


def test_answer_picks_our_preferred_codec_and_keeps_dtmf_type() -> None:
    sdp, media = answer(CARRIER_OFFER)
    assert (media.codec, media.payload_type, media.dtmf_payload_type) == (PCMU, 0, 101)
    assert (media.remote_host, media.remote_port, media.direction) == (
        "203.0.113.20",
        40000,
        "sendrecv",
    )
    audio, video = sdp.media
    assert audio.port == 30000 and audio.formats == ["0", "101"]
    assert audio.fmtp(101) == "0-15"  # the offerer's event range echoed
    assert audio.direction == "sendrecv" and audio.attribute("ptime") == "20"
    assert video.port == 0 and video.media == "video"  # RFC 3264 §6: refused, kept in place
    again = SessionDescription.parse(sdp.encode())
    assert again == sdp


def test_preference_order_decides_between_offered_codecs() -> None:
    offer = create_offer(local_host="198.51.100.1", local_port=5004, session_id=1,
                         preferences=(PCMA, G722, PCMU))  # fmt: skip
    _, media = answer(offer)
    assert media.codec == G722  # our default order puts G.722 first
    _, media = answer(offer, preferences=(PCMU, PCMA))
    assert media.codec == PCMU


def test_dynamic_payload_type_for_a_static_codec_is_matched_by_name() -> None:
    offer = CARRIER_OFFER.replace(b"RTP/AVP 18 0 8 101", b"RTP/AVP 18 99 101").replace(
        b"a=ptime:20", b"a=rtpmap:99 pcma/8000\na=ptime:30"
    )
    _, media = answer(offer)
    assert (media.codec, media.payload_type, media.ptime) == (PCMA, 99, 30)


@pytest.mark.parametrize(
    ("offered", "wanted", "expected"),
    [
        ("sendonly", "sendrecv", "recvonly"),  # the caller put us on hold
        ("recvonly", "sendrecv", "sendonly"),
        ("inactive", "sendrecv", "inactive"),
        ("sendrecv", "sendonly", "sendonly"),  # we put the caller on hold
        ("sendonly", "sendonly", "inactive"),
    ],
)
def test_direction_is_the_intersection(offered: str, wanted: str, expected: str) -> None:
    offer = CARRIER_OFFER.replace(b"a=sendrecv", f"a={offered}".encode())
    sdp, media = answer(offer, direction=wanted)
    assert media.direction == expected and sdp.media[0].direction == expected
    assert media.may_send == (expected in ("sendrecv", "sendonly"))


def test_legacy_hold_with_zero_address_stops_our_sending() -> None:
    _, media = answer(CARRIER_OFFER.replace(b"c=IN IP4 203.0.113.20", b"c=IN IP4 0.0.0.0"))
    assert media.direction == "recvonly" and not media.may_send


def test_media_level_connection_overrides_session_level() -> None:
    offer = CARRIER_OFFER.replace(b"a=ptime:20", b"c=IN IP4 198.51.100.99\na=ptime:20")
    assert answer(offer)[1].remote_host == "198.51.100.99"


@pytest.mark.parametrize(
    "offer",
    [
        CARRIER_OFFER.replace(b"RTP/AVP 18 0 8 101", b"RTP/AVP 18 101"),  # only G.729
        CARRIER_OFFER.replace(b"RTP/AVP 18 0 8 101", b"RTP/SAVP 0 8 101"),  # SRTP only
        CARRIER_OFFER.replace(b"m=audio 40000", b"m=audio 0"),  # audio refused by offerer
    ],
)
def test_no_usable_audio_raises_488(offer: bytes) -> None:
    with pytest.raises(NoCommonCodec) as info:
        answer(offer)
    assert info.value.status == 488


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"v=1\r\no=- 1 1 IN IP4 h\r\n",
        b"v=0\r\ns=-\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio x RTP/AVP 0\r\n",
        b"v=0\r\no=only three fields\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nbad line\r\n",
    ],
)
def test_bad_sdp_raises_parse_error(text: bytes) -> None:
    with pytest.raises(SdpParseError) as info:
        SessionDescription.parse(text)
    assert info.value.status == 400


def test_non_ascii_digits_do_not_crash_the_answer() -> None:
    offer = CARRIER_OFFER.replace(
        b"a=ptime:20", "a=ptime:\u00b2\na=rtpmap:\u0663 PCMU/8000".encode()
    )
    assert answer(offer)[1].ptime == 20


def test_audio_without_connection_address_is_a_parse_error() -> None:
    with pytest.raises(SdpParseError):
        answer(CARRIER_OFFER.replace(b"c=IN IP4 203.0.113.20\n", b""))


def test_outbound_offer_and_answer() -> None:
    offer = create_offer(local_host="2001:db8::5", local_port=31000, session_id=7)
    assert offer.connection == Connection(address="2001:db8::5", addrtype="IP6")
    assert offer.media[0].formats == ["9", "0", "8", "101"]
    remote_answer, _ = answer_offer(offer, local_host="203.0.113.20", local_port=40000,
                                    session_id=9, preferences=(PCMA,))  # fmt: skip
    media = accept_answer(offer, SessionDescription.parse(remote_answer.encode()))
    assert (media.codec, media.payload_type, media.dtmf_payload_type) == (PCMA, 8, 101)
    assert (media.remote_host, media.remote_port, media.direction) == (
        "203.0.113.20",
        40000,
        "sendrecv",
    )
    refused = SessionDescription.parse(remote_answer.encode())
    refused.media[0].port = 0
    with pytest.raises(NoCommonCodec):
        accept_answer(offer, refused)


def test_g722_telephone_event_uses_the_8000_clock() -> None:
    offer = create_offer(local_host="198.51.100.1", local_port=5004, session_id=1)
    sdp, media = answer(offer)
    assert media.codec == G722 and media.dtmf_payload_type == 101
    assert ("rtpmap", "9 G722/8000") in sdp.media[0].attributes  # RFC 3551 §4.5.2


text_value = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12)
attr_name = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
attributes = st.lists(st.tuples(attr_name, st.one_of(st.none(), text_value)), max_size=5)
address = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))


@st.composite
def sessions(draw: st.DrawFn) -> SessionDescription:
    media = [
        MediaDescription(
            media=draw(st.sampled_from(["audio", "video", "application"])),
            port=draw(st.integers(0, 65535)),
            proto=draw(st.sampled_from(["RTP/AVP", "RTP/SAVP", "UDP/TLS/RTP/SAVPF"])),
            formats=[str(f) for f in draw(st.lists(st.integers(0, 127), min_size=1, max_size=5))],
            connection=draw(st.one_of(st.none(), address.map(lambda a: Connection(address=a)))),
            title=draw(st.one_of(st.none(), text_value)),
            bandwidths=draw(st.lists(text_value.map(lambda v: f"AS:{len(v)}"), max_size=1)),
            attributes=draw(attributes),
        )
        for _ in range(draw(st.integers(0, 3)))
    ]
    return SessionDescription(
        origin=f"- {draw(st.integers(0, 2**62))} {draw(st.integers(0, 2**62))} IN IP4 {draw(address)}",
        session_name=draw(text_value),
        connection=draw(st.one_of(st.none(), address.map(lambda a: Connection(address=a)))),
        info=draw(st.lists(st.tuples(st.sampled_from("iuep"), text_value), max_size=2)),
        attributes=draw(attributes),
        media=media,
    )


@settings(max_examples=300, deadline=None)
@given(sessions())
def test_sdp_round_trips(sdp: SessionDescription) -> None:
    assert SessionDescription.parse(sdp.encode()) == sdp


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=600), st.text(max_size=300).map(str.encode)),
       st.integers(0, len(CARRIER_OFFER)))  # fmt: skip
def test_hostile_offers_raise_only_sdp_errors(data: bytes, cut: int) -> None:
    """Any body parses or raises SdpParseError; any parsed offer is answered or raises SdpError."""
    for body in (b"v=0\r\no=- 1 1 IN IP4 h\r\n" + data, CARRIER_OFFER[:cut] + data):
        with contextlib.suppress(SdpError):
            answer(SessionDescription.parse(body))
