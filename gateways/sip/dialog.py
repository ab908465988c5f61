"""RFC 3261 §12 dialogs: the state two user agents share for one call.

A dialog is identified by Call-ID, local tag and remote tag. It holds the route set
(Record-Route, in the order each side must use), the remote target (the peer's Contact,
refreshed by re-INVITE and UPDATE), and both CSeq spaces. It builds in-dialog requests
(§12.2.1.1: BYE, re-INVITE, REFER, INFO, UPDATE) and the ACK for a 2xx (§13.2.2.4), and
checks incoming ones (§12.2.2: a CSeq lower than the last one gets 500).

`AnswerRetransmitter` is the UAS half of §13.3.1.4: a 2xx to an INVITE is retransmitted by
the dialog layer, at T1 doubling up to T2, until the ACK comes or 64*T1 passes (the call is
then ended with BYE). The UAC half, ACKing every 2xx again, lives with the call that keeps
the ACK it sent.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from switchboard.gateways.sip.errors import TransportError
from switchboard.gateways.sip.headers import CSeq, Headers
from switchboard.gateways.sip.message import SipRequest, SipResponse
from switchboard.gateways.sip.transaction import Cancellable, Flow, Scheduler, Timers
from switchboard.gateways.sip.uri import NameAddr, SipUri

__all__ = ["AnswerRetransmitter", "Dialog", "DialogId", "DialogState"]

DialogId = tuple[str, str, str]  # (Call-ID, local tag, remote tag)
TARGET_REFRESH = frozenset(("INVITE", "UPDATE"))  # §12.2 and RFC 3311 §5.2


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(eq=False, slots=True)
class Dialog:
    """One dialog; `local` and `remote` are the From/To values with their tags."""

    call_id: str
    local: NameAddr
    remote: NameAddr
    local_seq: int
    remote_seq: int | None
    remote_target: SipUri
    route_set: list[str]
    local_contact: str
    role: Literal["uac", "uas"]
    state: DialogState = DialogState.EARLY
    secure: bool = False
    flow: Flow | None = None  # the connection to reuse for in-dialog requests, if any
    extra_headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def id(self) -> DialogId:
        return (self.call_id, self.local.tag or "", self.remote.tag or "")

    @classmethod
    def as_uas(cls, request: SipRequest, local_tag: str, local_contact: str) -> Dialog:
        """§12.1.1: the dialog a UAS creates from the request it answers with a tag."""
        contacts = request.contacts
        return cls(
            call_id=request.call_id,
            local=request.to_addr.with_tag(local_tag),
            remote=request.from_addr,
            local_seq=0,  # §12.1.1: empty until we send a request; then any start value works
            remote_seq=request.cseq.seq,
            remote_target=contacts[0].uri if contacts else request.from_addr.uri,
            route_set=list(request.headers.get_all("Record-Route")),
            local_contact=local_contact,
            role="uas",
            secure=request.uri.scheme == "sips",
        )

    @classmethod
    def as_uac(cls, request: SipRequest, response: SipResponse) -> Dialog:
        """§12.1.2: the dialog a UAC creates from a 1xx-with-tag or 2xx to its INVITE."""
        contacts = response.contacts
        return cls(
            call_id=request.call_id,
            local=request.from_addr,
            remote=response.to_addr,
            local_seq=request.cseq.seq,
            remote_seq=None,
            remote_target=contacts[0].uri if contacts else request.uri,
            # §12.1.2: the UAC's route set is the Record-Route of the response, reversed.
            route_set=list(reversed(response.headers.get_all("Record-Route"))),
            local_contact=request.headers.get("Contact") or "",
            role="uac",
            state=DialogState.CONFIRMED if response.status < 300 else DialogState.EARLY,
            secure=request.uri.scheme == "sips",
        )

    def confirm(self, response: SipResponse) -> None:
        """A 2xx arrived (UAC) or was sent (UAS): the dialog is confirmed (§12.1)."""
        if self.state is DialogState.EARLY:
            self.state = DialogState.CONFIRMED
        if self.role == "uac":
            contacts = response.contacts
            if contacts:
                self.remote_target = contacts[0].uri
            if response.headers.get_all("Record-Route") and not self.route_set:
                self.route_set = list(reversed(response.headers.get_all("Record-Route")))

    def terminate(self) -> None:
        self.state = DialogState.TERMINATED

    def check_request(self, request: SipRequest) -> int | None:
        """§12.2.2: validate an in-dialog request; the status to answer if it is out of order.

        Updates the remote CSeq and, for target refresh requests, the remote target.
        """
        if request.method in ("ACK", "CANCEL"):
            return None  # they reuse the INVITE's CSeq number
        seq = request.cseq.seq
        if self.remote_seq is not None and seq <= self.remote_seq:
            # Lower: out of order, 500. Equal: a retransmission the transaction layer should
            # have absorbed, or a broken peer; 500 as well (§12.2.2).
            return 500
        self.remote_seq = seq
        if request.method in TARGET_REFRESH:
            contacts = request.contacts
            if contacts:
                self.remote_target = contacts[0].uri
        return None

    def next_hop(self) -> SipUri:
        """§8.1.2 / §12.2.1.1: where to send: the first route, else the remote target."""
        if self.route_set:
            return NameAddr.parse(self.route_set[0]).uri
        return self.remote_target

    def _uri_and_routes(self) -> tuple[SipUri, list[str]]:
        if not self.route_set:
            return self.remote_target, []
        first = NameAddr.parse(self.route_set[0]).uri
        if "lr" in first.params:
            return self.remote_target, list(self.route_set)  # loose routing
        # §12.2.1.1 strict routing: the first route becomes the Request-URI (without the
        # parameters not allowed there), the remote target goes last in Route.
        uri = SipUri(scheme=first.scheme, user=first.user, host=first.host, port=first.port,
                     params={k: v for k, v in first.params.items() if k not in ("method",
                                                                               "ttl")})  # fmt: skip
        return uri, self.route_set[1:] + [f"<{self.remote_target}>"]

    def create_request(self, method: str, *, via: str, headers: Headers | None = None,
                       body: bytes = b"", content_type: str | None = None) -> SipRequest:  # fmt: skip
        """§12.2.1.1: a new in-dialog request (not ACK, not CANCEL) with the next CSeq."""
        self.local_seq += 1
        return self._request(method, self.local_seq, via, headers, body, content_type)

    def create_ack(self, invite_seq: int, *, via: str, body: bytes = b"",
                   content_type: str | None = None) -> SipRequest:  # fmt: skip
        """§13.2.2.4: the ACK for a 2xx, with the INVITE's CSeq number and a new branch."""
        return self._request("ACK", invite_seq, via, None, body, content_type)

    def _request(self, method: str, seq: int, via: str, extra: Headers | None, body: bytes,
                 content_type: str | None) -> SipRequest:  # fmt: skip
        uri, routes = self._uri_and_routes()
        headers = Headers([("Via", via), ("Max-Forwards", "70")])
        headers.add("From", str(self.local))
        headers.add("To", str(self.remote))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", str(CSeq(seq, method)))
        for route in routes:
            headers.add("Route", route)
        if method != "ACK":
            headers.add("Contact", self.local_contact)
        for name, value in self.extra_headers:
            headers.add(name, value)
        for name, value in extra or ():
            headers.add(name, value)
        if body and content_type:
            headers.add("Content-Type", content_type)
        return SipRequest(method=method, uri=uri, headers=headers, body=body)


class AnswerRetransmitter:
    """§13.3.1.4: resend our 2xx until its ACK arrives, or give up after 64*T1."""

    def __init__(self, response: SipResponse, flow: Flow, timers: Timers, scheduler: Scheduler,
                 on_timeout: Callable[[], None]) -> None:  # fmt: skip
        self.cseq = response.cseq.seq
        self._data = response.encode()
        self._flow = flow
        self._timers = timers
        self._scheduler = scheduler
        self._on_timeout = on_timeout
        self._resend: Cancellable | None = None
        self._deadline: Cancellable | None = None
        self.acked = False
        self.retransmissions = 0

    def start(self) -> None:
        """Call after the transaction sent the 2xx once; schedules the retransmissions."""
        self._schedule(self._timers.t1)
        self._deadline = self._scheduler.call_later(self._timers.b, self._give_up)

    def _schedule(self, interval: float) -> None:
        def fire() -> None:
            if self.acked:
                return
            try:
                self._flow.send(self._data)
            except TransportError:
                return  # the connection is gone; the 64*T1 deadline still ends the call
            self.retransmissions += 1
            self._schedule(min(2 * interval, self._timers.t2))

        self._resend = self._scheduler.call_later(interval, fire)

    def _give_up(self) -> None:
        self._deadline = None
        if not self.acked:
            self.stop()
            self._on_timeout()

    def ack(self) -> None:
        """The ACK arrived: stop (§13.3.1.4)."""
        self.acked = True
        self.stop()

    def stop(self) -> None:
        for handle in (self._resend, self._deadline):
            if handle is not None:
                handle.cancel()
        self._resend = self._deadline = None
