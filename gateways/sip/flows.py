"""Flows: where SIP messages go (RFC 5626 calls a transport-level path a flow).

`UdpFlow` is a destination reached from our listening socket, so the Via sent-by holds;
`StreamFlow` is one TCP or TLS connection, both the asyncio protocol that frames incoming
bytes (`StreamFramer`, answering CRLF keep-alives, RFC 5626 §3.5.1) and the `Flow` that
transactions send on. Both report to their `FlowOwner`, the transport.
"""

from __future__ import annotations

import asyncio
from typing import Literal, Protocol

from switchboard.gateways.sip.errors import SipParseError, TransportError
from switchboard.gateways.sip.message import SipMessage, StreamFramer

__all__ = ["Address", "FlowOwner", "StreamFlow", "TransportName", "UdpFlow"]

Address = tuple[str, int]
TransportName = Literal["UDP", "TCP", "TLS"]


class FlowOwner(Protocol):
    """The transport, as its flows see it."""

    @property
    def max_message_size(self) -> int: ...

    def send_datagram(self, data: bytes, remote: Address) -> None: ...

    def received(self, message: SipMessage, source: UdpFlow | StreamFlow) -> None: ...

    def malformed(self, exc: SipParseError, source: UdpFlow | StreamFlow) -> None: ...

    def stream_opened(self, flow: StreamFlow) -> None: ...

    def stream_closed(self, flow: StreamFlow) -> None: ...

    def count(self, name: str) -> None: ...


class UdpFlow:
    """A UDP destination; `send` goes out of our listening socket, so Via sent-by holds."""

    reliable = False
    transport_name: TransportName = "UDP"

    def __init__(self, owner: FlowOwner, remote: Address) -> None:
        self._owner = owner
        self.remote = remote

    def send(self, data: bytes) -> None:
        self._owner.send_datagram(data, self.remote)

    def __repr__(self) -> str:
        return f"UdpFlow({self.remote[0]}:{self.remote[1]})"


class StreamFlow(asyncio.Protocol):
    """One TCP or TLS connection, both directions: a `Flow` and the asyncio protocol."""

    reliable = True

    def __init__(self, owner: FlowOwner, transport_name: TransportName) -> None:
        self._owner = owner
        self.transport_name = transport_name
        self._framer = StreamFramer(max_size=owner.max_message_size)
        self._transport: asyncio.Transport | None = None
        self.remote: Address = ("", 0)
        self.last_activity = 0.0
        self.closed = False
        self._pings = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername") or ("", 0)
        self.remote = (str(peer[0]), int(peer[1]))
        self.last_activity = asyncio.get_running_loop().time()
        self._owner.stream_opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._owner.stream_closed(self)

    def send(self, data: bytes) -> None:
        if self.closed or self._transport is None or self._transport.is_closing():
            raise TransportError(f"{self.transport_name} connection closed")
        self._transport.write(data)
        self._owner.count("sent")

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self.last_activity = asyncio.get_running_loop().time()
        self._framer.feed(data)
        while not self.closed:
            try:
                message = self._framer.next_message()
            except SipParseError as exc:
                self._owner.malformed(exc, self)
                self.close()  # a stream cannot be resynchronised after a framing error
                return
            if self._framer.keepalives != self._pings:
                self._pings = self._framer.keepalives
                if self._transport is not None and not self._transport.is_closing():
                    self._transport.write(b"\r\n")  # RFC 5626 §3.5.1: pong
                self._owner.count("keepalives")
            if message is None:
                return
            self._owner.received(message, self)

    def __repr__(self) -> str:
        return f"StreamFlow({self.transport_name} {self.remote[0]}:{self.remote[1]})"
