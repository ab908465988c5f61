"""Deterministic fake providers for tests and the zero-latency overhead benchmark.

They implement the same interfaces as the real adapters and pass the same contract tests
(tests/unit/test_provider_contract.py), so a test written against a fake still holds for the
real thing. `FakeTiming` sets their latencies and scripts their faults: answer after N ms,
stall silently after N items (the dead-air case), or fail after N items.

The fake TTS writes its text into the audio it produces (a "barcode" of sample values in
front of a tone) and the fake STT reads it back, so a fake caller can say a sentence with
`FakeTextToSpeech` and the agent's `FakeSpeechToText` hears exactly that sentence, with no
script to keep in step. Audio without a barcode gets the next line of the STT's `script`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import numpy as np
from switchboard.protocols.audio import (
    AudioChunk,
    AudioFormat,
    SpeechEnded,
    SynthesisChunk,
    Transcript,
)
from switchboard.protocols.llm import (
    ChatMessage,
    LlmEvent,
    LlmFinish,
    LlmText,
    LlmToolCall,
    ToolSpec,
)
from switchboard.providers.errors import ProviderRejected, ProviderUnavailable
from switchboard.providers.tts.segment import sentence_chunks, split_sentences
from switchboard.providers.vad.endpoint import Endpointer

_MAGIC = (31000, -31000, 30000, -30000)


@dataclass(frozen=True)
class FakeTiming:
    """Latency and faults of a fake: `first_ms` before the first item, `each_ms` before the
    others; from item number `stall_after` on it hangs without error, from `fail_after` on
    it raises `ProviderUnavailable` (counting from 0)."""

    first_ms: float = 0.0
    each_ms: float = 0.0
    stall_after: int | None = None
    fail_after: int | None = None

    async def before(self, index: int, provider: str) -> None:
        if self.fail_after is not None and index >= self.fail_after:
            raise ProviderUnavailable(
                f"{provider} failed on purpose after {index} items (FakeTiming.fail_after)",
                provider=provider,
            )
        if self.stall_after is not None and index >= self.stall_after:
            await asyncio.get_running_loop().create_future()  # never resolves: a silent stall
        delay = self.first_ms if index == 0 else self.each_ms
        if delay > 0:
            await asyncio.sleep(delay / 1000)


class FakeVad:
    """Energy VAD: probability 1.0 when a 20 ms frame's RMS reaches `threshold`, else 0.0."""

    def __init__(self, sample_rate: int = 16000, *, threshold: float = 500.0) -> None:
        self._rate = sample_rate
        self._threshold = threshold
        self._probability = 0.0

    @property
    def sample_rate(self) -> int:
        return self._rate

    def reset(self) -> None:
        self._probability = 0.0

    def speech_probability(self, pcm: bytes) -> float:
        samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
        if samples.size:
            rms = math.sqrt(float(np.mean(samples * samples)))
            self._probability = 1.0 if rms >= self._threshold else 0.0
        return self._probability


def encode_speech(text: str, sample_rate: int, *, ms_per_char: float = 60.0) -> bytes:
    """PCM that carries `text` (read back by `decode_speech`), as long as speech would be."""
    payload = text.encode()
    codes = [*_MAGIC, 1000 + (len(payload) >> 8) * 100, 1000 + (len(payload) & 255) * 100]
    codes += [1000 + byte * 100 for byte in payload]
    signed = [code if i % 2 == 0 else -code for i, code in enumerate(codes)]
    signed[: len(_MAGIC)] = _MAGIC
    length = max(int(sample_rate * ms_per_char * max(len(text), 4) / 1000), len(signed))
    tone = 8000 * np.sin(2 * np.pi * 220 * np.arange(length) / sample_rate)
    tone[: len(signed)] = signed
    silence = np.zeros(int(sample_rate * 0.06))
    return np.concatenate((tone, silence)).astype(np.int16).tobytes()


def decode_speech(pcm: bytes) -> list[str]:
    """Every text `encode_speech` put into `pcm`, in order."""
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.int64)
    texts: list[str] = []
    starts = np.flatnonzero(samples == _MAGIC[0])
    for start in starts:
        head = samples[start : start + len(_MAGIC) + 2]
        if len(head) < len(_MAGIC) + 2 or tuple(head[: len(_MAGIC)]) != _MAGIC:
            continue
        size = ((abs(head[4]) - 1000) // 100 << 8) + (abs(head[5]) - 1000) // 100
        body = samples[start + len(_MAGIC) + 2 : start + len(_MAGIC) + 2 + size]
        # A barcode cut short (playout cleared mid-sentence) runs into other audio: keep the
        # bytes up to the first sample that is no barcode byte.
        payload = bytearray()
        for code in body:
            value = int((abs(code) - 1000) // 100)
            if not 0 <= value <= 255:
                break
            payload.append(value)
        texts.append(payload.decode(errors="replace"))
    return texts


class FakeTextToSpeech:
    """Implements `TextToSpeech`; each sentence becomes barcoded audio at `sample_rate`."""

    def __init__(
        self, *, sample_rate: int = 16000, timing: FakeTiming = FakeTiming(),
        frame_ms: float = 20.0,
    ) -> None:
        self._format = AudioFormat(sample_rate=sample_rate)
        self._timing = timing
        self._frame_ms = frame_ms
        self.requests: list[str] = []

    @property
    def format(self) -> AudioFormat:
        return self._format

    async def synthesize(self, text: str) -> AsyncIterator[SynthesisChunk]:
        self.requests.append(text)
        rate, index, timestamp, spoken = self._format.sample_rate, 0, 0.0, 0
        for sentence, end in split_sentences(text):
            pcm = encode_speech(sentence, rate)
            chunks = sentence_chunks(
                pcm, rate, start=timestamp, spoken=spoken, end=end, frame_ms=self._frame_ms
            )
            for chunk in chunks:
                await self._timing.before(index, "fake-tts")
                index += 1
                yield chunk
            timestamp, spoken = chunks[-1].timestamp + chunks[-1].duration, end


class FakeSpeechToText:
    """Implements `SpeechToText`: energy endpointing, then the barcode or the next script line."""

    def __init__(
        self, script: Sequence[str] = (), *, timing: FakeTiming = FakeTiming(),
        min_silence_ms: float = 300.0,
    ) -> None:
        self._script = list(script)
        self._timing = timing
        self._min_silence_ms = min_silence_ms

    async def stream(self, audio: AsyncIterator[AudioChunk]) -> AsyncIterator[Transcript]:
        endpointer: Endpointer | None = None
        utterance: list[AudioChunk] = []
        index = 0
        async for chunk in audio:
            if endpointer is None:
                endpointer = Endpointer(
                    FakeVad(chunk.sample_rate), min_speech_ms=0,
                    min_silence_ms=self._min_silence_ms,
                )
            event = endpointer.feed(chunk)
            if endpointer.in_speech or isinstance(event, SpeechEnded):
                utterance.append(chunk)
            if isinstance(event, SpeechEnded):
                await self._timing.before(index, "fake-stt")
                yield self._hear(utterance, index, event.at)
                utterance, index = [], index + 1
        if utterance:
            await self._timing.before(index, "fake-stt")
            yield self._hear(utterance, index, utterance[-1].end)

    def _hear(self, utterance: list[AudioChunk], index: int, end: float) -> Transcript:
        texts = decode_speech(b"".join(chunk.pcm for chunk in utterance))
        if texts:
            text = " ".join(texts)
        else:
            text = self._script[index] if index < len(self._script) else ""
        return Transcript(text=text, is_final=True, confidence=1.0,
                          start=utterance[0].timestamp, end=end)


Reply = str | Sequence[str | LlmToolCall]


class FakeLanguageModel:
    """Implements `LanguageModel` with scripted replies, streamed a word at a time.

    `replies` is a list used in turn (the last one repeats), or a function of the messages;
    a reply is text, or a list of texts and tool calls. A scripted tool call must name one
    of the tools offered, as a real model's would.
    """

    def __init__(
        self, replies: Sequence[Reply] | Callable[[Sequence[ChatMessage]], Reply] = ("OK.",),
        *, timing: FakeTiming = FakeTiming(),
    ) -> None:
        self._replies = replies
        self._timing = timing
        self.requests: list[tuple[list[ChatMessage], list[ToolSpec]]] = []

    def _next_reply(self, messages: Sequence[ChatMessage]) -> Reply:
        if callable(self._replies):
            return self._replies(messages)
        turn = min(len(self.requests) - 1, len(self._replies) - 1)
        return self._replies[turn]

    async def stream(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[LlmEvent]:
        self.requests.append((list(messages), list(tools)))
        reply = self._next_reply(messages)
        events: list[LlmEvent] = []
        for part in [reply] if isinstance(reply, str) else reply:
            if isinstance(part, str):
                events += [LlmText(text=word) for word in _words(part)]
            elif isinstance(part, LlmToolCall) and part.call.name not in {t.name for t in tools}:
                raise ProviderRejected(
                    f"the scripted tool call {part.call.name!r} names a tool that was not "
                    "offered; pass it in `tools` or fix the script",
                    provider="fake-llm",
                )
            else:
                events.append(part)
        called = any(isinstance(event, LlmToolCall) for event in events)
        events.append(LlmFinish(
            reason="tool_calls" if called else "stop",
            input_tokens=sum(len(m.content.split()) for m in messages),
            output_tokens=len(events),
        ))
        for index, event in enumerate(events):
            await self._timing.before(index, "fake-llm")
            yield event


def _words(text: str) -> list[str]:
    """Token-like pieces that join back to `text`: each word keeps its leading space."""
    pieces: list[str] = []
    for number, word in enumerate(text.split(" ")):
        pieces.append(word if number == 0 else " " + word)
    return [piece for piece in pieces if piece]
