"""Fakes for SIP signalling tests: a clock the test advances, a flow that records what is sent,
and builders for the requests and responses the tests feed in.

    clock = FakeClock()
    layer = TransactionLayer(user, timers=Timers(t1=0.5), scheduler=clock)
    flow = FakeFlow(reliable=False)
    layer.receive(invite(), flow)
    clock.advance(0.5)                 # fires Timer G, A, E... exactly when they are due
    assert flow.statuses() == [100]
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

from switchboard.gateways.sip.errors import TransportError
from switchboard.gateways.sip.headers import Headers
from switchboard.gateways.sip.message import (
    SipMessage,
    SipRequest,
    SipResponse,
    build_response,
    new_branch,
    parse_message,
)
from switchboard.gateways.sip.uri import SipUri


class _Handle:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A `Scheduler` whose time moves only in `advance`; callbacks run in due order."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, _Handle, Callable[[], object]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], object], /) -> _Handle:
        handle = _Handle()
        heapq.heappush(self._heap, (self.now + max(0.0, delay), next(self._seq), handle, callback))
        return handle

    def advance(self, seconds: float) -> None:
        target = self.now + seconds
        while self._heap and self._heap[0][0] <= target + 1e-9:
            when, _, handle, callback = heapq.heappop(self._heap)
            self.now = max(self.now, when)
            if not handle.cancelled:
                callback()
        self.now = target

    @property
    def pending(self) -> int:
        return sum(1 for _, _, h, _ in self._heap if not h.cancelled)


class FakeFlow:
    """A `Flow` that records each message it is asked to send, with the clock's time."""

    def __init__(self, *, reliable: bool = False, clock: FakeClock | None = None) -> None:
        self.reliable = reliable
        self.clock = clock
        self.sent: list[tuple[float, bytes]] = []
        self.broken = False

    def send(self, data: bytes) -> None:
        if self.broken:
            raise TransportError("fake flow is broken")
        self.sent.append((self.clock.now if self.clock else 0.0, data))

    def messages(self) -> list[SipMessage]:
        return [parse_message(data) for _, data in self.sent]

    def statuses(self) -> list[int | str]:
        return [m.status if isinstance(m, SipResponse) else m.method for m in self.messages()]

    def times(self) -> list[float]:
        return [t for t, _ in self.sent]


def request(method: str = "INVITE", *, branch: str | None = None, cseq: int = 1,
            call_id: str = "call-1@192.0.2.1", from_tag: str = "ftag", to_tag: str | None = None,
            body: bytes = b"", extra: list[tuple[str, str]] | None = None) -> SipRequest:  # fmt: skip
    """A request from a peer at 192.0.2.1 (TEST-NET-1), as the transport hands it up."""
    branch = branch or new_branch()
    headers = Headers([
        ("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={branch};rport=5060;received=192.0.2.1"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:alice@192.0.2.1>;tag={from_tag}"),
        ("To", "<sip:bob@198.51.100.7>" + (f";tag={to_tag}" if to_tag else "")),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
        ("Contact", "<sip:alice@192.0.2.1:5060>"),
        *(extra or []),
    ])  # fmt: skip
    return SipRequest(method=method, uri=SipUri.parse("sip:bob@198.51.100.7"), headers=headers,
                      body=body)  # fmt: skip


def response_to(req: SipRequest, status: int, *, to_tag: str | None = "remote") -> SipResponse:
    """The peer's response to a request we sent."""
    return build_response(req, status, to_tag=to_tag)
