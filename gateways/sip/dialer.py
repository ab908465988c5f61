"""`Dialer`: outbound calls, from the trunk actor's `PlaceCall` to a running call actor.

    tenant --PlaceCall--> trunk/<name> (trunk_actor.py) --> Dialer.place()     returns at once
    call.started (dialling begins; the call actor's own copy is deduplicated by its id)
    UserAgent.place_call(target, trunk, caller id)      INVITE through the trunk's proxy
      answered:      SipLeg bound to the call, CallStarter.start (StartCall, outbound): the
                     call actor greets and converses exactly as on an inbound call; it
                     releases the slot and publishes call.answered / call.ended
      not answered:  CallFinished to the tenant and call.ended with busy / no_answer /
                     rejected / unreachable (protocols/call.py)

The tenant admitted the call before sending `PlaceCall`, so there is no second `AdmitCall`.
Each dial is a task owned by the dialler, which the gateway's `close()` cancels (a ringing
call gets CANCEL). Targets and caller ids are personal data: never logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import msgspec
from switchboard.actors.errors import ActorError
from switchboard.actors.tasks import TaskOwner
from switchboard.actors.transport import TransportError
from switchboard.gateways.sip.call import SipCall
from switchboard.gateways.sip.codecs import Codec
from switchboard.gateways.sip.errors import CallFailed, SipError
from switchboard.gateways.sip.leg import SipLeg
from switchboard.gateways.sip.starter import CallStarter
from switchboard.gateways.sip.useragent import UserAgent
from switchboard.protocols.call import (
    BUSY,
    ERROR,
    NO_AGENT,
    NO_ANSWER,
    REJECTED,
    SHUTDOWN,
    UNREACHABLE,
    PlaceCall,
)
from switchboard.protocols.events import (
    EVENT_NAMES,
    CallEnded,
    CallParties,
    CallStarted,
    call_event_subject,
)
from switchboard.protocols.tenants import TenantDirectory
from switchboard.storage.events import EventPublisher
from switchboard.storage.kv import StorageError

__all__ = ["Dialer", "dial_outcome"]

log = logging.getLogger("switchboard.sip")
MAX_DURATION_GRACE = 5.0  # the call actor ends calls at max_call_seconds; SIP BYE is the backstop
_ENCODER = msgspec.msgpack.Encoder()


def dial_outcome(status: int) -> str:
    """The `CallFinished` / `call.ended` reason for an outbound call's final SIP status."""
    if status in (486, 600):
        return BUSY
    if status in (408, 480, 487):
        return NO_ANSWER
    if status in (403, 603):
        return REJECTED
    return UNREACHABLE


class Dialer:
    def __init__(self, *, starter: CallStarter, directory: TenantDirectory,
                 events: EventPublisher | None, preferences: tuple[Codec, ...],
                 pcm_rate: int, ring_timeout: float,
                 on_answered: Callable[[SipCall, SipLeg], None],
                 clock: Callable[[], float] = time.time) -> None:
        self.starter = starter
        self.directory = directory
        self.events = events
        self.preferences = preferences
        self.pcm_rate = pcm_rate
        self.ring_timeout = ring_timeout
        self.on_answered = on_answered
        self.clock = clock
        self.ua: UserAgent | None = None
        self._tasks = TaskOwner()
        self._dialling: set[str] = set()
        self.outcomes: dict[str, int] = {}

    def place(self, place: PlaceCall, trunk: str) -> None:
        """Start dialling (idempotent per call id: a retried PlaceCall dials once).
        Raises RuntimeError once the dialler is closing."""
        if place.call_id in self._dialling:
            return
        task = self._tasks.spawn(self._dial(place, trunk), name=f"sip-dial:{place.call_id}")
        self._dialling.add(place.call_id)
        task.add_done_callback(lambda _: self._dialling.discard(place.call_id))

    @property
    def dialling(self) -> int:
        return len(self._dialling)

    async def close(self, timeout: float) -> None:
        await self._tasks.close(timeout)

    async def _dial(self, place: PlaceCall, trunk: str) -> None:
        began = asyncio.get_running_loop().time()
        tenant = self.directory.tenant(place.tenant_id)
        agent = tenant.agent(place.agent_id) if tenant is not None else None
        await self._publish(CallStarted(
            event_id=f"{place.call_id}.started", call_id=place.call_id,
            tenant_id=place.tenant_id, agent_id=place.agent_id, direction="outbound",
            node_id=self.starter.node_id, at=self.clock(),
            pii=CallParties(caller=place.caller_id, callee=place.target)))
        if agent is None or self.ua is None:
            await self._failed(place, NO_AGENT if agent is None else SHUTDOWN, began)
            return
        leg = SipLeg(place.call_id, caller=place.caller_id, callee=place.target,
                     direction="outbound", sample_rate=self.pcm_rate)
        media = leg.media_options(preferences=self.preferences,
                                  inactivity_timeout=agent.rtp_inactivity_seconds,
                                  max_duration=agent.max_call_seconds + MAX_DURATION_GRACE)
        try:
            call = await self.ua.place_call(place.target, media=media, trunk=trunk,
                                            caller_id=place.caller_id,
                                            timeout=self.ring_timeout)
        except CallFailed as exc:
            await self._failed(place, dial_outcome(exc.status), began, status=exc.status)
            return
        except (SipError, ValueError, OSError) as exc:
            log.warning("outbound call %s through trunk %s failed before ringing (%s)",
                        place.call_id, trunk, type(exc).__name__)
            await self._failed(place, UNREACHABLE, began)
            return
        except asyncio.CancelledError:
            await asyncio.shield(self._failed(place, SHUTDOWN, began))
            raise
        self.outcomes["answered"] = self.outcomes.get("answered", 0) + 1
        leg.bind(call)
        if call.end is None:
            self.on_answered(call, leg)  # the gateway's call_ended now reaches the leg
        try:
            await self.starter.start(leg, tenant_id=place.tenant_id, agent_id=place.agent_id,
                                     direction="outbound", lease_seconds=place.lease_seconds)
        except (ActorError, TransportError, ValueError):
            await call.hangup(ERROR)
            await self._failed(place, ERROR, began, answered=True)
        except asyncio.CancelledError:  # closing: the user agent hangs the call up next
            await asyncio.shield(self._failed(place, SHUTDOWN, began, answered=True))
            raise

    async def _failed(self, place: PlaceCall, reason: str, began: float, *,
                      status: int | None = None, answered: bool = False) -> None:
        """The call never reached a call actor: release its slot and record why."""
        self.outcomes[reason] = self.outcomes.get(reason, 0) + 1
        log.info("outbound call %s ended before a call actor took it (%s%s)", place.call_id,
                 reason, f", SIP {status}" if status is not None else "")
        await self.starter.release(place.tenant_id, place.call_id, reason)
        duration = asyncio.get_running_loop().time() - began
        await self._publish(CallEnded(
            event_id=f"{place.call_id}.ended", call_id=place.call_id,
            tenant_id=place.tenant_id, at=self.clock(), reason=reason, duration=duration,
            answered=answered))

    async def _publish(self, event: CallStarted | CallEnded) -> None:
        if self.events is None:
            return
        subject = call_event_subject(event.tenant_id, event.call_id, EVENT_NAMES[type(event)])
        try:
            await self.events.publish(subject, _ENCODER.encode(event), msg_id=event.event_id)
        except StorageError as exc:
            log.warning("outbound call %s: event not recorded (%s)", event.call_id,
                        type(exc).__name__)
