"""`SipLeg`: one SIP call's media and signalling as the call actor sees it
(`protocols.media.MediaLeg`), over a `SipCall` and its `RtpSession`.

Caller side: the RTP session's callbacks (`on_audio`, `on_dtmf`, `on_inactive`, given to the
user agent in `media_options`) and the gateway's `call_ended` become `MediaEvent`s on one
queue, read by `events()`:

- each decoded 20 ms frame becomes an `AudioChunk` at once, in the datagram callback: its
  `pcm` is the decoder's int16 array turned into bytes, the one copy on the way to the actor;
  concealed frames (a lost packet) are delivered too, so the stream clock the VAD sees has
  no holes. Past `max_queued_chunks` (the actor fell behind), audio is dropped and counted;
  DTMF, inactivity and the end never are;
- `on_inactive` (no RTP for the agent's `rtp_inactivity_seconds` while not on hold) becomes
  `MediaInactive`; the call actor hangs up;
- the end of the SIP call becomes `LegEnded` with the media reason (remote_hangup,
  cancelled, transferred, max_duration, shutdown, transport_failed).

Agent side: `play` queues PCM on the RTP session's pacer (`send_audio_nowait`, 20 ms, silence
when idle), `clear_playout` drops it at once (barge-in), `answer`, `hangup`, `transfer` and
`send_dtmf` map to the `SipCall`. `events()` takes one consumer at a time; a new one may
start once the last one is gone (a restarted call actor resumes on the same leg).

An outbound leg exists before its call does (its callbacks go into the INVITE's media
options); `bind(call)` attaches the answered call. Audio before then (early media) is
dropped. Numbers and digits are personal data: nothing here logs them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import numpy as np
from switchboard.gateways.sip import handler as sip
from switchboard.gateways.sip.call import CallGone, SipCall
from switchboard.gateways.sip.codecs import Codec, Pcm
from switchboard.gateways.sip.dtmf import DtmfDigit
from switchboard.gateways.sip.errors import TransferFailed
from switchboard.gateways.sip.handler import CallEnd, MediaOptions
from switchboard.gateways.sip.rtp_session import SendQueueFull
from switchboard.protocols.audio import AudioChunk
from switchboard.protocols.call import MAX_DURATION, RTP_TIMEOUT, SHUTDOWN
from switchboard.protocols.media import (
    CANCELLED,
    REMOTE_HANGUP,
    TRANSFERRED,
    TRANSPORT_FAILED,
    Direction,
    DtmfReceived,
    LegClosed,
    LegEnded,
    MediaError,
    MediaEvent,
    MediaInactive,
    PlayoutFull,
    TransferNotSupported,
)

__all__ = ["SipLeg", "SipLegStatistics", "media_reason"]

# A SIP call's end (gateways.sip.handler) as the call actor reads it (protocols.media/call).
_REASONS = {sip.REMOTE_HANGUP: REMOTE_HANGUP, sip.CANCELLED: CANCELLED,
            sip.TRANSFERRED: TRANSFERRED, sip.MAX_DURATION: MAX_DURATION,
            sip.RTP_TIMEOUT: RTP_TIMEOUT, sip.SHUTDOWN: SHUTDOWN}
# Hang-up reasons of the call actor that mean "we failed", not "we are done": 503, not 480.
_FAILURES = frozenset(("error", "agent_unavailable", "shutdown"))


def media_reason(end: CallEnd) -> str:
    """The `LegEnded.reason` for how a SIP call ended (ack/session timeouts, errors: the
    transport failed)."""
    return _REASONS.get(end.reason, TRANSPORT_FAILED)


@dataclass(frozen=True, slots=True)
class SipLegStatistics:
    frames_delivered: int   # caller frames queued for the call actor
    frames_dropped: int     # caller frames dropped: the actor fell behind
    frames_concealed: int   # of the delivered ones, silence for lost packets
    dtmf_received: int
    agent_seconds: float    # agent audio handed to play()
    plays: int
    cleared: int            # clear_playout calls that dropped something
    events_queued: int


class SipLeg:
    def __init__(self, call_id: str, *, caller: str, callee: str, direction: Direction,
                 sample_rate: int, max_queued_chunks: int = 250) -> None:
        self._call_id = call_id
        self._caller = caller
        self._callee = callee
        self._direction: Direction = direction
        self._rate = sample_rate
        self._max_queued = max_queued_chunks
        self._events: asyncio.Queue[MediaEvent] = asyncio.Queue()
        self._audio_queued = 0
        self._consumer = False
        self.call: SipCall | None = None
        self.end_reason: str | None = None
        self._inactivity = 30.0
        self._early: list[Pcm] = []
        self._counts = dict.fromkeys(("delivered", "dropped", "concealed", "dtmf", "plays",
                                      "cleared"), 0)
        self._agent_samples = 0

    # -- building -------------------------------------------------------------------------

    def media_options(self, *, preferences: Sequence[Codec], inactivity_timeout: float,
                      max_duration: float | None) -> MediaOptions:
        """What the user agent needs for this leg's RTP (Accept, or place_call)."""
        self._inactivity = inactivity_timeout
        return MediaOptions(on_audio=self._on_audio, on_dtmf=self._on_dtmf,
                            on_inactive=self._on_inactive, pcm_rate=self._rate,
                            preferences=tuple(preferences),
                            inactivity_timeout=inactivity_timeout, max_duration=max_duration)

    def bind(self, call: SipCall) -> None:
        """Attach the call (inbound: at admission; outbound: once answered)."""
        self.call = call
        if call.end is not None:
            self.ended(call.end)

    def ended(self, end: CallEnd) -> None:
        """The SIP call is over (the gateway's `call_ended`): the actor gets `LegEnded`."""
        if self.end_reason is not None:
            return
        self.end_reason = media_reason(end)
        self._early.clear()
        self._events.put_nowait(LegEnded(reason=self.end_reason))

    def abandon(self, reason: str = TRANSPORT_FAILED) -> None:
        """The set-up failed before the call was ours (admission cancelled): end the leg."""
        if self.end_reason is None:
            self.end_reason = reason
            self._events.put_nowait(LegEnded(reason=reason))

    # -- MediaLeg: identity -----------------------------------------------------------------

    @property
    def call_id(self) -> str:
        return self._call_id

    @property
    def caller(self) -> str:
        return self._caller

    @property
    def callee(self) -> str:
        return self._callee

    @property
    def direction(self) -> Direction:
        return self._direction

    @property
    def sample_rate(self) -> int:
        return self._rate

    # -- MediaLeg: caller side ----------------------------------------------------------------

    def events(self) -> AsyncIterator[MediaEvent]:
        if self._consumer:
            raise RuntimeError("a SIP leg's events have one consumer at a time")
        self._consumer = True
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[MediaEvent]:
        try:
            while True:
                event = await self._events.get()
                if type(event) is AudioChunk:
                    self._audio_queued -= 1
                elif isinstance(event, LegEnded):
                    self._events.put_nowait(event)  # a resumed consumer sees the end too
                    yield event
                    return
                yield event
        finally:
            self._consumer = False

    def _on_audio(self, pcm: Pcm, at: float, concealed: bool) -> None:
        if self.call is None or self.end_reason is not None:
            return  # early media of an outbound call, or the call is over
        if self._audio_queued >= self._max_queued:
            self._counts["dropped"] += 1
            return
        self._audio_queued += 1
        self._counts["delivered"] += 1
        self._counts["concealed"] += concealed
        self._events.put_nowait(AudioChunk(pcm=pcm.tobytes(), sample_rate=self._rate,
                                           timestamp=at))

    def _on_dtmf(self, digit: DtmfDigit) -> None:
        if self.call is not None and self.end_reason is None:
            self._counts["dtmf"] += 1
            self._events.put_nowait(DtmfReceived(digit=digit.digit))

    def _on_inactive(self) -> None:
        if self.call is not None and self.end_reason is None:
            self._events.put_nowait(MediaInactive(seconds=self._inactivity))

    # -- MediaLeg: agent side ---------------------------------------------------------------

    async def answer(self) -> None:
        call = self.call
        if call is None or self.end_reason is not None:
            raise LegClosed("the caller already left")
        try:
            await call.answer()
        except CallGone:
            raise LegClosed("the caller left before the call was answered") from None
        if self._early and call.rtp is not None:
            early, self._early = self._early, []
            for pcm in early:
                self._send(pcm)

    def play(self, pcm: bytes) -> None:
        if self.end_reason is not None:
            raise LegClosed("the call has ended")
        samples = np.frombuffer(pcm, dtype=np.int16, count=len(pcm) // 2)
        self._counts["plays"] += 1
        self._agent_samples += len(samples)
        rtp = self.call.rtp if self.call is not None else None
        if rtp is None:  # not answered yet: sent once it is
            self._early.append(samples)
            return
        self._send(samples)

    def _send(self, samples: Pcm) -> None:
        assert self.call is not None and self.call.rtp is not None
        try:
            self.call.rtp.send_audio_nowait(samples)
        except SendQueueFull:
            raise PlayoutFull("more agent audio is queued than the call holds (120 s); "
                              "clear the playout or wait") from None

    def clear_playout(self) -> float:
        rtp = self.call.rtp if self.call is not None else None
        early = sum(len(p) for p in self._early) / self._rate
        self._early.clear()
        if rtp is None:
            return early
        dropped = rtp.queued_seconds
        if rtp.clear_audio():
            self._counts["cleared"] += 1
        return dropped + early

    @property
    def playout_queued(self) -> float:
        rtp = self.call.rtp if self.call is not None else None
        if rtp is None:
            return sum(len(p) for p in self._early) / self._rate
        return rtp.queued_seconds

    def send_dtmf(self, digits: str) -> None:
        if self.call is None or self.end_reason is not None:
            raise LegClosed("the call has ended")
        try:
            self.call.send_dtmf(digits)
        except CallGone:
            raise LegClosed("the call has no media any more") from None
        except ValueError:
            raise MediaError("the far end did not negotiate RFC 4733 telephone-events, or a "
                             "key is not one of 0-9 * # A-D") from None

    async def hangup(self, reason: str) -> None:
        call = self.call
        if call is None:
            self.abandon(reason)
            return
        await call.hangup(reason, status=503 if reason in _FAILURES else 480)

    async def transfer(self, target: str) -> None:
        call = self.call
        if call is None or self.end_reason is not None:
            raise LegClosed("the call has ended")
        try:
            await call.transfer(target)
        except TransferFailed as exc:
            raise TransferNotSupported(f"the far end refused the transfer (SIP "
                                       f"{exc.status})") from None
        except CallGone:
            raise LegClosed("only an answered, live call can be transferred") from None
        except ValueError:
            raise MediaError("the transfer target is not a SIP URI, tel URI or number") \
                from None

    def statistics(self) -> SipLegStatistics:
        c = self._counts
        return SipLegStatistics(frames_delivered=c["delivered"], frames_dropped=c["dropped"],
                                frames_concealed=c["concealed"], dtmf_received=c["dtmf"],
                                agent_seconds=self._agent_samples / self._rate,
                                plays=c["plays"], cleared=c["cleared"],
                                events_queued=self._events.qsize())
