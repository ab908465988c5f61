"""RFC 3261 message parsing, validation errors with their status codes, response building."""

from __future__ import annotations

import pytest
from switchboard.gateways.sip.errors import SipParseError
from switchboard.gateways.sip.headers import Headers
from switchboard.gateways.sip.message import (
    SipRequest,
    SipResponse,
    StreamFramer,
    build_response,
    error_response,
    new_branch,
    parse_message,
)

pytestmark = pytest.mark.unit

# RFC 3665 §3.1 style INVITE, with compact forms, a folded line and a two-element Via.
INVITE = (
    b"\r\n"
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"v: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9;rport,\r\n"
    b"   SIP/2.0/TCP proxy.example.com;branch=z9hG4bKabc\r\n"
    b"Max-Forwards: 70\r\n"
    b'f: "Alice, Smith" <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n'
    b"t: Bob <sip:bob@biloxi.example.com>\r\n"
    b"i: 3848276298220188511@atlanta.example.com\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"m: <sip:alice@client.atlanta.example.com;transport=tcp>\r\n"
    b'Authorization: Digest username="alice", realm="atlanta", nonce="x"\r\n'
    b"Timestamp: 54\r\n"
    b"c: application/sdp\r\n"
    b"l: 10\r\n"
    b"\r\n"
    b"v=0\r\no=- 1and trailing junk"
)


def mutate(raw: bytes, old: bytes, new: bytes) -> bytes:
    assert old in raw
    return raw.replace(old, new, 1)


def test_parses_request_with_compact_forms_folding_and_lists() -> None:
    msg = parse_message(INVITE)
    assert isinstance(msg, SipRequest)
    assert msg.method == "INVITE" and str(msg.uri) == "sip:bob@biloxi.example.com"
    vias = msg.vias
    assert [v.host for v in vias] == ["client.atlanta.example.com", "proxy.example.com"]
    assert vias[0].branch == "z9hG4bK74bf9" and vias[0].wants_rport
    assert msg.from_addr.display_name == "Alice, Smith" and msg.from_addr.tag == "9fxced76sl"
    assert msg.to_addr.tag is None
    assert msg.call_id == "3848276298220188511@atlanta.example.com"
    assert (msg.cseq.seq, msg.cseq.method) == (1, "INVITE")
    assert msg.contacts[0].uri.transport == "tcp"
    # Authorization has commas but is not a list header: one entry.
    assert len(msg.headers.get_all("Authorization")) == 1
    # §18.3: bytes past Content-Length are discarded.
    assert msg.body == b"v=0\r\no=- 1"


def test_parses_response() -> None:
    raw = (
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n"
    )
    msg = parse_message(raw)
    assert isinstance(msg, SipResponse)
    assert (msg.status, msg.reason, msg.body) == (180, "Ringing", b"")


def test_serialize_round_trip_always_sets_content_length() -> None:
    msg = parse_message(INVITE)
    again = parse_message(msg.encode())
    assert again == msg
    assert again.headers.get("Content-Length") == "10"


@pytest.mark.parametrize(
    ("raw", "status", "respondable"),
    [
        (mutate(INVITE, b"SIP/2.0\r\nv:", b"SIP/3.0\r\nv:"), 505, True),
        (
            mutate(INVITE, b"sip:bob@biloxi.example.com SIP", b"mailto:bob@biloxi.example.com SIP"),
            416,
            True,
        ),
        (mutate(INVITE, b"l: 10", b"l: 999"), 400, True),  # truncated body
        (mutate(INVITE, b"l: 10", b"l: ten"), 400, True),
        (mutate(INVITE, b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), 400, True),
        (mutate(INVITE, b"CSeq: 1 INVITE", b"CSeq: one INVITE"), 400, True),
        (mutate(INVITE, b"Max-Forwards: 70", b"Max-Forwards: many"), 400, True),
        (mutate(INVITE, b"Timestamp: 54", b"Timestamp 54"), 400, True),  # no colon
        (mutate(INVITE, b"Timestamp: 54", b"Time stamp: 54"), 400, True),
        (mutate(INVITE, b"Timestamp: 54", b"Timestamp: 5\x004"), 400, True),
        (mutate(INVITE, b'f: "Alice', b'f: <"Alice'), 400, True),
        (mutate(INVITE, b"i: 3848", b"X-Call: 3848"), 400, False),  # no Call-ID: cannot answer
        (mutate(INVITE, b"v: SIP/2.0/UDP", b"v: SIP/2.0 UDP"), 400, False),  # bad Via: no route
        (mutate(INVITE, b"INVITE sip:bob", b"INVITE  sip:bob"), 400, False),
        (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n\r\n", 400, False),  # responses never answered
        (b"\r\n\r\n", 400, False),
        (b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h", 400, False),  # no end of headers
    ],
)
def test_malformed_input_gives_status_and_respondability(
    raw: bytes, status: int, respondable: bool
) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(raw)
    assert (info.value.status, info.value.respondable) == (status, respondable)
    answer = error_response(info.value, to_tag="abc")
    if respondable:
        assert answer is not None and answer.status == status
        assert (answer.headers.get("To") or "").endswith(";tag=abc")
        assert answer.headers.get_all("Via") == info.value.headers.get_all("Via")
    else:
        assert answer is None


def test_size_and_header_count_limits_give_513_with_an_answer() -> None:
    big_body = mutate(INVITE, b"l: 10", b"l: 70000") + b"a" * 70_000
    with pytest.raises(SipParseError) as info:
        parse_message(big_body)
    assert info.value.status == 513 and info.value.respondable
    endless_header = mutate(INVITE, b"Timestamp: 54", b"X-Pad: " + b"a" * 70_000)
    with pytest.raises(SipParseError) as info:
        parse_message(endless_header)
    assert info.value.status == 513 and not info.value.respondable
    many = mutate(INVITE, b"Timestamp: 54", b"\r\n".join([b"X-H: 1"] * 200))
    with pytest.raises(SipParseError) as info:
        parse_message(many, max_headers=100)
    assert info.value.status == 513 and error_response(info.value) is not None


def test_build_response_copies_dialog_headers_and_adds_to_tag() -> None:
    request = parse_message(INVITE)
    assert isinstance(request, SipRequest)
    trying = build_response(request, 100)
    assert trying.to_addr.tag is None  # §8.2.6.2: no tag needed on 100
    assert trying.headers.get("Timestamp") == "54"  # §8.2.6.1
    extra = Headers([("Contact", "<sip:agent@192.0.2.10>")])
    ok = build_response(request, 200, to_tag="t0", headers=extra, body=b"v=0\r\n")
    parsed = parse_message(ok.encode())
    assert isinstance(parsed, SipResponse) and parsed.reason == "OK"
    assert parsed.headers.get_all("Via") == request.headers.get_all("Via")
    assert parsed.from_addr == request.from_addr and parsed.call_id == request.call_id
    assert parsed.cseq == request.cseq and parsed.to_addr.tag == "t0"
    assert parsed.body == b"v=0\r\n" and parsed.headers.get("Timestamp") is None


def test_stream_framer_cuts_messages_and_counts_keepalives() -> None:
    one = parse_message(INVITE).encode()
    framer = StreamFramer()
    stream = b"\r\n\r\n" + one + one
    out: list[object] = []
    for i in range(0, len(stream), 7):  # trickle in small TCP segments
        framer.feed(stream[i : i + 7])
        while (msg := framer.next_message()) is not None:
            out.append(msg)
    assert len(out) == 2 and framer.keepalives >= 1


def test_stream_framer_requires_content_length_and_bounds_body() -> None:
    framer = StreamFramer()
    framer.feed(mutate(parse_message(INVITE).encode(), b"Content-Length: 10", b"X-Y: 1"))
    with pytest.raises(SipParseError) as info:
        framer.next_message()
    assert info.value.status == 400 and info.value.respondable  # §18.3
    framer = StreamFramer(max_size=4096)
    framer.feed(mutate(parse_message(INVITE).encode(), b"Content-Length: 10", b"l: 100000"))
    with pytest.raises(SipParseError) as info:
        framer.next_message()
    assert info.value.status == 413 and info.value.respondable


def test_identifiers_are_unique_and_rfc_shaped() -> None:
    branches = {new_branch() for _ in range(1000)}
    assert len(branches) == 1000 and all(b.startswith("z9hG4bK") for b in branches)
