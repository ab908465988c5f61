"""`TurnTiming`: when each stage of one turn happened, as an event and as metrics.

Marks are monotonic times, kept once (the first occurrence wins): the end of the caller's
speech (the reference), the final transcript, the commit of the turn, the LLM's first token,
the TTS's first audio, and the first audio handed to the media leg. `event()` gives the call
event (`protocols.events.CallTurn`, ms from the end of speech), `observe()` feeds:

    switchboard_turn_seconds{stage}      end_of_turn, stt_final, llm_first_token,
                                         tts_first_audio, first_audio: from end of speech
    switchboard_turn_overhead_seconds    final transcript (or the commit of a turn held for
                                         more) -> first audio handed to the leg
"""

from __future__ import annotations

import time

from prometheus_client import Histogram
from switchboard.protocols.events import CallTurn, TurnWords

_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0)
TURN_SECONDS = Histogram("switchboard_turn_seconds",
                         "Per-turn latency from the end of the caller's speech, by stage",
                         ["stage"], buckets=_BUCKETS)
TURN_OVERHEAD = Histogram("switchboard_turn_overhead_seconds",
                          "From the final transcript to the first agent audio handed to the leg",
                          buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1,
                                   0.2, 0.5, 1.0, 2.0))

STAGES = ("end_of_turn", "stt_final", "llm_first_token", "tts_first_audio", "first_audio")


class TurnTiming:
    __slots__ = ("marks", "speech_end", "turn", "wall_speech_end")

    def __init__(self, turn: int, speech_end: float, *, wall_speech_end: float | None = None
                 ) -> None:
        self.turn = turn
        self.speech_end = speech_end
        self.wall_speech_end = (wall_speech_end if wall_speech_end is not None
                                else time.time() - (time.monotonic() - speech_end))
        self.marks: dict[str, float] = {}

    @classmethod
    def restore(cls, turn: int, wall_speech_end: float, marks: dict[str, float]
                ) -> TurnTiming:
        """A timing saved with `saved_marks` (by a call actor that then crashed)."""
        speech_end = time.monotonic() - (time.time() - wall_speech_end)
        timing = cls(turn, speech_end, wall_speech_end=wall_speech_end)
        timing.marks = {stage: speech_end + ms / 1000 for stage, ms in marks.items()}
        return timing

    def saved_marks(self) -> dict[str, float]:
        return {stage: (at - self.speech_end) * 1000 for stage, at in self.marks.items()}

    def mark(self, stage: str, at: float | None = None) -> None:
        if stage not in self.marks:
            self.marks[stage] = time.monotonic() if at is None else at

    def ms(self, stage: str) -> float | None:
        at = self.marks.get(stage)
        return None if at is None else round((at - self.speech_end) * 1000, 2)

    @property
    def overhead_ms(self) -> float | None:
        """From the final transcript (or the commit, if the turn was held for more) to the
        first audio handed to the leg: the platform's and the providers' time."""
        final, audio = self.marks.get("stt_final"), self.marks.get("first_audio")
        if final is None or audio is None:
            return None
        start = max(final, self.marks.get("end_of_turn", final))
        return round((audio - start) * 1000, 3)

    def observe(self) -> None:
        for stage in STAGES:
            at = self.marks.get(stage)
            if at is not None:
                TURN_SECONDS.labels(stage).observe(max(at - self.speech_end, 0.0))
        overhead = self.overhead_ms
        if overhead is not None:
            TURN_OVERHEAD.observe(max(overhead, 0.0) / 1000)

    def event(self, *, call_id: str, tenant_id: str, caller: str, agent: str,
              interrupted: bool, dead_air: int) -> CallTurn:
        return CallTurn(
            event_id=f"{call_id}.turn.{self.turn}", call_id=call_id, tenant_id=tenant_id,
            at=self.wall_speech_end, turn=self.turn, end_of_turn_ms=self.ms("end_of_turn"),
            stt_final_ms=self.ms("stt_final"), llm_first_token_ms=self.ms("llm_first_token"),
            tts_first_audio_ms=self.ms("tts_first_audio"), first_audio_ms=self.ms("first_audio"),
            overhead_ms=self.overhead_ms, interrupted=interrupted, dead_air=dead_air,
            pii=TurnWords(caller=caller, agent=agent))
