"""`FakeMediaLeg`: an in-memory `MediaLeg` that a test drives as the caller and reads as the
agent's ear, plus PCM helpers (a voiced tone, silence) for the fake energy VAD.

    leg = FakeMediaLeg("c1", sample_rate=8000)
    leg.say(tone(0.4, 8000))          # 20 ms AudioChunks, stamped on the stream's clock
    leg.say(silence(0.5, 8000))       # ...enough silence to end the caller's turn
    leg.press("5")
    leg.hang_up()                     # LegEnded(remote_hangup): the caller left

What the agent did is recorded: `played` (every `play` in order), `hangups`, `dtmf_sent`,
`transfers`, `cleared`. Playout is instant unless `hold_playout=True`, which keeps played audio
queued (so `playout_queued` > 0) until `clear_playout()`, for barge-in tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
from switchboard.protocols.audio import AudioChunk
from switchboard.protocols.media import (
    REMOTE_HANGUP,
    TRANSFERRED,
    Direction,
    DtmfReceived,
    LegClosed,
    LegEnded,
    MediaEvent,
    MediaInactive,
    TransferNotSupported,
)

FRAME = 0.02


def tone(seconds: float, rate: int, *, amplitude: float = 8000.0, hz: float = 440.0) -> bytes:
    """Voiced audio for the fake energy VAD (RMS far above its 500 threshold)."""
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16).tobytes()


def silence(seconds: float, rate: int) -> bytes:
    return bytes(2 * int(seconds * rate))


class FakeMediaLeg:
    def __init__(self, call_id: str, *, caller: str = "+15550111", callee: str = "+15550100",
                 direction: Direction = "inbound", sample_rate: int = 8000,
                 can_transfer: bool = True, hold_playout: bool = False) -> None:
        self._call_id = call_id
        self._caller = caller
        self._callee = callee
        self._direction: Direction = direction
        self._rate = sample_rate
        self._can_transfer = can_transfer
        self._hold = hold_playout
        self._events: asyncio.Queue[MediaEvent] = asyncio.Queue()
        self._clock = 0.0
        self._ended = False
        self.answered = asyncio.Event()
        self.played: list[bytes] = []
        self._queued: list[bytes] = []
        self.cleared: list[float] = []
        self.hangups: list[str] = []
        self.dtmf_sent: list[str] = []
        self.transfers: list[str] = []

    # -- MediaLeg ---------------------------------------------------------------------------

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

    async def events(self) -> AsyncIterator[MediaEvent]:
        while True:
            event = await self._events.get()
            yield event
            if isinstance(event, LegEnded):
                return

    async def answer(self) -> None:
        if self._ended:
            raise LegClosed("the caller already left")
        self.answered.set()

    def play(self, pcm: bytes) -> None:
        if self._ended:
            raise LegClosed("the leg has ended")
        self.played.append(pcm)
        if self._hold:
            self._queued.append(pcm)

    def clear_playout(self) -> float:
        dropped = sum(len(p) for p in self._queued) / 2 / self._rate
        self._queued.clear()
        self.cleared.append(dropped)
        return dropped

    @property
    def playout_queued(self) -> float:
        return sum(len(p) for p in self._queued) / 2 / self._rate

    def send_dtmf(self, digits: str) -> None:
        if self._ended:
            raise LegClosed("the leg has ended")
        self.dtmf_sent.append(digits)

    async def hangup(self, reason: str) -> None:
        if not self._ended:
            self.hangups.append(reason)
        self._ended = True

    async def transfer(self, target: str) -> None:
        if not self._can_transfer:
            raise TransferNotSupported("this fake leg cannot transfer")
        self.transfers.append(target)
        self._end(TRANSFERRED)

    # -- the caller's side ------------------------------------------------------------------

    def say(self, pcm: bytes) -> None:
        """Queue caller audio as 20 ms chunks (a partial last frame is padded with silence)."""
        size = int(self._rate * FRAME) * 2
        if len(pcm) % size:
            pcm += bytes(size - len(pcm) % size)
        for offset in range(0, len(pcm), size):
            self._events.put_nowait(AudioChunk(pcm=pcm[offset:offset + size],
                                               sample_rate=self._rate, timestamp=self._clock))
            self._clock = round(self._clock + FRAME, 6)

    def press(self, digit: str) -> None:
        self._events.put_nowait(DtmfReceived(digit=digit, at=self._clock))

    def go_quiet(self, seconds: float = 30.0) -> None:
        """The leg reports that no RTP came for `seconds`."""
        self._events.put_nowait(MediaInactive(seconds=seconds))

    def hang_up(self, reason: str = REMOTE_HANGUP) -> None:
        self._end(reason)

    def _end(self, reason: str) -> None:
        self._ended = True
        self._events.put_nowait(LegEnded(reason=reason))

    @property
    def played_pcm(self) -> bytes:
        return b"".join(self.played)
