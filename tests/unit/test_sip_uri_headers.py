"""SIP URIs, name-addr values, header splitting, Via and CSeq (RFC 3261 §19, §20, §25)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from switchboard.gateways.sip.headers import CSeq, Headers, Via, canonical_name, split_list
from switchboard.gateways.sip.uri import NameAddr, SipUri, UriError

pytestmark = pytest.mark.unit

token = st.text("abcdefghijklmnopqrstuvwxyz0123456789-.!%*_+~", min_size=1, max_size=12)
hostname = st.from_regex(r"[a-z0-9]([a-z0-9\-]{0,10}[a-z0-9])?(\.[a-z]{2,6}){0,2}", fullmatch=True)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
param_values = st.one_of(st.none(), token)
params = st.dictionaries(token.map(str.lower), param_values, max_size=3)


@st.composite
def sip_uris(draw: st.DrawFn) -> SipUri:
    user = draw(st.one_of(st.none(), st.from_regex(r"\+?[a-z0-9]{1,12}", fullmatch=True)))
    return SipUri(
        scheme=draw(st.sampled_from(["sip", "sips"])),
        user=user,
        password=draw(st.one_of(st.none(), token)) if user else None,
        host=draw(st.one_of(hostname, ipv4, st.just("[2001:db8::1]"))),
        port=draw(st.one_of(st.none(), st.integers(1, 65535))),
        params=draw(params),
    )


@given(sip_uris())
def test_uri_round_trips(uri: SipUri) -> None:
    assert SipUri.parse(str(uri)) == uri


@given(sip_uris(), st.one_of(st.none(), st.text(min_size=0, max_size=20)), params)
def test_name_addr_round_trips(uri: SipUri, display: str | None, header_params: dict) -> None:
    if display is not None and any(c in display for c in "\r\n"):
        display = display.replace("\r", "").replace("\n", "")
    value = NameAddr(uri=uri, display_name=display, params=header_params)
    assert NameAddr.parse(str(value)) == value


def test_uri_parts() -> None:
    uri = SipUri.parse("sips:alice:secret@Atlanta.COM:5061;transport=TCP;lr?subject=x")
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips",
        "alice",
        "secret",
        "atlanta.com",
        5061,
    )
    assert uri.params == {"transport": "TCP", "lr": None}
    assert uri.transport == "tcp"
    assert uri.headers == "subject=x"
    assert SipUri.parse("tel:+15551234567;phone-context=example.com").user == "+15551234567"


@pytest.mark.parametrize(
    "text",
    [
        "sip:",
        "alice@atlanta.com",
        "sip:a@b:99999",
        "sip:a@b:x",
        "sip:a b@c",
        "sip:@host",
        "sip:a@[::1",
        "sip:a@ho_st",
    ],
)
def test_bad_uris_raise(text: str) -> None:
    with pytest.raises(UriError):
        SipUri.parse(text)


def test_unsupported_scheme_is_flagged_for_416() -> None:
    with pytest.raises(UriError) as info:
        SipUri.parse("http://example.com/")
    assert info.value.unsupported_scheme


def test_name_addr_forms() -> None:
    quoted = NameAddr.parse('"Bob \\"B\\" Smith" <sip:bob@biloxi.com;transport=udp>;tag=a6c85cf')
    assert quoted.display_name == 'Bob "B" Smith'
    assert quoted.tag == "a6c85cf"
    assert quoted.uri.params == {"transport": "udp"}
    # §20.10: without <>, parameters belong to the header, not the URI.
    bare = NameAddr.parse("sip:alice@atlanta.com;tag=88sja8x")
    assert bare.tag == "88sja8x" and bare.uri.params == {}
    token_name = NameAddr.parse("Anonymous <sip:c8oqz84zk7z@privacy.org>")
    assert token_name.display_name == "Anonymous"
    assert token_name.with_tag("t1").tag == "t1"


def test_split_list_respects_quotes_and_angle_brackets() -> None:
    value = '"Doe, John" <sip:j@a.com;x=1,2>, <sip:b@c>;q=0.5 ,sip:d@e'
    assert split_list(value) == ['"Doe, John" <sip:j@a.com;x=1,2>', "<sip:b@c>;q=0.5", "sip:d@e"]
    assert split_list('"a\\",b" <sip:x@y>') == ['"a\\",b" <sip:x@y>']
    assert split_list("  ") == []


def test_compact_and_canonical_names() -> None:
    assert [canonical_name(n) for n in ("v", "i", "CALL-ID", "cseq", "l", "x-custom-thing")] == [
        "Via",
        "Call-ID",
        "Call-ID",
        "CSeq",
        "Content-Length",
        "X-Custom-Thing",
    ]
    headers = Headers([("v", "a"), ("Via", "b"), ("f", "c")])
    assert headers.get_all("VIA") == ["a", "b"] and headers.get("From") == "c"
    headers.set("via", "z")
    assert headers.items() == [("Via", "z"), ("From", "c")]
    headers.remove("from")
    assert "From" not in headers and len(headers) == 1


def test_via_fields_and_nat_stamping() -> None:
    via = Via.parse("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK74bf9;rport")
    assert (via.transport, via.host, via.port, via.branch) == (
        "UDP",
        "10.0.0.5",
        5060,
        "z9hG4bK74bf9",
    )
    assert via.wants_rport and via.rport is None
    # RFC 3581 §4: a server fills in rport and received with the packet's real source.
    stamped = via.stamped("203.0.113.7", 40123)
    assert stamped.received == "203.0.113.7" and stamped.rport == 40123
    assert stamped.response_address() == ("203.0.113.7", 40123)
    assert Via.parse(str(stamped)) == stamped
    plain = Via.parse("SIP/2.0/TCP client.biloxi.com ; branch=z9hG4bKx")
    assert plain.response_address() == ("client.biloxi.com", 5060)
    assert plain.stamped("client.biloxi.com", 5060).received is None
    assert Via.parse(" sip / 2.0 / tls [2001:db8::9]:5061;branch=z9hG4bKy").port == 5061


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0/UDP",
        "SIP/3.0/UDP h",
        "SIP/2.0/UDP h:70000",
        "SIP/2.0/UDP h;rport=x",
        "SIP/2.0/UDP h<>;branch=1",
    ],
)
def test_bad_via_raises(text: str) -> None:
    with pytest.raises(UriError):
        Via.parse(text)


def test_cseq() -> None:
    assert CSeq.parse(" 314159   INVITE ") == CSeq(314159, "INVITE")
    assert str(CSeq(1, "BYE")) == "1 BYE"
    for bad in ("INVITE", "1", "x INVITE", f"{2**31} INVITE", "1 INV ITE", "١ INVITE"):
        with pytest.raises(UriError):
            CSeq.parse(bad)
