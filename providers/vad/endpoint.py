"""Turns a VAD's per-frame probabilities into speech-started / speech-ended events.

Two thresholds with hysteresis (enter speech at `threshold`, leave below `threshold - 0.15`,
as Silero's own iterator does) stop a probability hovering near one value from flapping.
`min_speech_ms` ignores clicks and blips; `min_silence_ms` is the hangover: how long the
caller must be quiet before the utterance counts as ended. It is the main term of end-of-turn
latency (ARCHITECTURE.md budgets 300 ms), so it is configurable per agent.
"""

from __future__ import annotations

from switchboard.protocols.audio import AudioChunk, SpeechEnded, SpeechStarted, VadEvent
from switchboard.providers.base import Vad


class Endpointer:
    """Feed it the stream's chunks in order; it returns an event when the state flips."""

    def __init__(
        self,
        vad: Vad,
        *,
        threshold: float = 0.5,
        min_speech_ms: float = 90.0,
        min_silence_ms: float = 300.0,
    ) -> None:
        self.vad = vad
        self._on = threshold
        self._off = max(threshold - 0.15, 0.01)
        self._min_speech = min_speech_ms / 1000
        self._min_silence = min_silence_ms / 1000
        self.in_speech = False
        self._voiced_since: float | None = None
        self._quiet_since: float | None = None
        self._started_at = 0.0

    @property
    def quiet_since(self) -> float | None:
        """In speech, since when the caller has been quiet (the hangover running), else None."""
        return self._quiet_since if self.in_speech else None

    def feed(self, chunk: AudioChunk) -> VadEvent | None:
        return self.decide(chunk, self.vad.speech_probability(chunk.pcm))

    def decide(self, chunk: AudioChunk, probability: float) -> VadEvent | None:
        """`feed` for a probability computed elsewhere (a batched VAD)."""
        if not self.in_speech:
            if probability < self._on:
                self._voiced_since = None
                return None
            if self._voiced_since is None:
                self._voiced_since = chunk.timestamp
            if chunk.end - self._voiced_since < self._min_speech:
                return None
            self.in_speech, self._quiet_since = True, None
            self._started_at = self._voiced_since
            return SpeechStarted(at=self._started_at)
        if probability >= self._off:
            self._quiet_since = None
            return None
        if self._quiet_since is None:
            self._quiet_since = chunk.timestamp
        if chunk.end - self._quiet_since < self._min_silence:
            return None
        self.in_speech, self._voiced_since = False, None
        return SpeechEnded(at=self._quiet_since, started_at=self._started_at)
