"""A real node with its SIP gateway, in this process, for the SIP end-to-end tests; sipp
runs; pcap files of RTP for sipp to play; the call events the node stored on JetStream.

    async with sip_node(nats_server, tmp_path) as sn:     # Node + start_sip_gateway
        rc, log = await run_sipp(sn.uac("uac_echo.xml", "+15550100", "-m", "1"), tmp_path)
        events = await sn.events(call_id)                  # from the SB_CALL_EVENTS stream
        sn.legs                                            # every SipLeg the node registered

The node is `supervisor.node.Node` (NATS JetStream, tenant actors, calls supervisor, echo
brain) started from a tenants YAML written to tmp_path, and the gateway is started with
`supervisor.edges.start_sip_gateway` exactly as `switchboard up` does. Teardown closes the
gateway, then drains the node, also when the test failed.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats
from switchboard.gateways.sip.gateway import SipGateway
from switchboard.gateways.sip.leg import SipLeg
from switchboard.protocols.events import CALL_EVENTS_STREAM, CallEvent
from switchboard.protocols.media import MediaLeg
from switchboard.protocols.sip_config import SipConfig
from switchboard.supervisor.edges import start_sip_gateway
from switchboard.supervisor.nats_server import NatsServer
from switchboard.supervisor.node import Node, NodeConfig

SCENARIOS = Path(__file__).parents[1] / "e2e" / "sipp"
GREETING_WAV = Path(__file__).parents[2] / "configs" / "audio" / "echo-greeting.wav"


def tenants_yaml(*, greeting: Path = GREETING_WAV) -> str:
    """acme: +15550100 echo (greeting), +15550101 brief (hangs up at 1.5 s), +15550102
    quiet (RTP timeout 1 s); full: +15550200 (quota 0); slow: +15550300 (0 calls/minute)."""
    return f"""
version: 1
tenants:
  - id: acme
    numbers:
      - {{number: "+15550100", agent: echo}}
      - {{number: "+15550101", agent: brief}}
      - {{number: "+15550102", agent: quiet}}
    limits: {{max_concurrent_calls: 150, calls_per_minute: 1000}}
    trunk: default
    agents:
      - {{id: echo, brain: echo, greeting_audio: "{greeting}"}}
      - {{id: brief, brain: echo, max_call_seconds: 1.5}}
      - {{id: quiet, brain: echo, rtp_inactivity_seconds: 1}}
  - id: full
    numbers: [{{number: "+15550200", agent: a}}]
    limits: {{max_concurrent_calls: 0, retry_after_seconds: 30}}
    agents: [{{id: a, brain: echo}}]
  - id: slow
    numbers: [{{number: "+15550300", agent: a}}]
    limits: {{calls_per_minute: 0, retry_after_seconds: 7}}
    agents: [{{id: a, brain: echo}}]
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class SipNode:
    node: Node
    gateway: SipGateway
    nats_url: str
    legs: list[SipLeg] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.gateway.address[1]

    def uac(self, scenario: str, service: str, *extra: str) -> list[str]:
        """sipp arguments for a UAC scenario of tests/e2e/sipp calling `service` here."""
        return ["-sf", str(SCENARIOS / scenario), "-s", service, "-p", str(free_udp_port()),
                "-mp", str(free_udp_port()), *extra, f"127.0.0.1:{self.port}"]

    def call_running(self, call_id: str) -> bool:
        system = self.node.system
        assert system is not None
        return system.cell(system.ref("call", call_id)) is not None

    async def events(self, call_id: str | None = None) -> list[CallEvent]:
        """The call events stored on JetStream, in order (one call's, or all)."""
        nc = await nats.connect(self.nats_url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(CALL_EVENTS_STREAM)
            if info.state.messages == 0:
                return []
            decoder = msgspec.msgpack.Decoder(CallEvent)
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(CALL_EVENTS_STREAM, seq)
                event = decoder.decode(msg.data or b"")
                if call_id is None or event.call_id == call_id:
                    out.append(event)
            return out
        finally:
            await nc.close()

    async def wait_events(self, call_id: str, predicate: Callable[[list[CallEvent]], bool],
                          timeout: float = 10.0) -> list[CallEvent]:
        deadline = time.monotonic() + timeout
        while True:
            events = await self.events(call_id)
            if predicate(events):
                return events
            if time.monotonic() > deadline:
                raise AssertionError(f"call {call_id}: events so far {events!r}")
            await asyncio.sleep(0.1)


@asynccontextmanager
async def sip_node(nats_server: NatsServer, tmp_path: Path, *, tenants: str | None = None,
                   **sip: Any) -> AsyncIterator[SipNode]:
    """A started node with its SIP gateway on a free loopback port (`sip`: SipConfig fields)."""
    path = tmp_path / "tenants.yaml"
    path.write_text(tenants if tenants is not None else tenants_yaml())
    node = Node(NodeConfig(nats_urls=[nats_server.url], node_id=f"sip-{time.monotonic_ns()}",
                           tenants_file=path, warm_up_models=False))
    base = 42000 + 2 * (int(time.monotonic() * 1000) % 4000)
    options: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "rtp_host": "127.0.0.1",
                               "rtp_port_min": base, "rtp_port_max": base + 900} | sip
    await node.start()
    seen: list[SipLeg] = []
    register = node.legs.register

    def spy(leg: MediaLeg) -> None:  # the test's view of every leg the gateway hands over
        if isinstance(leg, SipLeg):
            seen.append(leg)
        register(leg)

    node.legs.register = spy  # type: ignore[method-assign]
    try:
        gateway = await start_sip_gateway(node, SipConfig(**options))
        try:
            yield SipNode(node=node, gateway=gateway, nats_url=nats_server.url, legs=seen)
        finally:
            await gateway.close(5.0)
    finally:
        await node.drain(5.0)


async def run_sipp(args: list[str], cwd: Path, *, timeout: float = 40.0) -> tuple[int, str]:
    """Run sipp to completion: (exit status, its stderr and error log); 0: every call passed."""
    errors = cwd / f"sipp_errors_{time.monotonic_ns()}.log"
    proc = await asyncio.create_subprocess_exec(
        "sipp", *args, "-i", "127.0.0.1", "-mi", "127.0.0.1", "-nostdin", "-timeout", "30s",
        "-timeout_error", "-cp", str(free_udp_port()), "-trace_err", "-error_file", str(errors),
        cwd=cwd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(timeout):
            _, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = errors.read_text(errors="replace") if errors.exists() else ""
    return proc.returncode or 0, stderr.decode(errors="replace") + log


def write_rtp_pcap(path: Path, payloads: list[bytes], *, payload_type: int = 8,
                   ptime: float = 0.02) -> Path:
    """A classic pcap of RTP in UDP/IPv4/Ethernet, one packet per 20 ms, as sipp's
    `play_pcap_audio` reads it (it rewrites addresses and ports, keeps the timing)."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    seq, stamp, ssrc = 1000, 8000, 0x5B1D5EED
    for i, payload in enumerate(payloads):
        rtp = struct.pack("!BBHII", 0x80, payload_type | (0x80 if i == 0 else 0), seq, stamp,
                          ssrc) + payload
        udp = struct.pack("!HHHH", 40000, 6000, 8 + len(rtp), 0) + rtp
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0,
                         bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])) + udp
        frame = b"\x00" * 12 + b"\x08\x00" + ip
        t = i * ptime
        out += struct.pack("<IIII", int(t), int((t % 1) * 1e6), len(frame), len(frame)) + frame
        seq, stamp = (seq + 1) & 0xFFFF, (stamp + int(8000 * ptime)) & 0xFFFFFFFF
    path.write_bytes(bytes(out))
    return path
