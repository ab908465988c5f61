"""RFC 3261 §17 transactions: client and server, INVITE and non-INVITE, with their timers.

A transaction is one request and its responses. It retransmits over UDP (never over TCP/TLS,
§17.1.1.2), absorbs retransmitted requests, answers ACK for non-2xx finals itself and reports
timeouts. The INVITE machines follow RFC 6026: a 2xx moves them to "Accepted" (Timer L on the
server, Timer M on the client) so 2xx retransmissions and forks reach the dialog layer, which
retransmits a 2xx until ACK (§13.3.1.4) and ACKs every 2xx it gets.

Timers run on a `Scheduler` (the asyncio loop by default; unit tests pass a fake clock). The
transactions only know a `Flow`: something that sends bytes and says whether it is reliable.
The `TransactionLayer` (in `transaction_layer`) keys and caps them.

    client INVITE:      calling --1xx--> proceeding --2xx--> accepted --M--> terminated
                           |                 \\--3xx-6xx--> completed (ACK) --D--> terminated
    server INVITE:      proceeding --2xx--> accepted --L--> terminated
                                   --3xx-6xx--> completed --ACK--> confirmed --I--> terminated
    non-INVITE:         trying --1xx--> proceeding --final--> completed --J/K--> terminated
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from switchboard.gateways.sip.errors import TransactionTimeout, TransportError
from switchboard.gateways.sip.headers import CSeq, Headers
from switchboard.gateways.sip.message import SipRequest, SipResponse, build_response

__all__ = [
    "Cancellable",
    "ClientTransaction",
    "Flow",
    "Scheduler",
    "ServerTransaction",
    "State",
    "Timers",
    "Transaction",
    "build_ack_for_error",
    "build_cancel",
]


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """The clock timers run on: `asyncio.AbstractEventLoop` fits, and so does a test's fake."""

    def time(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], object], /) -> Cancellable: ...


class Flow(Protocol):
    """Where a transaction's messages go: a UDP destination or a TCP/TLS connection."""

    @property
    def reliable(self) -> bool: ...

    def send(self, data: bytes) -> None:
        """Send one whole message; raises `TransportError` when the flow is gone."""
        ...


@dataclass(frozen=True, slots=True)
class Timers:
    """RFC 3261 Table 4; tests shrink T1 and every derived timer follows."""

    t1: float = 0.5  # RTT estimate
    t2: float = 4.0  # longest retransmit interval for non-INVITE requests and INVITE responses
    t4: float = 5.0  # longest time a message stays in the network
    proceeding_limit: float = 180.0  # §16.6 Timer C: an INVITE may ring at most this long

    @property
    def b(self) -> float:
        """Timer B / F / H / J / L / M: 64*T1, the transaction's whole lifetime."""
        return 64 * self.t1

    def d(self, reliable: bool) -> float:
        """Timer D: > 32 s over UDP (64*T1 at the default T1), 0 over TCP/TLS."""
        return 0.0 if reliable else 64 * self.t1

    def k(self, reliable: bool) -> float:
        """Timer I and K: T4 over UDP, 0 over TCP/TLS."""
        return 0.0 if reliable else self.t4


class State(enum.Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"  # RFC 6026 §7.1 / §8.4
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class Transaction:
    """What both sides share: the request, its flow, and timers cancelled on termination."""

    def __init__(self, request: SipRequest, flow: Flow, timers: Timers, scheduler: Scheduler,
                 on_terminated: Callable[[Transaction], None]) -> None:  # fmt: skip
        self.request = request
        self.flow = flow
        self.timers = timers
        self._scheduler = scheduler
        self._on_terminated = on_terminated
        self._handles: dict[str, Cancellable] = {}
        self.state = State.TRYING
        self.is_invite = request.method == "INVITE"

    def _arm(self, name: str, delay: float, callback: Callable[[], None]) -> None:
        self._disarm(name)

        def fire() -> None:
            self._handles.pop(name, None)
            if self.state is not State.TERMINATED:
                callback()

        self._handles[name] = self._scheduler.call_later(delay, fire)

    def _disarm(self, name: str) -> None:
        handle = self._handles.pop(name, None)
        if handle is not None:
            handle.cancel()

    def _send(self, data: bytes) -> bool:
        try:
            self.flow.send(data)
        except TransportError:
            # §17.1.4 / §17.2.4: a transport failure terminates the transaction.
            self._transport_failed()
            return False
        return True

    def _transport_failed(self) -> None:
        self._terminate()

    def terminate(self) -> None:
        """End the transaction now, cancelling its timers (the user agent is stopping)."""
        self._terminate()

    def _terminate(self) -> None:
        if self.state is State.TERMINATED:
            return
        self.state = State.TERMINATED
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()
        self._on_terminated(self)


class ServerTransaction(Transaction):
    """Receives one request; the transaction user answers it with `respond`."""

    def __init__(self, request: SipRequest, flow: Flow, timers: Timers, scheduler: Scheduler,
                 on_terminated: Callable[[Transaction], None], key: tuple[str, ...]) -> None:  # fmt: skip
        super().__init__(request, flow, timers, scheduler, on_terminated)
        self.key = key
        self.state = State.PROCEEDING if self.is_invite else State.TRYING
        self.last_response: SipResponse | None = None
        self._wire: bytes | None = None
        self.cancelled = False
        self.ack_timed_out = False  # Timer H fired: the peer never ACKed our final answer
        self.on_ack_timeout: Callable[[], None] | None = None
        if self.is_invite:
            # §17.2.1: answer 100 at once, so the client stops retransmitting the INVITE.
            self.respond(build_response(request, 100))
        else:
            # A guard, not in the RFC: a transaction user that never answers must not leak the
            # transaction; after Timer F's span the client has given up anyway.
            self._arm("guard", timers.b, self._give_up)

    @property
    def final(self) -> bool:
        return self.last_response is not None and self.last_response.status >= 200

    def respond(self, response: SipResponse) -> None:
        """Send a response; a final one moves the machine on (§17.2.1, §17.2.2)."""
        if self.state not in (State.TRYING, State.PROCEEDING):
            return  # one final answer only; the dialog layer retransmits its 2xx itself
        self.last_response = response
        self._wire = response.encode()
        if not self._send(self._wire):
            return
        if response.status < 200:
            if not self.is_invite:
                self.state = State.PROCEEDING
            return
        self._disarm("guard")
        reliable = self.flow.reliable
        if self.is_invite and response.status < 300:
            self.state = State.ACCEPTED  # RFC 6026 §8.5: Timer L absorbs retransmitted INVITEs
            self._arm("L", self.timers.b, self._terminate)
        elif self.is_invite:
            self.state = State.COMPLETED
            if not reliable:
                self._arm("G", self.timers.t1, self._timer_g(self.timers.t1))
            self._arm("H", self.timers.b, self._timer_h)
        else:
            self.state = State.COMPLETED
            self._arm("J", 0.0 if reliable else self.timers.b, self._terminate)

    def _timer_g(self, interval: float) -> Callable[[], None]:
        def fire() -> None:
            # §17.2.1: retransmit the final response, doubling up to T2, until ACK or Timer H.
            if self.state is State.COMPLETED and self._wire is not None and self._send(self._wire):
                nxt = min(2 * interval, self.timers.t2)
                self._arm("G", nxt, self._timer_g(nxt))

        return fire

    def _timer_h(self) -> None:
        self.ack_timed_out = True
        if self.on_ack_timeout is not None:
            self.on_ack_timeout()
        self._terminate()

    def _give_up(self) -> None:
        if not self.final:
            self.respond(build_response(self.request, 500, headers=Headers([("Retry-After",
                                                                             "5")])))  # fmt: skip

    def receive_retransmission(self) -> None:
        """§17.2.1 / §17.2.2: answer a retransmitted request with the last response sent."""
        if self._wire is not None and self.state in (State.PROCEEDING, State.COMPLETED):
            self._send(self._wire)

    def receive_ack(self) -> None:
        """§17.2.1: ACK for our non-2xx final: stop retransmitting, linger for Timer I."""
        if self.state is State.COMPLETED:
            self.state = State.CONFIRMED
            self._disarm("G")
            self._disarm("H")
            self._arm("I", self.timers.k(self.flow.reliable), self._terminate)


class ClientTransaction(Transaction):
    """Sends one request and collects its responses.

    `await wait_final()` gives the first final response or raises `TransactionTimeout` /
    `TransportError`. `on_provisional(response)` sees every 1xx, `on_2xx(response)` every
    2xx after the first (retransmissions and forks, RFC 6026 §7.1).
    """

    def __init__(self, request: SipRequest, flow: Flow, timers: Timers, scheduler: Scheduler,
                 on_terminated: Callable[[Transaction], None], key: tuple[str, ...]) -> None:  # fmt: skip
        super().__init__(request, flow, timers, scheduler, on_terminated)
        self.key = key
        self.state = State.CALLING if self.is_invite else State.TRYING
        self.on_provisional: Callable[[SipResponse], None] | None = None
        self.on_2xx: Callable[[SipResponse], None] | None = None
        self._final: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
        self._wire = request.encode()
        self._ack: bytes | None = None
        self.provisional_seen = False

    def start(self) -> None:
        """Send the request and arm Timers A/B (INVITE) or E/F (non-INVITE)."""
        if not self._send(self._wire):
            return
        t1 = self.timers.t1
        if self.is_invite:
            if not self.flow.reliable:
                self._arm("A", t1, self._retransmit("A", t1))
            self._arm("B", self.timers.b, self._timeout)
        else:
            if not self.flow.reliable:
                self._arm("E", t1, self._retransmit("E", t1))
            self._arm("F", self.timers.b, self._timeout)

    def _retransmit(self, name: str, interval: float) -> Callable[[], None]:
        def fire() -> None:
            if self.state not in (State.CALLING, State.TRYING, State.PROCEEDING):
                return
            if self.is_invite and self.state is not State.CALLING:
                return
            if not self._send(self._wire):
                return
            # §17.1.1.2: Timer A doubles without bound; §17.1.2.2: Timer E doubles up to T2,
            # and sits at T2 once a provisional response came.
            if self.is_invite:
                nxt = 2 * interval
            elif self.state is State.PROCEEDING:
                nxt = self.timers.t2
            else:
                nxt = min(2 * interval, self.timers.t2)
            self._arm(name, nxt, self._retransmit(name, nxt))

        return fire

    async def wait_final(self) -> SipResponse:
        """The first final response (raises `TransactionTimeout` or `TransportError`)."""
        return await asyncio.shield(self._final)

    @property
    def done(self) -> bool:
        return self._final.done()

    @property
    def final_response(self) -> SipResponse | None:
        """The first final response, once it came."""
        if self._final.done() and not self._final.cancelled() and self._final.exception() is None:
            return self._final.result()
        return None

    def _settle(self, response: SipResponse | None = None, error: Exception | None = None) -> None:
        if self._final.done():
            return
        if error is not None:
            self._final.set_exception(error)
            self._final.exception()  # mark retrieved: a TU that stopped waiting is not a bug
        else:
            assert response is not None
            self._final.set_result(response)

    def _timeout(self) -> None:
        self._settle(error=TransactionTimeout(f"no final response to {self.request.method}"))
        self._terminate()

    def _transport_failed(self) -> None:
        self._settle(error=TransportError(f"could not send {self.request.method}"))
        self._terminate()

    def receive(self, response: SipResponse) -> None:
        """Handle a response matched to this transaction by the layer (§17.1.3)."""
        status = response.status
        if status < 200:
            if self.state in (State.CALLING, State.TRYING, State.PROCEEDING):
                self.state = State.PROCEEDING
                self.provisional_seen = True
                self._disarm("A")
                if self.is_invite:
                    # Timer C (§16.6) instead of B: the callee may ring, but not for ever.
                    self._disarm("B")
                    self._arm("C", self.timers.proceeding_limit, self._timeout)
                if self.on_provisional is not None:
                    self.on_provisional(response)
            return
        if self.is_invite and status < 300:
            if self.state is State.ACCEPTED or self.state is State.TERMINATED:
                if self.on_2xx is not None:
                    self.on_2xx(response)
                return
            if self.state is State.COMPLETED:
                return
            self.state = State.ACCEPTED
            self._disarm_all_but()
            self._arm("M", self.timers.b, self._terminate)
            self._settle(response)
            return
        if self.is_invite:
            if self.state is State.COMPLETED:
                if self._ack is not None:
                    self._send(self._ack)  # §17.1.1.2: ACK every retransmitted final
                return
            if self.state not in (State.CALLING, State.PROCEEDING):
                return
            self.state = State.COMPLETED
            self._disarm_all_but()
            self._ack = build_ack_for_error(self.request, response).encode()
            self._send(self._ack)
            self._settle(response)
            self._arm("D", self.timers.d(self.flow.reliable), self._terminate)
            return
        if self.state in (State.TRYING, State.PROCEEDING):
            self.state = State.COMPLETED
            self._disarm_all_but()
            self._settle(response)
            self._arm("K", self.timers.k(self.flow.reliable), self._terminate)

    def _disarm_all_but(self) -> None:
        for name in list(self._handles):
            self._disarm(name)

    def abandon(self) -> None:
        """Stop at once (the user agent is closing); a waiter gets `TransactionTimeout`."""
        self._settle(error=TransactionTimeout("transaction abandoned"))
        self._terminate()


def build_ack_for_error(invite: SipRequest, response: SipResponse) -> SipRequest:
    """§17.1.1.3: the ACK a client transaction sends for a 3xx-6xx to its INVITE.

    Same Request-URI, Call-ID, From and CSeq number as the INVITE, the INVITE's top Via only
    (same branch), To from the response (it carries the tag) and the INVITE's Route headers.
    """
    headers = Headers([("Via", invite.headers.get_all("Via")[0]), ("Max-Forwards", "70")])
    headers.add("From", invite.headers.get("From") or "")
    headers.add("To", response.headers.get("To") or "")
    headers.add("Call-ID", invite.call_id)
    headers.add("CSeq", str(CSeq(invite.cseq.seq, "ACK")))
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    return SipRequest(method="ACK", uri=invite.uri, headers=headers)


def build_cancel(invite: SipRequest) -> SipRequest:
    """§9.1: CANCEL has the INVITE's Request-URI, Call-ID, To, From, CSeq number, top Via
    (same branch, so it reaches the same server transaction's neighbour) and Route."""
    headers = Headers([("Via", invite.headers.get_all("Via")[0]), ("Max-Forwards", "70")])
    for name in ("From", "To", "Call-ID"):
        headers.add(name, invite.headers.get(name) or "")
    headers.add("CSeq", str(CSeq(invite.cseq.seq, "CANCEL")))
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    return SipRequest(method="CANCEL", uri=invite.uri, headers=headers)
