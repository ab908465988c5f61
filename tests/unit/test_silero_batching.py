"""Silero's silence gate and cross-call batching (providers/vad/silero.py) decide exactly as a
lone, ungated model would on real speech, while running the model far less often."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from switchboard.actors.agent import VoiceActivity
from switchboard.actors.call_media import listen
from switchboard.protocols.audio import AudioChunk
from switchboard.protocols.media import LegEnded, MediaEvent
from switchboard.protocols.tenants import VadSettings
from switchboard.providers.vad.endpoint import Endpointer
from switchboard.providers.vad.silero import GATE_RESET_WINDOWS, SileroVadModel

pytestmark = pytest.mark.unit

GREETING = Path(__file__).resolve().parents[2] / "configs" / "audio" / "echo-greeting.wav"
RATE = 8000
FRAME = 160  # 20 ms


class CountingModel(SileroVadModel):
    """The real model, counting its runs and the windows they carried."""

    runs = 0
    windows = 0

    def run_batch(self, windows: np.ndarray, states: np.ndarray, sample_rate: int
                  ) -> tuple[np.ndarray, np.ndarray]:
        self.runs += 1
        self.windows += windows.shape[0]
        return super().run_batch(windows, states, sample_rate)


def load(gate_dbov: float | None = -60.0) -> CountingModel:
    plain = SileroVadModel.load(gate_dbov=gate_dbov)
    return CountingModel(plain._session, gate_dbov=gate_dbov)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """Speech, digital silence, speech, a quiet line (-70 dBov noise), speech: 8 kHz PCM16."""
    with wave.open(str(GREETING), "rb") as wav:
        voice = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)[: 3 * RATE]
    rng = np.random.default_rng(7)
    hiss = (rng.standard_normal(RATE) * 32768 * 10 ** (-70 / 20)).astype(np.int16)
    return np.concatenate([voice, np.zeros(RATE, np.int16), voice, hiss, voice])


def frames(pcm: np.ndarray) -> list[bytes]:
    return [pcm[i : i + FRAME].tobytes() for i in range(0, len(pcm) - FRAME + 1, FRAME)]


def chunk(pcm: bytes, index: int) -> AudioChunk:
    return AudioChunk(pcm=pcm, sample_rate=RATE, timestamp=index * 0.02)


def decisions(model: SileroVadModel, pcm: np.ndarray) -> list[tuple[str, float]]:
    endpointer = Endpointer(model.open(RATE))
    events = [endpointer.feed(chunk(frame, i)) for i, frame in enumerate(frames(pcm))]
    return [(type(e).__name__, round(e.at, 2)) for e in events if e is not None]


def test_the_gate_skips_silence_and_decides_as_the_ungated_model(speech: np.ndarray) -> None:
    ungated, gated = load(None), load()
    reference = decisions(ungated, speech)
    assert [kind for kind, _ in reference].count("SpeechStarted") >= 3, reference
    got = decisions(gated, speech)
    assert [kind for kind, _ in got] == [kind for kind, _ in reference]
    # The same moments, within two 20 ms frames (the state restarts after a long silence).
    assert all(abs(a - b) <= 0.041 for (_, a), (_, b) in zip(got, reference, strict=True))
    # The model ran on the speech only: the 2 s of silence and quiet line cost nothing
    # (the greeting's own pauses are digital silence too).
    total = len(speech) // 256
    assert ungated.windows == total
    assert gated.windows <= total - 2 * RATE // 256


def test_a_quiet_gap_restarts_the_stream_state() -> None:
    model = load()
    vad = model.open(RATE)
    loud = (np.sin(np.arange(256) / 3) * 8000).astype(np.int16).tobytes()
    vad.speech_probability(loud)
    assert model.windows == 1 and np.any(vad._state)
    for _ in range(GATE_RESET_WINDOWS):
        assert vad.speech_probability(bytes(512)) == 0.0
    assert model.windows == 1 and not np.any(vad._state) and not np.any(vad._buf[0, :32])


async def test_streams_share_model_runs_and_get_the_lone_runs_probabilities(
        speech: np.ndarray) -> None:
    lone, shared = load(), load()
    streams = 12
    clips = [frames(np.roll(speech, 977 * n)) for n in range(streams)]
    expected: list[list[float]] = []
    for clip in clips:
        vad = lone.open(RATE)
        expected.append([vad.speech_probability(f) for f in clip])

    async def stream(n: int) -> list[float]:
        vad = shared.open_batched(RATE)
        got = []
        for frame in clips[n]:
            result = vad.push(frame)
            got.append(result if isinstance(result, float) else await result)
            await asyncio.sleep(0)  # the streams interleave, as calls on one loop do
        return got

    results = await asyncio.gather(*(stream(n) for n in range(streams)))
    for got, want in zip(results, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-4)
    assert shared.windows == lone.windows
    assert shared.runs <= shared.windows / 4  # windows ran in batches, not one by one


async def test_a_push_before_the_previous_result_is_refused() -> None:
    vad = load().open_batched(RATE)
    loud = (np.sin(np.arange(256) / 3) * 8000).astype(np.int16).tobytes()
    pending = vad.push(loud)
    assert isinstance(pending, asyncio.Future)
    with pytest.raises(RuntimeError, match="await each future"):
        vad.push(loud)
    assert 0.0 <= await pending <= 1.0
    assert isinstance(vad.push(loud[:100]), float)  # no window completed: no model run


async def test_a_failed_model_run_reaches_every_waiting_stream() -> None:
    model = load()

    def broken(*_: object) -> tuple[np.ndarray, np.ndarray]:
        raise RuntimeError("onnxruntime failed")

    model.run_batch = broken  # type: ignore[method-assign]
    loud = (np.sin(np.arange(256) / 3) * 8000).astype(np.int16).tobytes()
    vads = [model.open_batched(RATE) for _ in range(3)]
    futures = [vad.push(loud) for vad in vads]
    for future in futures:
        assert isinstance(future, asyncio.Future)
        with pytest.raises(RuntimeError, match="onnxruntime failed"):
            await future
    assert not any(vad._in_flight for vad in vads)  # the streams may go on


class Recorder:
    def __init__(self) -> None:
        self.activity: list[VoiceActivity] = []

    def on_audio(self, frame: AudioChunk, vad: VoiceActivity) -> None:
        self.activity.append(vad)


async def test_the_call_media_path_gets_the_same_activity_batched(speech: np.ndarray) -> None:
    async def run(vad: object) -> list[VoiceActivity]:
        async def events() -> AsyncIterator[MediaEvent]:
            for i, frame in enumerate(frames(speech)):
                yield chunk(frame, i)
            yield LegEnded(reason="remote_hangup")

        agent = Recorder()
        await listen(events(), agent, vad, VadSettings(), lambda _: None)  # type: ignore[arg-type]
        return agent.activity

    model = load()
    inline = await run(model.open(RATE))
    batched = await run(model.open_batched(RATE))
    assert batched == inline
    assert any(a.event is not None for a in batched)
