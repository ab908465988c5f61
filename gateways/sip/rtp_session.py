"""One call's RTP media over UDP: paced sending, jitter-buffered receiving, DTMF, NAT latching.

Sending: the loop's `FrameClock` (frame_clock.py: one 20 ms clock for every session of the
loop, at absolute deadlines, so scheduling error never accumulates) calls the session once per
slot, and it sends exactly one packet: queued agent audio, else a DTMF packet, else encoded
silence (the far end hears a live line, and NATs keep their mapping). The RTP timestamp
advances by one frame per slot even when the loop stalled and slots were skipped, so the far
end's clock stays true (RFC 3550 §5.1).

Receiving: each datagram is parsed, checked against the negotiated payload types, ordered by
`JitterBuffer`, decoded and handed to `on_audio(pcm, at, concealed)` at once, in the datagram
callback: no queue or task in between, so audio reaches the call actor within the same loop
iteration. `at` is the frame's time in seconds on the caller stream's clock, from the RTP
timestamps (continuous across SSRC changes); `concealed` marks silence standing in for a
lost packet. Telephone-events go to `DtmfReceiver` and come out as `on_dtmf(digit)`.

Symmetric RTP (RFC 4961) with latching: we send to wherever the peer's packets come from,
since behind a NAT the SDP address is often private. The first valid packet latches the
address; packets from elsewhere are dropped unless the latched source has been silent for
`relatch_after` seconds (the NAT re-mapped). `on_inactive()` fires once when nothing came for
`inactivity_timeout` seconds, so a call whose BYE was lost still ends.

An exception raised by a callback stops the session and is re-raised by `aclose()`.
SRTP and RTCP are not implemented yet.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
from switchboard.gateways.sip.codecs import AudioDecoder, AudioEncoder, Pcm
from switchboard.gateways.sip.dtmf import DtmfDigit, DtmfReceiver, DtmfSender
from switchboard.gateways.sip.errors import RtpParseError
from switchboard.gateways.sip.frame_clock import FRAME_SECONDS, FrameClock
from switchboard.gateways.sip.jitterbuffer import JitterBuffer, JitterBufferStatistics, JitterFrame
from switchboard.gateways.sip.rtp import RtpPacket, Unwrapper
from switchboard.gateways.sip.sdp import NegotiatedAudio

__all__ = ["RtpSession", "RtpSessionStatistics", "SendQueueFull"]

COMFORT_NOISE_PT = 13  # RFC 3389; we skip its sequence numbers and play nothing
_HEADER = struct.Struct("!BBHII")
_AFTER_FIRST = struct.Struct("!BHII")  # the fixed header after its first octet

Address = tuple[str, int]


class SendQueueFull(Exception):
    """`send_audio_nowait` would queue more than `max_queued_seconds` of audio."""


@dataclass(frozen=True, slots=True)
class RtpSessionStatistics:
    packets_sent: int
    packets_received: int
    dtmf_sent: int
    late_sends: int  # sent more than 5 ms after the slot's deadline
    skipped_slots: int  # slots not sent at all because the loop stalled
    dropped_malformed: int
    dropped_foreign: int  # from an address other than the latched one
    dropped_payload_type: int
    queued_frames: int
    remote: Address | None
    latched: bool
    jitter: JitterBufferStatistics


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, session: RtpSession) -> None:
        self._session = session

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._session._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a peer that is not listening yet: not fatal for RTP.
        self._session._icmp_errors += 1


class RtpSession:
    """RTP for one negotiated audio stream; open with `await open()`, end with `aclose()`."""

    def __init__(
        self,
        media: NegotiatedAudio,
        *,
        on_audio: Callable[[Pcm, float, bool], None],
        on_dtmf: Callable[[DtmfDigit], None] | None = None,
        on_inactive: Callable[[], None] | None = None,
        pcm_rate: int = 16000,
        inactivity_timeout: float = 30.0,
        jitter_depth: int = 2,
        relatch_after: float = 1.0,
        max_queued_seconds: float = 120.0,
    ) -> None:
        self.pcm_rate = pcm_rate
        self.inactivity_timeout = inactivity_timeout
        self.relatch_after = relatch_after
        self._on_audio = on_audio
        self._on_dtmf = on_dtmf
        self._on_inactive = on_inactive
        self._samples = pcm_rate * 20 // 1000
        self._max_frames = int(max_queued_seconds / FRAME_SECONDS)
        self._jitter = JitterBuffer(target_depth=jitter_depth)
        self._unwrapper = Unwrapper(16)
        self._rx_clock = Unwrapper(32)
        self._rx_base: int | None = None  # extended RTP timestamp of stream time 0.0
        self._rx_next_at = 0.0  # stream time just after the last delivered frame
        self._ssrc = secrets.randbits(32)
        self._seq = secrets.randbits(16)  # RFC 3550 §5.1: random initial sequence number
        self._timestamp = secrets.randbits(32)  # and timestamp
        self._queue: deque[Pcm] = deque()
        self._partial: Pcm | None = None
        self._dtmf_out: deque[RtpPacket] = deque()
        self._pending_digits: deque[tuple[str, int]] = deque()
        self._transport: asyncio.DatagramTransport | None = None
        self._clock: FrameClock | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._rx_ssrc: int | None = None
        self._rx_samples = self._samples
        self._latched = False
        self._last_rx = 0.0
        self._time: Callable[[], float] = time.monotonic  # the loop's clock once open
        self._inactive_reported = False
        self._first_packet = True
        self._icmp_errors = 0
        self._counts = dict.fromkeys(
            ("sent", "received", "dtmf", "late", "skipped", "malformed", "foreign", "pt"), 0
        )
        self._configure(media)

    def _configure(self, media: NegotiatedAudio) -> None:
        self.media = media
        self._encoder = AudioEncoder(media.codec, self.pcm_rate)
        self._decoder = AudioDecoder(media.codec, self.pcm_rate)
        self._step = media.codec.timestamp_step
        self._dtmf_rx = DtmfReceiver(clock_rate=media.codec.clock_rate)
        self._dtmf_tx: DtmfSender | None = None
        if media.dtmf_payload_type is not None:
            self._dtmf_tx = DtmfSender(payload_type=media.dtmf_payload_type, ssrc=self._ssrc,
                                       clock_rate=media.codec.clock_rate)  # fmt: skip
        self._remote: Address | None = None
        self._sdp_remote = (media.remote_host, media.remote_port)
        self._latched = False

    async def open(self, host: str = "0.0.0.0", port: int = 0) -> None:
        """Bind the UDP socket and start sending on the loop's 20 ms frame clock."""
        loop = asyncio.get_running_loop()
        await self._resolve_remote()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(host, port)
        )
        self._time = loop.time
        self._last_rx = loop.time()
        self._stopped = loop.create_future()
        self._clock = FrameClock.current()
        self._clock.add(self)  # removed by aclose() or _fail()

    async def update(self, media: NegotiatedAudio) -> None:
        """Apply a re-negotiation (re-INVITE: hold, resume, new codec or address)."""
        changed_remote = (media.remote_host, media.remote_port) != self._sdp_remote
        remote, latched = self._remote, self._latched
        self._configure(media)
        if self._transport is not None:
            # A new negotiation (answer, resume from hold) restarts the inactivity clock.
            self._last_rx = asyncio.get_running_loop().time()
            self._inactive_reported = False
        if changed_remote:
            await self._resolve_remote()
        else:
            self._remote, self._latched = remote, latched

    async def _resolve_remote(self) -> None:
        host, port = self._sdp_remote
        if port == 0 or host in ("0.0.0.0", "::"):
            return  # RFC 3264 §8.4 hold, or no address yet: wait for latching
        try:
            ipaddress.ip_address(host)
        except ValueError:
            loop = asyncio.get_running_loop()
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            host = str(infos[0][4][0])
        self._remote = (host, port)

    @property
    def local_address(self) -> Address:
        if self._transport is None:
            raise RuntimeError("RtpSession is not open")
        sockname = self._transport.get_extra_info("sockname")
        return str(sockname[0]), int(sockname[1])

    @property
    def remote_address(self) -> Address | None:
        return self._remote

    # -- sending -------------------------------------------------------------------------

    def send_audio_nowait(self, pcm: Pcm) -> None:
        """Queue int16 PCM at `pcm_rate` for paced sending; any length, split into frames.

        Raises `SendQueueFull` past `max_queued_seconds`, TypeError for other sample types.
        """
        if pcm.dtype != np.int16 or pcm.ndim != 1:
            raise TypeError("send_audio_nowait takes a 1-D numpy int16 array")
        if self._partial is not None:
            pcm = np.concatenate((self._partial, pcm))
            self._partial = None
        whole = len(pcm) // self._samples
        if len(self._queue) + whole > self._max_frames:
            raise SendQueueFull(f"more than {self._max_frames} frames of audio queued")
        if whole:
            self._queue.extend(pcm[: whole * self._samples].reshape(whole, self._samples))
        if len(pcm) % self._samples:
            self._partial = pcm[whole * self._samples :]

    @property
    def queued_seconds(self) -> float:
        """Agent audio queued and not yet sent, in seconds (O(1): read on every frame)."""
        partial = len(self._partial) if self._partial is not None else 0
        return (len(self._queue) * self._samples + partial) / self.pcm_rate

    def clear_audio(self) -> int:
        """Drop all queued audio (barge-in); returns the number of frames dropped."""
        dropped = len(self._queue) + (self._partial is not None)
        self._queue.clear()
        self._partial = None
        return dropped

    def send_dtmf_nowait(self, digits: str, duration_ms: int = 100) -> None:
        """Queue RFC 4733 digits; raises ValueError when the peer did not offer telephone-event."""
        if self._dtmf_tx is None:
            raise ValueError("the peer did not negotiate telephone-event")
        for digit in digits:
            if digit.upper() not in "0123456789*#ABCD!":
                raise ValueError("not a DTMF key: expected one of 0-9 * # A-D !")
            self._pending_digits.append((digit, duration_ms))

    def _on_slot(self, now: float, late: bool) -> None:
        """The frame clock's call, once per 20 ms slot (see frame_clock.Paced)."""
        if late:
            self._counts["late"] += 1
        if now - self._last_rx > FRAME_SECONDS or self._dtmf_rx.pending:
            self._housekeeping(now)  # only when a packet is overdue or a key is held
        if self._error is None:  # a callback of the housekeeping may have failed the session
            self._send_slot()

    def _skip_slots(self, slots: int) -> None:
        """The loop stalled: `slots` slots went unsent; keep the media clock true."""
        self._timestamp = (self._timestamp + slots * self._step) & 0xFFFFFFFF
        self._counts["skipped"] += slots

    def _send_slot(self) -> None:
        transport, remote = self._transport, self._remote
        if self._dtmf_out or (not self._queue_has_audio() and self._pending_digits):
            packet = self._next_dtmf_packet()
            if remote is not None and transport is not None and self.media.may_send:
                transport.sendto(packet.serialize(), remote)
                self._counts["dtmf"] += 1
                self._counts["sent"] += 1
        elif remote is not None and transport is not None and self.media.may_send:
            if self._queue:
                payload = self._encoder.encode(self._queue.popleft())
            elif self._partial is not None:
                pad = np.zeros(self._samples - len(self._partial), np.int16)
                payload = self._encoder.encode(np.concatenate((self._partial, pad)))
                self._partial = None
            else:
                payload = self._encoder.silence()
            # RFC 3551 §4.1: marker on the first packet; we never suppress silence after it.
            second = self.media.payload_type | (0x80 if self._first_packet else 0)
            self._first_packet = False
            header = _HEADER.pack(0x80, second, self._seq, self._timestamp, self._ssrc)
            transport.sendto(header + payload, remote)
            self._seq = (self._seq + 1) & 0xFFFF
            self._counts["sent"] += 1
        elif self._queue:
            self._queue.popleft()  # on hold: the agent's audio plays to no one
        self._timestamp = (self._timestamp + self._step) & 0xFFFFFFFF

    def _queue_has_audio(self) -> bool:
        return bool(self._queue) or self._partial is not None

    def _next_dtmf_packet(self) -> RtpPacket:
        if not self._dtmf_out:
            assert self._dtmf_tx is not None  # send_dtmf_nowait checked
            digit, duration_ms = self._pending_digits.popleft()
            packets = self._dtmf_tx.packets(
                digit, timestamp=self._timestamp, sequence=self._seq, duration_ms=duration_ms
            )
            self._dtmf_out.extend(packets)
        self._seq = (self._seq + 1) & 0xFFFF
        return self._dtmf_out.popleft()

    def _housekeeping(self, now: float) -> None:
        silent_for = now - self._last_rx
        if silent_for > (self._jitter.target_depth + 1) * FRAME_SECONDS:
            for frame in self._jitter.drain():
                self._deliver(frame)
        for digit in self._dtmf_rx.expire(now):
            self._emit_dtmf(digit)
        if (
            silent_for > self.inactivity_timeout
            and not self._inactive_reported
            and self.media.may_receive  # on hold, silence is expected
            and self._on_inactive is not None
        ):
            self._inactive_reported = True
            self._call(self._on_inactive)

    # -- receiving -----------------------------------------------------------------------

    def _on_datagram(self, data: bytes, source: tuple[str | Any, int]) -> None:
        if self._error is not None:
            return
        if len(data) > _HEADER.size and data[0] == 0x80:
            # The usual packet (version 2, no padding, extension or CSRCs): read the header
            # in place; 50 times a second per call, this skips building an RtpPacket.
            second, seq, timestamp, ssrc = _AFTER_FIRST.unpack_from(data, 1)
            pt, marker, payload = second & 0x7F, second > 0x7F, data[_HEADER.size :]
        else:
            try:
                packet = RtpPacket.parse(data)
            except RtpParseError:
                self._counts["malformed"] += 1
                return
            pt, marker, payload = packet.payload_type, packet.marker, packet.payload
            seq, timestamp, ssrc = packet.sequence_number, packet.timestamp, packet.ssrc
        media = self.media
        if pt != media.payload_type and pt != media.dtmf_payload_type and pt != COMFORT_NOISE_PT:
            self._counts["pt"] += 1
            return
        now = self._time()
        if source != self._remote or not self._latched:
            addr = (str(source[0]), int(source[1]))  # IPv6 sources are 4-tuples
            if addr != self._remote or not self._latched:
                if self._latched and now - self._last_rx < self.relatch_after:
                    self._counts["foreign"] += 1
                    return
                self._remote, self._latched = addr, True  # RFC 4961 symmetric RTP: latch
        self._counts["received"] += 1
        self._last_rx = now
        self._inactive_reported = False
        if ssrc != self._rx_ssrc:
            for frame in self._jitter.drain():
                self._deliver(frame)
            self._jitter.reset()
            self._unwrapper.reset()
            self._rx_clock.reset()
            self._rx_base = None  # the new source's clock continues where the old one ended
            self._rx_ssrc = ssrc
        sequence = self._unwrapper.unwrap(seq)
        if pt == media.payload_type:
            if payload and self._jitter.take_next(sequence):
                self._deliver_audio(timestamp, payload)  # in order: no buffering
                return
            if payload:
                self._jitter.put(sequence, timestamp, payload, marker)
            else:
                self._jitter.skip(sequence)
            while (frame := self._jitter.pop()) is not None:
                self._deliver(frame)
            return
        self._jitter.skip(sequence)
        if pt == media.dtmf_payload_type:
            try:
                digits = self._dtmf_rx.feed(timestamp, payload, now, marker)
            except RtpParseError:
                self._counts["malformed"] += 1
                return
            for digit in digits:
                self._emit_dtmf(digit)

    def _deliver(self, frame: JitterFrame) -> None:
        if frame.payload is not None and frame.timestamp is not None:
            self._deliver_audio(frame.timestamp, frame.payload)
            return
        # A lost frame: conceal with frames as long as the peer's (a 30 ms ptime peer loses
        # 30 ms), on the stream's clock where the next frame was due.
        at = self._rx_next_at
        pcm = self._decoder.conceal(self._rx_samples)
        self._rx_next_at = at + len(pcm) / self.pcm_rate
        self._call(self._on_audio, pcm, at, True)

    def _deliver_audio(self, timestamp: int, payload: bytes) -> None:
        """A received frame, placed on the stream's clock by its RTP timestamp."""
        pcm = self._decoder.decode(payload)
        self._rx_samples = samples = len(pcm)
        clock = self.media.codec.clock_rate
        ticks = self._rx_clock.unwrap(timestamp)
        if self._rx_base is None:
            self._rx_base = ticks - round(self._rx_next_at * clock)
        at = (ticks - self._rx_base) / clock
        self._rx_next_at = at + samples / self.pcm_rate
        if self._error is None:
            try:
                self._on_audio(pcm, at, False)
            except Exception as exc:  # noqa: BLE001 - see _call
                self._fail(exc)

    def _emit_dtmf(self, digit: DtmfDigit) -> None:
        if self._on_dtmf is not None:
            self._call(self._on_dtmf, digit)

    def _call(self, callback: Callable[..., None], *args: object) -> None:
        if self._error is not None:
            return
        try:
            callback(*args)
        # The owner's code failed: stop the session and hand the error to the owner through
        # wait_closed()/aclose(), instead of letting asyncio log it and go on.
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        self._error = exc
        if self._transport is not None:
            self._transport.close()
        if self._clock is not None:
            self._clock.remove(self)
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_exception(exc)

    # -- lifecycle -----------------------------------------------------------------------

    async def wait_closed(self) -> None:
        """Wait until the session stops; raises the callback exception that stopped it."""
        if self._stopped is None:
            raise RuntimeError("RtpSession is not open")
        await asyncio.shield(self._stopped)

    async def aclose(self) -> None:
        """Stop sending and close the socket; re-raises a callback's exception, if any."""
        if self._transport is not None:
            self._transport.close()
        if self._clock is not None:
            self._clock.remove(self)
        stopped = self._stopped
        if stopped is not None and not stopped.done():
            stopped.set_result(None)
        if self._error is not None:
            error, self._error = self._error, None
            if stopped is not None:
                stopped.exception()  # retrieved here: no "never retrieved" warning
            raise error

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def statistics(self) -> RtpSessionStatistics:
        c = self._counts
        return RtpSessionStatistics(
            packets_sent=c["sent"],
            packets_received=c["received"],
            dtmf_sent=c["dtmf"],
            late_sends=c["late"],
            skipped_slots=c["skipped"],
            dropped_malformed=c["malformed"],
            dropped_foreign=c["foreign"],
            dropped_payload_type=c["pt"],
            queued_frames=len(self._queue) + (self._partial is not None),
            remote=self._remote,
            latched=self._latched,
            jitter=self._jitter.statistics(),
        )
