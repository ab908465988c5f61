"""RFC 3261 §12 dialogs, §13.3.1.4 2xx retransmission, RFC 4028 session-timer negotiation."""

from __future__ import annotations

import pytest
from switchboard.gateways.sip.dialog import AnswerRetransmitter, Dialog, DialogState
from switchboard.gateways.sip.headers import Headers
from switchboard.gateways.sip.message import SipRequest, build_response
from switchboard.gateways.sip.session_timer import (
    IntervalTooSmall,
    SessionTimer,
    SessionTimerConfig,
    SessionTimerTerms,
    negotiate_as_uas,
    response_headers,
    terms_from_response,
)
from switchboard.gateways.sip.transaction import Timers

from tests.support.sip import FakeClock, FakeFlow, request

pytestmark = pytest.mark.unit

VIA = "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKnew;rport"
CONTACT = "<sip:switchboard@198.51.100.7:5060>"


def invite_with_routes() -> SipRequest:
    return request("INVITE", cseq=7, extra=[
        ("Record-Route", "<sip:p1.example;lr>"), ("Record-Route", "<sip:p2.example;lr>")])  # fmt: skip


def test_uas_dialog_builds_bye_with_route_set_in_order() -> None:
    invite = invite_with_routes()
    dialog = Dialog.as_uas(invite, "ours", CONTACT)
    assert dialog.id == ("call-1@192.0.2.1", "ours", "ftag")
    assert dialog.remote_seq == 7 and str(dialog.remote_target) == "sip:alice@192.0.2.1:5060"
    bye = dialog.create_request("BYE", via=VIA)
    again = dialog.create_request("BYE", via=VIA)
    # §12.2.1.1: Request-URI is the remote target (loose routing), Route is the route set.
    assert str(bye.uri) == "sip:alice@192.0.2.1:5060"
    assert bye.headers.get_all("Route") == ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
    assert bye.from_addr.tag == "ours" and bye.to_addr.tag == "ftag"
    assert again.cseq.seq == bye.cseq.seq + 1 and bye.cseq.method == "BYE"
    assert str(dialog.next_hop()) == "sip:p1.example;lr"


def test_uac_dialog_reverses_record_route_and_acks_with_the_invite_cseq() -> None:
    invite = request("INVITE", cseq=3)
    ok = build_response(invite, 200, to_tag="callee", headers=Headers([
        ("Record-Route", "<sip:p1.example;lr>"), ("Record-Route", "<sip:p2.example;lr>"),
        ("Contact", "<sip:bob@203.0.113.5:5070>")]))  # fmt: skip
    dialog = Dialog.as_uac(invite, ok)
    assert dialog.state is DialogState.CONFIRMED and dialog.remote.tag == "callee"
    assert dialog.route_set == ["<sip:p2.example;lr>", "<sip:p1.example;lr>"]  # §12.1.2
    ack = dialog.create_ack(3, via=VIA)
    assert ack.method == "ACK" and ack.cseq.seq == 3 and "Contact" not in ack.headers
    assert str(ack.uri) == "sip:bob@203.0.113.5:5070"
    bye = dialog.create_request("BYE", via=VIA)
    assert bye.cseq.seq == 4  # continues from the INVITE's CSeq


def test_strict_route_becomes_the_request_uri() -> None:
    invite = request("INVITE", extra=[("Record-Route", "<sip:strict.example>")])
    dialog = Dialog.as_uas(invite, "ours", CONTACT)
    bye = dialog.create_request("BYE", via=VIA)
    assert str(bye.uri) == "sip:strict.example"
    assert bye.headers.get_all("Route") == ["<sip:alice@192.0.2.1:5060>"]


def test_out_of_order_cseq_gets_500_and_reinvite_refreshes_the_target() -> None:
    dialog = Dialog.as_uas(request("INVITE", cseq=5), "ours", CONTACT)
    assert dialog.check_request(request("BYE", cseq=4, to_tag="ours")) == 500
    reinvite = request("INVITE", cseq=6, to_tag="ours")
    reinvite.headers.set("Contact", "<sip:alice@192.0.2.50:6000>")
    assert dialog.check_request(reinvite) is None
    assert str(dialog.remote_target) == "sip:alice@192.0.2.50:6000" and dialog.remote_seq == 6
    assert dialog.check_request(request("ACK", cseq=6, to_tag="ours")) is None


def test_2xx_is_retransmitted_until_ack() -> None:
    clock, timers = FakeClock(), Timers()
    flow = FakeFlow(clock=clock)
    ok = build_response(request("INVITE"), 200, to_tag="ours")
    gave_up: list[bool] = []
    retransmitter = AnswerRetransmitter(ok, flow, timers, clock, lambda: gave_up.append(True))
    retransmitter.start()
    clock.advance(11.6)
    # §13.3.1.4: T1, then doubling up to T2: 0.5, 1.5, 3.5, 7.5, 11.5.
    assert flow.times() == [0.5, 1.5, 3.5, 7.5, 11.5]
    retransmitter.ack()
    clock.advance(60)
    assert len(flow.sent) == 5 and gave_up == [] and clock.pending == 0


def test_2xx_without_ack_gives_up_after_64_t1() -> None:
    clock, timers = FakeClock(), Timers(t1=0.01, t2=0.04)
    flow = FakeFlow(clock=clock)
    gave_up: list[bool] = []
    retransmitter = AnswerRetransmitter(build_response(request("INVITE"), 200, to_tag="o"),
                                        flow, timers, clock, lambda: gave_up.append(True))  # fmt: skip
    retransmitter.start()
    clock.advance(64 * 0.01 - 0.001)
    assert gave_up == []
    clock.advance(0.002)
    assert gave_up == [True] and clock.pending == 0


# -- RFC 4028 ------------------------------------------------------------------------------


def test_session_timer_negotiation_as_uas() -> None:
    config = SessionTimerConfig(min_se=90)
    plain = request("INVITE")
    assert negotiate_as_uas(plain, config) is None  # nobody asked for one
    asked = request("INVITE", extra=[("Session-Expires", "600"), ("Supported", "timer")])
    terms = negotiate_as_uas(asked, config)
    assert terms == SessionTimerTerms(600, "uac")  # the UAC supports it: it refreshes
    headers = response_headers(terms)
    assert headers.get("Session-Expires") == "600;refresher=uac"
    assert headers.get("Require") == "timer"
    proxy_inserted = request("INVITE", extra=[("Session-Expires", "600")])
    assert negotiate_as_uas(proxy_inserted, config) == SessionTimerTerms(600, "uas")
    with pytest.raises(IntervalTooSmall) as small:
        negotiate_as_uas(request("INVITE", extra=[("x", "30")]), config)  # compact form
    assert small.value.min_se == 90


def test_session_timer_refreshes_at_half_or_expires_before_the_end() -> None:
    clock = FakeClock()
    events: list[str] = []
    timer = SessionTimer(clock, on_refresh=lambda: events.append("refresh"),
                         on_expired=lambda: events.append("expired"))  # fmt: skip
    timer.start(SessionTimerTerms(90, "uas"), "uas")
    clock.advance(44.9)
    assert events == []
    clock.advance(0.2)
    assert events == ["refresh"]
    timer.start(SessionTimerTerms(90, "uac"), "uas")  # the peer refreshes now
    clock.advance(59.9)  # §10: BYE at interval - min(32, interval/3) = 60
    assert events == ["refresh"]
    clock.advance(0.2)
    assert events == ["refresh", "expired"]
    ok = build_response(request("INVITE"), 200, headers=Headers([("Session-Expires", "120")]))
    assert terms_from_response(ok) == SessionTimerTerms(120, "uac")
