"""`CallActor`: one call on its media node, from the first frame to the released quota.

Started by the node's calls supervisor (supervisor/calls.py) on `StartCall`, id = call id, as a
temporary child: a crash ends the call (hung up, quota released, `call.ended` with reason
`error`) rather than restarting it, because the echo agent has no conversation to resume (a
restarted incarnation, should a supervisor make one, ends at once). The conversation loop
(issue 4) persists its state per turn and will switch to a transient child that resumes:
`on_stopping` and `on_restarted` are the places to change for that.

What it owns:
- the **media task**: asks the agent for its greeting, answers the leg once the greeting is
  ready, then reads the leg's events: caller frames go through the VAD (`Endpointer`) to
  `agent.on_audio`, keys to `agent.on_dtmf`; `MediaInactive` and `LegEnded` end the call;
- the **clock task**: the agent's `max_call_seconds`, and the renewal of the call's quota lease
  at the tenant (`RenewCall` every lease/3) so a call whose node dies stops counting;
- the **event outbox**: call.started / answered / dtmf / ended to JetStream, in order, with
  deterministic message ids (protocols/events.py).

Every ending path (the far end hangs up, the agent or the API hangs up, max duration, RTP
inactivity, a crash of the actor or of any task it owns) goes through `on_stopping`, which
hangs up the leg if it is still up, lets the agent finish, unregisters the leg, tells the
tenant `CallFinished` and publishes `call.ended`. Tasks report their end to the actor with a
system-lane message, so the handler that raises `StopActor` (or re-raises the crash) is the
only one deciding.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from switchboard.actors.actor import Actor, StopActor
from switchboard.actors.agent import (
    SILENT,
    SPEAKING,
    Agent,
    AgentFactory,
    CallInfo,
    Greeting,
    VoiceActivity,
)
from switchboard.actors.errors import ActorError, Refusal
from switchboard.actors.mailbox import Envelope
from switchboard.actors.media_registry import MediaLegRegistry
from switchboard.actors.outbox import EventOutbox
from switchboard.actors.tasks import TaskOwner
from switchboard.actors.transport import TransportError
from switchboard.protocols.audio import AudioChunk
from switchboard.protocols.call import (
    AGENT_HANGUP,
    CALLER_HANGUP,
    ERROR,
    MAX_DURATION,
    NO_AGENT,
    RTP_TIMEOUT,
    SHUTDOWN,
    TENANT_KIND,
    CallFinished,
    HangUp,
    RenewCall,
    SendDtmf,
    StartCall,
    Transfer,
)
from switchboard.protocols.events import (
    EVENT_NAMES,
    CallAnswered,
    CallDtmf,
    CallEnded,
    CallEvent,
    CallParties,
    CallStarted,
    DtmfDigit,
    call_event_subject,
)
from switchboard.protocols.media import (
    CANCELLED,
    REMOTE_HANGUP,
    DtmfReceived,
    LegClosed,
    LegEnded,
    MediaError,
    MediaInactive,
    MediaLeg,
    TransferNotSupported,
)
from switchboard.protocols.tenants import AgentConfig, TenantDirectory
from switchboard.providers.base import Vad
from switchboard.providers.vad.endpoint import Endpointer
from switchboard.storage.events import EventPublisher

log = logging.getLogger("switchboard.call")

END_STEP_TIMEOUT = 2.0  # each ending step (agent, hang-up, event flush) gets this long
GREETING_READY_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class CallServices:
    """What a call actor uses from its node (the node builds one and shares it)."""

    legs: MediaLegRegistry
    directory: TenantDirectory
    events: EventPublisher
    brains: Mapping[str, AgentFactory]       # agent config `brain` -> factory
    vad: Callable[[int], Vad]                # a fresh detector at the leg's sample rate
    clock: Callable[[], float] = time.time   # wall clock for event timestamps


class _Finish:
    """From a task of this actor to its mailbox (system lane): end the call for `reason`."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Failed:
    """A task of this actor failed: the actor crashes with its error."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class CallActor(Actor):
    kind = "call"
    accepts = HangUp | SendDtmf | Transfer

    def __init__(self, start: StartCall, services: CallServices) -> None:
        self.start = start
        self.services = services
        self.leg: MediaLeg | None = None
        self.agent: Agent | None = None
        self.agent_config: AgentConfig | None = None
        self.end_reason: str | None = None
        self._leg_ended = False
        self._started_at = 0.0
        self._answered_at: float | None = None
        self._dtmf_seq = 0
        self._tasks = TaskOwner(self._task_failed)
        self._greeting: asyncio.Task[Any] | None = None
        self._outbox = EventOutbox(services.events)
        self._outbox_owner = TaskOwner(self._task_failed)

    # -- lifecycle --------------------------------------------------------------------------

    async def on_started(self) -> None:
        self._started_at = asyncio.get_running_loop().time()
        self._outbox_owner.spawn(self._outbox.run(), name=f"call-events:{self.start.call_id}")
        try:
            self._setup()
        except Exception:
            # A start hook that raises gets no on_stopping: end the call here, then crash.
            self.end_reason = ERROR
            await self.on_stopping()
            raise

    def _setup(self) -> None:
        start, services = self.start, self.services
        self.leg = services.legs.get(start.call_id)
        self._event(CallStarted(
            event_id=f"{start.call_id}.started", call_id=start.call_id,
            tenant_id=start.tenant_id, agent_id=start.agent_id, direction=start.direction,
            node_id=self.context.system.node_id, at=services.clock(),
            pii=CallParties(caller=start.caller, callee=start.callee)))
        if self.leg is None:
            log.error("call %s: no media leg registered on this node; the gateway must "
                      "register it before StartCall", start.call_id)
            self._finish(ERROR)
            return
        tenant = services.directory.tenant(start.tenant_id)
        self.agent_config = tenant.agent(start.agent_id) if tenant is not None else None
        factory = services.brains.get(self.agent_config.brain) if self.agent_config else None
        if self.agent_config is None or factory is None:
            log.error("call %s: agent %s of tenant %s is unknown or its brain is not available "
                      "on this node", start.call_id, start.agent_id, start.tenant_id)
            self._finish(NO_AGENT)
            return
        self.agent = factory(self.agent_config)
        self._tasks.spawn(self._media(), name=f"call-media:{start.call_id}")
        self._tasks.spawn(self._clock(), name=f"call-clock:{start.call_id}")

    async def on_restarted(self, reason: BaseException | None) -> None:
        # Not reached while calls are temporary children. Should a supervisor restart one,
        # the crashed incarnation has already hung up and released the call: end at once
        # (the repeated CallFinished and call.ended are idempotent and deduplicated).
        self._started_at = asyncio.get_running_loop().time()
        self._outbox_owner.spawn(self._outbox.run(), name=f"call-events:{self.start.call_id}")
        self.end_reason = ERROR
        self._finish(ERROR)

    async def on_stopping(self) -> None:
        reason = self.end_reason or SHUTDOWN
        start = self.start
        await self._tasks.close(END_STEP_TIMEOUT)
        loop = asyncio.get_running_loop()
        duration = loop.time() - self._started_at
        if self.agent is not None:
            await self._step("agent end", self.agent.on_end(reason))
        if self.leg is not None:
            if not self._leg_ended:
                await self._step("hang-up", self.leg.hangup(reason))
            self.services.legs.unregister(start.call_id, self.leg)
        await self._release(CallFinished(call_id=start.call_id, reason=reason,
                                         duration=duration))
        talk = 0.0 if self._answered_at is None else loop.time() - self._answered_at
        self._event(CallEnded(
            event_id=f"{start.call_id}.ended", call_id=start.call_id, tenant_id=start.tenant_id,
            at=self.services.clock(), reason=reason, duration=duration,
            answered=self._answered_at is not None, talk_seconds=talk))
        await self._outbox.flush(END_STEP_TIMEOUT)
        await self._outbox_owner.close(END_STEP_TIMEOUT)
        log.info("call %s ended (%s) after %.1fs", start.call_id, reason, duration)

    async def _step(self, what: str, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            async with asyncio.timeout(END_STEP_TIMEOUT):
                await coro
        except Exception as exc:  # noqa: BLE001 - a failed step must not skip the others
            log.warning("call %s: %s failed while ending (%s)", self.start.call_id, what,
                        type(exc).__name__)

    async def _release(self, finished: CallFinished) -> None:
        tenant = self.context.system.ref(TENANT_KIND, self.start.tenant_id)
        try:
            await tenant.tell(finished, must_deliver=True)
        except (ActorError, TransportError) as exc:
            # The lease it holds at the tenant lapses without renewals: the slot comes back.
            log.warning("call %s: could not tell the tenant it finished (%s); its quota "
                        "lease will lapse", self.start.call_id, type(exc).__name__)

    # -- messages ---------------------------------------------------------------------------

    async def receive(self, message: Any) -> Any:
        try:
            return await self._handle(message)
        except (StopActor, Refusal):
            raise
        except Exception:
            self.end_reason = self.end_reason or ERROR
            raise

    async def _handle(self, message: Any) -> Any:
        if isinstance(message, _Finish):
            self.end_reason = self.end_reason or message.reason
            raise StopActor
        if isinstance(message, _Failed):
            raise message.error
        if isinstance(message, HangUp):
            self.end_reason = self.end_reason or message.reason
            raise StopActor
        leg = self._live_leg()
        try:
            if isinstance(message, SendDtmf):
                leg.send_dtmf(message.digits)
            elif isinstance(message, Transfer):
                await leg.transfer(message.target)
        except TransferNotSupported as exc:
            raise Refusal("not_supported", str(exc)) from None
        except MediaError as exc:
            raise Refusal("unavailable", str(exc)) from None
        return None

    def _live_leg(self) -> MediaLeg:
        if self.leg is None or self._leg_ended:
            raise Refusal("unavailable", f"call {self.start.call_id} has no live media leg")
        return self.leg

    # -- tasks ------------------------------------------------------------------------------

    def _finish(self, reason: str) -> None:
        cell = self.context.cell
        if not cell.closed and not cell.mailbox.closed:
            cell.mailbox.put_nowait(_system(_Finish(reason)))

    def _task_failed(self, name: str, exc: BaseException) -> None:
        log.error("call %s: task %s failed (%s); the call ends", self.start.call_id,
                  name.split(":", 1)[0], type(exc).__name__)
        cell = self.context.cell
        if not cell.closed and not cell.mailbox.closed:
            cell.mailbox.put_nowait(_system(_Failed(exc)))

    async def _media(self) -> None:
        leg, agent, config = self.leg, self.agent, self.agent_config
        assert leg is not None and agent is not None and config is not None
        start = self.start
        info = CallInfo(call_id=start.call_id, tenant_id=start.tenant_id, agent=config,
                        direction=start.direction, sample_rate=leg.sample_rate,
                        caller=start.caller, callee=start.callee)
        greeting = await agent.on_start(info, _Control(self, leg))
        first = await self._first_chunk(greeting) if greeting is not None else None
        try:
            await leg.answer()
        except LegClosed:
            self._leg_ended = True
            self._finish(CALLER_HANGUP)
            if greeting is not None:
                await _close(greeting)
            return
        self._answered_at = asyncio.get_running_loop().time()
        self._event(CallAnswered(event_id=f"{start.call_id}.answered", call_id=start.call_id,
                                 tenant_id=start.tenant_id, at=self.services.clock()))
        if first is not None and greeting is not None:
            self._greeting = self._tasks.spawn(self._play(first, greeting),
                                               name=f"call-greeting:{start.call_id}")
        await self._listen(leg, agent, config)

    async def _first_chunk(self, greeting: Greeting) -> bytes | None:
        """The greeting's first audio; past GREETING_READY_TIMEOUT the call is answered
        without it, since a caller hearing only ringing hangs up."""
        try:
            async with asyncio.timeout(GREETING_READY_TIMEOUT):
                return await anext(greeting, None)
        except TimeoutError:
            log.warning("call %s: greeting not ready within %.1fs; answering without it",
                        self.start.call_id, GREETING_READY_TIMEOUT)
            await _close(greeting)
            return None

    async def _play(self, first: bytes, rest: Greeting) -> None:
        leg = self.leg
        assert leg is not None
        try:
            leg.play(first)
            async for pcm in rest:
                leg.play(pcm)
        except MediaError:
            pass  # playout full, or the leg is closing: the greeting stops there
        finally:
            await _close(rest)  # cancelled by a barge-in too: stop the synthesis behind it

    async def _listen(self, leg: MediaLeg, agent: Agent, config: AgentConfig) -> None:
        vad = config.vad
        endpointer = Endpointer(self.services.vad(leg.sample_rate), threshold=vad.threshold,
                                min_speech_ms=vad.min_speech_ms,
                                min_silence_ms=vad.min_silence_ms)
        feed, on_audio = endpointer.feed, agent.on_audio
        async for event in leg.events():
            if type(event) is AudioChunk:  # the hot path: 50 times a second per call
                decided = feed(event)
                speaking = endpointer.in_speech
                activity = (SPEAKING if speaking else SILENT) if decided is None \
                    else VoiceActivity(speaking=speaking, event=decided)
                on_audio(event, activity)
            elif isinstance(event, DtmfReceived):
                self._dtmf(event, agent)
            elif isinstance(event, MediaInactive):
                self._finish(RTP_TIMEOUT)
                return
            elif isinstance(event, LegEnded):
                self._leg_ended = True
                reason = event.reason
                self._finish(CALLER_HANGUP if reason in (REMOTE_HANGUP, CANCELLED) else reason)
                return
        self._leg_ended = True
        self._finish(CALLER_HANGUP)

    def _dtmf(self, event: DtmfReceived, agent: Agent) -> None:
        self._dtmf_seq += 1
        start = self.start
        self._event(CallDtmf(event_id=f"{start.call_id}.dtmf.{self._dtmf_seq}",
                             call_id=start.call_id, tenant_id=start.tenant_id,
                             at=self.services.clock(), seq=self._dtmf_seq,
                             pii=DtmfDigit(digit=event.digit)))
        agent.on_dtmf(event.digit)

    async def _clock(self) -> None:
        config = self.agent_config
        assert config is not None
        loop = asyncio.get_running_loop()
        deadline = self._started_at + config.max_call_seconds
        every = max(self.start.lease_seconds / 3, 0.05)
        renew_at = self._started_at + every
        tenant = self.context.system.ref(TENANT_KIND, self.start.tenant_id)
        renewal = RenewCall(call_id=self.start.call_id, agent_id=self.start.agent_id,
                            direction=self.start.direction, node_id=self.context.system.node_id)
        while True:
            now = loop.time()
            if now >= deadline:
                self._finish(MAX_DURATION)
                return
            if now >= renew_at:
                renew_at = now + every
                try:
                    await tenant.tell(renewal)
                except (ActorError, TransportError) as exc:
                    log.warning("call %s: lease renewal not sent (%s); next try in %.1fs",
                                self.start.call_id, type(exc).__name__, every)
            await asyncio.sleep(min(deadline, renew_at) - loop.time())

    def _event(self, event: CallEvent) -> None:
        subject = call_event_subject(self.start.tenant_id, self.start.call_id,
                                     EVENT_NAMES[type(event)])
        self._outbox.put(subject, _ENCODER.encode(event), msg_id=event.event_id)


_ENCODER = msgspec.msgpack.Encoder()


def _system(message: object) -> Envelope:
    return Envelope(message, system=True)


async def _close(greeting: Greeting) -> None:
    aclose = getattr(greeting, "aclose", None)  # async generators have it; other iterators may not
    if aclose is not None:
        await aclose()


class _Control:
    """The `CallControl` an agent gets: the leg, plus ending and task ownership by the actor."""

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
        greeting = self._actor._greeting
        if greeting is not None and not greeting.done():
            greeting.cancel()
        return self._leg.clear_playout()

    @property
    def playout_queued(self) -> float:
        return self._leg.playout_queued

    def send_dtmf(self, digits: str) -> None:
        self._leg.send_dtmf(digits)

    async def transfer(self, target: str) -> None:
        await self._leg.transfer(target)

    def hangup(self, reason: str = AGENT_HANGUP) -> None:
        self._actor._finish(reason)

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        return self._actor._tasks.spawn(coro, name=f"{name}:{self._actor.start.call_id}")
