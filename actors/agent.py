"""The `Agent` strategy: what answers a call, behind one small interface the call actor drives.

The call actor owns the call (its media task, timers, quota, events); an agent owns the
conversation. `EchoAgent` (actors/echo_agent.py, brain `echo`) and `ConversationAgent`
(actors/conversation.py, brains `flow` and `llm`: STT -> LLM -> TTS) plug in behind the same
interface, chosen by the agent config's `brain`.

The call actor calls, in order:

1. `await on_start(call, control)`, returning the greeting (an async iterator of PCM at
   `call.sample_rate`) or None. The leg is answered (SIP 200 OK) once the greeting's first
   chunk is ready, so the caller never waits in silence for a slow synthesis, then the
   greeting plays; `control.clear_playout()` (barge-in) stops it too.
2. `on_audio(frame, vad)` for every 20 ms caller frame, with the VAD's verdict, and
   `on_dtmf(digit)` for every key. These run inline on the media path: they must not block
   (no `await`); start slow work with `control.spawn`, which ties it to the call.
3. `await on_end(reason)` once, whatever ended the call (bounded by a timeout).

If the call actor crashes and the node persists call state, its supervisor restarts it: the
new incarnation calls `on_start` on a new agent with `CallInfo.restored_state` set to the
agent's last `control.save_state(...)`, and does not answer the leg again; the agent resumes
the conversation (and should not greet again). The crashed agent gets no `on_end`: its tasks
are cancelled.

An agent talks back through `CallControl`: play audio, clear it, send DTMF, transfer, hang up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
from switchboard.protocols.audio import AudioChunk, VadEvent
from switchboard.protocols.call import AGENT_HANGUP
from switchboard.protocols.live import LiveEvent
from switchboard.protocols.media import Direction
from switchboard.protocols.tenants import AgentConfig


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What an agent knows about its call. Caller and callee are personal data (kept out of
    the repr, so logging a CallInfo leaks neither)."""

    call_id: str
    tenant_id: str
    agent: AgentConfig
    direction: Direction
    sample_rate: int
    caller: str = field(repr=False)
    callee: str = field(repr=False)
    # Set when a restarted call actor resumes the call: the agent's last `save_state`.
    restored_state: bytes | None = field(default=None, repr=False)

    @property
    def resumed(self) -> bool:
        return self.restored_state is not None


@dataclass(frozen=True, slots=True)
class VoiceActivity:
    """The VAD's view of the latest frame: in speech or not, whether this frame itself is
    voiced (False during the silence hangover that may end the utterance), and the event it
    just decided (`SpeechStarted` / `SpeechEnded`), if any."""

    speaking: bool
    event: VadEvent | None = None
    voiced: bool = True


SILENT = VoiceActivity(speaking=False, voiced=False)
SPEAKING = VoiceActivity(speaking=True)  # shared: most frames carry no event, so no allocation
PAUSING = VoiceActivity(speaking=True, voiced=False)  # in speech, this frame quiet (hangover)


class CallControl(Protocol):
    """What an agent may do to its call (implemented by the call actor)."""

    @property
    def sample_rate(self) -> int: ...

    def play(self, pcm: bytes) -> None:
        """Queue PCM16 mono at `sample_rate`; the leg paces it (media.PlayoutFull if too much)."""
        ...

    def clear_playout(self) -> float:
        """Barge-in: drop queued agent audio (greeting included); return seconds dropped."""
        ...

    @property
    def playout_queued(self) -> float:
        """Seconds of agent audio not yet sent: 0.0 once the agent has finished speaking."""
        ...

    def send_dtmf(self, digits: str) -> None: ...

    async def transfer(self, target: str) -> None:
        """Blind transfer (SIP REFER); the call then ends with reason `transferred`.
        Raises media.TransferNotSupported when the leg cannot."""
        ...

    def hangup(self, reason: str = AGENT_HANGUP) -> None:
        """End the call; returns at once (the call actor hangs up, then calls `on_end`)."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run work owned by the call: cancelled when it ends; a failure crashes the call
        actor (restarted and resumed when the node persists call state, else ended)."""
        ...

    def save_state(self, state: bytes) -> None:
        """Persist the agent's state (after each turn); returns at once. A restarted call
        actor hands the latest one back in `CallInfo.restored_state`."""
        ...

    def publish_event(self, name: str, event: msgspec.Struct, *, event_id: str) -> None:
        """Queue an event for the call's event stream (`sb.events.call.<t>.<c>.<name>`);
        `event_id` is the JetStream message id (deduplicated)."""
        ...

    def show(self, event: LiveEvent) -> None:
        """Show a live event (transcript line, turn latency) on the caller's own screen, when
        the leg has one (the web page, a LiveKit room); best effort, never raises."""
        ...


Greeting = AsyncIterator[bytes]


class Agent(Protocol):
    async def on_start(self, call: CallInfo, control: CallControl) -> Greeting | None: ...

    def on_audio(self, frame: AudioChunk, vad: VoiceActivity) -> None: ...

    def on_dtmf(self, digit: str) -> None: ...

    async def on_end(self, reason: str) -> None: ...


AgentFactory = Callable[[AgentConfig], Agent]
"""Makes one agent per call from its config; the node maps each `brain` to a factory."""
