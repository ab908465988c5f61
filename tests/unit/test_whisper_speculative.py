"""Whisper's speculative decode (providers/stt/whisper.py): the decode starts 100 ms into the
VAD's 300 ms hangover, is the final when the caller stays quiet, and is dropped when they go
on. A stand-in model records when each decode began (on the stream's clock) and how much
audio it got, so nothing here depends on the machine's speed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from switchboard.protocols.audio import AudioChunk, Transcript
from switchboard.providers.fakes import FakeVad
from switchboard.providers.stt.whisper import WhisperSpeechToText

pytestmark = pytest.mark.unit

RATE = 16000
FRAME = 320


@dataclass
class Segment:
    text: str
    avg_logprob: float = 0.0


class StandInModel:
    """`transcribe` like faster-whisper's: the text says how many seconds of audio it got."""

    def __init__(self, decode_seconds: float) -> None:
        self.decode_seconds = decode_seconds
        self.began: list[float] = []  # stream time of the last chunk fed when a decode began
        self.fed = 0.0

    def transcribe(self, audio: np.ndarray, **_: Any) -> tuple[list[Segment], None]:
        self.began.append(self.fed)
        time.sleep(self.decode_seconds)
        return [Segment(text=f"{len(audio) / RATE:.2f}s")], None


def speech(*parts: tuple[str, float]) -> list[AudioChunk]:
    """Chunks of 'voice' (loud) and 'quiet' (silence) parts, in seconds."""
    pcm = np.concatenate([np.full(int(seconds * RATE), 3000 if kind == "voice" else 0, np.int16)
                          for kind, seconds in parts])
    return [AudioChunk(pcm=pcm[i : i + FRAME].tobytes(), sample_rate=RATE, timestamp=i / RATE)
            for i in range(0, len(pcm), FRAME)]


async def run(stt: WhisperSpeechToText, model: StandInModel, chunks: list[AudioChunk]
              ) -> list[tuple[Transcript, float]]:
    """Feed `chunks` at real-time pace; each final with the stream time it was yielded at."""
    async def audio() -> AsyncIterator[AudioChunk]:
        for chunk in chunks:
            model.fed = chunk.end
            yield chunk
            await asyncio.sleep(0.02)

    return [(t, model.fed) async for t in stt.stream(audio())]


def make(model: StandInModel, speculate_ms: float | None = 100.0) -> WhisperSpeechToText:
    return WhisperSpeechToText(model, vad=lambda rate: FakeVad(rate),  # type: ignore[arg-type]
                               min_silence_ms=300.0, speculate_ms=speculate_ms)


async def test_the_decode_starts_inside_the_hangover_and_is_the_final() -> None:
    model = StandInModel(decode_seconds=0.25)
    stt = make(model)
    try:
        finals = await run(stt, model, speech(("quiet", 0.3), ("voice", 1.0), ("quiet", 1.0)))
    finally:
        stt.close()
    assert len(finals) == 1 and len(model.began) == 1
    transcript, _ = finals[0]
    assert transcript.end == pytest.approx(1.3, abs=0.021)  # the speech's own end
    # Began ~100 ms into the quiet, not after the 300 ms hangover.
    assert model.began[0] - transcript.end == pytest.approx(0.1, abs=0.03)


async def test_without_speculation_the_decode_waits_for_the_hangover() -> None:
    model = StandInModel(decode_seconds=0.05)
    stt = make(model, speculate_ms=None)
    try:
        await run(stt, model, speech(("quiet", 0.3), ("voice", 1.0), ("quiet", 1.0)))
    finally:
        stt.close()
    assert len(model.began) == 1
    assert model.began[0] - 1.3 >= 0.3 - 0.001


async def test_a_caller_who_goes_on_gets_one_final_for_the_whole_utterance() -> None:
    model = StandInModel(decode_seconds=0.05)
    stt = make(model)
    try:
        # A 200 ms pause: long enough to speculate, too short to end the utterance.
        finals = await run(stt, model, speech(("quiet", 0.3), ("voice", 0.6), ("quiet", 0.2),
                                              ("voice", 0.6), ("quiet", 1.0)))
    finally:
        stt.close()
    assert len(model.began) == 2  # the dropped speculation, then the real one
    assert [t.text for t, _ in finals] == [finals[0][0].text]
    # The final heard both phrases (pre-roll + 1.4 s of speech and pause + 100 ms of quiet).
    heard = float(finals[0][0].text.rstrip("s"))
    assert heard >= 1.4
    assert finals[0][0].end == pytest.approx(1.7, abs=0.021)
