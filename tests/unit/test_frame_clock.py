"""FrameClock: one 20 ms clock per loop paces every RTP session, spread over phases."""

from __future__ import annotations

import asyncio
import time

import pytest
from switchboard.gateways.sip.frame_clock import FRAME_SECONDS, PHASES, FrameClock

pytestmark = pytest.mark.unit


class Session:
    def __init__(self, clock: FrameClock, *, broken: bool = False) -> None:
        self.clock = clock
        self.slots: list[float] = []
        self.late = 0
        self.skipped = 0
        self.broken = broken
        self.failed: Exception | None = None

    def _on_slot(self, now: float, late: bool) -> None:
        if self.broken:
            raise RuntimeError("encoder bug")
        self.slots.append(now)
        self.late += late

    def _skip_slots(self, slots: int) -> None:
        self.skipped += slots

    def _fail(self, exc: Exception) -> None:
        self.failed = exc


async def test_each_session_gets_one_slot_per_frame_on_its_own_phase() -> None:
    clock = FrameClock.current()
    sessions = [Session(clock) for _ in range(2 * PHASES)]
    for s in sessions:
        clock.add(s)
    await asyncio.sleep(0.5)
    for s in sessions:
        clock.remove(s)
    for s in sessions:
        assert 20 <= len(s.slots) <= 27  # 25 frames in 0.5 s, give or take a loaded machine
        gaps = [b - a for a, b in zip(s.slots, s.slots[1:], strict=False)]
        assert sorted(gaps)[len(gaps) // 2] == pytest.approx(FRAME_SECONDS, abs=0.003)
    # Two sessions per phase: their slots fall in the same tick; the phases are spread over
    # the frame, so the first slots of the sessions cover the whole 20 ms.
    offsets = sorted((s.slots[2] - sessions[0].slots[2]) % FRAME_SECONDS for s in sessions)
    assert offsets[-1] - offsets[0] > FRAME_SECONDS / 2
    stats = clock.statistics()
    assert stats.sessions == 0 and stats.frames == sum(len(s.slots) for s in sessions)


async def test_a_stalled_loop_skips_whole_frames_for_every_session() -> None:
    clock = FrameClock.current()
    a, b = Session(clock), Session(clock)
    clock.add(a)
    clock.add(b)
    await asyncio.sleep(0.1)
    time.sleep(0.3)  # noqa: ASYNC251 - block the loop, as a long callback would
    await asyncio.sleep(0.1)
    clock.remove(a)
    clock.remove(b)
    for s in (a, b):
        assert 12 <= s.skipped <= 16  # 300 ms of 20 ms frames, not sent in a burst
    stats = clock.statistics()
    assert stats.skipped_slots == a.skipped + b.skipped


async def test_a_session_that_raises_is_failed_and_the_others_go_on() -> None:
    clock = FrameClock.current()
    good, bad = Session(clock), Session(clock, broken=True)
    clock.add(bad)
    clock.add(good)
    await asyncio.sleep(0.1)
    assert isinstance(bad.failed, RuntimeError)
    assert len(clock) == 1
    count = len(good.slots)
    await asyncio.sleep(0.1)
    assert len(good.slots) > count
    clock.remove(good)


async def test_the_clock_sleeps_without_sessions() -> None:
    clock = FrameClock.current()
    s = Session(clock)
    clock.add(s)
    clock.add(s)  # idempotent
    await asyncio.sleep(0.05)
    clock.remove(s)
    clock.remove(s)  # idempotent
    assert clock._timer is None
    count = len(s.slots)
    await asyncio.sleep(0.05)
    assert len(s.slots) == count


async def test_one_clock_per_loop() -> None:
    assert FrameClock.current() is FrameClock.current()
