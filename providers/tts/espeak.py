"""eSpeak NG (rule-based formant synthesis): the tiny, robotic, always-available TTS fallback.

From the PyPI wheel `espeakng-loader==0.2.4`, which ships `libespeak-ng.so` (1.52) and its
`espeak-ng-data`, so no apt package is needed; driven through ctypes. espeak-ng is
GPL-3.0-or-later; it has no model weights. Renders a sentence in about a millisecond, at
22050 Hz (resampled by libsoxr on request).

libespeak-ng keeps one global engine per process (one voice, one callback), so every
`EspeakTextToSpeech` in the process shares one engine behind one worker thread.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from switchboard.protocols.audio import AudioFormat, SynthesisChunk
from switchboard.providers.errors import ModelNotInstalled, ProviderRejected, ProviderUnavailable
from switchboard.providers.tts.segment import sentence_chunks, split_sentences, to_pcm16

PACKAGE = "espeakng-loader==0.2.4"
_SYNCHRONOUS = 2  # AUDIO_OUTPUT_SYNCHRONOUS: espeak_Synth returns when the audio is done
_CHARS_UTF8 = 1
_RATE_PARAMETER = 1  # espeakRATE, words per minute
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Engine:
    """The process's one libespeak-ng engine; used only from its worker thread."""

    _instance: _Engine | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError:
            raise ModelNotInstalled(
                f"eSpeak NG is not installed; run `pip install {PACKAGE}`", provider="espeak"
            ) from None
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        rate = lib.espeak_Initialize(_SYNCHRONOUS, 60, espeakng_loader.get_data_path().encode(), 0)
        if rate <= 0:
            raise ProviderUnavailable(
                "libespeak-ng failed to initialise (data files missing?); reinstall "
                f"`{PACKAGE}`",
                provider="espeak",
            )
        self.lib = lib
        self.rate = rate
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak")
        self._buffer: list[bytes] = []
        self._callback = _CALLBACK(self._collect)  # kept referenced: C holds the pointer
        lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> _Engine:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _collect(self, wav: Any, samples: int, _events: int) -> int:
        if wav and samples > 0:
            self._buffer.append(ctypes.string_at(wav, samples * 2))
        return 0

    def render(self, text: str, voice: str, words_per_minute: int) -> bytes:
        """Runs on the worker thread: the engine's global state is not shared with others."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ProviderRejected(
                f"eSpeak NG has no voice {voice!r}; use a name such as 'en-us' or 'en-gb'",
                provider="espeak",
            )
        self.lib.espeak_SetParameter(_RATE_PARAMETER, words_per_minute, 0)
        data = text.encode()
        self._buffer = []
        status = self.lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
        if status != 0:
            raise ProviderUnavailable(
                f"eSpeak NG failed with status {status}; fail over to another TTS provider",
                provider="espeak",
            )
        return b"".join(self._buffer)


class EspeakTextToSpeech:
    """Implements `providers.base.TextToSpeech` with libespeak-ng."""

    def __init__(
        self, *, voice: str = "en-us", words_per_minute: int = 165,
        sample_rate: int | None = None, frame_ms: float = 20.0,
    ) -> None:
        self._engine = _Engine.get()
        self._voice = voice
        self._wpm = words_per_minute
        self._format = AudioFormat(sample_rate=sample_rate or self._engine.rate)
        self._frame_ms = frame_ms

    @property
    def format(self) -> AudioFormat:
        return self._format

    def _render(self, sentence: str) -> bytes:
        pcm = self._engine.render(sentence, self._voice, self._wpm)
        if self._format.sample_rate == self._engine.rate:
            return pcm
        audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        return to_pcm16(audio, self._engine.rate, self._format.sample_rate)

    async def synthesize(self, text: str) -> AsyncIterator[SynthesisChunk]:
        loop = asyncio.get_running_loop()
        rate = self._format.sample_rate
        timestamp, spoken = 0.0, 0
        for sentence, end in split_sentences(text):
            pcm = await loop.run_in_executor(self._engine.worker, self._render, sentence)
            chunks = sentence_chunks(
                pcm, rate, start=timestamp, spoken=spoken, end=end, frame_ms=self._frame_ms
            )
            for chunk in chunks:
                yield chunk
            if chunks:
                timestamp = chunks[-1].timestamp + chunks[-1].duration
            spoken = end
