"""The SIP user agent against a real peer: sipp (Debian package sip-tester) as UAC and UAS.

Scenarios live in tests/e2e/sipp/. The `Scripted` handler below plays the gateway glue and
routes on the dialled user part (sipp's `-s`), as DID routing will: `busy` and `full` are
refused (486 / 503 with Retry-After), `ring` rings for ever, `hangup` answers then hangs up,
`tone` plays a tone, `echo` sends the caller's audio back, `transfer` blind-transfers the
caller elsewhere; anything else answers and listens.
Malformed input and floods are sent from raw UDP sockets.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import struct
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from switchboard.gateways.sip.auth import Credentials
from switchboard.gateways.sip.call import CallGone, SipCall
from switchboard.gateways.sip.codecs import PCMU, alaw_decode
from switchboard.gateways.sip.dtmf import DtmfDigit
from switchboard.gateways.sip.handler import (
    CANCELLED,
    LOCAL_HANGUP,
    REMOTE_HANGUP,
    TRANSFERRED,
    Accept,
    Admission,
    CallEnd,
    MediaOptions,
    Refuse,
)
from switchboard.gateways.sip.message import SipResponse, parse_message
from switchboard.gateways.sip.rtp import RtpPacket
from switchboard.gateways.sip.source_policy import FloodLimit
from switchboard.gateways.sip.transaction import Timers
from switchboard.gateways.sip.transport import TransportConfig
from switchboard.gateways.sip.trunk import Trunk
from switchboard.gateways.sip.useragent import UserAgent, UserAgentConfig

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("sipp") is None,
                       reason="sipp missing: scripts/bootstrap-system.sh test installs sip-tester"),
]  # fmt: skip

SCENARIOS = Path(__file__).parent / "sipp"
PCAPS = Path("/usr/share/sip-tester")
needs_pcaps = pytest.mark.skipif(not (PCAPS / "g711a.pcap").exists(),
                                 reason="sipp's pcaps (sip-tester) are missing")  # fmt: skip


# -- the handler playing the gateway --------------------------------------------------------


def tone(seconds: float, rate: int = 8000, hz: float = 700.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * hz * t) * 6000).astype(np.int16)


class Scripted:
    def __init__(self) -> None:
        self.admitted: list[SipCall] = []
        self.ended: dict[str, CallEnd] = {}
        self.digits: dict[str, list[str]] = defaultdict(list)
        self.audio: dict[str, list[np.ndarray]] = defaultdict(list)
        self.frames: dict[str, int] = defaultdict(int)
        self.active = self.max_active = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def admit(self, call: SipCall) -> Admission:
        self.admitted.append(call)
        if call.callee == "busy":
            return Refuse(486, retry_after=30)
        if call.callee == "full":
            return Refuse(503, retry_after=7)
        media = MediaOptions(on_audio=partial(self._audio, call),
                             on_dtmf=partial(self._dtmf, call), pcm_rate=8000)  # fmt: skip
        if call.callee != "ring":
            task = asyncio.get_running_loop().create_task(self._answer(call))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return Accept(media)

    async def _answer(self, call: SipCall) -> None:
        await asyncio.sleep(0.05)  # the agent gets ready to greet
        try:
            await call.answer()
        except CallGone:
            return
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        if call.callee == "hangup":
            await asyncio.sleep(0.5)
            await call.hangup()
        elif call.callee == "tone" and call.rtp is not None:
            call.rtp.send_audio_nowait(tone(1.0))
        elif call.callee == "transfer":
            await asyncio.sleep(0.2)
            await call.transfer("+15550999")  # returns on 202; the call ends after NOTIFY

    def _audio(self, call: SipCall, pcm: np.ndarray, at: float, concealed: bool) -> None:
        self.frames[call.id] += 1
        if call.callee == "echo":
            if call.rtp is not None:
                call.rtp.send_audio_nowait(pcm)
        elif not concealed:
            self.audio[call.id].append(pcm)

    def _dtmf(self, call: SipCall, digit: DtmfDigit) -> None:
        self.digits[call.id].append(digit.digit)

    def call_ended(self, call: SipCall, end: CallEnd) -> None:
        assert call.id not in self.ended, "call_ended twice"
        if call.rtp is not None and end.reason != CANCELLED:
            self.active -= 1
        self.ended[call.id] = end

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# -- fixtures and helpers --------------------------------------------------------------------


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rtp_range() -> tuple[int, int]:
    base = 30000 + 2 * (int(time.monotonic() * 1000) % 8000)
    return base, base + 600


@asynccontextmanager
async def running(**overrides: Any) -> AsyncIterator[tuple[UserAgent, Scripted]]:
    handler = Scripted()
    options: dict[str, Any] = {"transport": TransportConfig(host="127.0.0.1", port=0),
                               "rtp_ports": rtp_range(), "rtp_host": "127.0.0.1",
                               "timers": Timers(t1=0.1, t2=0.4, t4=0.5)}  # fmt: skip
    options.update(overrides)
    ua = UserAgent(UserAgentConfig(**options), handler)
    await ua.start()
    try:
        yield ua, handler
    finally:
        await ua.aclose()
        await handler.aclose()
    assert ua.statistics().task_failures == 0


async def sipp(args: list[str], tmp_path: Path, *, timeout: float = 40) -> tuple[int, str]:
    """Run sipp to completion; (exit code, its error log). 0 means every call succeeded."""
    errors = tmp_path / f"sipp_errors_{time.monotonic_ns()}.log"
    proc = await asyncio.create_subprocess_exec(
        "sipp", *args, "-i", "127.0.0.1", "-mi", "127.0.0.1", "-nostdin", "-timeout", "30s",
        "-timeout_error", "-cp", str(free_udp_port()), "-trace_err", "-error_file", str(errors),
        cwd=tmp_path, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(timeout):
            _, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = errors.read_text(errors="replace") if errors.exists() else ""
    return proc.returncode or 0, stderr.decode(errors="replace") + log


def uac(ua: UserAgent, scenario: str, service: str, *extra: str) -> list[str]:
    port = ua.transport.local_address("UDP")[1]
    return ["-sf", str(SCENARIOS / scenario), "-s", service, "-p", str(free_udp_port()),
            "-mp", str(free_udp_port()), *extra, f"127.0.0.1:{port}"]  # fmt: skip


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def pcap_payloads(path: Path) -> list[bytes]:
    """RTP payloads of a classic little-endian Ethernet pcap (what sipp ships)."""
    data, offset, out = path.read_bytes(), 24, []
    while offset < len(data):
        length = struct.unpack_from("<I", data, offset + 8)[0]
        frame = data[offset + 16 : offset + 16 + length]
        ip_header = (frame[14] & 0x0F) * 4
        out.append(RtpPacket.parse(frame[14 + ip_header + 8 :]).payload)
        offset += 16 + length
    return out


def dominant_hz(audio: np.ndarray, rate: int = 8000) -> float:
    spectrum = np.abs(np.fft.rfft(audio.astype(float) * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[np.argmax(spectrum)])


# -- inbound calls from sipp -------------------------------------------------------------------


@needs_pcaps
async def test_inbound_call_with_audio_dtmf_and_hangup_by_sipp(tmp_path: Path) -> None:
    async with running() as (ua, handler):
        rc, log = await sipp(uac(ua, "uac_media.xml", "+15550100", "-m", "1"), tmp_path)
        assert rc == 0, log
        await eventually(lambda: len(handler.ended) == 1)
        call = handler.admitted[0]
        assert (call.callee, call.caller, call.caller_name) == ("+15550100", "+15550111", "SIPp")
        assert handler.ended[call.id] == CallEnd(REMOTE_HANGUP, "remote")
        # The caller's audio reached the handler bit-exact, decoded from A-law, in order.
        expected = np.concatenate([alaw_decode(p) for p in pcap_payloads(PCAPS / "g711a.pcap")])
        heard = np.concatenate(handler.audio[call.id])
        assert len(heard) >= 8000  # the 1.5 s sipp played before the digits replaced it
        assert np.array_equal(heard, expected[: len(heard)])
        assert handler.digits[call.id] == ["1", "#"]  # RFC 4733 from sipp's pcaps, once each
        assert ua.calls == [] and call.rtp is not None and call.rtp.statistics().packets_sent > 50


async def test_our_audio_reaches_the_caller_and_comes_back(tmp_path: Path) -> None:
    async with running() as (ua, handler):
        rc, log = await sipp(uac(ua, "uac_echo.xml", "tone", "-m", "1", "-d", "2500",
                                 "-rtp_echo"), tmp_path)  # fmt: skip
        assert rc == 0, log
        await eventually(lambda: len(handler.ended) == 1)
        heard = np.concatenate(handler.audio[handler.admitted[0].id])
        loud = np.flatnonzero(np.abs(heard) > 3000)
        assert len(loud) and loud[-1] - loud[0] > 0.9 * 8000, "the tone did not come back"
        assert abs(dominant_hz(heard[loud[0] : loud[-1]]) - 700) < 10


async def test_we_hang_up(tmp_path: Path) -> None:
    async with running() as (ua, handler):
        rc, log = await sipp(uac(ua, "uac_wait_bye.xml", "hangup", "-m", "1"), tmp_path)
        assert rc == 0, log  # sipp received our BYE
        assert handler.ended[handler.admitted[0].id] == CallEnd(LOCAL_HANGUP, "local")
        assert ua.calls == []


async def test_cancel_before_answer_gets_487(tmp_path: Path) -> None:
    async with running() as (ua, handler):
        rc, log = await sipp(uac(ua, "uac_cancel.xml", "ring", "-m", "1"), tmp_path)
        assert rc == 0, log
        await eventually(lambda: len(handler.ended) == 1)
        assert handler.ended[handler.admitted[0].id] == CallEnd(CANCELLED, "remote", 487)
        assert ua.calls == [] and handler.admitted[0].rtp is None  # no media was ever opened


async def test_hold_codec_change_and_info_dtmf_by_reinvite(tmp_path: Path) -> None:
    async with running() as (ua, handler):
        rc, log = await sipp(uac(ua, "uac_hold.xml", "+15550100", "-m", "1"), tmp_path)
        assert rc == 0, log  # sipp checked: recvonly while held, then sendrecv with PCMU
        await eventually(lambda: len(handler.ended) == 1)
        call = handler.admitted[0]
        assert call.rtp is not None and call.rtp.media.codec == PCMU  # was PCMA before
        assert call.rtp.media.direction == "sendrecv" and not call.on_hold
        assert handler.digits[call.id] == ["5"]  # SIP INFO digits reach the same callback
        assert handler.ended[call.id] == CallEnd(REMOTE_HANGUP, "remote")
        assert call.sdp_version == 3  # our o= version grew with each new answer


async def test_blind_transfer_by_refer(tmp_path: Path) -> None:
    async with running() as (ua, handler):
        rc, log = await sipp(uac(ua, "uac_transfer.xml", "transfer", "-m", "1"), tmp_path)
        assert rc == 0, log  # sipp got REFER to the target, our 200 to its NOTIFY, our BYE
        await eventually(lambda: len(handler.ended) == 1)
        assert handler.ended[handler.admitted[0].id] == CallEnd(TRANSFERRED, "local")


@pytest.mark.parametrize(("service", "scenario"), [("busy", "uac_busy.xml"),
                                                    ("full", "uac_unavailable.xml")])  # fmt: skip
async def test_refusals_carry_retry_after(tmp_path: Path, service: str, scenario: str) -> None:
    async with running() as (ua, handler):
        rc, log = await sipp(uac(ua, scenario, service, "-m", "1"), tmp_path)
        assert rc == 0, log  # sipp got 486 / 503 with a numeric Retry-After and ACKed it
        assert len(handler.admitted) == 1 and handler.ended == {}  # refused: no call_ended
        await eventually(lambda: ua.statistics().transactions.server == 0, timeout=3)


async def test_options_ping(tmp_path: Path) -> None:
    async with running() as (ua, _):
        rc, log = await sipp(uac(ua, "options.xml", "ping", "-m", "3", "-r", "10"), tmp_path)
        assert rc == 0, log


def auth_trunk() -> Trunk:
    # sipp 3.6 answers only MD5 and reads only the first challenge, so this trunk offers MD5
    # alone, as a deployment would for such a peer (the default offers SHA-256 first).
    return Trunk(name="sbc", networks=["127.0.0.0/8"], inbound_users={"sippuser": "sipp-secret"},
                 realm="switchboard.test", digest_algorithms=("MD5",))  # fmt: skip


async def test_digest_challenge_answered_by_sipp(tmp_path: Path) -> None:
    async with running(trunks=[auth_trunk()]) as (ua, handler):
        args = uac(ua, "uac_auth.xml", "+15550100", "-m", "1", "-au", "sippuser",
                   "-ap", "sipp-secret")  # fmt: skip
        rc, log = await sipp(args, tmp_path)
        assert rc == 0, log
        await eventually(lambda: len(handler.ended) == 1)
        assert handler.admitted[0].trunk == "sbc"
        digest = ua.trunks.digest(auth_trunk())
        assert digest is not None and digest.counts == {"challenged": 1, "ok": 1, "failed": 0,
                                                        "stale": 0}  # fmt: skip


async def test_wrong_digest_password_never_reaches_the_handler(tmp_path: Path) -> None:
    async with running(trunks=[auth_trunk()]) as (ua, handler):
        args = uac(ua, "uac_auth.xml", "+15550100", "-m", "1", "-au", "sippuser",
                   "-ap", "guess")  # fmt: skip
        rc, _ = await sipp(args, tmp_path)
        assert rc != 0 and handler.admitted == []


# -- outbound calls to sipp ---------------------------------------------------------------------


async def listen_sipp(args: list[str], tmp_path: Path) -> asyncio.Task[tuple[int, str]]:
    task = asyncio.get_running_loop().create_task(sipp(args, tmp_path))
    await asyncio.sleep(0.3)  # sipp binds its socket
    return task


async def test_outbound_call_to_sipp_uas(tmp_path: Path) -> None:
    port = free_udp_port()
    uas = await listen_sipp(["-sn", "uas", "-rtp_echo", "-p", str(port), "-mp",
                             str(free_udp_port()), "-m", "1"], tmp_path)  # fmt: skip
    async with running() as (ua, handler):
        heard: list[np.ndarray] = []
        media = MediaOptions(on_audio=lambda pcm, at, c: heard.append(pcm), pcm_rate=8000,
                             preferences=(PCMU,))  # fmt: skip
        call = await ua.place_call(f"sip:+15550199@127.0.0.1:{port}", media=media,
                                   caller_id="+15550123", timeout=5)  # fmt: skip
        assert call.state == "active" and call.direction == "outbound"
        assert call.rtp is not None and call.rtp.media.codec == PCMU
        call.rtp.send_audio_nowait(tone(1.0))
        await asyncio.sleep(1.6)
        await call.hangup()
        end = await call.wait_ended()
        assert end == CallEnd(LOCAL_HANGUP, "local")
        assert handler.ended[call.id] == end  # answered outbound calls are reported too
        audio = np.concatenate(heard)
        loud = np.flatnonzero(np.abs(audio) > 3000)
        assert len(loud) and loud[-1] - loud[0] > 0.9 * 8000  # about the whole second came back
        assert abs(dominant_hz(audio[loud[0] : loud[-1]]) - 700) < 10
    rc, log = await uas
    assert rc == 0, log


async def test_outbound_call_through_a_trunk_with_digest(tmp_path: Path) -> None:
    port = free_udp_port()
    uas = await listen_sipp(["-sf", str(SCENARIOS / "uas_auth.xml"), "-rtp_echo", "-p", str(port),
                             "-mp", str(free_udp_port()), "-m", "1"], tmp_path)  # fmt: skip
    trunk = Trunk(name="carrier", proxy_host="127.0.0.1", proxy_port=port,
                  credentials=Credentials("switchboard", "s3cret-pass"))  # fmt: skip
    async with running(trunks=[trunk]) as (ua, _):
        media = MediaOptions(on_audio=lambda pcm, at, c: None, pcm_rate=8000)
        call = await ua.place_call("+15550100", trunk="carrier", media=media,
                                   caller_id="+15550123", timeout=5)  # fmt: skip
        assert call.trunk == "carrier" and call.callee == "+15550100"
        await asyncio.sleep(0.5)
        await call.hangup()
    rc, log = await uas
    assert rc == 0, log


# -- hostile input --------------------------------------------------------------------------------


class RawPeer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.responses: list[SipResponse] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = parse_message(data)
        if isinstance(message, SipResponse):
            self.responses.append(message)


@asynccontextmanager
async def raw_peer(host: str = "127.0.0.1") -> AsyncIterator[tuple[asyncio.DatagramTransport,
                                                                   RawPeer]]:  # fmt: skip
    transport, peer = await asyncio.get_running_loop().create_datagram_endpoint(
        RawPeer, local_addr=(host, 0))
    try:
        yield transport, peer
    finally:
        transport.close()


def raw(method: str = "OPTIONS", *, uri: str = "sip:svc@127.0.0.1", cseq: str | None = None,
        branch: str = "z9hG4bKraw1", extra: str = "", version: str = "SIP/2.0",
        to_tag: str = "", body: str = "", length: int | None = None) -> bytes:  # fmt: skip
    to = "<sip:svc@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    return (f"{method} {uri} {version}\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch={branch};rport\r\n"
            f"From: <sip:raw@127.0.0.1>;tag=r1\r\nTo: {to}\r\nCall-ID: raw-{branch}\r\n"
            f"CSeq: {cseq or '1 ' + method}\r\nMax-Forwards: 70\r\n{extra}"
            f"Content-Length: {len(body) if length is None else length}\r\n\r\n{body}").encode()  # fmt: skip


async def test_malformed_messages_get_4xx_or_are_dropped_and_nothing_breaks() -> None:
    cases: list[tuple[bytes, int | None]] = [
        (raw(cseq="1 INVITE"), 400),                          # CSeq method differs (§8.1.1.5)
        (raw(version="SIP/3.0"), 505),
        (raw(uri="http://example.com/"), 416),
        (raw().replace(b"Max-Forwards: 70", b"Max-Forwards: many"), 400),
        (raw(body="hello", length=50), 400),                  # body shorter than Content-Length
        (raw(body="x" * 9000), 513),                          # over max_message_size
        (raw("FOO"), 501),                                    # unknown method
        (raw("REGISTER"), 405),
        (raw("BYE", to_tag="nosuchdialog"), 481),
        (raw("ACK", cseq="1 INVITE"), None),                  # never answer an ACK
        (b"\x00\xff garbage \r\n\r\n", None),                 # unanswerable: dropped
        (raw().replace(b"Call-ID", b"X-Call"), None),         # no Call-ID: cannot answer
        (raw()[:60], None),                                   # truncated: no end of headers
    ]  # fmt: skip
    transport_config = TransportConfig(host="127.0.0.1", port=0, max_message_size=8192)
    async with running(transport=transport_config) as (ua, _), raw_peer() as (sock, peer):
        target = ("127.0.0.1", ua.transport.local_address("UDP")[1])
        for i, (data, _) in enumerate(cases):
            sock.sendto(data.replace(b"z9hG4bKraw1", f"z9hG4bKraw{i}x".encode()), target)
        expected = sorted(s for _, s in cases if s is not None)
        await eventually(lambda: len(peer.responses) >= len(expected))
        await asyncio.sleep(0.2)
        assert sorted(r.status for r in peer.responses) == expected
        allow = next(r for r in peer.responses if r.status == 405).headers.get("Allow") or ""
        assert "INVITE" in allow
        sock.sendto(raw(branch="z9hG4bKalive"), target)  # still serving
        await eventually(lambda: any(r.status == 200 for r in peer.responses))
        stats = ua.statistics().transport
        assert stats.malformed == 10 and stats.upper_layer_errors == 0


async def test_flood_from_one_source_gets_503_then_silence_others_unaffected() -> None:
    flood = FloodLimit(rate=20, burst=40, reply_rate=10)
    async with running(flood=flood) as (ua, _), raw_peer() as (sock, peer), \
            raw_peer("127.0.0.2") as (other_sock, other):  # fmt: skip
        target = ("127.0.0.1", ua.transport.local_address("UDP")[1])
        for i in range(400):
            sock.sendto(raw(branch=f"z9hG4bKflood{i}"), target)
            if i % 40 == 39:
                await asyncio.sleep(0.005)  # do not overrun the kernel's socket buffer
        await asyncio.sleep(0.5)
        other_sock.sendto(raw(branch="z9hG4bKneighbour"), target)
        await eventually(lambda: len(other.responses) == 1)
        statuses = [r.status for r in peer.responses]
        assert 40 <= statuses.count(200) <= 60  # the burst, plus what refilled meanwhile
        refusals = [r for r in peer.responses if r.status == 503]
        assert 1 <= len(refusals) <= 25 and all(r.headers.get("Retry-After") for r in refusals)
        assert len(statuses) < 100  # most of the flood was dropped, not answered
        assert other.responses[0].status == 200  # another source is served normally
        stats = ua.statistics().transport
        assert stats.dropped_flood > 300 and stats.rejected_flood == len(refusals)


# -- load ---------------------------------------------------------------------------------------------


@needs_pcaps
async def test_hundred_concurrent_calls_all_answered(tmp_path: Path) -> None:
    # sipp is a trunk here: 50 calls/s is ~150 messages/s from one address, exempt from the
    # per-IP flood limit that holds everyone else to 100/s.
    carrier = Trunk(name="loadgen", networks=["127.0.0.1/32"])
    async with running(trunks=[carrier]) as (ua, handler):
        started = time.monotonic()
        args = uac(ua, "uac_load.xml", "echo", "-l", "100", "-m", "100", "-r", "50",
                   "-d", "4000")  # fmt: skip
        rc, log = await sipp(args, tmp_path, timeout=60)
        assert rc == 0, log  # every one of the 100 calls succeeded
        await eventually(lambda: len(handler.ended) == 100, timeout=10)
        elapsed = time.monotonic() - started
    assert handler.max_active == 100
    assert all(end == CallEnd(REMOTE_HANGUP, "remote") for end in handler.ended.values())
    echoed = [call.rtp.statistics() for call in handler.admitted if call.rtp is not None]
    assert len(echoed) == 100 and all(s.packets_received > 50 for s in echoed)
    print(f"100 calls with echo in {elapsed:.1f} s")
