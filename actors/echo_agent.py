"""`EchoAgent`: plays the greeting WAV, then plays back what the caller said once they stop.

The demo brain (`brain: echo`) and the benchmark's agent: it exercises the whole media path
(answer, greeting, VAD, end of turn, playback, barge-in) with no STT, LLM or TTS. Speech is
cut by the VAD's events: from `SpeechStarted.at` (a pre-roll keeps the frames the VAD needed
before deciding) to `SpeechEnded.at` (the silence hangover is not played back). Speaking over
the agent clears its playout at once, as a real agent's barge-in does.
"""

from __future__ import annotations

import wave
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
from switchboard.actors.agent import CallControl, CallInfo, Greeting, VoiceActivity
from switchboard.protocols.audio import AudioChunk, SpeechEnded, SpeechStarted
from switchboard.protocols.media import MediaError
from switchboard.protocols.tenants import AgentConfig

_PREROLL_EXTRA_S = 0.1


class GreetingAudio:
    """A WAV (PCM16 mono) loaded once, converted to each leg rate once and cached."""

    def __init__(self, pcm: bytes, sample_rate: int) -> None:
        self._by_rate = {sample_rate: pcm}
        self._rate = sample_rate

    @classmethod
    def load(cls, path: str | Path) -> GreetingAudio:
        with wave.open(str(path), "rb") as wav:
            if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
                raise ValueError(f"greeting {path}: need a PCM16 mono WAV "
                                 f"(got {wav.getnchannels()} channels, "
                                 f"{8 * wav.getsampwidth()}-bit)")
            return cls(wav.readframes(wav.getnframes()), wav.getframerate())

    def at_rate(self, rate: int) -> bytes:
        pcm = self._by_rate.get(rate)
        if pcm is None:
            # Linear interpolation, once per rate: fine for 8 <-> 16 kHz speech prompts; the
            # TTS path resamples with soxr (providers/tts/segment.py).
            src = np.frombuffer(self._by_rate[self._rate], dtype=np.int16).astype(np.float32)
            count = int(len(src) * rate / self._rate)
            pcm = np.interp(np.arange(count) * (self._rate / rate), np.arange(len(src)),
                            src).astype(np.int16).tobytes()
            self._by_rate[rate] = pcm
        return pcm


class EchoBrain:
    """The `AgentFactory` for `brain: echo`; caches greeting WAVs across calls."""

    def __init__(self, *, max_echo_seconds: float = 10.0) -> None:
        self.max_echo_seconds = max_echo_seconds
        self._greetings: dict[str, GreetingAudio] = {}

    def greeting(self, path: str) -> GreetingAudio | None:
        if not path:
            return None
        audio = self._greetings.get(path)
        if audio is None:
            audio = self._greetings[path] = GreetingAudio.load(path)
        return audio

    def __call__(self, agent: AgentConfig) -> EchoAgent:
        return EchoAgent(self.greeting(agent.greeting_audio),
                         max_echo_seconds=self.max_echo_seconds)


class EchoAgent:
    def __init__(self, greeting: GreetingAudio | None, *, max_echo_seconds: float = 10.0) -> None:
        self._greeting = greeting
        self._max_echo_seconds = max_echo_seconds
        self._control: CallControl | None = None
        self._preroll: deque[AudioChunk] = deque()
        self._preroll_s = 0.0
        self._utterance: list[AudioChunk] | None = None
        self._utterance_s = 0.0

    async def on_start(self, call: CallInfo, control: CallControl) -> Greeting | None:
        self._control = control
        self._preroll = deque(maxlen=1 + int((call.agent.vad.min_speech_ms / 1000
                                              + _PREROLL_EXTRA_S) / 0.02))
        if self._greeting is None:
            return None
        return _once(self._greeting.at_rate(call.sample_rate))

    def on_audio(self, frame: AudioChunk, vad: VoiceActivity) -> None:
        event = vad.event
        if isinstance(event, SpeechStarted):
            assert self._control is not None
            if self._control.playout_queued > 0:
                self._control.clear_playout()  # the caller talks over us: stop at once
            self._utterance = [c for c in self._preroll if c.end > event.at]
            self._utterance_s = sum(c.duration for c in self._utterance)
            self._preroll.clear()
        if self._utterance is None:
            self._preroll.append(frame)
            return
        if self._utterance_s < self._max_echo_seconds:
            self._utterance.append(frame)
            self._utterance_s += frame.duration
        if isinstance(event, SpeechEnded):
            spoken = b"".join(c.pcm for c in self._utterance if c.timestamp < event.at)
            self._utterance = None
            if spoken and self._control is not None:
                try:
                    self._control.play(spoken)
                except MediaError:
                    pass  # playout full or leg closing: this echo is dropped, the call goes on

    def on_dtmf(self, digit: str) -> None:
        """Keys are not echoed: the echo agent only answers speech."""

    async def on_end(self, reason: str) -> None:
        self._utterance = None
        self._preroll.clear()


async def _once(pcm: bytes) -> AsyncIterator[bytes]:
    yield pcm
