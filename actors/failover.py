"""Failover within a turn: a provider that fails or stalls is replaced before the turn is lost.

Three wrappers implement the provider interfaces over the tenant's failover order, so the
conversation loop drives them like any `SpeechToText`, `LanguageModel` or `TextToSpeech`:

    llm = FailoverLanguageModel(["openai", "llama-local"], pools=client, providers=registry,
                                call_id=call_id)
    async with aclosing(llm.stream(messages, tools)) as events: ...

For each stream, providers are tried in order. A provider is skipped at once when its pool
refuses a slot (`circuit_open`, `at_capacity`, `rate_limited`, or a pool that does not
answer) or when this node remembers that its circuit is open. The stream runs here, with an
instance from the node's `ProviderFactory`, under a `ProgressDeadline`. If it raises a
retryable `ProviderError` (it failed, or stalled past its deadline), the outcome goes to the
pool and the same stream continues on the next provider:

- **LLM**: the same request again from the start; text already emitted is not emitted again
  (`actors/resume.py`: swallowed while the replacement repeats it, else resumed at a
  sentence boundary); tool calls already emitted are swallowed; its `LlmFinish` ends the turn.
- **TTS**: only the text not yet spoken (`SynthesisChunk.text_offset` of the last chunk);
  chunks keep one clock (timestamps continue) and offsets count in the original text.
- **STT**: the audio of the current utterance (everything since the last final transcript,
  up to `max_replay_seconds`) is replayed to the next provider, then live audio follows.

A non-retryable error (the provider refused the input, a model is not installed, a name the
node does not know) is reported and raised at once. When every provider failed or refused,
`FailoverExhausted` (retryable: try again next turn) lists each one's code. Every step to the
next provider is counted in `switchboard_provider_failovers_total{kind,from,to,reason}`
(`to="none"` when none is left), and the gap it caused, from the failure to the next item the
consumer gets, in `switchboard_provider_failover_seconds{kind}`. Slots are released on every
path: success, failure, cancellation, and a consumer that closes the stream early.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import msgspec
from prometheus_client import Counter, Histogram
from switchboard.actors.audio_tap import AudioTap
from switchboard.actors.pool_client import PoolClient, Slot, SlotRefused
from switchboard.actors.provider_registry import ProviderFactory
from switchboard.actors.resume import TextResume, ToolCallResume
from switchboard.protocols.audio import AudioChunk, AudioFormat, SynthesisChunk, Transcript
from switchboard.protocols.llm import ChatMessage, LlmEvent, LlmText, LlmToolCall, ToolSpec
from switchboard.protocols.pools import (
    NOT_INSTALLED,
    PROVIDER_ERROR,
    REJECTED,
    STALLED,
    UNAVAILABLE,
    ProviderKind,
    StreamDeadline,
)
from switchboard.providers.deadline import ProgressDeadline
from switchboard.providers.errors import (
    ModelNotInstalled,
    ProviderError,
    ProviderRejected,
    ProviderStalled,
    ProviderUnavailable,
)

log = logging.getLogger("switchboard.failover")

FAILOVERS = Counter("switchboard_provider_failovers_total",
                    "Streams moved to the next provider of the failover order",
                    ["kind", "from", "to", "reason"])
FAILOVER_SECONDS = Histogram("switchboard_provider_failover_seconds",
                             "From a provider's failure to the next item the consumer got",
                             ["kind"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0))

T = TypeVar("T")
NONE = "none"

DEFAULT_DEADLINES: Mapping[ProviderKind, StreamDeadline] = {
    "stt": StreamDeadline(first_item_ms=1200.0, stall_ms=1200.0),  # final after end of speech
    "llm": StreamDeadline(first_item_ms=2000.0, stall_ms=1000.0),
    "tts": StreamDeadline(first_item_ms=1500.0, stall_ms=800.0),
}


@dataclass(frozen=True, slots=True)
class FailoverSettings:
    """Progress deadlines per kind, overridden per provider name; STT replay length."""

    deadlines: Mapping[ProviderKind, StreamDeadline] = field(
        default_factory=lambda: dict(DEFAULT_DEADLINES))
    per_provider: Mapping[str, StreamDeadline] = field(default_factory=dict)
    max_replay_seconds: float = 30.0

    def deadline(self, kind: ProviderKind, provider: str) -> StreamDeadline:
        return self.per_provider.get(provider) or self.deadlines.get(kind) \
            or DEFAULT_DEADLINES[kind]


class FailoverExhausted(ProviderUnavailable):
    """Every provider of the order failed or refused; `attempts` lists (provider, code)."""

    def __init__(self, kind: ProviderKind, attempts: list[tuple[str, str]]) -> None:
        detail = ", ".join(f"{name}: {code}" for name, code in attempts) or "no provider"
        super().__init__(
            f"every {kind} provider of the failover order failed or was refused ({detail}); "
            "say a short apology and retry on the next turn, and check the pools' status",
            provider=attempts[-1][0] if attempts else "")
        self.kind = kind
        self.attempts = attempts


def error_code(exc: ProviderError) -> str:
    """The outcome code of a provider error (never its text: it may echo the caller)."""
    if isinstance(exc, ProviderStalled):
        return STALLED
    if isinstance(exc, ProviderRejected):
        return REJECTED
    if isinstance(exc, ModelNotInstalled):
        return NOT_INSTALLED
    if isinstance(exc, ProviderUnavailable):
        return UNAVAILABLE
    return PROVIDER_ERROR


class _Strategy(Generic[T]):
    """What differs between kinds: how an attempt starts and how its items are passed on."""

    slot: Slot | None = None

    async def open(self, provider: str) -> ProgressDeadline[T]:
        raise NotImplementedError

    def accept(self, item: T) -> T | None:
        """The item to pass on (possibly rewritten), or None to swallow it."""
        return item

    def completes(self, item: T, now: float) -> float | None:
        """The latency (ms) of a unit of work this item completes, to report at once."""
        return None

    def done(self) -> bool:
        """Nothing is left to do although the provider failed (TTS: all text spoken)."""
        return False


class _Failover:
    kind: ProviderKind

    def __init__(self, order: Sequence[str], *, pools: PoolClient, providers: ProviderFactory,
                 call_id: str, settings: FailoverSettings | None = None) -> None:
        self.order = list(order)
        self.pools = pools
        self.providers = providers
        self.call_id = call_id
        self.settings = settings or FailoverSettings()

    def _deadline(self, source: AsyncIterator[T], provider: str, *, what: str,
                  owed: bool = True) -> ProgressDeadline[T]:
        limits = self.settings.deadline(self.kind, provider)
        return ProgressDeadline(source, stall_ms=limits.stall_ms,
                                first_item_ms=limits.first_item_ms, provider=provider,
                                what=what, owed=owed)

    def _moved(self, index: int, reason: str, *, failed: bool) -> None:
        source = self.order[index]
        target = self.order[index + 1] if index + 1 < len(self.order) else NONE
        FAILOVERS.labels(self.kind, source, target, reason).inc()
        # A failure mid-stream is news; a refusal (an open circuit) repeats every turn.
        log.log(logging.WARNING if failed else logging.INFO, "%s provider %s: %s; %s",
                self.kind, source, reason,
                f"failing over to {target}" if target != NONE else "no provider left")

    async def _run(self, strategy: _Strategy[T]) -> AsyncGenerator[T, None]:
        if not self.order:
            raise ProviderRejected(f"the failover order names no {self.kind} provider; add "
                                   "one to the agent's configuration")
        attempts: list[tuple[str, str]] = []
        gap_since: float | None = None
        for index, name in enumerate(self.order):
            try:
                slot = await self.pools.acquire(self.kind, name, self.call_id)
            except SlotRefused as refused:
                attempts.append((name, refused.code))
                gap_since = gap_since if gap_since is not None else time.monotonic()
                self._moved(index, refused.code, failed=False)
                continue
            strategy.slot = slot
            started = time.monotonic()
            first: float | None = None
            try:
                stream = await strategy.open(name)
                async with contextlib.aclosing(stream):
                    async for item in stream:
                        now = time.monotonic()
                        first = now if first is None else first
                        self.pools.renew_if_due(slot)
                        latency = strategy.completes(item, now)
                        if latency is not None:
                            self.pools.report(slot, ok=True, latency_ms=latency)
                        out = strategy.accept(item)
                        if out is None:
                            continue
                        if gap_since is not None:
                            FAILOVER_SECONDS.labels(self.kind).observe(now - gap_since)
                            gap_since = None
                        yield out
                self.pools.report(slot, ok=True, release=True,
                                  latency_ms=((first or time.monotonic()) - started) * 1000)
                return
            except ProviderError as exc:
                code = error_code(exc)
                self.pools.report(slot, ok=False, error_code=code, release=True,
                                  latency_ms=(time.monotonic() - started) * 1000)
                if not exc.retryable:
                    raise
                attempts.append((name, code))
                if strategy.done():
                    return
                gap_since = gap_since if gap_since is not None else time.monotonic()
                self._moved(index, code, failed=True)
            finally:
                self.pools.release(slot)  # cancelled, closed early, or crashed: no outcome
                strategy.slot = None
        raise FailoverExhausted(self.kind, attempts)


# -- LLM ----------------------------------------------------------------------------------


class _LlmStrategy(_Strategy[LlmEvent]):
    def __init__(self, owner: FailoverLanguageModel, messages: Sequence[ChatMessage],
                 tools: Sequence[ToolSpec]) -> None:
        self.owner = owner
        self.messages = messages
        self.tools = tools
        self.said: list[str] = []
        self.text = TextResume("")
        self.calls = ToolCallResume()

    async def open(self, provider: str) -> ProgressDeadline[LlmEvent]:
        model = await self.owner.providers.llm(provider)
        self.text = TextResume("".join(self.said), self.owner.on_diverge)
        self.calls.restart()
        return self.owner._deadline(model.stream(self.messages, self.tools), provider,
                                    what="token")

    def accept(self, item: LlmEvent) -> LlmEvent | None:
        if isinstance(item, LlmText):
            text = self.text.feed(item.text)
            if not text:
                return None
            self.said.append(text)
            return item if text is item.text else LlmText(text=text)
        if isinstance(item, LlmToolCall):
            return item if self.calls.accept(item.call) else None
        return item


class FailoverLanguageModel(_Failover):
    """A `LanguageModel` over the failover order (one per call; one stream per turn).

    `on_diverge(unfinished)` is called when a replacement's reply differs from the text
    already emitted, with the last emitted sentence if it was unfinished; return True if
    it was dropped unspoken (see actors/resume.py).
    """

    kind: ProviderKind = "llm"

    def __init__(self, order: Sequence[str], *, pools: PoolClient, providers: ProviderFactory,
                 call_id: str, settings: FailoverSettings | None = None,
                 on_diverge: Callable[[str], bool] | None = None) -> None:
        super().__init__(order, pools=pools, providers=providers, call_id=call_id,
                         settings=settings)
        self.on_diverge = on_diverge

    def stream(self, messages: Sequence[ChatMessage],
               tools: Sequence[ToolSpec] = ()) -> AsyncIterator[LlmEvent]:
        return self._run(_LlmStrategy(self, messages, tools))


# -- TTS ----------------------------------------------------------------------------------


class _TtsStrategy(_Strategy[SynthesisChunk]):
    def __init__(self, owner: FailoverTextToSpeech, text: str) -> None:
        self.owner = owner
        self.text = text
        self.spoken = 0       # offset in `text` fully spoken by the chunks passed on
        self.end = 0.0        # end time of the audio passed on
        self.base = 0
        self.clock_base = 0.0

    async def open(self, provider: str) -> ProgressDeadline[SynthesisChunk]:
        tts = await self.owner.providers.tts(provider, self.owner.format.sample_rate)
        self.base, self.clock_base = self.spoken, self.end
        return self.owner._deadline(tts.synthesize(self.text[self.spoken:]), provider,
                                    what="audio chunk")

    def accept(self, item: SynthesisChunk) -> SynthesisChunk:
        if self.base or self.clock_base:
            item = msgspec.structs.replace(item, timestamp=item.timestamp + self.clock_base,
                                           text_offset=item.text_offset + self.base)
        self.spoken = max(self.spoken, item.text_offset)
        self.end = item.timestamp + item.duration
        return item

    def done(self) -> bool:
        return not any(ch.isalnum() for ch in self.text[self.spoken:])


class FailoverTextToSpeech(_Failover):
    """A `TextToSpeech` over the failover order, at the call's sample rate."""

    kind: ProviderKind = "tts"

    def __init__(self, order: Sequence[str], *, pools: PoolClient, providers: ProviderFactory,
                 call_id: str, sample_rate: int,
                 settings: FailoverSettings | None = None) -> None:
        super().__init__(order, pools=pools, providers=providers, call_id=call_id,
                         settings=settings)
        self._format = AudioFormat(sample_rate=sample_rate)

    @property
    def format(self) -> AudioFormat:
        return self._format

    def synthesize(self, text: str) -> AsyncIterator[SynthesisChunk]:
        return self._run(_TtsStrategy(self, text))


# -- STT ----------------------------------------------------------------------------------


class _SttStrategy(_Strategy[Transcript]):
    def __init__(self, owner: FailoverSpeechToText, tap: AudioTap) -> None:
        self.owner = owner
        self.tap = tap

    async def open(self, provider: str) -> ProgressDeadline[Transcript]:
        stt = await self.owner.providers.stt(provider)
        stream = self.owner._deadline(stt.stream(self.tap.replay_and_follow()), provider,
                                      what="final transcript", owed=self.owner.owed)
        self.owner._current = stream
        return stream

    def completes(self, item: Transcript, now: float) -> float | None:
        if not item.is_final:
            return None
        owed_at = self.owner._owed_at
        return (now - owed_at) * 1000 if owed_at is not None else 0.0

    def accept(self, item: Transcript) -> Transcript:
        if item.is_final:
            self.tap.trim(item.end)
            self.owner._settle()
        return item


class FailoverSpeechToText(_Failover):
    """A `SpeechToText` over the failover order, for one audio stream (one call).

    The caller's end of speech is not visible in the transcripts: call `expect_final()`
    when the VAD decides the caller stopped, so a provider that then sends no final within
    its deadline is replaced (the utterance is replayed to the next one).
    """

    kind: ProviderKind = "stt"

    def __init__(self, order: Sequence[str], *, pools: PoolClient, providers: ProviderFactory,
                 call_id: str, settings: FailoverSettings | None = None) -> None:
        super().__init__(order, pools=pools, providers=providers, call_id=call_id,
                         settings=settings)
        self.owed = False
        self._owed_at: float | None = None
        self._current: ProgressDeadline[Transcript] | None = None

    def expect_final(self) -> None:
        """The caller stopped speaking: a final transcript is owed from now on."""
        if not self.owed:
            self.owed, self._owed_at = True, time.monotonic()
        if self._current is not None:
            self._current.owe()

    def _settle(self) -> None:
        self.owed, self._owed_at = False, None
        if self._current is not None:
            self._current.settle()

    async def stream(self, audio: AsyncIterator[AudioChunk]) -> AsyncIterator[Transcript]:
        strategy: _SttStrategy | None = None

        def renew() -> None:
            if strategy is not None and strategy.slot is not None:
                self.pools.renew_if_due(strategy.slot)

        tap = AudioTap(max_seconds=self.settings.max_replay_seconds, on_chunk=renew)
        strategy = _SttStrategy(self, tap)
        pump = asyncio.get_running_loop().create_task(tap.pump(audio),
                                                      name=f"stt-tap:{self.call_id}")
        try:
            async with contextlib.aclosing(self._run(strategy)) as transcripts:
                async for transcript in transcripts:
                    yield transcript
        finally:
            self._current = None
            pump.cancel()
            await asyncio.wait([pump])  # a cancellation of this task still propagates
            if not pump.cancelled() and pump.exception() is not None:
                log.error("the STT audio tap of a call failed: %r", pump.exception())
