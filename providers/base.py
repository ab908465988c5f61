"""The four interfaces every provider implements: speech-to-text, LLM, text-to-speech, VAD.

They are small on purpose (httpcore's transport interface is the model): a cloud adapter, an
embedded model and a test fake each fit in one module, and one contract test suite checks
them all (tests/unit/test_provider_contract.py).

Streams are async iterators both ways. Cancelling the consumer (or `aclose()` on the
iterator) must stop the work promptly: an embedded provider stops after the step in flight on
its worker thread, a network one closes its request. Wrap a stream in
`providers.deadline.ProgressDeadline` to turn a silent stall into `ProviderStalled`.
Implementations raise `providers.errors.ProviderError` subclasses, never vendor exceptions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

from switchboard.protocols.audio import AudioChunk, AudioFormat, SynthesisChunk, Transcript
from switchboard.protocols.llm import ChatMessage, LlmEvent, ToolSpec


@runtime_checkable
class SpeechToText(Protocol):
    """Caller audio in, transcripts out, for the life of one stream (usually one call).

    A final transcript follows each utterance the provider detects; providers that cannot
    stream decode each utterance after its end. Ending the input flushes the last utterance.
    """

    def stream(self, audio: AsyncIterator[AudioChunk]) -> AsyncIterator[Transcript]: ...


@runtime_checkable
class LanguageModel(Protocol):
    """A chat completion streamed as text pieces and whole tool calls, ending with LlmFinish."""

    def stream(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[LlmEvent]: ...


@runtime_checkable
class TextToSpeech(Protocol):
    """Text in, speech out in short chunks (about 20 ms) at `format.sample_rate`."""

    @property
    def format(self) -> AudioFormat: ...

    def synthesize(self, text: str) -> AsyncIterator[SynthesisChunk]: ...


@runtime_checkable
class Vad(Protocol):
    """Voice activity of one audio stream (it keeps state: one instance per stream).

    Cheap enough (micro-seconds per frame) to run inline on the event loop: a hop to a
    thread would cost more than the model.
    """

    @property
    def sample_rate(self) -> int: ...

    def speech_probability(self, pcm: bytes) -> float:
        """Feed PCM16 of any length; return the speech probability of the latest audio."""
        ...

    def reset(self) -> None: ...
