"""`WebRtcLeg`: one browser call's media, as the call actor sees it (`protocols.media.MediaLeg`).

The browser offers (audio from the microphone, plus a data channel named `events`); the leg
answers with aiortc: ICE, DTLS-SRTP (aiortc's default and only mode, so browser audio is
always encrypted), Opus, G.722, PCMU or PCMA, in the order the browser prefers. The caller's
audio reaches the call actor as 16 kHz PCM16 20 ms chunks (`tracks.read_caller_audio`); the
agent's audio is queued in a `Playout` and paced out by `tracks.PlayoutTrack`, silence when
idle, cleared at once on barge-in.

Life of a leg:

    accept_offer(sdp) -> answer       the gateway, before the call actor exists
    answer()                          the call actor, greeting ready: waits (bounded) until
                                      ICE+DTLS are up, then the call is "answered"
    events()                          caller chunks (dropped before answer), page keys,
                                      MediaInactive, LegEnded
    restart(sdp) -> answer            the page lost its path and reconnects (see below)
    hangup(reason) / disconnect()     the end; `on_closed(leg)` tells the gateway

Reconnection: aiortc 1.16 cannot restart ICE on a live peer connection (its ICE transport
starts once, RFC 8445 §9 restarts are not implemented), so the page recovers a lost path by
offering on a fresh RTCPeerConnection; `restart` answers it with a fresh aiortc connection
bound to this same leg: same call actor, same conversation, same playout queue. When the
current connection fails or closes, the leg waits `reconnect_grace` seconds for that offer,
then ends with `LegEnded(transport_failed)`.

The leg publishes the call's state to the page (page_state.py: connecting, greeting,
listening, speaking, reconnecting, ended). It is a `LiveEventSink`: the conversation loop
adds transcripts and latencies.

Personal data: the caller reference and the keys pressed are never logged; nor are the
browser's addresses (ICE candidates).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.mediastreams import MediaStreamTrack
from switchboard.actors.tasks import TaskOwner
from switchboard.gateways.webrtc.chunks import ChunkAssembler
from switchboard.gateways.webrtc.errors import BadRequest
from switchboard.gateways.webrtc.live_channel import LiveChannel
from switchboard.gateways.webrtc.page_state import PageState
from switchboard.gateways.webrtc.playout import Playout
from switchboard.gateways.webrtc.tracks import PlayoutTrack, read_caller_audio
from switchboard.protocols.audio import AudioChunk
from switchboard.protocols.live import (
    CallStateName,
    LiveEvent,
    PageDtmf,
    PageHangup,
    PageMessage,
)
from switchboard.protocols.media import (
    REMOTE_HANGUP,
    TRANSPORT_FAILED,
    Direction,
    DtmfReceived,
    LegClosed,
    LegEnded,
    MediaError,
    MediaEvent,
    MediaInactive,
    TransferNotSupported,
)

log = logging.getLogger("switchboard.web.leg")

SAMPLE_RATE = 16000
NEGOTIATE_TIMEOUT = 10.0   # offer -> answer, ICE gathering included (STUN/TURN may be slow)
ANSWER_SETTLE = 0.1        # seconds after answering before the page is told "listening"
DTMF_KEYS = frozenset("0123456789*#ABCD")


@dataclass(frozen=True, slots=True)
class WebRtcLegStatistics:
    state: CallStateName
    codec: str
    frames_delivered: int        # caller chunks handed to the call actor
    frames_dropped: int          # caller chunks dropped: the actor fell behind
    frames_before_answer: int    # caller chunks dropped before the call was answered
    agent_frames_sent: int       # frames of agent audio sent (silence excluded)
    frames_sent: int             # every frame sent, silence included
    late_frames: int             # sender slots missed by a stalled loop
    reconnects: int
    live_events_sent: int


class WebRtcLeg:
    def __init__(self, call_id: str, *, caller: str, callee: str,
                 rtc_config: Callable[[], RTCConfiguration],
                 inactivity_timeout: float = 30.0, connect_timeout: float = 15.0,
                 reconnect_grace: float = 15.0, max_queued_chunks: int = 250,
                 on_closed: Callable[[WebRtcLeg], None] | None = None) -> None:
        self._call_id = call_id
        self._caller = caller
        self._callee = callee
        self._rtc_config = rtc_config
        self.inactivity_timeout = inactivity_timeout
        self.connect_timeout = connect_timeout
        self.reconnect_grace = reconnect_grace
        self._max_queued = max_queued_chunks
        self._on_closed = on_closed
        self._events: asyncio.Queue[MediaEvent | None] = asyncio.Queue()
        self._playout = Playout(SAMPLE_RATE)
        self._assembler = ChunkAssembler(SAMPLE_RATE)
        self._channel = LiveChannel(on_message=self._page_message)
        self._tasks = TaskOwner(self._task_failed)
        self._pc: RTCPeerConnection | None = None
        self._track: PlayoutTrack | None = None
        self._connected = asyncio.Event()
        self._gone = asyncio.Event()   # ended, for whatever reason
        self._closer: asyncio.Task[None] | None = None
        self._grace: asyncio.TimerHandle | None = None
        self._answered = False
        self._consumed = False
        self.end_reason: str | None = None
        self._page = PageState(self._channel.publish)
        self._codec = ""
        self._counts = dict.fromkeys(("delivered", "dropped", "early", "agent", "sent",
                                      "reconnects"), 0)
        self._late_before = 0

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
        return "inbound"

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    @property
    def ended(self) -> bool:
        return self.end_reason is not None

    # -- signalling (the gateway) -----------------------------------------------------------

    async def accept_offer(self, sdp: str) -> str:
        """Answer the page's first offer; raises `BadRequest` for an unusable one."""
        return await self._negotiate(sdp)

    async def restart(self, sdp: str) -> str:
        """Answer a reconnecting page's offer with a fresh peer connection (module docstring)."""
        self._counts["reconnects"] += 1
        log.info("call %s: the page reconnects (attempt %d)", self._call_id,
                 self._counts["reconnects"])
        return await self._negotiate(sdp)

    async def _negotiate(self, sdp: str) -> str:
        if self.ended:
            raise LegClosed(f"call {self._call_id} has ended")
        check_offer(sdp)
        pc = RTCPeerConnection(self._rtc_config())
        track = PlayoutTrack(self._playout, on_frame=self._frame_sent)
        pc.on("track", lambda remote: self._remote_track(pc, remote))
        pc.on("datachannel", self._channel.attach)
        pc.on("connectionstatechange", lambda: self._connection_changed(pc))
        try:
            async with asyncio.timeout(NEGOTIATE_TIMEOUT):
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
                pc.addTrack(track)
                await pc.setLocalDescription(await pc.createAnswer())
        except TimeoutError:
            await pc.close()
            raise BadRequest("the answer took too long (ICE gathering); check the STUN/TURN "
                             "servers configured for the web gateway", code="unavailable") \
                from None
        except Exception as exc:  # noqa: BLE001 - aiortc raises many types for an unusable offer
            await pc.close()
            raise BadRequest(f"the offer cannot be answered ({type(exc).__name__}): it needs an "
                             "audio stream with Opus, G.722, PCMU or PCMA") from None
        if self.ended:  # hung up while we negotiated
            await pc.close()
            raise LegClosed(f"call {self._call_id} has ended")
        old_pc, old_track = self._pc, self._track
        self._pc, self._track = pc, track
        self._connected.clear()
        self._cancel_grace()
        if old_track is not None:
            self._late_before += old_track.late_frames
            old_track.stop()
        if old_pc is not None:
            self._tasks.spawn(old_pc.close(), name=f"web-close-old:{self._call_id}")
        answer = pc.localDescription.sdp
        self._codec = _first_codec(answer)
        log.info("call %s: answered the page's offer (%s)", self._call_id, self._codec)
        return answer

    def disconnect(self, reason: str = REMOTE_HANGUP) -> None:
        """End the leg from the edge: the page hung up (its button, or it closed), or the
        gateway is closing (`shutdown`). The call actor gets `LegEnded(reason)`."""
        self._end(reason, remote=True)

    # -- MediaLeg: the call actor -----------------------------------------------------------

    async def answer(self) -> None:
        if self.ended:
            raise LegClosed("the caller already left")
        if self._answered:
            return
        connected = asyncio.ensure_future(self._connected.wait())
        gone = asyncio.ensure_future(self._gone.wait())
        try:
            await asyncio.wait({connected, gone}, timeout=self.connect_timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            connected.cancel()
            gone.cancel()
        if self.ended:
            raise LegClosed("the caller left before the call was answered")
        if not self._connected.is_set():
            self._end(TRANSPORT_FAILED, remote=True)
            raise LegClosed(f"the browser did not connect within {self.connect_timeout:g} s")
        self._answered = True
        # The call actor queues the greeting right after answering: decide between
        # "greeting" and "listening" a moment later, so the page does not flash "listening".
        asyncio.get_running_loop().call_later(ANSWER_SETTLE, self._update_state)

    def events(self) -> AsyncIterator[MediaEvent]:
        if self._consumed:
            raise RuntimeError("a media leg's events have one consumer only")
        self._consumed = True
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[MediaEvent]:
        while True:
            event = await self._events.get()
            if event is None:
                return
            yield event
            if isinstance(event, LegEnded):
                return

    def play(self, pcm: bytes) -> None:
        if self.ended:
            raise LegClosed("the call has ended")
        self._playout.play(pcm)
        self._page.agent_audio_queued()
        self._update_state()

    def clear_playout(self) -> float:
        dropped = self._playout.clear()
        self._page.agent_audio_cleared()
        self._update_state()
        return dropped

    @property
    def playout_queued(self) -> float:
        return self._playout.queued

    def send_dtmf(self, digits: str) -> None:
        raise MediaError("DTMF cannot be sent to a browser caller")

    async def transfer(self, target: str) -> None:
        raise TransferNotSupported("a web call cannot be transferred (no SIP REFER on this "
                                   "edge); hang up and let the caller dial instead")

    async def hangup(self, reason: str) -> None:
        self._end(reason, remote=False)
        await self.wait_closed()

    async def wait_closed(self) -> None:
        if self._closer is not None:
            await asyncio.shield(self._closer)

    # -- LiveEventSink ----------------------------------------------------------------------

    def publish(self, event: LiveEvent) -> None:
        self._channel.publish(event)

    def statistics(self) -> WebRtcLegStatistics:
        c = self._counts
        late = self._late_before + (self._track.late_frames if self._track else 0)
        return WebRtcLegStatistics(
            state=self._page.state, codec=self._codec, frames_delivered=c["delivered"],
            frames_dropped=c["dropped"], frames_before_answer=c["early"],
            agent_frames_sent=c["agent"], frames_sent=c["sent"], late_frames=late,
            reconnects=c["reconnects"], live_events_sent=self._channel.sent)

    # -- callbacks from aiortc and the tracks -----------------------------------------------

    def _remote_track(self, pc: RTCPeerConnection, track: MediaStreamTrack) -> None:
        if track.kind != "audio" or self.ended:
            return

        def deliver(chunk: AudioChunk) -> None:
            if pc is not self._pc or self.ended:
                return  # a replaced connection's last frames, or a finished call
            if not self._answered:
                self._counts["early"] += 1
            elif self._events.qsize() >= self._max_queued:
                self._counts["dropped"] += 1
            else:
                self._counts["delivered"] += 1
                self._events.put_nowait(chunk)

        def inactive(seconds: float) -> None:
            if pc is self._pc and self._answered and not self.ended and self._grace is None:
                self._events.put_nowait(MediaInactive(seconds=seconds))

        self._tasks.spawn(read_caller_audio(track, self._assembler, deliver,
                                            inactivity=self.inactivity_timeout,
                                            on_inactive=inactive),
                          name=f"web-caller-audio:{self._call_id}")

    def _connection_changed(self, pc: RTCPeerConnection) -> None:
        if pc is not self._pc or self.ended:
            return
        state = pc.connectionState
        if state == "connected":
            self._connected.set()
            self._cancel_grace()
            self._update_state()
        elif state in ("failed", "closed") and self._grace is None:
            log.info("call %s: the connection to the page is %s; waiting %.0f s for it to "
                     "reconnect", self._call_id, state, self.reconnect_grace)
            self._connected.clear()
            self._grace = asyncio.get_running_loop().call_later(
                self.reconnect_grace, self._end, TRANSPORT_FAILED, True)
            self._update_state()

    def _frame_sent(self, had_audio: bool) -> None:
        self._counts["sent"] += 1
        self._counts["agent"] += had_audio
        if self._page.frame_sent(had_audio):
            self._update_state()

    def _page_message(self, message: PageMessage) -> None:
        if isinstance(message, PageHangup):
            self.disconnect(REMOTE_HANGUP)
        elif (isinstance(message, PageDtmf) and self._answered and not self.ended
              and message.digit.upper() in DTMF_KEYS):
            self._events.put_nowait(DtmfReceived(digit=message.digit.upper(),
                                                 at=self._assembler.position))

    def _task_failed(self, name: str, exc: BaseException) -> None:
        log.error("call %s: %s failed (%s); the web leg ends", self._call_id,
                  name.split(":", 1)[0], type(exc).__name__, exc_info=exc)
        self._end(TRANSPORT_FAILED, remote=True)

    # -- state and ending -------------------------------------------------------------------

    def _update_state(self) -> None:
        self._page.update(answered=self._answered, reconnecting=self._grace is not None,
                          end_reason=self.end_reason, queued=self._playout.queued)

    def _cancel_grace(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None

    def _end(self, reason: str, remote: bool) -> None:
        if self.ended:
            return
        self.end_reason = reason
        self._cancel_grace()
        self._gone.set()
        self._events.put_nowait(LegEnded(reason=reason) if remote else None)
        self._update_state()
        log.info("call %s: web leg ends (%s)", self._call_id, reason)
        self._closer = asyncio.get_running_loop().create_task(
            self._close(), name=f"web-leg-close:{self._call_id}")  # owned: wait_closed awaits

    async def _close(self) -> None:
        try:
            await self._channel.drain(0.5)  # let the page see "ended" before the line drops
            if self._track is not None:
                self._track.stop()
            if self._pc is not None:
                try:
                    async with asyncio.timeout(2.0):
                        await self._pc.close()
                except TimeoutError:
                    log.warning("call %s: closing the peer connection timed out", self._call_id)
            await self._tasks.close(2.0)
        finally:
            if self._on_closed is not None:
                self._on_closed(self)


def check_offer(sdp: str) -> None:
    """Refuse (BadRequest) an offer that is not SDP or has no audio: cheap, before admission."""
    try:
        parsed = aiortc_sdp.SessionDescription.parse(sdp)
    except Exception:  # noqa: BLE001 - aiortc's parser raises whatever its input triggers
        raise BadRequest("the offer is not valid SDP") from None
    if not any(media.kind == "audio" for media in parsed.media):
        raise BadRequest("the offer has no audio stream; the page must add the microphone's "
                         "track before creating its offer")


def _first_codec(sdp: str) -> str:
    """The codec our answer chose, e.g. `opus/48000` (our own SDP: it parses)."""
    parsed: Any = aiortc_sdp.SessionDescription.parse(sdp)
    for media in parsed.media:
        if media.kind == "audio" and media.rtp.codecs:
            codec = media.rtp.codecs[0]
            return f"{codec.mimeType.split('/')[-1]}/{codec.clockRate}"
    return ""
