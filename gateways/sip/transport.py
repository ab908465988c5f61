"""The SIP transport layer (RFC 3261 §18): UDP, TCP and TLS listeners, connections, routing.

Incoming bytes pass the `SourcePolicy` (allow-list, per-IP flood bucket) before any parsing,
then `message.parse_message` or a `StreamFramer`. A request gets its top Via stamped with
`received` and, when asked, `rport` (§18.2.1, RFC 3581 §4) and travels up with the `Flow`
its responses must take: over UDP the Via's received/rport address (§18.2.2), over TCP/TLS
the connection it came on. Malformed input is answered through `message.error_response`
(400, 413, 416, 505, 513) when it can be, otherwise dropped and counted; nothing a peer sends
can raise out of this module, and a failing upper layer is logged and counted, not fatal.

Streams: connections are reused for requests to the same address (§18.1.1), CRLFCRLF
keep-alive pings are answered with CRLF (RFC 5626 §3.5.1), idle connections are closed, and
their number is capped. TLS listens only when a certificate and key are configured.
Server names are resolved with getaddrinfo; RFC 3263 NAPTR/SRV lookups are not done.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from switchboard.gateways.sip.errors import SipError, SipParseError, TransportError
from switchboard.gateways.sip.flows import Address, StreamFlow, TransportName, UdpFlow
from switchboard.gateways.sip.headers import Headers, Via
from switchboard.gateways.sip.message import (
    MAX_MESSAGE_SIZE,
    SipMessage,
    SipRequest,
    SipResponse,
    build_response,
    error_response,
    parse_message,
)
from switchboard.gateways.sip.source_policy import SourcePolicy, Verdict

__all__ = ["SipTransport", "StreamFlow", "TransportConfig", "TransportStatistics", "UdpFlow"]
# StreamFlow and UdpFlow live in `flows`; re-exported here, where users look for them.

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Where to listen. `advertised_host` goes into Via and Contact (a NAT's public address);
    by default the bind host, or 127.0.0.1 when binding every interface."""

    host: str = "0.0.0.0"
    port: int = 5060  # UDP and TCP; 0 picks a free port (tests)
    udp: bool = True
    tcp: bool = True
    tls_port: int = 5061
    tls_cert: str | None = None  # PEM chain; TLS listens only with both cert and key
    tls_key: str | None = None
    tls_ca: str | None = None  # CA bundle to verify peers we connect to over TLS
    tls_verify: bool = True  # False only for tests with self-signed peers
    advertised_host: str | None = None
    max_message_size: int = MAX_MESSAGE_SIZE
    max_connections: int = 10_000
    idle_timeout: float = 300.0  # close a TCP/TLS connection silent this long


@dataclass(frozen=True, slots=True)
class TransportStatistics:
    received: int
    sent: int
    malformed: int  # answered with a 4xx/5xx or dropped when unanswerable
    dropped_denied: int
    rejected_denied: int
    dropped_flood: int
    rejected_flood: int
    keepalives: int
    connections: int
    refused_connections: int
    upper_layer_errors: int


class SipTransport:
    """Listeners and connections; hands `(message, flow)` to `on_message`."""

    def __init__(
        self,
        config: TransportConfig,
        on_message: Callable[[SipMessage, UdpFlow | StreamFlow], None],
        policy: SourcePolicy | None = None,
    ) -> None:
        self.config = config
        self.on_message = on_message
        self.policy = policy or SourcePolicy()
        self._udp: asyncio.DatagramTransport | None = None
        self._servers: dict[TransportName, asyncio.Server] = {}
        self._connections: dict[tuple[TransportName, Address], StreamFlow] = {}
        self._pending: dict[tuple[TransportName, Address], asyncio.Future[StreamFlow]] = {}
        self._local: dict[str, Address] = {}  # by "UDP", "TCP", "TLS"
        self._sweeper: asyncio.Task[None] | None = None
        self._client_ssl: ssl.SSLContext | None = None
        self._counts = dict.fromkeys(
            ("received", "sent", "malformed", "dropped_denied", "rejected_denied",
             "dropped_flood", "rejected_flood", "keepalives", "refused", "errors"), 0,
        )  # fmt: skip

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the listeners; with port 0, UDP picks a port and TCP binds the same one (if
        TCP finds that number taken, the pair is tried again on another port)."""
        for attempt in range(10):
            try:
                await self._bind(self.config.port)
                return
            except OSError as exc:
                retry = self.config.port == 0 and exc.errno == errno.EADDRINUSE and attempt < 9
                await self._release_listeners()
                if not retry:
                    raise

    async def _release_listeners(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        for server in self._servers.values():
            server.close()
        self._servers.clear()
        self._local.clear()

    async def _bind(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        if cfg.udp:
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(cfg.host, port)
            )
            port = int(self._udp.get_extra_info("sockname")[1])
            self._local["UDP"] = (self.advertised_host, port)
        if cfg.tcp:
            server = await loop.create_server(lambda: StreamFlow(self, "TCP"), cfg.host, port)
            self._servers["TCP"] = server
            port = int(server.sockets[0].getsockname()[1])
            self._local["TCP"] = (self.advertised_host, port)
        if cfg.tls_cert and cfg.tls_key:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cfg.tls_cert, cfg.tls_key)
            server = await loop.create_server(lambda: StreamFlow(self, "TLS"), cfg.host,
                                              cfg.tls_port, ssl=context)  # fmt: skip
            self._servers["TLS"] = server
            self._local["TLS"] = (self.advertised_host,
                                  int(server.sockets[0].getsockname()[1]))  # fmt: skip
        self._sweeper = asyncio.create_task(self._sweep_idle(), name="sip-idle-connections")

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
        for server in self._servers.values():
            server.close()
        for flow in list(self._connections.values()):
            flow.close()
        for server in self._servers.values():
            await server.wait_closed()
        if self._udp is not None:
            self._udp.close()

    @property
    def advertised_host(self) -> str:
        cfg = self.config
        if cfg.advertised_host:
            return cfg.advertised_host
        return "127.0.0.1" if cfg.host in ("0.0.0.0", "::", "") else cfg.host

    def local_address(self, transport_name: str = "UDP") -> Address:
        """Our advertised host and listening port for `transport_name` (for Via, Contact).

        A TLS client without a certificate has no TLS listener: its Via and Contact name the
        TCP port, and the peer reaches it over the connection it opened (§18.2.2, RFC 5923).
        """
        name = transport_name.upper()
        found = self._local.get(name)
        if found is None and name == "TLS":
            found = self._local.get("TCP") or self._local.get("UDP")
        if found is None:
            raise TransportError(f"no {transport_name} listener configured")
        return found

    @property
    def transports(self) -> tuple[str, ...]:
        return tuple(self._local)

    # -- sending -------------------------------------------------------------------------

    async def connect(self, transport_name: str, host: str, port: int) -> UdpFlow | StreamFlow:
        """A flow to `host:port`: UDP at once, TCP/TLS reusing a live connection (§18.1.1)."""
        name = transport_name.upper()
        address = await self._resolve(host, port)
        if name == "UDP":
            if self._udp is None:
                raise TransportError("no UDP listener configured")
            return UdpFlow(self, address)
        if name not in ("TCP", "TLS"):
            raise TransportError("unsupported transport (use UDP, TCP or TLS)")
        key: tuple[TransportName, Address] = (name, address)  # type: ignore[assignment]
        existing = self._connections.get(key)
        if existing is not None and not existing.closed:
            return existing
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[StreamFlow] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            flow = await self._open(name, address, host)  # type: ignore[arg-type]
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            error = TransportError(f"cannot connect over {name}: {type(exc).__name__}")
            future.set_exception(error)
            future.exception()  # retrieved: other waiters may be gone
            raise error from exc
        except BaseException:
            future.set_exception(TransportError(f"connecting over {name} was cancelled"))
            future.exception()
            raise
        else:
            future.set_result(flow)
            return flow
        finally:
            self._pending.pop(key, None)

    async def _open(self, name: TransportName, address: Address, server_name: str) -> StreamFlow:
        loop = asyncio.get_running_loop()
        context = None
        if name == "TLS":
            context = self._client_context()
        async with asyncio.timeout(10):
            _, flow = await loop.create_connection(
                lambda: StreamFlow(self, name), address[0], address[1], ssl=context,
                server_hostname=server_name if context is not None else None,
            )  # fmt: skip
        self._connections[(name, address)] = flow
        return flow

    def _client_context(self) -> ssl.SSLContext:
        if self._client_ssl is None:
            context = ssl.create_default_context(cafile=self.config.tls_ca)
            if not self.config.tls_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._client_ssl = context
        return self._client_ssl

    async def _resolve(self, host: str, port: int) -> Address:
        host = host.strip("[]")
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port)
        except OSError as exc:
            raise TransportError("cannot resolve the SIP server's host name") from exc
        return str(infos[0][4][0]), int(infos[0][4][1])

    def send_datagram(self, data: bytes, remote: Address) -> None:
        if self._udp is None or self._udp.is_closing():
            raise TransportError("UDP listener closed")
        self._udp.sendto(data, remote)
        self._counts["sent"] += 1

    # -- receiving -----------------------------------------------------------------------

    def _datagram(self, data: bytes, source: Address) -> None:
        if not data.strip(b"\r\n\x00 "):
            self._counts["keepalives"] += 1  # a NAT keep-alive: nothing to answer over UDP
            return
        verdict = self.policy.check(source[0])
        if verdict in (Verdict.DENY_DROP, Verdict.FLOOD_DROP):
            key = "dropped_denied" if verdict is Verdict.DENY_DROP else "dropped_flood"
            self._counts[key] += 1
            return
        try:
            message = parse_message(data, max_size=self.config.max_message_size)
        except SipParseError as exc:
            self.malformed(exc, UdpFlow(self, source))
            return
        if verdict is not Verdict.ALLOW:
            self._refuse(message, UdpFlow(self, source), verdict)
            return
        self.received(message, UdpFlow(self, source))

    def received(self, message: SipMessage, source: UdpFlow | StreamFlow) -> None:
        """A whole message from a datagram or a stream (the flows' hook)."""
        self._counts["received"] += 1
        if isinstance(source, StreamFlow):
            verdict = self.policy.check(source.remote[0])
            if verdict is not Verdict.ALLOW:
                self._refuse(message, source, verdict)
                return
        flow = source
        if isinstance(message, SipRequest):
            # §18.2.1 / RFC 3581 §4: record where the request really came from.
            stamped = _stamp_top_via(message.headers, *source.remote)
            if isinstance(source, UdpFlow):
                flow = UdpFlow(self, stamped.response_address())
        try:
            self.on_message(message, flow)
        # The upper layer failed on one message: count and log it, keep serving the others.
        except Exception:
            self._counts["errors"] += 1
            log.exception("SIP message handler failed")

    def _refuse(self, message: SipMessage, source: UdpFlow | StreamFlow, verdict: Verdict) -> None:
        flood = verdict in (Verdict.FLOOD_DROP, Verdict.FLOOD_REPLY)
        if verdict in (Verdict.DENY_DROP, Verdict.FLOOD_DROP) or not isinstance(
            message, SipRequest
        ) or message.method == "ACK":
            self._counts["dropped_flood" if flood else "dropped_denied"] += 1
            return
        self._counts["rejected_flood" if flood else "rejected_denied"] += 1
        headers = Headers()
        if flood:
            retry = self.policy.flood.retry_after if self.policy.flood else 5
            headers.add("Retry-After", str(retry))
        response = build_response(message, 503 if flood else 403, headers=headers)
        self._reply(response, source)

    def malformed(self, exc: SipParseError, source: UdpFlow | StreamFlow) -> None:
        """Answer a message that could not be parsed, if it can be answered (a hook too)."""
        self._counts["malformed"] += 1
        response = error_response(exc) if exc.method != "ACK" else None
        if response is not None:
            self._reply(response, source)

    def _reply(self, response: SipResponse, source: UdpFlow | StreamFlow) -> None:
        """Send a response the transport itself built (to malformed or refused requests)."""
        flow: UdpFlow | StreamFlow = source
        try:
            if isinstance(source, UdpFlow):
                via = _stamp_top_via(response.headers, *source.remote)
                flow = UdpFlow(self, via.response_address())
            flow.send(response.encode())
        except SipError as exc:  # TransportError, or a Via we cannot re-read: drop
            log.debug("could not answer a refused or malformed message: %s", type(exc).__name__)

    # -- connections ---------------------------------------------------------------------

    def stream_opened(self, flow: StreamFlow) -> None:
        if len(self._connections) >= self.config.max_connections:
            self._counts["refused"] += 1
            flow.close()
            return
        self._connections.setdefault((flow.transport_name, flow.remote), flow)

    def stream_closed(self, flow: StreamFlow) -> None:
        key = (flow.transport_name, flow.remote)
        if self._connections.get(key) is flow:
            del self._connections[key]

    async def _sweep_idle(self) -> None:
        loop = asyncio.get_running_loop()
        period = max(1.0, min(10.0, self.config.idle_timeout / 4))
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for flow in list(self._connections.values()):
                if now - flow.last_activity > self.config.idle_timeout:
                    flow.close()

    def count(self, name: str) -> None:
        self._counts[name] += 1

    @property
    def max_message_size(self) -> int:
        return self.config.max_message_size

    def statistics(self) -> TransportStatistics:
        c = self._counts
        return TransportStatistics(
            received=c["received"], sent=c["sent"], malformed=c["malformed"],
            dropped_denied=c["dropped_denied"], rejected_denied=c["rejected_denied"],
            dropped_flood=c["dropped_flood"], rejected_flood=c["rejected_flood"],
            keepalives=c["keepalives"], connections=len(self._connections),
            refused_connections=c["refused"], upper_layer_errors=c["errors"],
        )  # fmt: skip


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._owner._datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable for a datagram we sent: the transaction's timers handle the loss.
        log.debug("UDP error: %s", type(exc).__name__)


def _stamp_top_via(headers: Headers, host: str, port: int) -> Via:
    """Replace the top Via with its §18.2.1 stamped form; return the stamped Via."""
    top = headers.get("Via")
    if top is None:
        raise SipParseError("Bad Request", detail="missing Via")
    stamped = Via.parse(top).stamped(host, port)
    headers.replace_first("Via", str(stamped))
    return stamped
