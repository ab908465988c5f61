"""The providers of one node, by name: built once, on a worker thread, shared by its calls.

A pool grants a slot; the stream runs here, on the call's node, with an instance this registry
built. Embedded models (Whisper, Piper) load once per node and stay loaded; cloud adapters
keep their connection pools. Loading a model blocks for a second or so, so it runs on a
worker thread, never on the event loop, and concurrent first uses wait for one load.

    registry = ProviderRegistry()
    registry.add_stt("whisper", WhisperSpeechToText.load)
    registry.add_tts("piper", lambda rate: PiperTextToSpeech.load(sample_rate=rate))
    stt = await registry.stt("whisper")

A name the registry does not know is a configuration error (`ProviderRejected`, not
retryable): the tenant's failover order names a provider this node was not given.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from switchboard.protocols.pools import ProviderKind
from switchboard.providers.base import LanguageModel, SpeechToText, TextToSpeech
from switchboard.providers.errors import ProviderError, ProviderRejected, ProviderUnavailable

log = logging.getLogger("switchboard.providers")


class ProviderFactory(Protocol):
    """Provider instances by name, on this node (the failover client's only way to get one)."""

    async def stt(self, name: str) -> SpeechToText: ...

    async def llm(self, name: str) -> LanguageModel: ...

    async def tts(self, name: str, sample_rate: int) -> TextToSpeech: ...


@runtime_checkable
class HealthCheckable(Protocol):
    """A provider with a cheap active health check (raises when unhealthy)."""

    async def check_health(self) -> None: ...


class ProviderRegistry:
    """Implements `ProviderFactory` from constructors registered by name.

    `in_thread=False` builds on the event loop (cheap constructors, or ones that need the
    loop). TTS constructors take the sample rate the call wants; one instance per rate.
    """

    def __init__(self) -> None:
        self._builders: dict[tuple[ProviderKind, str], tuple[Callable[..., Any], bool]] = {}
        self._instances: dict[tuple[ProviderKind, str, int], Any] = {}
        self._locks: dict[tuple[ProviderKind, str, int], asyncio.Lock] = {}

    def add_stt(self, name: str, build: Callable[[], SpeechToText], *,
                in_thread: bool = True) -> None:
        self._builders[("stt", name)] = (build, in_thread)

    def add_llm(self, name: str, build: Callable[[], LanguageModel], *,
                in_thread: bool = True) -> None:
        self._builders[("llm", name)] = (build, in_thread)

    def add_tts(self, name: str, build: Callable[[int], TextToSpeech], *,
                in_thread: bool = True) -> None:
        self._builders[("tts", name)] = (build, in_thread)

    def names(self, kind: ProviderKind) -> list[str]:
        return sorted(name for k, name in self._builders if k == kind)

    async def stt(self, name: str) -> SpeechToText:
        instance: SpeechToText = await self._get("stt", name, 0)
        return instance

    async def llm(self, name: str) -> LanguageModel:
        instance: LanguageModel = await self._get("llm", name, 0)
        return instance

    async def tts(self, name: str, sample_rate: int) -> TextToSpeech:
        instance: TextToSpeech = await self._get("tts", name, sample_rate)
        return instance

    def health_check(self, kind: ProviderKind, name: str,
                     sample_rate: int = 0) -> Callable[[], Awaitable[None]] | None:
        """The health check of a built instance that exposes one, for its pool."""
        instance = self._instances.get((kind, name, sample_rate))
        return instance.check_health if isinstance(instance, HealthCheckable) else None

    async def _get(self, kind: ProviderKind, name: str, rate: int) -> Any:
        key = (kind, name, rate)
        instance = self._instances.get(key)
        if instance is not None:
            return instance
        entry = self._builders.get((kind, name))
        if entry is None:
            raise ProviderRejected(
                f"no {kind} provider named {name!r} is registered on this node (known: "
                f"{', '.join(self.names(kind)) or 'none'}); fix the agent's failover order, "
                "or give the node that provider (`--providers FILE`, format: "
                "configs/providers.example.yaml)", provider=name)
        build, in_thread = entry
        args = (rate,) if kind == "tts" else ()
        async with self._locks.setdefault(key, asyncio.Lock()):
            instance = self._instances.get(key)
            if instance is None:
                try:
                    instance = (await asyncio.to_thread(build, *args) if in_thread
                                else build(*args))
                except ProviderError:
                    raise
                except Exception as exc:
                    raise ProviderUnavailable(
                        f"building the {kind} provider {name!r} failed "
                        f"({type(exc).__name__}); check its settings and logs",
                        provider=name) from exc
                self._instances[key] = instance
        return instance

    async def aclose(self) -> None:
        """Close every built instance: `aclose()` (cloud adapters' HTTP connection pools)
        here, then `close()` (embedded models' worker threads) on a worker thread."""
        for instance in list(self._instances.values()):
            aclose = getattr(instance, "aclose", None)
            if callable(aclose):
                try:
                    await aclose()
                except Exception as exc:  # noqa: BLE001 - one bad close must not stop the rest
                    log.warning("closing provider %s failed (%s)", type(instance).__name__,
                                type(exc).__name__)
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Close every built instance that has a `close()` (stops worker threads)."""
        for instance in self._instances.values():
            close = getattr(instance, "close", None)
            if callable(close):
                try:
                    close()
                except Exception as exc:  # noqa: BLE001 - one bad close must not stop the rest
                    log.warning("closing provider %s failed (%s)", type(instance).__name__,
                                type(exc).__name__)
        self._instances.clear()
