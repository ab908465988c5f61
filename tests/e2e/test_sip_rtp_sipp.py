"""The SIP/RTP wire pieces against a real peer: sipp (Debian package sip-tester).

1. RTP echo: an RtpSession talks to `sipp -rtp_echo` and hears its own audio back.
2. A call: we send an INVITE built by `message.py` with an offer from `sdp.py`; a sipp UAS
   answers, then plays G.711 A-law audio (30 ms packets) and RFC 4733 DTMF from the pcap
   files sipp ships; the RtpSession must decode the audio bit-exactly and report the digits
   once each; BYE ends the call and sipp must exit with success.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import struct
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
from switchboard.gateways.sip.codecs import G722, PCMA, PCMU, Codec, alaw_decode
from switchboard.gateways.sip.dtmf import DtmfDigit
from switchboard.gateways.sip.headers import Headers
from switchboard.gateways.sip.message import (
    SipRequest,
    SipResponse,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
)
from switchboard.gateways.sip.rtp import RtpPacket
from switchboard.gateways.sip.rtp_session import RtpSession
from switchboard.gateways.sip.sdp import (
    NegotiatedAudio,
    SessionDescription,
    accept_answer,
    create_offer,
)
from switchboard.gateways.sip.uri import SipUri

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("sipp") is None,
                       reason="sipp missing: scripts/bootstrap-system.sh test installs sip-tester"),
]  # fmt: skip

PCAPS = Path("/usr/share/sip-tester")

UAS_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="switchboard media UAS">
  <recv request="INVITE" crlf="true"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=sipp 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
]]></send>
  <recv request="ACK" crlf="true"/>
  <nop><action><exec play_pcap_audio="{pcaps}/g711a.pcap"/></action></nop>
  <pause milliseconds="1500"/>
  <nop><action><exec play_pcap_audio="{pcaps}/dtmf_2833_1.pcap"/></action></nop>
  <pause milliseconds="400"/>
  <nop><action><exec play_pcap_audio="{pcaps}/dtmf_2833_pound.pcap"/></action></nop>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
</scenario>
"""


def free_udp_ports(count: int, step: int = 1) -> list[int]:
    """Ports free now (for sipp, which needs them on its command line), `step` apart."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        ports = [base + i * step for i in range(count)]
        if ports[-1] < 65000 and all(_udp_free(p) for p in ports):
            return ports
    raise RuntimeError("no free UDP ports on 127.0.0.1")


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_sipp(args: list[str], tmp_path: Path) -> subprocess.Popen[bytes]:
    control = free_udp_ports(1)[0]
    return subprocess.Popen(
        ["sipp", *args, "-i", "127.0.0.1", "-mi", "127.0.0.1", "-cp", str(control), "-nostdin",
         "-trace_err", "-error_file", str(tmp_path / "sipp_errors.log")],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


@pytest.fixture
def sipp_echo(tmp_path: Path) -> Iterator[int]:
    sip_port, media_port = free_udp_ports(2, step=2)
    proc = start_sipp(["-sn", "uas", "-rtp_echo", "-p", str(sip_port), "-mp", str(media_port)],
                      tmp_path)  # fmt: skip
    try:
        yield media_port
    finally:
        proc.kill()
        proc.wait(timeout=5)


class Sink:
    def __init__(self) -> None:
        self.frames: list[tuple[np.ndarray, bool]] = []
        self.times: list[float] = []
        self.digits: list[DtmfDigit] = []

    def audio(self, pcm: np.ndarray, at: float, concealed: bool) -> None:
        self.frames.append((pcm, concealed))
        self.times.append(at)


def media(codec: Codec, host: str, port: int) -> NegotiatedAudio:
    return NegotiatedAudio(codec=codec, payload_type=codec.payload_type, dtmf_payload_type=101,
                           remote_host=host, remote_port=port, direction="sendrecv")  # fmt: skip


@pytest.mark.parametrize("codec", [PCMU, PCMA, G722])
async def test_rtp_echo_through_sipp(sipp_echo: int, codec: Codec) -> None:
    sink = Sink()
    session = RtpSession(media(codec, "127.0.0.1", sipp_echo), on_audio=sink.audio,
                         pcm_rate=16000)  # fmt: skip
    await session.open("127.0.0.1")
    t = np.arange(16000) / 16000
    speech = (np.sin(2 * np.pi * 700 * t) * 6000).astype(np.int16)
    async with session:
        for _ in range(20):  # sipp needs a moment to bind its echo socket
            if session.statistics().packets_received:
                break
            await asyncio.sleep(0.1)
        session.send_audio_nowait(speech)
        await asyncio.sleep(1.3)
        stats = session.statistics()
    assert stats.packets_received >= 50 and stats.jitter.lost == 0
    heard = np.concatenate([pcm for pcm, _ in sink.frames])
    loud = np.flatnonzero(np.abs(heard) > 3000)
    assert len(loud) > 0, "the tone did not come back"
    middle = heard[(loud[0] + loud[-1]) // 2 - 4000 : (loud[0] + loud[-1]) // 2 + 4000]
    spectrum = np.abs(np.fft.rfft(middle.astype(float) * np.hanning(len(middle))))
    assert abs(np.fft.rfftfreq(len(middle), 1 / 16000)[np.argmax(spectrum)] - 700) < 10
    assert loud[-1] - loud[0] > 0.9 * 16000  # about the whole second came back


def pcap_payloads(path: Path) -> list[bytes]:
    """RTP payloads of a classic little-endian Ethernet pcap (what sipp ships)."""
    data = path.read_bytes()
    offset, out = 24, []
    while offset < len(data):
        length = struct.unpack_from("<I", data, offset + 8)[0]
        frame = data[offset + 16 : offset + 16 + length]
        ip_header = (frame[14] & 0x0F) * 4
        out.append(RtpPacket.parse(frame[14 + ip_header + 8 :]).payload)
        offset += 16 + length
    return out


class SipClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.responses: asyncio.Queue[SipResponse] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = parse_message(data)
        if isinstance(message, SipResponse):
            self.responses.put_nowait(message)


@pytest.fixture
async def sipp_uas(tmp_path: Path) -> AsyncIterator[tuple[int, subprocess.Popen[bytes]]]:
    scenario = tmp_path / "uas_media.xml"
    scenario.write_text(UAS_SCENARIO.format(pcaps=PCAPS))
    sip_port, media_port = free_udp_ports(2, step=2)
    proc = start_sipp(["-sf", str(scenario), "-p", str(sip_port), "-mp", str(media_port),
                       "-m", "1"], tmp_path)  # fmt: skip
    try:
        yield sip_port, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)


def request(method: str, target: SipUri, local: tuple[str, int], dialog: dict[str, str],
            cseq: int, body: bytes = b"") -> bytes:  # fmt: skip
    headers = Headers([
        ("Via", f"SIP/2.0/UDP {local[0]}:{local[1]};branch={new_branch()};rport"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:tester@{local[0]}>;tag={dialog['from_tag']}"),
        ("To", f"<{target}>" + (f";tag={dialog['to_tag']}" if "to_tag" in dialog else "")),
        ("Call-ID", dialog["call_id"]),
        ("CSeq", f"{cseq} {method}"),
        ("Contact", f"<sip:tester@{local[0]}:{local[1]}>"),
    ])  # fmt: skip
    if body:
        headers.add("Content-Type", "application/sdp")
    return SipRequest(method=method, uri=target, headers=headers, body=body).encode()


async def test_call_to_sipp_uas_with_audio_and_dtmf(
    sipp_uas: tuple[int, subprocess.Popen[bytes]],
) -> None:
    sip_port, proc = sipp_uas
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(SipClient, local_addr=("127.0.0.1", 0))
    local = ("127.0.0.1", int(transport.get_extra_info("sockname")[1]))
    sink = Sink()
    session = RtpSession(media(PCMA, "0.0.0.0", 0), on_audio=sink.audio,
                         on_dtmf=sink.digits.append, pcm_rate=8000)  # fmt: skip
    await session.open("127.0.0.1")
    target = SipUri(user="service", host="127.0.0.1", port=sip_port)
    dialog = {"from_tag": new_tag(), "call_id": new_call_id("127.0.0.1")}
    offer = create_offer(local_host="127.0.0.1", local_port=session.local_address[1],
                         session_id=1, preferences=(PCMA, PCMU))  # fmt: skip
    try:
        async with session:
            async with asyncio.timeout(10):
                while True:  # retransmit the INVITE until sipp is up (RFC 3261 timer A style)
                    transport.sendto(request("INVITE", target, local, dialog, 1, offer.encode()),
                                     ("127.0.0.1", sip_port))  # fmt: skip
                    try:
                        async with asyncio.timeout(0.5):
                            answer = await client.responses.get()
                            break
                    except TimeoutError:
                        continue
            assert answer.status == 200 and answer.cseq.method == "INVITE"
            negotiated = accept_answer(offer, SessionDescription.parse(answer.body))
            assert (negotiated.codec, negotiated.dtmf_payload_type) == (PCMA, 101)
            await session.update(negotiated)
            dialog["to_tag"] = answer.to_addr.tag or ""
            transport.sendto(request("ACK", target, local, dialog, 1), ("127.0.0.1", sip_port))
            await asyncio.sleep(2.6)
            transport.sendto(request("BYE", target, local, dialog, 2), ("127.0.0.1", sip_port))
            async with asyncio.timeout(5):
                bye_answer = await client.responses.get()
            assert (bye_answer.status, bye_answer.cseq.method) == (200, "BYE")
            stats = session.statistics()
    finally:
        transport.close()
    assert proc.wait(timeout=10) == 0, proc.stderr.read().decode() if proc.stderr else ""
    # The audio is exactly what the pcap holds, decoded, in 30 ms frames, none lost.
    expected = np.concatenate([alaw_decode(p) for p in pcap_payloads(PCAPS / "g711a.pcap")])
    audio = [pcm for pcm, concealed in sink.frames if not concealed]
    assert len(audio) >= 30 and {len(pcm) for pcm in audio} == {240}
    heard = np.concatenate(audio)
    assert np.array_equal(heard, expected[: len(heard)])
    assert not any(concealed for _, concealed in sink.frames)
    assert np.allclose(np.diff(sink.times), 0.03)  # the stream clock, from RTP timestamps
    assert [d.digit for d in sink.digits] == ["1", "#"]
    assert stats.latched and stats.packets_sent > 100  # we sent to where sipp's RTP came from
