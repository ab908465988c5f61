"""A jitter buffer for received audio, keyed by extended RTP sequence number.

The consumer is a call actor feeding VAD and speech recognition, not a loudspeaker, so audio
is released as soon as it is in order: a frame waits only while an earlier one is missing, and
only until `target_depth` later frames have arrived (target_depth=2 bounds the extra delay to
40 ms). Then the missing frame is declared lost and comes out as a concealment marker
(`JitterFrame.payload is None`), so the actor's timeline keeps one frame per 20 ms.
A packet for a sequence number already released is late (if it was declared lost) or a
duplicate, and is dropped. Sequence numbers taken by other payload types of the same stream
(RFC 4733 events share the sequence space, RFC 4733 §2.1) are `skip`ped, not reported lost.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["JitterBuffer", "JitterBufferStatistics", "JitterFrame"]


@dataclass(frozen=True, slots=True)
class JitterFrame:
    """An in-order frame; `payload is None` marks a lost frame to conceal."""

    sequence: int
    timestamp: int | None
    payload: bytes | None
    marker: bool = False

    @property
    def lost(self) -> bool:
        return self.payload is None


@dataclass(frozen=True, slots=True)
class JitterBufferStatistics:
    received: int  # audio packets offered with put()
    delivered: int  # frames released with audio
    lost: int  # concealment markers released
    late: int  # arrived after being declared lost
    duplicates: int
    reordered: int  # arrived after a later sequence number
    resets: int  # jumps too large to fill with concealment
    buffered: int  # frames waiting now


_SKIPPED = object()  # a sequence number used by a non-audio payload type


class JitterBuffer:
    """Reorders, de-duplicates and detects loss; see the module docstring for the policy."""

    def __init__(self, *, target_depth: int = 2, max_gap: int = 50) -> None:
        if target_depth < 0 or max_gap < 1:
            raise ValueError("target_depth must be >= 0 and max_gap >= 1")
        self.target_depth = target_depth
        self.max_gap = max_gap  # 1 s at 20 ms: a larger jump is a new stream, not loss
        self._frames: dict[int, JitterFrame | object] = {}
        self._ready: deque[JitterFrame] = deque()
        self._next: int | None = None
        self._highest: int | None = None
        self._recently_lost: deque[int] = deque(maxlen=max_gap)
        self._received = self._delivered = self._lost = self._late = 0
        self._duplicates = self._reordered = self._resets = 0

    def put(self, sequence: int, timestamp: int, payload: bytes, marker: bool = False) -> None:
        """Offer an audio packet by extended sequence number."""
        self._received += 1
        self._store(sequence, JitterFrame(sequence, timestamp, payload, marker))

    def take_next(self, sequence: int) -> bool:
        """The common case, without buffering: `sequence` is the next one due and nothing is
        held, so the caller releases it at once (counted as received and delivered)."""
        if sequence != self._next or self._frames or self._ready:
            return False
        self._next = sequence + 1
        self._highest = sequence
        self._received += 1
        self._delivered += 1
        return True

    def skip(self, sequence: int) -> None:
        """Mark `sequence` as used by another payload type of the same SSRC (e.g. DTMF)."""
        self._store(sequence, _SKIPPED)

    def _store(self, sequence: int, entry: JitterFrame | object) -> None:
        if self._next is None:
            self._next = sequence
        if sequence < self._next:
            if entry is not _SKIPPED:
                if sequence in self._recently_lost:
                    self._late += 1
                else:
                    self._duplicates += 1
            return
        if sequence in self._frames:
            self._duplicates += entry is not _SKIPPED
            return
        if sequence - self._next > self.max_gap:
            # A jump of more than max_gap: release what we hold and restart at the new number.
            self._release_all()
            self._resets += 1
            self._next = sequence
        if self._highest is not None and sequence < self._highest:
            self._reordered += 1
        else:
            self._highest = sequence
        self._frames[sequence] = entry

    def pop(self) -> JitterFrame | None:
        """The next frame in order, a concealment marker, or None when nothing is due yet."""
        if self._ready:
            return self._ready.popleft()
        return self._advance(force=False)

    def drain(self) -> list[JitterFrame]:
        """Release everything held now, concealing gaps (the stream paused or ended)."""
        self._release_all()
        out = list(self._ready)
        self._ready.clear()
        return out

    def _release_all(self) -> None:
        while self._frames:
            frame = self._advance(force=True)
            if frame is not None:
                self._ready.append(frame)

    def _advance(self, *, force: bool) -> JitterFrame | None:
        while self._next is not None:
            entry = self._frames.pop(self._next, None)
            if entry is _SKIPPED:
                self._next += 1
                continue
            if isinstance(entry, JitterFrame):
                self._next += 1
                self._delivered += 1
                return entry
            if not self._frames or (not force and len(self._frames) <= self.target_depth):
                return None
            lost = JitterFrame(self._next, None, None)
            self._recently_lost.append(self._next)
            self._lost += 1
            self._next += 1
            return lost
        return None

    def reset(self) -> None:
        """Forget everything (new SSRC); statistics are kept."""
        self._frames.clear()
        self._ready.clear()
        self._next = self._highest = None
        self._recently_lost.clear()

    def statistics(self) -> JitterBufferStatistics:
        return JitterBufferStatistics(
            received=self._received,
            delivered=self._delivered,
            lost=self._lost,
            late=self._late,
            duplicates=self._duplicates,
            reordered=self._reordered,
            resets=self._resets,
            buffered=len(self._frames) + len(self._ready),
        )
