"""`LiveKitLeg`: a LiveKit room participant's audio as a `MediaLeg` for the call actor.

Where a deployment runs LiveKit, the caller is a participant of a room and the agent joins it
as another participant (livekit_agent.py). This adapter is the media half, written against
the `livekit` SDK's own types so the room is the only thing a test has to stand in for:

- caller side: an async iterator of `rtc.AudioFrame`s (in a room: `rtc.AudioStream` of the
  caller's microphone track, which may already resample to 16 kHz mono 20 ms). Any rate or
  channel count is accepted: channels are averaged and `rtc.AudioResampler` (the SDK's soxr)
  brings the audio to 16 kHz; `ChunkAssembler` cuts 20 ms `AudioChunk`s on one clock.
- agent side: the shared `Playout`; a pacer task pops one 20 ms frame at a time (silence when
  idle) into an `AudioSink`, i.e. an `rtc.AudioSource` published as the agent's track.
  `capture_frame` waits while the source holds more than its queue (100 ms), so the source's
  own real-time consumption paces us; `clear_playout` empties both queues (barge-in).
- live events (`LiveEventSink`): JSON on the room's data channel, topic `switchboard.events`,
  the same messages as the web page's data channel (protocols/live.py).

The leg never joins or leaves a room itself: whoever built it passes `on_close` (e.g. the
room's `disconnect`), called once when the leg ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Protocol

import msgspec
import numpy as np
from livekit import rtc
from switchboard.actors.tasks import TaskOwner
from switchboard.gateways.webrtc.chunks import ChunkAssembler
from switchboard.gateways.webrtc.playout import Playout
from switchboard.protocols.audio import AudioChunk
from switchboard.protocols.live import LiveEvent
from switchboard.protocols.media import (
    REMOTE_HANGUP,
    TRANSPORT_FAILED,
    Direction,
    LegClosed,
    LegEnded,
    MediaError,
    MediaEvent,
    MediaInactive,
    TransferNotSupported,
)

log = logging.getLogger("switchboard.livekit")

SAMPLE_RATE = 16000
FRAME_SAMPLES = SAMPLE_RATE // 50
EVENTS_TOPIC = "switchboard.events"
_ENCODER = msgspec.json.Encoder()


class AudioSink(Protocol):
    """Where the agent's frames go: `rtc.AudioSource` implements it."""

    async def capture_frame(self, frame: rtc.AudioFrame) -> None: ...

    def clear_queue(self) -> None: ...

    @property
    def queued_duration(self) -> float: ...


class LiveKitLeg:
    def __init__(self, call_id: str, *, caller: str, callee: str, sink: AudioSink,
                 inactivity_timeout: float = 30.0, max_queued_chunks: int = 250,
                 send_data: Callable[[bytes], Coroutine[Any, Any, None]] | None = None,
                 on_close: Callable[[], Awaitable[object]] | None = None) -> None:
        self._call_id = call_id
        self._caller = caller
        self._callee = callee
        self._sink = sink
        self.inactivity_timeout = inactivity_timeout
        self._max_queued = max_queued_chunks
        self._send_data = send_data
        self._on_close = on_close
        self._events: asyncio.Queue[MediaEvent | None] = asyncio.Queue()
        self._playout = Playout(SAMPLE_RATE)
        self._assembler = ChunkAssembler(SAMPLE_RATE)
        self._tasks = TaskOwner(self._task_failed)
        self._answered = False
        self._consumed = False
        self.end_reason: str | None = None
        self._closer: asyncio.Task[None] | None = None
        self.frames_delivered = 0
        self.frames_sent = 0
        self.agent_frames_sent = 0

    # -- identity ---------------------------------------------------------------------------

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

    # -- wiring (the agent that joined the room) --------------------------------------------

    def attach_caller(self, frames: AsyncIterator[rtc.AudioFrame]) -> None:
        """Start reading the caller's audio (a room: `audio_frames(rtc.AudioStream(...))`)."""
        self._tasks.spawn(self._read(frames), name=f"livekit-caller-audio:{self._call_id}")

    def disconnect(self, reason: str = REMOTE_HANGUP) -> None:
        """The caller left the room (or the room closed): the call actor gets LegEnded."""
        self._end(reason, remote=True)

    # -- MediaLeg ---------------------------------------------------------------------------

    async def answer(self) -> None:
        if self.ended:
            raise LegClosed("the caller already left the room")
        if not self._answered:
            self._answered = True
            self._tasks.spawn(self._pace(), name=f"livekit-playout:{self._call_id}")

    def events(self) -> AsyncIterator[MediaEvent]:
        if self._consumed:
            raise RuntimeError("a media leg's events have one consumer only")
        self._consumed = True
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[MediaEvent]:
        while (event := await self._events.get()) is not None:
            yield event
            if isinstance(event, LegEnded):
                return

    def play(self, pcm: bytes) -> None:
        if self.ended:
            raise LegClosed("the call has ended")
        self._playout.play(pcm)

    def clear_playout(self) -> float:
        dropped = self._playout.clear() + self._sink.queued_duration
        self._sink.clear_queue()
        return dropped

    @property
    def playout_queued(self) -> float:
        return self._playout.queued + self._sink.queued_duration

    def send_dtmf(self, digits: str) -> None:
        raise MediaError("DTMF cannot be sent into a LiveKit room")

    async def transfer(self, target: str) -> None:
        raise TransferNotSupported("a LiveKit call cannot be transferred from here")

    async def hangup(self, reason: str) -> None:
        self._end(reason, remote=False)
        if self._closer is not None:
            await asyncio.shield(self._closer)

    def publish(self, event: LiveEvent) -> None:
        if self._send_data is not None and not self.ended:
            self._tasks.spawn(self._send_data(_ENCODER.encode(event)),
                              name=f"livekit-event:{self._call_id}")

    # -- tasks ------------------------------------------------------------------------------

    async def _read(self, frames: AsyncIterator[rtc.AudioFrame]) -> None:
        resampler: rtc.AudioResampler | None = None
        rate = 0
        iterator = aiter(frames)
        reported = False
        while True:
            try:
                async with asyncio.timeout(self.inactivity_timeout):
                    frame = await anext(iterator)
            except StopAsyncIteration:
                self.disconnect(REMOTE_HANGUP)  # the caller's track ended
                return
            except TimeoutError:
                if not reported and self._answered:
                    reported = True
                    self._events.put_nowait(MediaInactive(seconds=self.inactivity_timeout))
                continue
            reported = False
            pcm = _mono(frame)
            if frame.sample_rate != SAMPLE_RATE:
                if resampler is None or rate != frame.sample_rate:
                    rate = frame.sample_rate
                    resampler = rtc.AudioResampler(rate, SAMPLE_RATE, num_channels=1)
                pcm = b"".join(bytes(out.data) for out in resampler.push(bytearray(pcm)))
            for chunk in self._assembler.push(pcm):
                self._deliver(chunk)

    def _deliver(self, chunk: AudioChunk) -> None:
        if self._answered and not self.ended and self._events.qsize() < self._max_queued:
            self.frames_delivered += 1
            self._events.put_nowait(chunk)

    async def _pace(self) -> None:
        silence = bytes(FRAME_SAMPLES * 2)
        while not self.ended:
            pcm = self._playout.pop()
            if pcm is not None:
                self.agent_frames_sent += 1
            frame = rtc.AudioFrame(pcm if pcm is not None else silence, SAMPLE_RATE, 1,
                                   FRAME_SAMPLES)
            await self._sink.capture_frame(frame)  # waits while the source is full
            self.frames_sent += 1

    def _task_failed(self, name: str, exc: BaseException) -> None:
        log.error("call %s: %s failed (%s); the LiveKit leg ends", self._call_id,
                  name.split(":", 1)[0], type(exc).__name__, exc_info=exc)
        self._end(TRANSPORT_FAILED, remote=True)

    def _end(self, reason: str, remote: bool) -> None:
        if self.ended:
            return
        self.end_reason = reason
        self._events.put_nowait(LegEnded(reason=reason) if remote else None)
        self._closer = asyncio.get_running_loop().create_task(
            self._close(), name=f"livekit-leg-close:{self._call_id}")  # awaited by hangup

    async def _close(self) -> None:
        self._sink.clear_queue()
        await self._tasks.close(2.0)
        if self._on_close is not None:
            try:
                async with asyncio.timeout(5.0):
                    await self._on_close()
            except Exception as exc:  # noqa: BLE001 - leaving the room is best effort
                log.warning("call %s: leaving the LiveKit room failed (%s)", self._call_id,
                            type(exc).__name__)


async def audio_frames(stream: rtc.AudioStream) -> AsyncIterator[rtc.AudioFrame]:
    """The frames of an `rtc.AudioStream` (it yields events that carry them)."""
    async for event in stream:
        yield event.frame


def _mono(frame: rtc.AudioFrame) -> bytes:
    if frame.num_channels == 1:
        return bytes(frame.data)
    samples = np.frombuffer(frame.data, dtype=np.int16).reshape(-1, frame.num_channels)
    mono: bytes = samples.mean(axis=1).astype(np.int16).tobytes()
    return mono
