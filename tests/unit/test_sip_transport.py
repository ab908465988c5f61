"""The SIP transport over loopback: Via stamping and response routing (RFC 3261 §18, RFC 3581),
stream framing, CRLF keep-alives (RFC 5626 §3.5.1), and the source policy's buckets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from switchboard.gateways.sip.message import SipMessage, SipRequest, build_response, parse_message
from switchboard.gateways.sip.source_policy import FloodLimit, SourcePolicy, Verdict
from switchboard.gateways.sip.transport import SipTransport, StreamFlow, TransportConfig, UdpFlow

pytestmark = pytest.mark.unit

OPTIONS = (
    "OPTIONS sip:svc@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/{t} 192.0.2.9:5070;branch=z9hG4bKt{n};rport\r\n"
    "From: <sip:a@192.0.2.9>;tag=1\r\nTo: <sip:svc@127.0.0.1>\r\nCall-ID: c{n}\r\n"
    "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


class Echo:
    """An upper layer that answers every request 200 on the flow the transport gave it."""

    def __init__(self) -> None:
        self.seen: list[tuple[SipMessage, UdpFlow | StreamFlow]] = []

    def __call__(self, message: SipMessage, flow: UdpFlow | StreamFlow) -> None:
        self.seen.append((message, flow))
        if isinstance(message, SipRequest):
            flow.send(build_response(message, 200).encode())


@pytest.fixture
async def transport() -> AsyncIterator[tuple[SipTransport, Echo]]:
    echo = Echo()
    sip = SipTransport(TransportConfig(host="127.0.0.1", port=0, max_message_size=2048), echo)
    await sip.start()
    try:
        yield sip, echo
    finally:
        await sip.aclose()


async def test_udp_request_is_stamped_and_answered_at_its_source_port(
    transport: tuple[SipTransport, Echo],
) -> None:
    sip, echo = transport
    loop = asyncio.get_running_loop()
    received: asyncio.Queue[bytes] = asyncio.Queue()

    class Peer(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            received.put_nowait(data)

    sock, _ = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    try:
        sock.sendto(OPTIONS.format(t="UDP", n=1).encode(), sip.local_address("UDP"))
        response = parse_message(await asyncio.wait_for(received.get(), 2))
    finally:
        sock.close()
    request = echo.seen[0][0]
    via = request.vias[0]
    port = sock.get_extra_info("sockname")[1]
    # §18.2.1: received, because sent-by is not where it came from; RFC 3581: rport filled in.
    assert (via.received, via.rport) == ("127.0.0.1", port)
    assert response.vias[0].rport == port  # and the response went there, not to 5070


async def test_tcp_framing_keepalive_and_reuse(transport: tuple[SipTransport, Echo]) -> None:
    sip, echo = transport
    reader, writer = await asyncio.open_connection(*sip.local_address("TCP"))
    try:
        writer.write(b"\r\n\r\n")  # RFC 5626 §3.5.1 ping
        assert await asyncio.wait_for(reader.readexactly(2), 2) == b"\r\n"  # pong
        writer.write(b"\r\n")  # a pong from the peer is not answered
        two = (OPTIONS.format(t="TCP", n=2) + OPTIONS.format(t="TCP", n=3)).encode()
        for i in range(0, len(two), 17):  # trickled in small segments
            writer.write(two[i : i + 17])
            await writer.drain()
        answers = [await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2) for _ in range(2)]
        assert all(a.startswith(b"SIP/2.0 200") for a in answers)
        flows = {id(flow) for _, flow in echo.seen}
        assert len(flows) == 1 and isinstance(echo.seen[0][1], StreamFlow)
        # A request we send to the same address reuses the connection (§18.1.1)... only for
        # the address we connected to; an inbound flow is found by its remote address.
        assert sip.statistics().connections == 1 and sip.statistics().keepalives == 1
    finally:
        writer.close()


async def test_tcp_garbage_gets_400_when_answerable_then_the_connection_closes(
    transport: tuple[SipTransport, Echo],
) -> None:
    sip, _ = transport
    reader, writer = await asyncio.open_connection(*sip.local_address("TCP"))
    try:
        bad = OPTIONS.format(t="TCP", n=4).replace("Content-Length: 0", "X-Length: 0")
        writer.write(bad.encode())  # §18.3: no Content-Length on a stream is an error
        answer = await asyncio.wait_for(reader.read(4096), 2)
        assert answer.startswith(b"SIP/2.0 400")
        assert await asyncio.wait_for(reader.read(4096), 2) == b""  # closed: cannot resync
        reader2, writer2 = await asyncio.open_connection(*sip.local_address("TCP"))
        writer2.write(b"X" * 5000)  # headers that never end, past max_message_size
        assert await asyncio.wait_for(reader2.read(4096), 2) == b""
        writer2.close()
        assert sip.statistics().malformed == 2
    finally:
        writer.close()


async def test_outbound_tcp_connections_are_reused(transport: tuple[SipTransport, Echo]) -> None:
    sip, _ = transport
    accepted: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        first, second = await asyncio.gather(sip.connect("tcp", "127.0.0.1", port),
                                             sip.connect("TCP", "127.0.0.1", port))  # fmt: skip
        assert first is second
        await asyncio.sleep(0.05)
        assert len(accepted) == 1
    finally:
        for writer in accepted:
            writer.close()
        server.close()


def test_source_policy_buckets_allow_lists_and_bounds() -> None:
    now = [0.0]
    policy = SourcePolicy(flood=FloodLimit(rate=10, burst=5, reply_rate=2), clock=lambda: now[0],
                          max_sources=3)  # fmt: skip
    verdicts = [policy.check("192.0.2.1") for _ in range(9)]
    assert verdicts.count(Verdict.ALLOW) == 5
    assert verdicts.count(Verdict.FLOOD_REPLY) == 2 and verdicts[-1] is Verdict.FLOOD_DROP
    now[0] += 0.1  # one token back at 10/s
    assert policy.check("192.0.2.1") is Verdict.ALLOW
    for i in range(10):
        policy.check(f"198.51.100.{i}")
    assert len(policy._buckets) == 3 and len(policy._cache) <= 3  # bounded: a spoofed flood cannot grow memory
    listed = SourcePolicy(allow=["192.0.2.0/24", "2001:db8::/32"], on_denied="reject")
    assert listed.check("192.0.2.77") is Verdict.ALLOW
    assert listed.check("2001:db8::5") is Verdict.ALLOW
    assert listed.check("203.0.113.1") is Verdict.DENY_REPLY
    assert listed.check("not-an-ip") is Verdict.DENY_REPLY
    trunked = SourcePolicy(exempt=["192.0.2.0/24"], flood=FloodLimit(rate=1, burst=1))
    assert all(trunked.check("192.0.2.5") is Verdict.ALLOW for _ in range(50))
    assert [trunked.check("203.0.113.9") for _ in range(2)][-1] is not Verdict.ALLOW
    with pytest.raises(ValueError, match="CIDR"):
        SourcePolicy(allow=["192.0.2.0/33"])
