"""`DeadAirWatchdog`: the caller is owed an answer and hears nothing: say something, recover.

Owed from the end of the caller's speech until the agent's answer has been handed to the leg
in full (or abandoned with an apology). While owed, a task checks every `tick` whether the
caller hears agent audio (`audible()`: the leg's playout is not empty); once nothing has been
heard for `threshold` (1.2 s, ARCHITECTURE.md), it asks the conversation to recover, one rung
further each time the silence comes back:

    rung 0   usually a filler phrase ("One moment."), pre-synthesized so it plays at once;
    rung 1   usually a retry: the stage that stalled runs again on the next provider;
    rung 2+  usually an apology that asks the caller to repeat; the answer is abandoned.

What each rung does for each stage (`stt`, `llm`, `tts`, `tool`, `end_of_turn`,
`turn_lost`) is the conversation's choice (`recover(stage, rung)` returns what it did).
Provider streams have their own progress deadlines (the failover wrappers), which usually
replace a stalled provider before rung 1; the watchdog is the backstop that no stall, hung
tool or lost turn can get past. The first audio of the real answer (`heard()`) starts the
ladder over. One exception: when the answer is waiting on TTS at the threshold (its text is
there, its audio is being made), rung 0 waits `grace` more (400 ms by default, so the caller
still hears something within 2 s): a filler then would land just before the answer and push
it back by the filler's length; such waits count as recovery `grace`. Every recovery is counted in `switchboard_dead_air_total{stage,recovery}`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from prometheus_client import Counter

DEAD_AIR = Counter("switchboard_dead_air_total",
                   "Times a caller owed an answer heard nothing for the dead-air threshold, "
                   "by the stage waited on and the recovery made", ["stage", "recovery"])

# Stages: what the answer was waiting for.
STT = "stt"
LLM = "llm"
TTS = "tts"
TOOL = "tool"
END_OF_TURN = "end_of_turn"
TURN_LOST = "turn_lost"

# Recoveries.
FILLER = "filler"
RETRY = "retry"
APOLOGY = "apology"
COMMIT = "commit"
NONE = "none"  # the phrase for this rung could not be played (no TTS at all)
GRACE = "grace"  # the answer's audio was being synthesized: waited `grace` before the filler


class DeadAirWatchdog:
    def __init__(self, *, threshold: float, audible: Callable[[], bool],
                 stage: Callable[[], str], recover: Callable[[str, int], str],
                 tick: float = 0.05, clock: Callable[[], float] = time.monotonic,
                 grace: float = 0.0) -> None:
        self.threshold = threshold
        self.grace = grace
        self._audible = audible
        self._stage = stage
        self._recover = recover
        self._tick = tick
        self._clock = clock
        self._owed = False
        self._wake = asyncio.Event()
        self._silent_since: float | None = None
        self._rung = 0
        self._graced = False
        self.recoveries = 0  # since the last `owe()`

    @property
    def owed(self) -> bool:
        return self._owed

    def owe(self, since: float | None = None) -> None:
        """An answer is owed; the caller has heard nothing since `since` (monotonic)."""
        if not self._owed:
            self._owed, self._rung, self.recoveries, self._graced = True, 0, 0, False
            self._silent_since = since
            self._wake.set()

    def heard(self) -> None:
        """The caller hears the answer: a later silence starts the ladder again."""
        self._rung, self._silent_since, self._graced = 0, None, False

    def settle(self) -> None:
        """Nothing is owed any more."""
        self._owed, self._silent_since = False, None
        self._wake.clear()

    async def run(self) -> None:
        """Watch until cancelled (a task owned by the call)."""
        while True:
            if not self._owed:
                await self._wake.wait()
                continue
            await asyncio.sleep(self._tick)
            if self._owed:
                self.check()

    def check(self) -> None:
        now = self._clock()
        if self._audible():
            self._silent_since = None
            return
        if self._silent_since is None:
            self._silent_since = now
            return
        silent = now - self._silent_since
        if silent < self.threshold:
            return
        stage = self._stage()
        if self._rung == 0 and stage == TTS and silent < self.threshold + self.grace:
            # The answer's text is there and its audio is being made: a filler now would
            # land just before it and push it back by its own length. Wait `grace` first
            # (a stalled TTS is also replaced by its progress deadline meanwhile).
            if not self._graced:
                self._graced = True
                DEAD_AIR.labels(stage, GRACE).inc()
            return
        self._graced = False
        rung, self._rung = self._rung, self._rung + 1
        self._silent_since = self._clock()
        recovery = self._recover(stage, rung)
        self.recoveries += 1
        DEAD_AIR.labels(stage, recovery).inc()
