"""`CallActor`: one call on its media node, from the first frame to the released quota.

Started by the node's calls supervisor (supervisor/calls.py) on `StartCall`, id = call id, as
a transient child. What it owns:

- the **media task**: asks the agent for its greeting, answers the leg once the greeting is
  ready, then reads the leg's events: caller frames go through the VAD (`Endpointer`) to
  `agent.on_audio`, keys to `agent.on_dtmf`; `MediaInactive` and `LegEnded` end the call;
- the **clock task**: the agent's `max_call_seconds`, and the renewal of the call's quota lease
  at the tenant (`RenewCall` every lease/3) so a call whose node dies stops counting;
- the **event outbox**: call.started / answered / dtmf / turn / ended to JetStream, in order,
  with deterministic message ids (protocols/events.py);
- the **state store** (actors/call_state.py): a `CallSnapshot` (start and answer times, DTMF
  counter, the agent's conversation state) saved after each turn, when the node gives the
  call actors a KV store (`CallServices.states`).

Every ending path (the far end hangs up, the agent or the API hangs up, max duration, RTP
inactivity, a crash that cannot be resumed) goes through `on_stopping`, which hangs up the
leg if it is still up, lets the agent finish, unregisters the leg, tells the tenant
`CallFinished` (exactly once per incarnation that ends the call; the tenant ignores repeats),
publishes `call.ended` and deletes the saved state. Tasks report their end to the actor with
a system-lane message, so the handler that raises `StopActor` (or re-raises the crash) is the
only one deciding.

**Crash and resume.** A crash (a bug in a handler, the agent or a task) with a state store,
a live leg and fewer than `MAX_CALL_RESTARTS` restarts so far does not end the call: the
incarnation stops its tasks, flushes its state and events, clears the agent's audio and sets
`resumable`; the calls supervisor restarts it. The new incarnation (`on_restarted`) loads the
snapshot, takes the same leg from the registry (the leg's `events()` must accept a new
consumer once the last one was cancelled), keeps the answer, the DTMF counter and the call's
start time, and gives the agent its saved state (`CallInfo.restored_state`): no second
greeting. Past the limit, or without a store or a leg, the crash ends the call as `error`.
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
    Agent,
    AgentFactory,
    CallInfo,
)
from switchboard.actors.call_control import LegControl
from switchboard.actors.call_media import close_greeting, first_chunk, listen, play_greeting
from switchboard.actors.call_state import CallStateStore
from switchboard.actors.errors import ActorError, Refusal
from switchboard.actors.mailbox import Envelope
from switchboard.actors.media_registry import MediaLegRegistry
from switchboard.actors.outbox import EventOutbox
from switchboard.actors.tasks import TaskOwner
from switchboard.actors.transport import TransportError
from switchboard.protocols.call import (
    CALLER_HANGUP,
    ERROR,
    MAX_DURATION,
    NO_AGENT,
    SHUTDOWN,
    TENANT_KIND,
    CallFinished,
    HangUp,
    RenewCall,
    SendDtmf,
    StartCall,
    Transfer,
)
from switchboard.protocols.conversation import CallSnapshot
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
    DtmfReceived,
    LegClosed,
    MediaError,
    MediaLeg,
    TransferNotSupported,
)
from switchboard.protocols.tenants import AgentConfig, TenantDirectory
from switchboard.providers.base import Vad
from switchboard.storage.events import EventPublisher
from switchboard.storage.kv import KeyValue

log = logging.getLogger("switchboard.call")

END_STEP_TIMEOUT = 2.0  # each ending step (agent, hang-up, event flush) gets this long
GREETING_READY_TIMEOUT = 5.0
MAX_CALL_RESTARTS = 3   # crashes a call survives; the next one ends it


@dataclass(frozen=True, slots=True)
class CallServices:
    """What a call actor uses from its node (the node builds one and shares it)."""

    legs: MediaLegRegistry
    directory: TenantDirectory
    events: EventPublisher
    brains: Mapping[str, AgentFactory]       # agent config `brain` -> factory
    vad: Callable[[int], Vad]                # a fresh detector at the leg's sample rate
    clock: Callable[[], float] = time.time   # wall clock for event timestamps
    states: KeyValue | None = None           # where calls persist their state (None: nowhere)


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
        self.resumable = False  # read by the calls supervisor: restart me, the call goes on
        self._crashed = False
        self._leg_ended = False
        self._started_at = 0.0
        self._answered_at: float | None = None
        self._snapshot = CallSnapshot(call_id=start.call_id, started_at=0.0)
        self._restored: CallSnapshot | None = None
        self._tasks = TaskOwner(self._task_failed)
        self._greeting: asyncio.Task[Any] | None = None
        self._outbox = EventOutbox(services.events)
        self._store = CallStateStore(services.states, start.call_id)
        self._background = TaskOwner(self._task_failed)  # outbox and store writers

    # -- lifecycle --------------------------------------------------------------------------

    async def on_started(self) -> None:
        await self._begin(resumed=False)

    async def on_restarted(self, reason: BaseException | None) -> None:
        self._restored = await self._store.load(END_STEP_TIMEOUT)
        await self._begin(resumed=True)

    async def _begin(self, *, resumed: bool) -> None:
        loop = asyncio.get_running_loop()
        self._started_at = loop.time()
        call_id = self.start.call_id
        self._background.spawn(self._outbox.run(), name=f"call-events:{call_id}")
        self._background.spawn(self._store.run(), name=f"call-state:{call_id}")
        try:
            self._setup(resumed)
        except Exception:
            # A start hook that raises gets no on_stopping: end the call here, then crash.
            self.end_reason = ERROR
            await self.on_stopping()
            raise

    def _setup(self, resumed: bool) -> None:
        start, services = self.start, self.services
        self.leg = services.legs.get(start.call_id)
        restored = self._restored
        if restored is not None:
            self._snapshot = restored
            elapsed = max(services.clock() - restored.started_at, 0.0)
            self._started_at -= elapsed
            if restored.answered_at:
                self._answered_at = self._started_at + max(
                    restored.answered_at - restored.started_at, 0.0)
        else:
            self._snapshot = CallSnapshot(call_id=start.call_id, started_at=services.clock())
        if not resumed:
            self._event(CallStarted(
                event_id=f"{start.call_id}.started", call_id=start.call_id,
                tenant_id=start.tenant_id, agent_id=start.agent_id, direction=start.direction,
                node_id=self.context.system.node_id, at=services.clock(),
                pii=CallParties(caller=start.caller, callee=start.callee)))
        if self.leg is None:
            log.error("call %s: no media leg registered on this node; the gateway must "
                      "register it before StartCall", start.call_id)
            self.finish(ERROR)
            return
        if resumed and restored is None:
            log.error("call %s: restarted without saved state to resume; the call ends",
                      start.call_id)
            self.finish(ERROR)
            return
        tenant = services.directory.tenant(start.tenant_id)
        self.agent_config = tenant.agent(start.agent_id) if tenant is not None else None
        factory = services.brains.get(self.agent_config.brain) if self.agent_config else None
        if self.agent_config is None or factory is None:
            log.error("call %s: agent %s of tenant %s is unknown or its brain is not available "
                      "on this node", start.call_id, start.agent_id, start.tenant_id)
            self.finish(NO_AGENT)
            return
        self.agent = factory(self.agent_config)
        self._tasks.spawn(self._media(), name=f"call-media:{start.call_id}")
        self._tasks.spawn(self._clock(), name=f"call-clock:{start.call_id}")

    async def on_stopping(self) -> None:
        if self._crashed and self._may_resume():
            await self._suspend()
            return
        if self._crashed:
            self.end_reason = self.end_reason or ERROR
        await self._end()

    def _may_resume(self) -> bool:
        return (self._store.enabled and self.end_reason is None and self.agent is not None
                and self.leg is not None and not self._leg_ended
                and self.context.cell.restarts < MAX_CALL_RESTARTS)

    async def _suspend(self) -> None:
        """Crashed, to be restarted: stop everything but keep the call up for the next one."""
        await self._tasks.close(END_STEP_TIMEOUT)
        assert self.leg is not None
        self.leg.clear_playout()  # the restarted agent says what comes next
        await self._store.flush(END_STEP_TIMEOUT)
        await self._outbox.flush(END_STEP_TIMEOUT)
        await self._background.close(END_STEP_TIMEOUT)
        self.resumable = True
        log.warning("call %s: the call actor crashed; it restarts and resumes the "
                    "conversation (restart %d of at most %d)", self.start.call_id,
                    self.context.cell.restarts + 1, MAX_CALL_RESTARTS)

    async def _end(self) -> None:
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
        await self._background.close(END_STEP_TIMEOUT)
        await self._store.delete(END_STEP_TIMEOUT)
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
            self._crashed = True
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

    # -- what the agent's control uses --------------------------------------------------------

    def finish(self, reason: str) -> None:
        cell = self.context.cell
        if not cell.closed and not cell.mailbox.closed:
            cell.mailbox.put_nowait(_system(_Finish(reason)))

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        return self._tasks.spawn(coro, name=f"{name}:{self.start.call_id}")

    def stop_greeting(self) -> None:
        if self._greeting is not None and not self._greeting.done():
            self._greeting.cancel()

    def save_agent_state(self, state: bytes) -> None:
        self._snapshot.agent_state = state
        self._store.save(self._snapshot)

    def publish(self, name: str, event: msgspec.Struct, *, event_id: str) -> None:
        subject = call_event_subject(self.start.tenant_id, self.start.call_id, name)
        self._outbox.put(subject, _ENCODER.encode(event), msg_id=event_id)

    # -- tasks ------------------------------------------------------------------------------

    def _task_failed(self, name: str, exc: BaseException) -> None:
        log.error("call %s: task %s failed (%s)", self.start.call_id, name.split(":", 1)[0],
                  type(exc).__name__)
        cell = self.context.cell
        if not cell.closed and not cell.mailbox.closed:
            cell.mailbox.put_nowait(_system(_Failed(exc)))

    async def _media(self) -> None:
        leg, agent, config = self.leg, self.agent, self.agent_config
        assert leg is not None and agent is not None and config is not None
        start, restored = self.start, self._restored
        info = CallInfo(call_id=start.call_id, tenant_id=start.tenant_id, agent=config,
                        direction=start.direction, sample_rate=leg.sample_rate,
                        caller=start.caller, callee=start.callee,
                        restored_state=restored.agent_state if restored is not None else None)
        greeting = await agent.on_start(info, LegControl(self, leg))
        first = None
        if greeting is not None:
            first = await first_chunk(greeting, GREETING_READY_TIMEOUT, start.call_id)
        if self._answered_at is None and not await self._answer(leg):
            if greeting is not None:
                await close_greeting(greeting)
            return
        if first is not None and greeting is not None:
            self._greeting = self._tasks.spawn(play_greeting(leg, first, greeting),
                                               name=f"call-greeting:{start.call_id}")
        try:
            events = leg.events()
        except RuntimeError:  # a leg that takes one consumer only, ever: cannot resume
            log.error("call %s: its media leg refused a restarted call actor; the call ends",
                      start.call_id)
            self.finish(ERROR)
            return
        vad = self.services.vad(leg.sample_rate)
        reason, self._leg_ended = await listen(events, agent, vad, config.vad,
                                               lambda event: self._dtmf(event, agent))
        self.finish(reason)

    async def _answer(self, leg: MediaLeg) -> bool:
        start = self.start
        try:
            await leg.answer()
        except LegClosed:
            self._leg_ended = True
            self.finish(CALLER_HANGUP)
            return False
        self._answered_at = asyncio.get_running_loop().time()
        self._snapshot.answered_at = self.services.clock()
        self._store.save(self._snapshot)
        self._event(CallAnswered(event_id=f"{start.call_id}.answered", call_id=start.call_id,
                                 tenant_id=start.tenant_id, at=self.services.clock()))
        return True

    def _dtmf(self, event: DtmfReceived, agent: Agent) -> None:
        self._snapshot.dtmf_seq += 1
        seq = self._snapshot.dtmf_seq
        self._store.save(self._snapshot)  # a restarted actor must not reuse the event id
        start = self.start
        self._event(CallDtmf(event_id=f"{start.call_id}.dtmf.{seq}",
                             call_id=start.call_id, tenant_id=start.tenant_id,
                             at=self.services.clock(), seq=seq,
                             pii=DtmfDigit(digit=event.digit)))
        agent.on_dtmf(event.digit)

    async def _clock(self) -> None:
        config = self.agent_config
        assert config is not None
        loop = asyncio.get_running_loop()
        deadline = self._started_at + config.max_call_seconds
        every = max(self.start.lease_seconds / 3, 0.05)
        renew_at = loop.time() + every
        tenant = self.context.system.ref(TENANT_KIND, self.start.tenant_id)
        renewal = RenewCall(call_id=self.start.call_id, agent_id=self.start.agent_id,
                            direction=self.start.direction, node_id=self.context.system.node_id)
        while True:
            now = loop.time()
            if now >= deadline:
                self.finish(MAX_DURATION)
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
        self.publish(EVENT_NAMES[type(event)], event, event_id=event.event_id)


_ENCODER = msgspec.msgpack.Encoder()


def _system(message: object) -> Envelope:
    return Envelope(message, system=True)
