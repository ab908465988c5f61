"""The conversation wiring of a node: embedded providers, pools, brains (used by supervisor/node.py).

- **Providers** (`embedded_registry`): one `ProviderRegistry` per node with the offline
  defaults, each built once, on a worker thread, on first use: `whisper` (STT, Whisper
  tiny.en), `piper` (TTS, the "joe" voice; one voice shared by the per-rate instances),
  `espeak` (TTS fallback), `llama-local` (the optional `[local-llm]` extra). `warm_up` loads
  Whisper and Piper in the background when the node starts, so `switchboard up` returns at
  once and the first call only waits for what is not loaded yet (about 1 s in all).
- **VAD** (`load_call_vad`): Silero (ONNX, one model per node, one detector per call,
  model runs batched across calls) at 8 and 16 kHz, the WebRTC VAD otherwise or when Silero
  is not installed; `--call-vad webrtc` puts every call on the WebRTC VAD (dense telephony
  nodes). Whisper's own endpointing stays on Silero either way.
- **Cloud and self-hosted LLMs** (`node_llm_providers`, `add_llm_providers`): the
  `--providers` file's (storage/providers_file.py), else `openai` / `anthropic` when
  OPENAI_API_KEY / ANTHROPIC_API_KEY are set; built on first use, logged by name (never
  the key). `check_failover_orders` stops a node whose tenants name a provider it does not
  offer, before it connects: such a name would fail every turn that reaches it.
- **Pools**: one `ProviderPool` per embedded provider and node (`EMBEDDED` are node-scoped in
  the `PoolClient`), one per cloud provider and region; limited to the node's capacity by
  default.
- **Brains**: besides `echo` (actors/echo_agent.py), `flow` (the agent's flow script) and
  `llm` (the agent's language models): `ConversationBrain`s sharing the node's providers,
  pools, webhook client and phrase book. Flow scripts are loaded when the node starts, so a
  bad script stops it with an error naming its line.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from switchboard.actors.agent import AgentFactory
from switchboard.actors.conversation import ConversationBrain
from switchboard.actors.conversation_services import (
    DEFAULT_ORDER,
    ConversationServices,
    FlowLibrary,
)
from switchboard.actors.failover import DEFAULT_DEADLINES, FailoverSettings
from switchboard.actors.phrases import PhraseBook
from switchboard.actors.pool_client import PoolClient
from switchboard.actors.provider_registry import ProviderRegistry
from switchboard.actors.system import ActorSystem
from switchboard.actors.webhook import WebhookClient
from switchboard.protocols.pools import ProviderKind, StreamDeadline
from switchboard.protocols.providers_config import LlmProvider
from switchboard.protocols.tenants import TenantConfig
from switchboard.providers.base import LanguageModel, Vad
from switchboard.providers.errors import ProviderError
from switchboard.providers.llm.api_errors import redact_url
from switchboard.storage.providers_file import (
    ENV_DEFAULTS,
    load_providers,
    providers_from_environment,
)

log = logging.getLogger("switchboard.node")

__all__ = ["BRAINS", "CALL_VADS", "EMBEDDED", "EMBEDDED_PROVIDERS", "Conversations", "FlowLibrary",
           "UnknownProviderError", "add_llm_providers", "build_brains", "check_failover_orders",
           "embedded_registry", "failover_settings", "load_call_vad", "load_flows",
           "node_llm_providers", "offered_providers", "warm_up"]

BRAINS = ("echo", "flow", "llm")
EMBEDDED_PROVIDERS: Mapping[ProviderKind, tuple[str, ...]] = {
    "stt": ("whisper",), "tts": ("piper", "espeak"), "llm": ("llama-local",)}
EMBEDDED = tuple(name for names in EMBEDDED_PROVIDERS.values() for name in names)
NO_KEY = "no-key"  # a self-hosted server that checks no key still wants the header
WARM_RATES = (8000, 16000)  # G.711 and G.722/Opus legs


CALL_VADS = ("silero", "webrtc")


async def load_call_vad(kind: str = "silero") -> Callable[[int], Vad]:
    """A VAD factory for call legs. `silero` (the default): Silero at 8 and 16 kHz, batched
    across the node's calls (providers/vad/silero.py), the WebRTC VAD at other rates or when
    Silero is not installed. `webrtc`: the WebRTC VAD for every call, ~3 µs a frame against
    Silero's ~45-200 µs a window, less sure in noise: for nodes that carry many calls."""
    from switchboard.providers.vad.webrtc import WebRtcVad

    if kind not in CALL_VADS:
        raise ValueError(f"unknown call VAD {kind!r}; choose one of {', '.join(CALL_VADS)}")
    if kind == "webrtc":
        return lambda rate: WebRtcVad(rate)
    try:
        from switchboard.providers.vad.silero import SileroVadModel

        model = await asyncio.to_thread(SileroVadModel.load)
    except ProviderError as exc:
        log.warning("Silero VAD unavailable (%s); calls use the WebRTC VAD", exc)
        return lambda rate: WebRtcVad(rate)

    def make(rate: int) -> Vad:
        return model.open_batched(rate) if rate in (8000, 16000) else WebRtcVad(rate)

    return make


class _SharedVoice:
    """The Piper voice, loaded once for every sample rate's provider."""

    def __init__(self) -> None:
        self._voice: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if self._voice is None:
                from switchboard.providers.tts.piper import load_voice

                self._voice = load_voice()
            return self._voice


def embedded_registry(vad: Callable[[int], Vad], *, min_silence_ms: float = 300.0
                      ) -> ProviderRegistry:
    """The node's offline providers (nothing is loaded until used or warmed up)."""
    voice = _SharedVoice()

    def whisper() -> Any:
        from switchboard.providers.stt.whisper import WhisperSpeechToText

        return WhisperSpeechToText.load(vad=vad, min_silence_ms=min_silence_ms)

    def piper(rate: int) -> Any:
        from switchboard.providers.tts.piper import PiperTextToSpeech

        return PiperTextToSpeech(voice.get(), sample_rate=rate)

    def espeak(rate: int) -> Any:
        from switchboard.providers.tts.espeak import EspeakTextToSpeech

        return EspeakTextToSpeech(sample_rate=rate)

    def llama() -> Any:
        from switchboard.providers.llm.llama_local import LlamaLocalModel

        return LlamaLocalModel.load()

    registry = ProviderRegistry()
    registry.add_stt("whisper", whisper)
    registry.add_tts("piper", piper)
    registry.add_tts("espeak", espeak)
    registry.add_llm("llama-local", llama)
    return registry


async def warm_up(registry: ProviderRegistry, rates: Iterable[int] = WARM_RATES) -> None:
    """Load Whisper and Piper now (in the background of a starting node); never raises."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    steps: list[tuple[str, Any]] = [("whisper", lambda: registry.stt("whisper"))]
    steps += [(f"piper@{rate}", lambda rate=rate: registry.tts("piper", rate)) for rate in rates]
    for name, step in steps:
        try:
            await step()
        except ProviderError as exc:
            log.warning("embedded provider %s not loaded (%s); agents that use it fail over "
                        "to the next provider of their order", name, exc)
    log.info("embedded providers ready in %.2fs", loop.time() - started)


def load_flows(tenants: Iterable[TenantConfig]) -> FlowLibrary:
    """Every flow script the tenants name, loaded and checked (raises on a bad one)."""
    flows = FlowLibrary()
    for tenant in tenants:
        for agent in tenant.agents:
            if agent.brain == "flow" and agent.flow:
                flows.load(agent.flow)
    return flows


# -- cloud and self-hosted LLMs ---------------------------------------------------------------


def node_llm_providers(path: str | Path | None, environ: Mapping[str, str] | None = None
                       ) -> list[LlmProvider]:
    """The LLMs a node offers: the providers file's, else the vendors whose key is set.

    Raises `storage.providers_file.ProvidersFileError` (a bad file, an unset key variable)."""
    if path is not None:
        return load_providers(path, environ=environ, reserved=EMBEDDED)
    return providers_from_environment(environ)


def add_llm_providers(registry: ProviderRegistry, providers: Iterable[LlmProvider]) -> None:
    """Register each provider's adapter under its name (built, cheaply, on first use)."""
    _keep_request_bodies_out_of_logs()
    for provider in providers:
        config = provider.config
        registry.add_llm(config.name, _llm_builder(provider), in_thread=False)
        where = redact_url(config.base_url) or "the vendor's API"
        log.info("LLM provider %s: %s, model %s at %s (from %s)", config.name, config.adapter,
                 config.model, where, provider.source)


def _keep_request_bodies_out_of_logs() -> None:
    """The anthropic SDK logs each request's options, body included (the prompt and the
    caller's words), at DEBUG: a node run with `-v` must not. A level chosen explicitly
    (ANTHROPIC_LOG / OPENAI_LOG, or the application's logging config) is left alone."""
    for name in ("anthropic", "openai"):
        sdk = logging.getLogger(name)
        if sdk.level == logging.NOTSET:
            sdk.setLevel(logging.INFO)


def _llm_builder(provider: LlmProvider) -> Callable[[], LanguageModel]:
    config = provider.config
    deadline = _deadline(provider)
    # Never None: the adapters would then read OPENAI_API_KEY / ANTHROPIC_API_KEY and send a
    # vendor's key to a self-hosted server that was configured without one.
    key = provider.api_key or NO_KEY

    def build() -> LanguageModel:
        if config.adapter == "anthropic":
            from switchboard.providers.llm.anthropic_messages import AnthropicMessagesModel

            extra = dict(config.extra_body)
            if config.temperature is not None:
                extra.setdefault("temperature", config.temperature)
            return AnthropicMessagesModel(
                model=config.model, base_url=config.base_url, api_key=key,
                provider=config.name, max_tokens=config.max_tokens,
                first_token_ms=deadline.first_item_ms, stall_ms=deadline.stall_ms,
                extra_body=extra)
        from switchboard.providers.llm.openai_compat import OpenAICompatibleModel

        return OpenAICompatibleModel(
            model=config.model, base_url=config.base_url, api_key=key, provider=config.name,
            temperature=config.temperature, max_tokens=config.max_tokens,
            first_token_ms=deadline.first_item_ms, stall_ms=deadline.stall_ms,
            extra_body=config.extra_body)

    return build


def _deadline(provider: LlmProvider) -> StreamDeadline:
    default = DEFAULT_DEADLINES["llm"]
    config = provider.config
    return StreamDeadline(first_item_ms=config.first_token_ms or default.first_item_ms,
                          stall_ms=config.stall_ms or default.stall_ms)


def failover_settings(providers: Iterable[LlmProvider]) -> FailoverSettings:
    """The node's failover settings, with the deadlines the providers file sets."""
    return FailoverSettings(per_provider={
        p.name: _deadline(p) for p in providers
        if p.config.first_token_ms is not None or p.config.stall_ms is not None})


def offered_providers(providers: Iterable[LlmProvider]) -> dict[ProviderKind, list[str]]:
    """Every provider name the node offers, by kind: the embedded ones and `providers`."""
    offered = {kind: list(names) for kind, names in EMBEDDED_PROVIDERS.items()}
    offered["llm"] += [p.name for p in providers]
    return offered


_USES: Mapping[str, tuple[ProviderKind, ...]] = {"flow": ("stt", "tts"),
                                                 "llm": ("stt", "llm", "tts")}


class UnknownProviderError(ValueError):
    """The tenants name providers this node does not offer (each turn using one would fail)."""


def check_failover_orders(tenants: Iterable[TenantConfig],
                          offered: Mapping[ProviderKind, Sequence[str]], *,
                          source: str = "the tenants file") -> None:
    """Raise `UnknownProviderError` listing every agent that names a provider not offered.

    Checks what each brain uses: STT and TTS for `flow` and `llm`, the LLMs for `llm`."""
    missing: list[str] = []
    for tenant in tenants:
        for agent in tenant.agents:
            for kind in _USES.get(agent.brain, ()):
                for name in agent.providers.of(kind) or DEFAULT_ORDER.of(kind):
                    if name not in offered.get(kind, ()):
                        missing.append(f"tenant {tenant.id}, agent {agent.id}: {kind} `{name}`")
    if not missing:
        return
    has = "; ".join(f"{kind}: {', '.join(names) or 'none'}" for kind, names in offered.items())
    vendors = [f"set {variable} (offers `{name}` when there is no --providers file), "
               for name, _, variable, _ in ENV_DEFAULTS
               if any(line.endswith(f"llm `{name}`") for line in missing)]
    raise UnknownProviderError(
        f"{source} names providers this node does not offer: {'; '.join(missing)}. The node "
        f"offers {has}. Fix: {''.join(vendors)}declare them in the node's --providers file "
        "(format: configs/providers.example.yaml), or change the agents' `providers`")


@dataclass
class Conversations:
    """The node's conversation brains and what they share (closed when the node stops)."""

    registry: ProviderRegistry
    webhooks: WebhookClient
    brains: dict[str, AgentFactory] = field(default_factory=dict)

    async def aclose(self) -> None:
        await self.webhooks.aclose()
        await self.registry.aclose()


def build_brains(system: ActorSystem, registry: ProviderRegistry, flows: FlowLibrary, *,
                 llm: Iterable[LlmProvider] = ()) -> Conversations:
    """The flow and llm brains over `registry`; `llm`: the cloud LLMs it holds (deadlines)."""
    pools = PoolClient(system, node_scoped=EMBEDDED)
    webhooks = WebhookClient()
    services = ConversationServices(providers=registry, pools=pools, webhooks=webhooks,
                                    phrases=PhraseBook(), failover=failover_settings(llm))
    brains: dict[str, AgentFactory] = {
        "flow": ConversationBrain(services, mode="flow", flows=flows),
        "llm": ConversationBrain(services, mode="llm"),
    }
    return Conversations(registry, webhooks, brains)
