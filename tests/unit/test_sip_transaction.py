"""RFC 3261 §17 transactions on a fake clock: every timer fires when the RFC says, and not after.

T1 = 0.5 s, T2 = 4 s, T4 = 5 s (the defaults); the clock moves only when a test advances it.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from switchboard.gateways.sip.errors import (
    TooManyTransactions,
    TransactionTimeout,
    TransportError,
)
from switchboard.gateways.sip.message import SipRequest, SipResponse, build_response
from switchboard.gateways.sip.transaction import Flow, ServerTransaction, State, Timers
from switchboard.gateways.sip.transaction_layer import TransactionLayer

from tests.support.sip import FakeClock, FakeFlow, request, response_to

pytestmark = pytest.mark.unit

T = Timers()


class User:
    """A transaction user that records what the layer hands up, and answers nothing."""

    def __init__(self) -> None:
        self.requests: list[ServerTransaction] = []
        self.acks: list[SipRequest] = []
        self.stray: list[SipResponse] = []

    def request_received(self, transaction: ServerTransaction) -> None:
        self.requests.append(transaction)

    def ack_received(self, ack: SipRequest, flow: Flow) -> None:
        self.acks.append(ack)

    def stray_2xx(self, response: SipResponse, flow: Flow) -> None:
        self.stray.append(response)


def make(max_transactions: int = 100) -> tuple[TransactionLayer, User, FakeClock]:
    user, clock = User(), FakeClock()
    return TransactionLayer(user, timers=T, scheduler=clock,
                            max_transactions=max_transactions), user, clock  # fmt: skip


# -- client INVITE (§17.1.1) --------------------------------------------------------------


async def test_invite_client_retransmits_with_timer_a_doubling_until_timer_b() -> None:
    layer, _, clock = make()
    flow = FakeFlow(clock=clock)
    tx = layer.send_request(request("INVITE"), flow)
    clock.advance(64 * T.t1 + 1)
    # Timer A: sends at 0, T1, 3T1, 7T1, 15T1, 31T1, 63T1; Timer B (64*T1) then times out.
    assert flow.times() == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    with pytest.raises(TransactionTimeout):
        await tx.wait_final()
    assert tx.state is State.TERMINATED and layer.statistics().client == 0


async def test_invite_client_over_tcp_never_retransmits() -> None:
    layer, _, clock = make()
    flow = FakeFlow(reliable=True, clock=clock)
    tx = layer.send_request(request("INVITE"), flow)
    clock.advance(40)
    assert len(flow.sent) == 1 and tx.state is State.TERMINATED


async def test_provisional_stops_invite_retransmissions() -> None:
    layer, _, clock = make()
    flow = FakeFlow(clock=clock)
    invite = request("INVITE")
    seen: list[int] = []
    tx = layer.send_request(invite, flow)
    tx.on_provisional = lambda r: seen.append(r.status)
    clock.advance(0.6)
    layer.receive(response_to(invite, 180), flow)
    clock.advance(60)
    assert len(flow.sent) == 2 and seen == [180] and tx.state is State.PROCEEDING


async def test_error_final_is_acked_by_the_transaction_and_again_on_retransmission() -> None:
    layer, _, clock = make()
    flow = FakeFlow(clock=clock)
    invite = request("INVITE", extra=[("Route", "<sip:proxy.example;lr>")])
    tx = layer.send_request(invite, flow)
    busy = response_to(invite, 486, to_tag="callee")
    layer.receive(busy, flow)
    assert (await tx.wait_final()).status == 486
    ack = flow.messages()[-1]
    assert isinstance(ack, SipRequest) and ack.method == "ACK"
    # §17.1.1.3: same branch and CSeq number, To with the response's tag, the INVITE's Route.
    assert ack.vias[0].branch == invite.vias[0].branch and ack.cseq.seq == invite.cseq.seq
    assert ack.to_addr.tag == "callee" and ack.headers.get("Route") == "<sip:proxy.example;lr>"
    layer.receive(busy, flow)  # the 486 retransmitted: ACK again, no second final to the TU
    assert flow.statuses() == ["INVITE", "ACK", "ACK"]
    clock.advance(64 * T.t1)  # Timer D
    assert tx.state is State.TERMINATED and layer.statistics().client == 0


async def test_2xx_moves_to_accepted_and_passes_retransmissions_up() -> None:
    layer, user, clock = make()
    flow = FakeFlow(clock=clock)
    invite = request("INVITE")
    tx = layer.send_request(invite, flow)
    again: list[SipResponse] = []
    tx.on_2xx = again.append
    ok = response_to(invite, 200)
    layer.receive(ok, flow)
    assert (await tx.wait_final()).status == 200 and tx.state is State.ACCEPTED
    layer.receive(ok, flow)
    assert len(again) == 1  # RFC 6026 §7.1: the dialog ACKs it again
    assert flow.statuses() == ["INVITE"]  # no ACK from the transaction for a 2xx
    clock.advance(64 * T.t1)  # Timer M
    layer.receive(ok, flow)
    assert user.stray == [ok]  # after Timer M the layer hands it to the user agent


# -- client non-INVITE (§17.1.2) ----------------------------------------------------------


async def test_non_invite_client_timer_e_caps_at_t2_then_timer_f() -> None:
    layer, _, clock = make()
    flow = FakeFlow(clock=clock)
    tx = layer.send_request(request("BYE", to_tag="t"), flow)
    clock.advance(64 * T.t1 + 1)
    times = flow.times()
    assert times[:6] == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5]  # doubling, then every T2
    assert all(abs(b - a - 4.0) < 1e-9 for a, b in itertools.pairwise(times[4:]))
    with pytest.raises(TransactionTimeout):
        await tx.wait_final()


async def test_non_invite_client_retransmits_at_t2_after_provisional() -> None:
    layer, _, clock = make()
    flow = FakeFlow(clock=clock)
    bye = request("BYE", to_tag="t")
    tx = layer.send_request(bye, flow)
    clock.advance(0.6)
    layer.receive(response_to(bye, 100), flow)
    clock.advance(10)
    assert flow.times() == [0.0, 0.5, 1.5, 5.5, 9.5]  # E fired at 1.5 with T2 from then on
    layer.receive(response_to(bye, 200), flow)
    assert (await tx.wait_final()).status == 200
    clock.advance(T.t4)  # Timer K absorbs retransmitted responses for T4, then ends
    assert tx.state is State.TERMINATED


async def test_transport_error_fails_the_waiter() -> None:
    layer, _, clock = make()
    flow = FakeFlow(clock=clock)
    flow.broken = True
    tx = layer.send_request(request("OPTIONS"), flow)
    with pytest.raises(TransportError):
        await tx.wait_final()
    assert layer.statistics().client == 0


# -- server INVITE (§17.2.1, RFC 6026) ----------------------------------------------------


async def test_invite_server_sends_100_and_absorbs_retransmissions() -> None:
    layer, user, clock = make()
    flow = FakeFlow(clock=clock)
    invite = request("INVITE")
    layer.receive(invite, flow)
    layer.receive(invite, flow)  # retransmitted: the 100 again, not a second transaction
    assert flow.statuses() == [100, 100] and len(user.requests) == 1
    assert layer.statistics().retransmissions_absorbed == 1


async def test_invite_server_error_final_retransmits_until_ack() -> None:
    layer, user, clock = make()
    flow = FakeFlow(clock=clock)
    invite = request("INVITE")
    layer.receive(invite, flow)
    tx = user.requests[0]
    tx.respond(build_response(invite, 486, to_tag="me"))
    clock.advance(3.6)  # Timer G: T1, 2T1, 4T1 → resent at 0.5, 1.5, 3.5
    assert flow.statuses() == [100, 486, 486, 486, 486]
    ack = request("ACK", branch=invite.vias[0].branch, to_tag="me")
    layer.receive(ack, flow)
    assert tx.state is State.CONFIRMED and user.acks == []  # absorbed by the transaction
    clock.advance(20)
    assert len(flow.sent) == 5 and tx.state is State.TERMINATED  # Timer I ended it


async def test_invite_server_timer_h_reports_a_missing_ack() -> None:
    layer, user, clock = make()
    flow = FakeFlow(clock=clock)
    invite = request("INVITE")
    layer.receive(invite, flow)
    tx = user.requests[0]
    lost: list[bool] = []
    tx.on_ack_timeout = lambda: lost.append(True)
    tx.respond(build_response(invite, 503, to_tag="me"))
    clock.advance(64 * T.t1 + 0.1)
    assert lost == [True] and tx.ack_timed_out and tx.state is State.TERMINATED
    intervals = [b - a for a, b in itertools.pairwise(flow.times()[1:])]
    assert max(intervals) == pytest.approx(T.t2)  # Timer G capped at T2


async def test_invite_server_2xx_is_accepted_and_ack_goes_to_the_user() -> None:
    layer, user, clock = make()
    flow = FakeFlow(clock=clock)
    invite = request("INVITE")
    layer.receive(invite, flow)
    tx = user.requests[0]
    tx.respond(build_response(invite, 200, to_tag="me"))
    assert tx.state is State.ACCEPTED
    layer.receive(invite, flow)  # RFC 6026 §8.5: absorbed, nothing resent by the transaction
    assert flow.statuses() == [100, 200] and len(user.requests) == 1
    ack = request("ACK", to_tag="me")  # ACK for a 2xx: new branch, end to end
    layer.receive(ack, flow)
    assert user.acks == [ack]
    clock.advance(64 * T.t1)  # Timer L
    assert tx.state is State.TERMINATED


# -- server non-INVITE (§17.2.2) -----------------------------------------------------------


async def test_non_invite_server_answers_retransmissions_with_its_final() -> None:
    layer, user, clock = make()
    flow = FakeFlow(clock=clock)
    bye = request("BYE", to_tag="me")
    layer.receive(bye, flow)
    layer.receive(bye, flow)  # before the answer: absorbed silently (Trying)
    user.requests[0].respond(build_response(bye, 200))
    layer.receive(bye, flow)
    assert flow.statuses() == [200, 200] and len(user.requests) == 1
    clock.advance(64 * T.t1)  # Timer J
    assert layer.statistics().server == 0


async def test_non_invite_server_over_tcp_ends_at_once() -> None:
    layer, user, clock = make()
    flow = FakeFlow(reliable=True, clock=clock)
    options = request("OPTIONS")
    layer.receive(options, flow)
    user.requests[0].respond(build_response(options, 200))
    clock.advance(0)
    assert layer.statistics().server == 0  # Timer J is 0 on reliable transports


async def test_unanswered_non_invite_is_not_leaked() -> None:
    layer, _, clock = make()
    flow = FakeFlow(clock=clock)
    layer.receive(request("INFO", to_tag="me"), flow)
    clock.advance(64 * T.t1 + 64 * T.t1)
    assert flow.statuses() == [500] and layer.statistics().server == 0


# -- the layer: keys, CANCEL, cap ---------------------------------------------------------


async def test_cancel_finds_its_invite_and_is_its_own_transaction() -> None:
    layer, user, clock = make()
    flow = FakeFlow(clock=clock)
    invite = request("INVITE")
    layer.receive(invite, flow)
    cancel = request("CANCEL", branch=invite.vias[0].branch)
    layer.receive(cancel, flow)
    assert [t.request.method for t in user.requests] == ["INVITE", "CANCEL"]
    assert layer.find_invite(cancel) is user.requests[0]
    assert layer.find_invite(request("CANCEL")) is None


async def test_same_branch_from_another_sender_is_another_transaction() -> None:
    layer, user, clock = make()
    flow = FakeFlow(clock=clock)
    first = request("OPTIONS", branch="z9hG4bKsame")
    second = request("OPTIONS", branch="z9hG4bKsame")
    second.headers.replace_first("Via", "SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKsame")
    layer.receive(first, flow)
    layer.receive(second, flow)
    assert len(user.requests) == 2  # §17.2.3: sent-by is part of the key


async def test_rfc2543_requests_without_cookie_still_match_retransmissions() -> None:
    layer, user, clock = make()
    flow = FakeFlow(clock=clock)
    old = request("OPTIONS", branch="1")
    layer.receive(old, flow)
    layer.receive(old, flow)
    assert len(user.requests) == 1


async def test_cap_on_live_transactions_answers_503() -> None:
    layer, user, clock = make(max_transactions=2)
    flow = FakeFlow(clock=clock)
    for _ in range(3):
        layer.receive(request("OPTIONS"), flow)
    assert len(user.requests) == 2
    overload = flow.messages()[-1]
    assert isinstance(overload, SipResponse) and overload.status == 503
    assert overload.headers.get("Retry-After") and layer.statistics().overload_rejected == 1


async def test_unmatched_responses_are_counted_not_raised() -> None:
    layer, user, clock = make()
    flow = FakeFlow(clock=clock)
    layer.receive(response_to(request("OPTIONS"), 200), flow)
    assert layer.statistics().stray_responses == 1 and user.stray == []


# -- fuzz: any interleaving of peer messages and time leaves nothing behind ----------------

_METHODS = ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO"]
_step = st.one_of(
    st.tuples(st.just("request"), st.sampled_from(_METHODS), st.integers(0, 3), st.booleans()),
    st.tuples(st.just("response"), st.sampled_from([100, 180, 200, 486, 503]),
              st.integers(0, 3), st.booleans()),
    st.tuples(st.just("answer"), st.sampled_from([180, 200, 404]), st.integers(0, 3),
              st.booleans()),
    st.tuples(st.just("send"), st.sampled_from(["INVITE", "OPTIONS"]), st.integers(0, 3),
              st.booleans()),
    st.tuples(st.just("time"), st.sampled_from([0.1, 0.5, 4.0, 40.0]), st.integers(0, 0),
              st.booleans()),
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_step, max_size=40))
async def test_fuzzed_message_sequences_never_raise_and_always_drain(steps: list[tuple]) -> None:
    layer, user, clock = make(max_transactions=8)
    flows = [FakeFlow(clock=clock), FakeFlow(reliable=True, clock=clock)]
    branches = [f"z9hG4bKfuzz{i}" for i in range(4)]
    sent: list[SipRequest] = []
    for kind, what, index, reliable in steps:
        flow = flows[int(reliable)]
        if kind == "request":
            layer.receive(request(what, branch=branches[index], to_tag="me" if index % 2 else None),
                          flow)  # fmt: skip
        elif kind == "response" and sent:
            layer.receive(response_to(sent[index % len(sent)], what), flow)
        elif kind == "answer" and user.requests:
            tx = user.requests[index % len(user.requests)]
            tx.respond(build_response(tx.request, what, to_tag="me"))
        elif kind == "send":
            req = request(what, branch=f"z9hG4bKout{len(sent)}")
            try:
                layer.send_request(req, flow)
            except TooManyTransactions:
                continue  # the cap holds for what we send too: the caller is told at once
            sent.append(req)
        elif kind == "time":
            clock.advance(float(what))
    for tx in user.requests:  # a well-behaved TU answers everything eventually
        if tx.state in (State.PROCEEDING, State.TRYING):
            tx.respond(build_response(tx.request, 500, to_tag="me"))
    clock.advance(200 * T.t1 + T.proceeding_limit)
    stats = layer.statistics()
    assert stats.server == 0 and stats.client == 0 and clock.pending == 0
