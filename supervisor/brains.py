"""The conversation wiring of a node: embedded providers, pools, brains (used by supervisor/node.py).

- **Providers** (`embedded_registry`): one `ProviderRegistry` per node with the offline
  defaults, each built once, on a worker thread, on first use: `whisper` (STT, Whisper
  tiny.en), `piper` (TTS, the "joe" voice; one voice shared by the per-rate instances),
  `espeak` (TTS fallback), `llama-local` (the optional `[local-llm]` extra). `warm_up` loads
  Whisper and Piper in the background when the node starts, so `switchboard up` returns at
  once and the first call only waits for what is not loaded yet (about 1 s in all).
- **VAD** (`load_call_vad`): Silero (ONNX, one model per node, one detector per call) at
  8 and 16 kHz, the WebRTC VAD otherwise or when Silero is not installed.
- **Pools**: one `ProviderPool` per embedded provider and node (`EMBEDDED` are node-scoped in
  the `PoolClient`), limited to the node's capacity by default.
- **Brains**: besides `echo` (actors/echo_agent.py), `flow` (the agent's flow script) and
  `llm` (the agent's language models): `ConversationBrain`s sharing the node's providers,
  pools, webhook client and phrase book. Flow scripts are loaded when the node starts, so a
  bad script stops it with an error naming its line.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from switchboard.actors.agent import AgentFactory
from switchboard.actors.conversation import ConversationBrain
from switchboard.actors.conversation_services import ConversationServices, FlowLibrary
from switchboard.actors.phrases import PhraseBook
from switchboard.actors.pool_client import PoolClient
from switchboard.actors.provider_registry import ProviderRegistry
from switchboard.actors.system import ActorSystem
from switchboard.actors.webhook import WebhookClient
from switchboard.protocols.tenants import TenantConfig
from switchboard.providers.base import Vad
from switchboard.providers.errors import ProviderError

log = logging.getLogger("switchboard.node")

__all__ = ["BRAINS", "EMBEDDED", "Conversations", "FlowLibrary", "build_brains",
           "embedded_registry", "load_call_vad", "load_flows", "warm_up"]

BRAINS = ("echo", "flow", "llm")
EMBEDDED = ("whisper", "piper", "espeak", "llama-local")
WARM_RATES = (8000, 16000)  # G.711 and G.722/Opus legs


async def load_call_vad() -> Callable[[int], Vad]:
    """A VAD factory for call legs: Silero where it runs, else the WebRTC VAD."""
    from switchboard.providers.vad.webrtc import WebRtcVad

    try:
        from switchboard.providers.vad.silero import SileroVadModel

        model = await asyncio.to_thread(SileroVadModel.load)
    except ProviderError as exc:
        log.warning("Silero VAD unavailable (%s); calls use the WebRTC VAD", exc)
        return lambda rate: WebRtcVad(rate)

    def make(rate: int) -> Vad:
        return model.open(rate) if rate in (8000, 16000) else WebRtcVad(rate)

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


@dataclass
class Conversations:
    """The node's conversation brains and what they share (closed when the node stops)."""

    registry: ProviderRegistry
    webhooks: WebhookClient
    brains: dict[str, AgentFactory] = field(default_factory=dict)

    async def aclose(self) -> None:
        await self.webhooks.aclose()
        await asyncio.to_thread(self.registry.close)


def build_brains(system: ActorSystem, registry: ProviderRegistry, flows: FlowLibrary
                 ) -> Conversations:
    pools = PoolClient(system, node_scoped=EMBEDDED)
    webhooks = WebhookClient()
    services = ConversationServices(providers=registry, pools=pools, webhooks=webhooks,
                                    phrases=PhraseBook())
    brains: dict[str, AgentFactory] = {
        "flow": ConversationBrain(services, mode="flow", flows=flows),
        "llm": ConversationBrain(services, mode="llm"),
    }
    return Conversations(registry, webhooks, brains)
