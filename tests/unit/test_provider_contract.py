"""One contract for every provider: the fakes and the embedded models pass the same tests.

If a fake drifts from what the real adapters do, a test here fails for one of them. Models
load once per module (Piper ~0.3 s, Whisper ~0.7 s); everything runs offline.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from pathlib import Path

import numpy as np
import pytest
from switchboard.protocols.audio import AudioChunk, SpeechEnded, SpeechStarted, Transcript
from switchboard.protocols.llm import (
    ChatMessage,
    LlmFinish,
    LlmText,
    LlmToolCall,
    ToolCall,
    ToolSpec,
)
from switchboard.providers import (
    LanguageModel,
    ModelNotInstalled,
    ProgressDeadline,
    ProviderStalled,
    ProviderUnavailable,
    SpeechToText,
    TextToSpeech,
    Vad,
)
from switchboard.providers.fakes import (
    FakeLanguageModel,
    FakeSpeechToText,
    FakeTextToSpeech,
    FakeTiming,
    FakeVad,
    encode_speech,
)
from switchboard.providers.vad.endpoint import Endpointer

pytestmark = pytest.mark.unit

BOOKING = "Please book a table for two at seven tonight."
LONG_TEXT = " ".join(
    f"This is sentence number {n} of a long answer that nobody will hear to the end."
    for n in range(1, 21)
)
# Generous progress deadlines: a real provider that misses them would be dead air on a call.
FIRST_ITEM_MS, STALL_MS = 2500.0, 1500.0


# --- models, loaded once --------------------------------------------------------------------


@pytest.fixture(scope="module")
def piper_voice():  # type: ignore[no-untyped-def]
    from switchboard.providers.tts.piper import load_voice

    return load_voice()


@pytest.fixture(scope="module")
def silero_model():  # type: ignore[no-untyped-def]
    from switchboard.providers.vad.silero import SileroVadModel

    return SileroVadModel.load()


@pytest.fixture(scope="module")
def whisper(silero_model):  # type: ignore[no-untyped-def]
    from switchboard.providers.stt.whisper import WhisperSpeechToText

    stt = WhisperSpeechToText.load(vad=silero_model.open)
    yield stt
    stt.close()


def _piper(voice, rate: int | None = None) -> TextToSpeech:  # type: ignore[no-untyped-def]
    from switchboard.providers.tts.piper import PiperTextToSpeech

    return PiperTextToSpeech(voice, sample_rate=rate)


def _espeak(rate: int | None = None) -> TextToSpeech:
    from switchboard.providers.tts.espeak import EspeakTextToSpeech

    return EspeakTextToSpeech(sample_rate=rate)


@pytest.fixture(scope="module", params=["fake", "piper", "piper-8k", "espeak"])
def tts(request: pytest.FixtureRequest) -> TextToSpeech:
    match request.param:
        case "fake":
            return FakeTextToSpeech(sample_rate=16000)
        case "piper":
            return _piper(request.getfixturevalue("piper_voice"))
        case "piper-8k":
            return _piper(request.getfixturevalue("piper_voice"), 8000)
        case _:
            return _espeak()


@pytest.fixture(scope="module", params=["fake", "embedded"])
def voice_pair(request: pytest.FixtureRequest) -> tuple[TextToSpeech, SpeechToText]:
    """A TTS at 16 kHz and an STT that must understand it."""
    if request.param == "fake":  # decoding "takes" about as long as Whisper's
        return FakeTextToSpeech(sample_rate=16000), FakeSpeechToText(timing=FakeTiming(300, 300))
    voice = request.getfixturevalue("piper_voice")
    return _piper(voice, 16000), request.getfixturevalue("whisper")


@pytest.fixture(scope="module", params=["silero", "silero-8k", "webrtc", "fake"])
def vad_factory(request: pytest.FixtureRequest) -> tuple[Callable[[], Vad], int]:
    rate = 8000 if request.param.endswith("8k") else 16000
    if request.param.startswith("silero"):
        model = request.getfixturevalue("silero_model")
        return (lambda: model.open(rate)), rate
    if request.param == "webrtc":
        from switchboard.providers.vad.webrtc import WebRtcVad

        return (lambda: WebRtcVad(rate)), rate
    return (lambda: FakeVad(rate)), rate


@pytest.fixture(scope="module")
def piper_speech(piper_voice) -> Callable[[int], Awaitable[bytes]]:  # type: ignore[no-untyped-def]
    """Real speech (Piper's voice) at a given rate, for the VAD tests."""
    cache: dict[int, bytes] = {}

    async def speech(rate: int) -> bytes:
        if rate not in cache:
            cache[rate] = await _render(_piper(piper_voice, rate), BOOKING)
        return cache[rate]

    return speech


# --- helpers --------------------------------------------------------------------------------


async def _render(tts: TextToSpeech, text: str) -> bytes:
    async with aclosing(tts.synthesize(text)) as chunks:
        return b"".join([chunk.pcm async for chunk in chunks])


def _silence(rate: int, seconds: float) -> bytes:
    return b"\0\0" * int(rate * seconds)


async def _audio(
    pcm: bytes, rate: int, *, frame_ms: float = 20.0, on_end: Callable[[], None] | None = None
) -> AsyncIterator[AudioChunk]:
    """`pcm` as a live stream of frames on the stream clock."""
    size = int(rate * frame_ms / 1000) * 2
    for offset in range(0, len(pcm), size):
        yield AudioChunk(
            pcm=pcm[offset : offset + size], sample_rate=rate, timestamp=offset / 2 / rate
        )
    if on_end is not None:
        on_end()


_NUMBERS = dict(enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]))


def _words(text: str) -> list[str]:
    words: list[str] = []
    for word in re.sub(r"[^\w\s]", " ", text.lower()).split():
        if word.isdigit() and int(word) in _NUMBERS:
            words.append(_NUMBERS[int(word)])
        elif word.isdigit():
            words += [_NUMBERS[int(digit)] for digit in word]
        else:
            words.append(word)
    return words


def _wer(reference: str, hypothesis: str) -> float:
    ref, hyp = _words(reference), _words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, hyp_word in enumerate(hyp, 1):
            previous, row[j] = (
                row[j],
                min(row[j] + 1, row[j - 1] + 1, previous + (ref_word != hyp_word)),
            )
    return row[-1] / max(len(ref), 1)


async def _transcripts(stt: SpeechToText, audio: AsyncIterator[AudioChunk]) -> list[Transcript]:
    stream = ProgressDeadline(
        stt.stream(audio),
        stall_ms=STALL_MS,
        first_item_ms=FIRST_ITEM_MS,
        provider="stt",
        what="transcript",
        owed=False,
    )
    async with aclosing(stream):
        return [transcript async for transcript in stream]


# --- text-to-speech -------------------------------------------------------------------------


async def test_tts_speaks_text_as_short_pcm_frames_at_its_declared_rate(tts: TextToSpeech) -> None:
    assert isinstance(tts, TextToSpeech)
    rate = tts.format.sample_rate
    text = "Your table for two is booked. See you at seven!"
    stream = ProgressDeadline(
        tts.synthesize(text),
        stall_ms=STALL_MS,
        first_item_ms=FIRST_ITEM_MS,
        provider="tts",
        what="audio chunk",
    )
    async with aclosing(stream):
        chunks = [chunk async for chunk in stream]

    assert chunks and all(chunk.sample_rate == rate for chunk in chunks)
    assert all(0 < len(chunk.pcm) <= rate * 0.02 * 2 + 2 for chunk in chunks)  # ~20 ms frames
    for before, after in itertools.pairwise(chunks):
        assert after.timestamp == pytest.approx(before.timestamp + before.duration)
    assert 1.0 < chunks[-1].timestamp + chunks[-1].duration < 8.0  # sounds like 10 words
    samples = np.frombuffer(b"".join(c.pcm for c in chunks), dtype=np.int16).astype(float)
    assert np.sqrt(np.mean(samples**2)) > 300, "the audio is (nearly) silent"
    offsets = [chunk.text_offset for chunk in chunks]
    assert offsets == sorted(offsets) and offsets[-1] == len(text)
    assert any(0 < offset < len(text) for offset in offsets), "sentence 1 is never marked spoken"


async def test_tts_of_blank_text_is_silence_not_an_error(tts: TextToSpeech) -> None:
    assert await _render(tts, "  ... ") == b""


async def test_cancelling_tts_stops_promptly_and_frees_the_worker(tts: TextToSpeech) -> None:
    async def play_all(first: asyncio.Event) -> None:
        async with aclosing(tts.synthesize(LONG_TEXT)) as chunks:
            async for _ in chunks:
                first.set()
                await asyncio.sleep(0)  # a player hands each frame on before taking the next

    first = asyncio.Event()
    player = asyncio.create_task(play_all(first))
    await asyncio.wait_for(first.wait(), FIRST_ITEM_MS / 1000)
    started = time.perf_counter()
    player.cancel()
    with pytest.raises(asyncio.CancelledError):
        await player
    assert time.perf_counter() - started < 0.1

    # The 19 sentences left would take seconds to render; a new request must not wait
    # for them, only (at most) for the sentence that was in flight.
    started = time.perf_counter()
    async with aclosing(tts.synthesize("Hello.")) as chunks:
        await anext(chunks)
    assert time.perf_counter() - started < 1.0


# --- speech-to-text -------------------------------------------------------------------------


async def test_stt_transcribes_what_the_tts_said(
    voice_pair: tuple[TextToSpeech, SpeechToText],
) -> None:
    tts, stt = voice_pair
    assert isinstance(stt, SpeechToText)
    rate = tts.format.sample_rate
    speech = await _render(tts, BOOKING)
    pcm = _silence(rate, 0.5) + speech + _silence(rate, 0.8)

    transcripts = await _transcripts(stt, _audio(pcm, rate))

    assert len(transcripts) == 1 and transcripts[0].is_final
    assert _wer(BOOKING, transcripts[0].text) <= 0.2, transcripts[0].text
    assert 0.0 < transcripts[0].confidence <= 1.0
    assert 0.2 <= transcripts[0].start < 0.6
    assert transcripts[0].end == pytest.approx(0.5 + len(speech) / 2 / rate, abs=0.4)


async def test_stt_gives_one_final_per_utterance_and_flushes_at_end_of_input(
    voice_pair: tuple[TextToSpeech, SpeechToText],
) -> None:
    tts, stt = voice_pair
    rate = tts.format.sample_rate
    first, second = "I would like to cancel my appointment.", "My order number is four five six."
    pcm = (
        _silence(rate, 0.3)
        + await _render(tts, first)
        + _silence(rate, 1.0)
        + await _render(tts, second)
    )  # no silence after it: the end of input ends it

    transcripts = await _transcripts(stt, _audio(pcm, rate))

    assert [t.is_final for t in transcripts] == [True, True]
    assert _wer(first, transcripts[0].text) <= 0.2, transcripts[0].text
    assert _wer(second, transcripts[1].text) <= 0.2, transcripts[1].text
    assert transcripts[0].end < transcripts[1].start


async def test_stt_hears_nothing_in_silence(voice_pair: tuple[TextToSpeech, SpeechToText]) -> None:
    _, stt = voice_pair
    assert await _transcripts(stt, _audio(_silence(16000, 2.0), 16000)) == []


async def test_cancelling_stt_mid_decode_stops_promptly_and_frees_the_worker(
    voice_pair: tuple[TextToSpeech, SpeechToText],
) -> None:
    tts, stt = voice_pair
    rate = tts.format.sample_rate
    pcm = _silence(rate, 0.3) + await _render(tts, BOOKING)
    fed = asyncio.Event()
    listener = asyncio.create_task(_transcripts(stt, _audio(pcm, rate, on_end=fed.set)))
    await fed.wait()  # the utterance is decoding now (or about to)
    await asyncio.sleep(0.02)
    started = time.perf_counter()
    listener.cancel()
    with pytest.raises(asyncio.CancelledError):
        await listener
    assert time.perf_counter() - started < 0.1

    started = time.perf_counter()
    transcripts = await _transcripts(stt, _audio(pcm, rate))
    assert len(transcripts) == 1
    assert time.perf_counter() - started < 2.0  # at most the abandoned decode, then ours


# --- voice activity -------------------------------------------------------------------------


async def test_vad_finds_the_speech_and_its_end(
    vad_factory: tuple[Callable[[], Vad], int],
    piper_speech: Callable[[int], Awaitable[bytes]],
) -> None:
    make_vad, rate = vad_factory
    speech = await piper_speech(rate)
    pcm = _silence(rate, 0.6) + speech + _silence(rate, 0.8)
    for frame_ms in (20.0, 30.0):  # any frame size the media leg uses
        vad = make_vad()
        assert isinstance(vad, Vad) and vad.sample_rate == rate
        endpointer = Endpointer(vad, min_silence_ms=300)
        events = [
            e
            async for chunk in _audio(pcm, rate, frame_ms=frame_ms)
            if (e := endpointer.feed(chunk)) is not None
        ]
        assert [type(e) for e in events] == [SpeechStarted, SpeechEnded], frame_ms
        end = 0.6 + len(speech) / 2 / rate
        assert events[0].at == pytest.approx(0.6, abs=0.25)
        assert events[1].at == pytest.approx(end, abs=0.3)


async def test_vad_calls_silence_silence(vad_factory: tuple[Callable[[], Vad], int]) -> None:
    make_vad, rate = vad_factory
    vad = make_vad()
    noise = (np.random.default_rng(1).normal(0, 30, rate)).astype(np.int16).tobytes()
    assert vad.speech_probability(_silence(rate, 0.5)) < 0.5
    assert vad.speech_probability(noise) < 0.5


# --- language model -------------------------------------------------------------------------


@pytest.fixture(params=["fake"])  # the other LLMs: tests/unit/test_llm_contract.py
def llm_factory(request: pytest.FixtureRequest) -> Callable[..., LanguageModel]:
    return FakeLanguageModel


async def test_llm_streams_text_then_finishes(llm_factory: Callable[..., LanguageModel]) -> None:
    llm = llm_factory(["Sure, I can book that for you."])
    assert isinstance(llm, LanguageModel)
    stream = ProgressDeadline(
        llm.stream([ChatMessage(role="user", content=BOOKING)]),
        stall_ms=STALL_MS,
        first_item_ms=FIRST_ITEM_MS,
        provider="llm",
    )
    async with aclosing(stream):
        events = [event async for event in stream]
    assert isinstance(events[-1], LlmFinish) and events[-1].reason == "stop"
    assert all(isinstance(event, LlmText) for event in events[:-1]) and len(events) > 2
    assert "".join(e.text for e in events[:-1] if isinstance(e, LlmText)).startswith("Sure")


async def test_llm_tool_calls_arrive_whole(llm_factory: Callable[..., LanguageModel]) -> None:
    hang_up = ToolSpec(name="hang_up", description="End the call.")
    call = ToolCall(id="c1", name="hang_up", arguments="{}")
    llm = llm_factory([["Goodbye.", LlmToolCall(call=call)]])
    async with aclosing(llm.stream([ChatMessage(role="user", content="bye")], [hang_up])) as s:
        events = [event async for event in s]
    assert LlmToolCall(call=call) in events
    assert events[-1] == LlmFinish(reason="tool_calls", input_tokens=1, output_tokens=2)


# --- failures and stalls --------------------------------------------------------------------


def _stalling(kind: str, timing: FakeTiming) -> Callable[[], AsyncIterator[object]]:
    if kind == "tts":
        return lambda: FakeTextToSpeech(timing=timing).synthesize(BOOKING)
    if kind == "llm":
        return lambda: FakeLanguageModel([BOOKING], timing=timing).stream([])
    pcm = _silence(16000, 0.2) + encode_speech(BOOKING, 16000)
    return lambda: FakeSpeechToText(timing=timing).stream(_audio(pcm, 16000))


@pytest.mark.parametrize("kind", ["tts", "llm", "stt"])
async def test_progress_deadline_turns_a_silent_stall_into_an_error(kind: str) -> None:
    stalls_after = 0 if kind == "stt" else 3
    source = _stalling(kind, FakeTiming(stall_after=stalls_after))()
    stream = ProgressDeadline(source, stall_ms=150, first_item_ms=150, provider=f"fake-{kind}")
    received = 0
    started = time.perf_counter()
    with pytest.raises(ProviderStalled) as stalled:
        async for _ in stream:
            received += 1
    assert received == stalls_after
    assert 0.14 < time.perf_counter() - started < 0.6
    assert stalled.value.retryable and stalled.value.provider == f"fake-{kind}"
    assert "150 ms" in str(stalled.value) or "ms while one was owed" in str(stalled.value)


@pytest.mark.parametrize("kind", ["tts", "llm", "stt"])
async def test_a_failing_provider_raises_a_retryable_error(kind: str) -> None:
    fails_after = 0 if kind == "stt" else 1  # the STT stream holds only one utterance
    source = _stalling(kind, FakeTiming(fail_after=fails_after))()
    received = 0
    with pytest.raises(ProviderUnavailable) as failed:
        async for _ in source:
            received += 1
    assert received == fails_after and failed.value.retryable


def test_missing_models_name_the_fix(tmp_path: Path) -> None:
    from switchboard.providers.stt.whisper import WhisperSpeechToText
    from switchboard.providers.tts.piper import load_voice

    with pytest.raises(ModelNotInstalled, match="check the path"):
        load_voice(tmp_path / "missing.onnx")
    with pytest.raises(ModelNotInstalled, match="check the path"):
        WhisperSpeechToText.load(tmp_path, vad=FakeVad)
    assert not ModelNotInstalled("x").retryable


_OFFLINE_LOAD = """
import socket, sys
def refuse(*args, **kwargs):
    raise OSError("a provider tried to use the network while loading")
socket.socket.connect = refuse
socket.create_connection = refuse
from switchboard.providers.vad.silero import SileroVadModel
from switchboard.providers.vad.webrtc import WebRtcVad
from switchboard.providers.stt.whisper import WhisperSpeechToText
from switchboard.providers.tts.piper import PiperTextToSpeech
from switchboard.providers.tts.espeak import EspeakTextToSpeech
WhisperSpeechToText.load(vad=SileroVadModel.load().open)
WebRtcVad(16000)
PiperTextToSpeech.load()
EspeakTextToSpeech()
assert "torch" not in sys.modules, "torch was imported"
print("loaded offline")
"""


def test_embedded_models_load_offline_without_torch() -> None:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }
    done = subprocess.run(
        [sys.executable, "-c", _OFFLINE_LOAD],
        check=False, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0 and "loaded offline" in done.stdout, done.stderr[-2000:]
    import importlib.util

    assert importlib.util.find_spec("torch") is None, "torch is installed in this environment"
