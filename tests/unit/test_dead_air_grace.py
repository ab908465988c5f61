"""The dead-air watchdog's grace for an answer whose audio is being synthesized
(actors/dead_air.py): no filler just before the answer, but still one by 1.6 s."""

from __future__ import annotations

import pytest
from switchboard.actors.dead_air import DEAD_AIR, GRACE, LLM, TTS, DeadAirWatchdog

pytestmark = pytest.mark.unit


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def watchdog(stage: str, clock: Clock, recoveries: list[tuple[str, int]]) -> DeadAirWatchdog:
    def recover(stage: str, rung: int) -> str:
        recoveries.append((stage, rung))
        return "filler"

    return DeadAirWatchdog(threshold=1.2, grace=0.4, audible=lambda: False,
                           stage=lambda: stage, recover=recover, clock=clock)


def at(dog: DeadAirWatchdog, clock: Clock, now: float) -> None:
    clock.now = now
    dog.check()


def test_an_answer_in_synthesis_gets_the_grace_then_the_filler() -> None:
    clock, recoveries = Clock(), []
    dog = watchdog(TTS, clock, recoveries)
    graced = DEAD_AIR.labels(TTS, GRACE)._value.get()
    dog.owe(since=0.0)
    at(dog, clock, 1.25)
    at(dog, clock, 1.5)
    assert recoveries == []
    assert DEAD_AIR.labels(TTS, GRACE)._value.get() == graced + 1  # counted once
    at(dog, clock, 1.61)
    assert recoveries == [(TTS, 0)]
    # Silent again after the filler: the next rung comes at the plain threshold.
    at(dog, clock, 1.61 + 1.25)
    assert recoveries == [(TTS, 0), (TTS, 1)]


def test_other_stages_get_the_filler_at_the_threshold() -> None:
    clock, recoveries = Clock(), []
    dog = watchdog(LLM, clock, recoveries)
    dog.owe(since=0.0)
    at(dog, clock, 1.25)
    assert recoveries == [(LLM, 0)]


def test_the_answer_heard_inside_the_grace_needs_no_filler() -> None:
    clock, recoveries = Clock(), []
    audible = [False]
    dog = DeadAirWatchdog(threshold=1.2, grace=0.4, audible=lambda: audible[0],
                          stage=lambda: TTS, recover=lambda s, r: recoveries.append((s, r)) or "",
                          clock=clock)
    dog.owe(since=0.0)
    at(dog, clock, 1.3)
    audible[0] = True
    at(dog, clock, 1.4)
    dog.heard()
    dog.settle()
    assert recoveries == []
    # The next answer owed gets its own grace, counted again.
    graced = DEAD_AIR.labels(TTS, GRACE)._value.get()
    audible[0] = False
    dog.owe(since=10.0)
    at(dog, clock, 11.3)
    assert recoveries == []
    assert DEAD_AIR.labels(TTS, GRACE)._value.get() == graced + 1
