"""Hostile input: the SIP parser raises nothing but SipParseError, and valid messages round-trip.

Property-based (hypothesis): arbitrary bytes, mutations of a real INVITE, TCP streams cut at
random places, and generated well-formed requests and responses.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from switchboard.gateways.sip.errors import SipParseError
from switchboard.gateways.sip.headers import Headers
from switchboard.gateways.sip.message import (
    SipRequest,
    SipResponse,
    StreamFramer,
    error_response,
    parse_message,
)
from switchboard.gateways.sip.uri import SipUri

pytestmark = pytest.mark.unit

VALID = (
    b"INVITE sip:+15551234@gw.example.com;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKnashds8;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Carrier" <sip:+15550001@198.51.100.1>;tag=1928301774\r\n'
    b"To: <sip:+15551234@gw.example.com>\r\n"
    b"Call-ID: a84b4c76e66710@198.51.100.1\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:+15550001@198.51.100.1:5060>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 38\r\n\r\n"
    b"v=0\r\no=- 1 1 IN IP4 198.51.100.1\r\ns=-\r\n"
)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse_or_reject(data: bytes) -> None:
    """The contract: a message, or a SipParseError whose answer (if any) can be sent."""
    try:
        message = parse_message(data, max_size=4096, max_headers=40)
    except SipParseError as exc:
        assert 400 <= exc.status <= 599
        answer = error_response(exc)
        assert (answer is not None) == exc.respondable
        if answer is not None:
            answer.encode()
        return
    # Anything accepted re-encodes to a fixed point.
    once = message.encode()
    assert parse_message(once).encode() == once


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(data: bytes) -> None:
    parse_or_reject(data)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.binary(min_size=0, max_size=6)),
                min_size=1, max_size=6))  # fmt: skip
def test_mutated_invite(edits: list[tuple[int, bytes]]) -> None:
    data = bytearray(VALID)
    for position, replacement in edits:
        data[position : position + len(replacement) or position + 1] = replacement
    parse_or_reject(bytes(data))


@FUZZ
@given(st.integers(0, len(VALID)), st.sampled_from([b"\r\n", b":", b",", b"<", b'"', b";", b"\x00",
                                                    b" ", b"\xff", b"=", b"\t"]))  # fmt: skip
def test_truncated_and_spliced_invite(cut: int, splice: bytes) -> None:
    parse_or_reject(VALID[:cut])
    parse_or_reject(VALID[:cut] + splice + VALID[cut:])


@FUZZ
@given(st.binary(max_size=3000), st.lists(st.integers(1, 300), min_size=1, max_size=20))
def test_stream_framer_on_garbage(garbage: bytes, cuts: list[int]) -> None:
    framer = StreamFramer(max_size=2048)
    stream = VALID + garbage + VALID
    position = 0
    for size in cuts * 20:
        if position >= len(stream):
            break
        framer.feed(stream[position : position + size])
        position += size
        try:
            while framer.next_message() is not None:
                pass
        except SipParseError:
            return  # the transport closes the connection here


token = st.text("abcdefghijklmnopqrstuvwxyz0123456789-.!%*_+~", min_size=1, max_size=10)
label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
methods = st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REFER", "X-CUSTOM"])
header_value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF,
                                     blacklist_characters=",\x7f"), min_size=1, max_size=30)  # fmt: skip


@st.composite
def messages(draw: st.DrawFn) -> SipRequest | SipResponse:
    method = draw(methods)
    headers = Headers()
    for _ in range(draw(st.integers(1, 3))):
        headers.add("Via", f"SIP/2.0/UDP {draw(label)}.example:5060;branch=z9hG4bK{draw(token)}")
    headers.add("From", f'"{draw(token)}" <sip:{draw(token)}@a.example>;tag={draw(token)}')
    headers.add("To", f"<sip:{draw(token)}@b.example>")
    headers.add("Call-ID", f"{draw(token)}@c.example")
    headers.add("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}")
    for _ in range(draw(st.integers(0, 4))):
        value = draw(header_value).strip()
        if value:
            headers.add(f"X-{draw(token)}", value)
    body = draw(st.binary(max_size=200))
    if draw(st.booleans()):
        uri = SipUri(user=draw(token), host=f"{draw(label)}.example")
        return SipRequest(method=method, uri=uri, headers=headers, body=body)
    return SipResponse(status=draw(st.integers(100, 699)), reason=draw(token), headers=headers,
                       body=body)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(messages())
def test_generated_messages_round_trip(message: SipRequest | SipResponse) -> None:
    parsed = parse_message(message.encode())
    assert type(parsed) is type(message)
    assert parsed.body == message.body
    expected = [*message.headers.items(), ("Content-Length", str(len(message.body)))]
    assert parsed.headers.items() == expected
    if isinstance(message, SipRequest):
        assert isinstance(parsed, SipRequest)
        assert (parsed.method, parsed.uri) == (message.method, message.uri)
    else:
        assert isinstance(parsed, SipResponse)
        assert (parsed.status, parsed.reason) == (message.status, message.reason)
