"""What a node gives its conversation brains: providers, pools, webhooks, phrases, flows.

`ConversationServices` is built once per node (supervisor/brains.py) and shared by every
call's `ConversationAgent` (actors/conversation.py). `FlowLibrary` loads each flow script
once per node; `FlowModel` runs a flow agent under a progress deadline like any provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from switchboard.actors.failover import FailoverSettings
from switchboard.actors.phrases import PhraseBook
from switchboard.actors.pool_client import PoolClient
from switchboard.actors.provider_registry import ProviderFactory
from switchboard.actors.webhook import WebhookClient
from switchboard.protocols.llm import ChatMessage, LlmEvent, ToolSpec
from switchboard.protocols.pools import FailoverOrder
from switchboard.providers.deadline import ProgressDeadline
from switchboard.providers.llm.flow import FlowAgent

DEFAULT_ORDER = FailoverOrder(stt=["whisper"], tts=["piper", "espeak"])


@dataclass(frozen=True)
class ConversationServices:
    """What a node gives its conversation brains, built once per node."""

    providers: ProviderFactory
    pools: PoolClient
    webhooks: WebhookClient
    phrases: PhraseBook = field(default_factory=PhraseBook)
    failover: FailoverSettings = field(default_factory=FailoverSettings)
    default_order: FailoverOrder = DEFAULT_ORDER


class FlowLibrary:
    """Flow agents by script path, loaded once per node (`load` raises on a bad script)."""

    def __init__(self) -> None:
        self._agents: dict[str, FlowAgent] = {}

    def load(self, path: str | Path) -> FlowAgent:
        agent = self._agents.get(str(path))
        if agent is None:
            key = str(Path(path).resolve())
            agent = self._agents.get(key) or FlowAgent.from_file(key)
            self._agents[key] = self._agents[str(path)] = agent
        return agent


class FlowModel:
    """The flow agent under a progress deadline, like every provider stream."""

    def __init__(self, flow: FlowAgent, settings: FailoverSettings) -> None:
        self._flow = flow
        self._deadline = settings.deadline("llm", "flow")

    def stream(self, messages: Sequence[ChatMessage],
               tools: Sequence[ToolSpec] = ()) -> AsyncIterator[LlmEvent]:
        return ProgressDeadline(self._flow.stream(messages, tools),
                                stall_ms=self._deadline.stall_ms,
                                first_item_ms=self._deadline.first_item_ms, provider="flow",
                                what="token")
