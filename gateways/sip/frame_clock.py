"""`FrameClock`: one 20 ms clock per event loop that paces every RTP session on that loop.

A pacer task per session costs a timer, a future and a task step per call every 20 ms, and
hundreds of them waking independently make each other late. One clock per loop instead: it
splits the 20 ms frame into `PHASES` phases of 2 ms, puts each new session in the phase with
the fewest sessions (so a node's sends, and the far ends' replies, are spread over the frame
rather than bunched in a few bursts that hold up everything queued behind them), and at each
phase's absolute deadline (`loop.call_at`, so scheduling error never accumulates) sends one
frame for every session of that phase, in one plain callback. Empty phases are not woken.

A frame is late when it leaves more than `LATE_AFTER` (5 ms) after its slot. When the loop
stalled for more than `SKIP_AFTER` (5 frames), the slots missed are skipped, not sent in a
burst: every session advances its RTP timestamp over them (RFC 3550 §5.1), and they count as
`skipped_slots`. A session whose slot raises is failed (`RtpSession` hands the error to its
owner); the others go on. The clock runs while it has sessions and stops with the last one.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from typing import Protocol

__all__ = ["FRAME_SECONDS", "FrameClock", "FrameClockStatistics", "Paced"]

FRAME_SECONDS = 0.02
PHASES = 10
PHASE_SECONDS = FRAME_SECONDS / PHASES
LATE_AFTER = 0.005
SKIP_AFTER = 5 * FRAME_SECONDS


class Paced(Protocol):
    """What the clock drives (implemented by `RtpSession`)."""

    def _on_slot(self, now: float, late: bool) -> None:
        """Send this slot's frame; `late`: more than 5 ms after the slot's deadline."""

    def _skip_slots(self, slots: int) -> None:
        """The loop stalled: `slots` slots passed unsent."""

    def _fail(self, exc: Exception) -> None:
        """`_on_slot` raised: stop and hand `exc` to the owner."""


@dataclass(frozen=True, slots=True)
class FrameClockStatistics:
    sessions: int
    frames: int  # slots served, one frame per session each
    late_frames: int  # served more than LATE_AFTER after the slot's deadline
    skipped_slots: int  # session slots never served because the loop stalled
    max_lateness: float  # seconds, the worst slot served


_clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FrameClock] = (
    weakref.WeakKeyDictionary()
)


class FrameClock:
    """See the module docstring; `FrameClock.current()` is the running loop's clock."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._phases: list[dict[Paced, None]] = [{} for _ in range(PHASES)]
        self._where: dict[Paced, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._tick = 0  # the phase served next is _tick % PHASES
        self._deadline = 0.0
        self._frames = self._late = self._skipped = 0
        self._max_lateness = 0.0

    @classmethod
    def current(cls) -> FrameClock:
        loop = asyncio.get_running_loop()
        clock = _clocks.get(loop)
        if clock is None:
            clock = _clocks[loop] = cls(loop)
        return clock

    def add(self, session: Paced) -> None:
        """Pace `session` from its phase's next deadline on."""
        if session in self._where:
            return
        phase = min(range(PHASES), key=lambda p: len(self._phases[p]))
        self._phases[phase][session] = None
        self._where[session] = phase
        if self._timer is None:
            self._tick = 0
            self._deadline = self._loop.time()
            self._timer = self._loop.call_at(self._deadline, self._serve)

    def remove(self, session: Paced) -> None:
        """Stop pacing `session` (idempotent)."""
        phase = self._where.pop(session, None)
        if phase is not None:
            del self._phases[phase][session]
        if not self._where and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def __len__(self) -> int:
        return len(self._where)

    def statistics(self) -> FrameClockStatistics:
        return FrameClockStatistics(sessions=len(self._where), frames=self._frames,
                                    late_frames=self._late, skipped_slots=self._skipped,
                                    max_lateness=self._max_lateness)  # fmt: skip

    def _serve(self) -> None:
        time = self._loop.time
        behind = time() - self._deadline
        if behind > SKIP_AFTER:
            # The loop stalled: skip whole frames so every phase is on time again.
            skipped = int(behind / FRAME_SECONDS)
            self._skipped += skipped * len(self._where)
            for session in list(self._where):
                session._skip_slots(skipped)
            self._deadline += skipped * FRAME_SECONDS
        deadline = self._deadline
        sessions = self._phases[self._tick % PHASES]
        late = served = 0
        where = self._where
        for session in list(sessions):
            if session not in where:
                continue  # removed by an earlier session's callback in this same slot
            served += 1
            now = time()
            lateness = now - deadline
            is_late = lateness > LATE_AFTER
            late += is_late
            self._max_lateness = max(self._max_lateness, lateness)
            try:
                session._on_slot(now, is_late)
            except Exception as exc:  # noqa: BLE001 - a bug in one session stops that session only
                self.remove(session)
                session._fail(exc)
        self._frames += served
        self._late += late
        if not self._where:
            self._timer = None
            return
        # On to the next phase that has sessions (at most one frame ahead).
        step = 1
        while not self._phases[(self._tick + step) % PHASES]:
            step += 1
        self._tick += step
        self._deadline += step * PHASE_SECONDS
        self._timer = self._loop.call_at(self._deadline, self._serve)
