"""`LegControl`: the `CallControl` an agent gets: the media leg, plus what the call actor owns
(ending the call, the call's tasks, its persisted state, its event stream)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import msgspec
from switchboard.protocols.call import AGENT_HANGUP
from switchboard.protocols.live import LiveEvent, LiveEventSink
from switchboard.protocols.media import MediaLeg

if TYPE_CHECKING:
    from switchboard.actors.call import CallActor


class LegControl:
    __slots__ = ("_actor", "_leg")

    def __init__(self, actor: CallActor, leg: MediaLeg) -> None:
        self._actor = actor
        self._leg = leg

    @property
    def sample_rate(self) -> int:
        return self._leg.sample_rate

    def play(self, pcm: bytes) -> None:
        self._leg.play(pcm)

    def clear_playout(self) -> float:
        self._actor.stop_greeting()
        return self._leg.clear_playout()

    @property
    def playout_queued(self) -> float:
        return self._leg.playout_queued

    def send_dtmf(self, digits: str) -> None:
        self._leg.send_dtmf(digits)

    async def transfer(self, target: str) -> None:
        await self._leg.transfer(target)

    def hangup(self, reason: str = AGENT_HANGUP) -> None:
        self._actor.finish(reason)

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        return self._actor.spawn(coro, name=name)

    def save_state(self, state: bytes) -> None:
        self._actor.save_agent_state(state)

    def publish_event(self, name: str, event: msgspec.Struct, *, event_id: str) -> None:
        self._actor.publish(name, event, event_id=event_id)

    def show(self, event: LiveEvent) -> None:
        if isinstance(self._leg, LiveEventSink):
            self._leg.publish(event)
