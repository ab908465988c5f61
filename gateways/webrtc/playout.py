"""`Playout`: the agent's audio waiting to be sent, in whole 20 ms frames, cleared at once.

A media leg owns one; its sender (an aiortc track, a LiveKit audio source) pops one frame per
20 ms slot and sends silence when `pop()` gives None, so the far end hears a live line and
the agent's audio starts at the next slot after `play`. Barge-in is `clear()`: everything
queued goes, the next slot is silence (within one frame, ARCHITECTURE.md's budget).

Pure data structure: no clock, no I/O, no codec, so the WebRTC and LiveKit legs share it and
tests drive it frame by frame.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from switchboard.protocols.media import PlayoutFull


@dataclass(frozen=True, slots=True)
class PlayoutStatistics:
    frames_played: int       # frames of agent audio handed to the sender
    seconds_cleared: float   # agent audio dropped by barge-in
    queued_seconds: float


class Playout:
    def __init__(self, sample_rate: int = 16000, *, frame_ms: int = 20,
                 max_seconds: float = 120.0) -> None:
        self.sample_rate = sample_rate
        self.frame_bytes = sample_rate * frame_ms // 1000 * 2
        self._frame_seconds = frame_ms / 1000
        self._max_frames = int(max_seconds * 1000 / frame_ms)
        self._frames: deque[bytes] = deque()
        self._partial = b""
        self._played = 0
        self._cleared = 0.0

    def play(self, pcm: bytes) -> None:
        """Queue PCM16 mono at `sample_rate`, any length; raise `PlayoutFull` past the limit."""
        data = self._partial + pcm if self._partial else pcm
        size = self.frame_bytes
        whole = len(data) // size
        if len(self._frames) + whole > self._max_frames:
            raise PlayoutFull(f"more than {self._max_frames * self._frame_seconds:.0f} s of "
                              "agent audio queued; clear the playout or wait")
        view = memoryview(data)
        self._frames.extend(bytes(view[i * size:(i + 1) * size]) for i in range(whole))
        self._partial = bytes(view[whole * size:])

    def pop(self) -> bytes | None:
        """The next frame to send, or None when the agent is silent (send silence)."""
        if self._frames:
            self._played += 1
            return self._frames.popleft()
        if self._partial:
            frame = self._partial + bytes(self.frame_bytes - len(self._partial))
            self._partial = b""
            self._played += 1
            return frame
        return None

    def clear(self) -> float:
        """Drop everything queued; return the seconds dropped."""
        dropped = self.queued
        self._frames.clear()
        self._partial = b""
        self._cleared += dropped
        return dropped

    @property
    def queued(self) -> float:
        """Seconds of agent audio not yet popped."""
        return (len(self._frames) * self.frame_bytes + len(self._partial)) / 2 / self.sample_rate

    def statistics(self) -> PlayoutStatistics:
        return PlayoutStatistics(frames_played=self._played, seconds_cleared=self._cleared,
                                 queued_seconds=self.queued)
