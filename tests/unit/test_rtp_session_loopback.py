"""RtpSession over loopback UDP: against a second RtpSession and against a bare socket peer."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest
from switchboard.gateways.sip.codecs import G722, PCMU, AudioEncoder, Codec
from switchboard.gateways.sip.dtmf import DtmfDigit
from switchboard.gateways.sip.rtp import RtpExtension, RtpPacket
from switchboard.gateways.sip.rtp_session import RtpSession
from switchboard.gateways.sip.sdp import NegotiatedAudio

pytestmark = pytest.mark.unit


class Peer(asyncio.DatagramProtocol):
    """A bare UDP socket that records what it receives, with arrival times."""

    def __init__(self) -> None:
        self.received: list[tuple[float, RtpPacket, tuple[str, int]]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((time.monotonic(), RtpPacket.parse(data), addr))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, packet: RtpPacket, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(packet.serialize(), ("127.0.0.1", port))


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    yield protocol
    transport.close()


def media(port: int, codec: Codec = PCMU, direction: str = "sendrecv") -> NegotiatedAudio:
    return NegotiatedAudio(codec=codec, payload_type=codec.payload_type, dtmf_payload_type=101,
                           remote_host="127.0.0.1", remote_port=port, direction=direction)  # fmt: skip


def tone(rate: int, seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * 8000).astype(np.int16)


class Sink:
    def __init__(self) -> None:
        self.frames: list[tuple[np.ndarray, bool]] = []
        self.times: list[float] = []
        self.digits: list[DtmfDigit] = []
        self.inactive = 0

    def audio(self, pcm: np.ndarray, at: float, concealed: bool) -> None:
        self.frames.append((pcm, concealed))
        self.times.append(at)

    def dtmf(self, digit: DtmfDigit) -> None:
        self.digits.append(digit)

    def on_inactive(self) -> None:
        self.inactive += 1


def session(m: NegotiatedAudio, sink: Sink, **kwargs: object) -> RtpSession:
    return RtpSession(m, on_audio=sink.audio, on_dtmf=sink.dtmf, on_inactive=sink.on_inactive,
                      **kwargs)  # type: ignore[arg-type]  # fmt: skip


@pytest.mark.parametrize("codec", [PCMU, G722])
async def test_two_sessions_talk_and_latch(codec: Codec) -> None:
    sink_a, sink_b = Sink(), Sink()
    a = session(media(0, codec), sink_a, pcm_rate=16000)  # no remote yet: it must latch
    await a.open("127.0.0.1")
    b = session(media(a.local_address[1], codec), sink_b, pcm_rate=16000)
    await b.open("127.0.0.1")
    async with a, b:
        b.send_audio_nowait(tone(16000, 0.6))
        await asyncio.sleep(0.3)
        a.send_audio_nowait(tone(16000, 0.4, freq=1000))
        await asyncio.sleep(0.6)
        assert a.remote_address == b.local_address and a.statistics().latched
    heard = np.concatenate([pcm for pcm, _ in sink_a.frames])
    spectrum = np.abs(np.fft.rfft(heard[1600:9600].astype(float)))
    assert abs(np.fft.rfftfreq(8000, 1 / 16000)[np.argmax(spectrum)] - 440) < 5
    assert not any(concealed for _, concealed in sink_a.frames)
    assert a.statistics().jitter.lost == 0 and b.statistics().jitter.lost == 0
    assert len(sink_b.frames) >= 30


async def test_pacing_follows_absolute_deadlines(peer: Peer) -> None:
    s = session(media(peer.port), Sink(), pcm_rate=8000)
    await s.open("127.0.0.1")
    async with s:
        await asyncio.sleep(1.5)
    packets = [p for _, p, _ in peer.received]
    times = np.array([t for t, _, _ in peer.received])
    # About one packet per 20 ms slot (a loaded CI machine may make the loop skip a few).
    assert 60 <= len(packets) <= 78
    # No drift: slot n is due at start + n × 20 ms (absolute deadlines), so lateness does not
    # accumulate. Judged on RTP time vs arrival, robust to single late wake-ups under load.
    ticks = np.array([(p.timestamp - packets[0].timestamp) % 2**32 for p in packets]) / 8000
    lateness = times - times[0] - ticks
    spread = np.abs(lateness - np.median(lateness))
    assert np.median(spread) < 0.005, np.median(spread)
    assert abs(np.median(lateness[-10:]) - np.median(lateness[:10])) < 0.02
    pairs = list(itertools.pairwise(packets))
    assert all((b.sequence_number - a.sequence_number) % 65536 == 1 for a, b in pairs)
    # Timestamps advance 160 per packet, or by whole frames across skipped slots.
    assert all((b.timestamp - a.timestamp) % 2**32 % 160 == 0 for a, b in pairs)
    assert packets[0].marker and not any(p.marker for p in packets[1:])
    assert {p.payload for p in packets} == {b"\xff" * 160}  # µ-law silence when idle


async def test_stalled_loop_skips_slots_but_keeps_the_media_clock(peer: Peer) -> None:
    s = session(media(peer.port), Sink(), pcm_rate=8000)
    await s.open("127.0.0.1")
    async with s:
        await asyncio.sleep(0.2)
        time.sleep(0.3)  # noqa: ASYNC251 - block the event loop, as a heavy callback would
        await asyncio.sleep(0.3)
        stats = s.statistics()
    assert stats.skipped_slots >= 10
    first, last = peer.received[0], peer.received[-1]
    elapsed_ticks = (last[1].timestamp - first[1].timestamp) % 2**32
    assert abs(elapsed_ticks / 8000 - (last[0] - first[0])) < 0.05


async def test_audio_is_queued_paced_and_cleared_on_barge_in(peer: Peer) -> None:
    s = session(media(peer.port), Sink(), pcm_rate=8000)
    await s.open("127.0.0.1")
    speech = tone(8000, 2.0)
    expected = AudioEncoder(PCMU, 8000).encode(speech[:160])
    async with s:
        s.send_audio_nowait(speech[:1000])  # not a whole number of frames
        s.send_audio_nowait(speech[1000:])
        await asyncio.sleep(0.25)
        dropped = s.clear_audio()
        cleared_at = len(peer.received)
        await asyncio.sleep(0.1)
    assert dropped > 60
    payloads = [p.payload for _, p, _ in peer.received]
    assert expected in payloads[:3]
    # Within one frame of clear_audio() the line is silent again.
    assert all(p == b"\xff" * 160 for p in payloads[cleared_at + 1 :])


async def test_dtmf_goes_out_and_comes_back_as_digits_once() -> None:
    sink_a, sink_b = Sink(), Sink()
    a = session(media(0), sink_a, pcm_rate=8000)
    await a.open("127.0.0.1")
    b = session(media(a.local_address[1]), sink_b, pcm_rate=8000)
    await b.open("127.0.0.1")
    async with a, b:
        b.send_dtmf_nowait("19#", duration_ms=60)
        await asyncio.sleep(0.8)
    assert [d.digit for d in sink_a.digits] == ["1", "9", "#"]
    assert all(d.duration_ms == 60 for d in sink_a.digits)
    assert b.statistics().dtmf_sent == 3 * (3 + 2)
    assert a.statistics().jitter.lost == 0  # DTMF sequence numbers are not audio losses


async def test_received_reordering_loss_and_junk(peer: Peer) -> None:
    sink = Sink()
    s = session(media(peer.port), sink, pcm_rate=8000, jitter_depth=2)
    await s.open("127.0.0.1")
    port = s.local_address[1]
    frame = AudioEncoder(PCMU, 8000).encode(np.full(160, 1000, np.int16))
    async with s:
        for seq in (65534, 65535, 1, 2, 0, 0, 4, 5, 6, 7):  # wraps, reorders, duplicates, loses 3
            position = (seq - 65534) % 65536
            timestamp = (2**32 - 480 + position * 160) % 2**32  # the RTP clock wraps too
            peer.send(RtpPacket(0, seq, timestamp, 1234, frame), port)
        peer.send(RtpPacket(96, 8, 0, 1234, frame), port)  # payload type not negotiated
        assert peer.transport is not None
        peer.transport.sendto(b"\x00garbage", ("127.0.0.1", port))
        await asyncio.sleep(0.2)
        stats = s.statistics()
    assert [c for _, c in sink.frames] == [False] * 5 + [True] + [False] * 4
    assert sink.times == pytest.approx([i * 0.02 for i in range(10)])  # stream clock, no gaps
    assert stats.jitter.duplicates == 1 and stats.jitter.lost == 1 and stats.jitter.reordered == 1
    assert stats.dropped_payload_type == 1 and stats.dropped_malformed == 1
    assert all(len(pcm) == 160 for pcm, _ in sink.frames)


async def test_latches_to_the_real_source_and_rejects_others(peer: Peer) -> None:
    loop = asyncio.get_running_loop()
    other_t, other = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    s = session(media(9), Sink(), pcm_rate=8000, relatch_after=0.3)  # SDP says port 9
    await s.open("127.0.0.1")
    port = s.local_address[1]
    try:
        async with s:
            peer.send(RtpPacket(0, 1, 160, 1, b"\xff" * 160), port)
            await asyncio.sleep(0.1)
            other.send(RtpPacket(0, 2, 320, 1, b"\xff" * 160), port)  # injection attempt
            await asyncio.sleep(0.1)
            assert s.remote_address == ("127.0.0.1", peer.port)
            assert s.statistics().dropped_foreign == 1
            assert peer.received  # our audio now goes where theirs comes from
            await asyncio.sleep(0.4)  # the latched source fell silent: the NAT re-mapped
            other.send(RtpPacket(0, 3, 480, 1, b"\xff" * 160), port)
            await asyncio.sleep(0.1)
            assert s.remote_address == ("127.0.0.1", other.port)
    finally:
        other_t.close()


async def test_inactivity_is_reported_once_and_not_on_hold(peer: Peer) -> None:
    sink = Sink()
    s = session(media(peer.port), sink, pcm_rate=8000, inactivity_timeout=0.2)
    await s.open("127.0.0.1")
    async with s:
        await asyncio.sleep(0.5)
        assert sink.inactive == 1
        peer.send(RtpPacket(0, 1, 160, 1, b"\xff" * 160), s.local_address[1])
        await asyncio.sleep(0.1)
        assert sink.inactive == 1
        await asyncio.sleep(0.3)
        assert sink.inactive == 2  # silent again after packets resumed
    held = Sink()
    s = session(media(peer.port, direction="inactive"), held, inactivity_timeout=0.1)
    await s.open("127.0.0.1")
    before = len(peer.received)
    async with s:
        await asyncio.sleep(0.3)
    assert held.inactive == 0 and len(peer.received) == before  # on hold: no RTP either way


async def test_callback_error_stops_the_session_and_reaches_the_owner(peer: Peer) -> None:
    def broken(pcm: np.ndarray, at: float, concealed: bool) -> None:
        raise RuntimeError("call actor bug")

    s = RtpSession(media(peer.port), on_audio=broken)
    await s.open("127.0.0.1")
    peer.send(RtpPacket(0, 1, 160, 1, b"\xff" * 160), s.local_address[1])
    with pytest.raises(RuntimeError, match="call actor bug"):
        async with asyncio.timeout(1):
            await s.wait_closed()
    with pytest.raises(RuntimeError, match="call actor bug"):
        await s.aclose()


async def test_update_applies_a_reinvite(peer: Peer) -> None:
    s = session(media(peer.port), Sink(), pcm_rate=16000)
    await s.open("127.0.0.1")
    async with s:
        await asyncio.sleep(0.1)
        await s.update(media(peer.port, G722))
        count = len(peer.received)
        await asyncio.sleep(0.1)
    assert {p.payload_type for _, p, _ in peer.received[count + 1 :]} == {9}


async def test_plain_and_extended_packets_are_received_alike(peer: Peer) -> None:
    # The common header (no CSRCs, extension or padding) takes a fast path; the rest is parsed
    # in full. Both must give the same audio on the same stream clock.
    sink = Sink()
    s = session(media(peer.port), sink, pcm_rate=8000)
    await s.open("127.0.0.1")
    port = s.local_address[1]
    frame = AudioEncoder(PCMU, 8000).encode(np.full(160, 1000, np.int16))
    async with s:
        peer.send(RtpPacket(0, 1, 160, 7, frame, marker=True), port)
        peer.send(RtpPacket(0, 2, 320, 7, frame, csrc=(1, 2), padding=4,
                            extension=RtpExtension(0xBEDE, b"\0" * 4)), port)
        peer.send(RtpPacket(0, 3, 480, 7, frame), port)
        await asyncio.sleep(0.1)
    assert len(sink.frames) == 3
    assert all(np.array_equal(pcm, sink.frames[0][0]) and not concealed
               for pcm, concealed in sink.frames)
    assert sink.times == pytest.approx([0.0, 0.02, 0.04])
