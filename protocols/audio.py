"""Audio, transcripts and voice activity: what flows between media legs, VAD, STT and TTS.

All audio inside Switchboard is 16-bit signed little-endian PCM, mono. Codecs (G.711, Opus)
are decoded at the edge, so these types carry raw PCM and the rate it was sampled at.
Times are seconds on the stream's own clock (the first sample of a stream is at 0.0), which
makes them comparable across stages without wall-clock skew.

Schema evolution follows msgspec's rules: new fields get defaults, tags are never renamed or
reused, field types never change. `v` is the schema version of each struct.
"""

from __future__ import annotations

import msgspec

SAMPLE_WIDTH = 2  # bytes per PCM16 sample


class AudioFormat(msgspec.Struct, frozen=True, kw_only=True):
    """The shape of a PCM16 mono stream: what a provider produces or expects."""

    sample_rate: int
    v: int = 1

    def bytes_per(self, ms: float) -> int:
        """Size in bytes of `ms` milliseconds of audio (a whole number of samples)."""
        return int(self.sample_rate * ms / 1000) * SAMPLE_WIDTH


class AudioChunk(msgspec.Struct, frozen=True, kw_only=True, tag="audio.chunk"):
    """A piece of PCM16 mono audio; `timestamp` is the time of its first sample."""

    pcm: bytes
    sample_rate: int
    timestamp: float = 0.0
    v: int = 1

    @property
    def samples(self) -> int:
        return len(self.pcm) // SAMPLE_WIDTH

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.samples / self.sample_rate

    @property
    def end(self) -> float:
        """Time just after its last sample."""
        return self.timestamp + self.duration


class SynthesisChunk(msgspec.Struct, frozen=True, kw_only=True, tag="tts.chunk"):
    """A piece of synthesized speech.

    `timestamp` counts from the start of this synthesis. `text_offset` is how many characters
    of the input text are fully spoken once this chunk has played: when the caller barges in,
    the conversation records only what was actually heard.
    """

    pcm: bytes
    sample_rate: int
    timestamp: float = 0.0
    text_offset: int = 0
    v: int = 1

    @property
    def duration(self) -> float:
        return len(self.pcm) // SAMPLE_WIDTH / self.sample_rate


class Transcript(msgspec.Struct, frozen=True, kw_only=True, tag="stt.transcript"):
    """Recognised speech. Partials (`is_final=False`) may be revised; a final never is.

    `confidence` is in [0, 1]; `start`/`end` are on the audio stream's clock. The text is
    personal data: it never goes into a log message or an exception.
    """

    text: str
    is_final: bool
    confidence: float = 1.0
    start: float = 0.0
    end: float = 0.0
    v: int = 1


class SpeechStarted(msgspec.Struct, frozen=True, kw_only=True, tag="vad.speech_started"):
    """The VAD found speech; `at` is when it began (before the event could be decided)."""

    at: float
    v: int = 1


class SpeechEnded(msgspec.Struct, frozen=True, kw_only=True, tag="vad.speech_ended"):
    """The VAD found the end of speech; `at` is when the speech stopped.

    It is decided only after the configured silence (the hangover), so it reaches its
    listener at `at + min_silence`.
    """

    at: float
    started_at: float
    v: int = 1


VadEvent = SpeechStarted | SpeechEnded
