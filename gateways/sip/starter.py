"""`CallStarter`: how the SIP gateway reaches the actors (protocols/call.py has the messages).

    AdmitCall  -> tenant/<tenant>            inbound only: Admitted, or a refusal
    register the SipLeg in this node's MediaLegRegistry
    StartCall  -> calls/calls (this node)    CallSpawned; the call actor answers the leg
    CallFinished -> tenant/<tenant>          only when the set-up fails after admission

Outbound calls were admitted by the tenant before it sent `PlaceCall`, so the dialler skips
`admit` and goes straight to `start` once the callee answers. The calls supervisor is
node-local (never on NATS): the call actor runs here, next to its RTP. If the call actor
does not start, the leg is unregistered and ended, so a half-started actor finds it gone.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from switchboard.actors.errors import ActorError, ActorNotFound
from switchboard.actors.media_registry import MediaLegRegistry
from switchboard.actors.system import ActorSystem
from switchboard.actors.transport import TransportError
from switchboard.protocols.call import (
    CALLS_ID,
    CALLS_KIND,
    TENANT_KIND,
    AdmitCall,
    Admitted,
    CallFinished,
    CallSpawned,
    StartCall,
)
from switchboard.protocols.media import Direction, MediaLeg

__all__ = ["CallStarter"]

log = logging.getLogger("switchboard.sip")
NOT_FOUND_RETRY = 0.25  # seconds between asks while no node seems to host tenant actors


@dataclass(frozen=True, slots=True)
class CallStarter:
    system: ActorSystem
    legs: MediaLegRegistry
    admit_timeout: float = 3.0  # the first call may activate the tenant actor (a KV lease)
    start_timeout: float = 3.0

    @property
    def node_id(self) -> str:
        return self.system.node_id

    async def admit(self, call_id: str, tenant_id: str, agent_id: str) -> Admitted:
        """Ask the tenant for a slot; raises `ActorError` (a refusal is a `RemoteError` with
        its code) or `TransportError`.

        "No node hosts tenants" is asked again until `admit_timeout`: this node's view of the
        membership can be empty for a moment (a refresh that raced a heartbeat, a failover),
        and a caller should not get a 503 for that. `AdmitCall` is idempotent per call id."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.admit_timeout
        message = AdmitCall(call_id=call_id, agent_id=agent_id, direction="inbound",
                            node_id=self.system.node_id)
        while True:
            try:
                admitted: Admitted = await self.system.ref(TENANT_KIND, tenant_id).ask(
                    message, timeout=max(deadline - loop.time(), 0.05), reply_type=Admitted)
                return admitted
            except ActorNotFound:
                if loop.time() + NOT_FOUND_RETRY >= deadline:
                    raise
                await asyncio.sleep(NOT_FOUND_RETRY)

    async def start(self, leg: MediaLeg, *, tenant_id: str, agent_id: str,
                    direction: Direction, lease_seconds: float) -> None:
        """Register `leg` and start its call actor here; on failure unregister it and
        re-raise (`ActorError`, `TransportError`, or ValueError for a duplicate call id)."""
        start = StartCall(call_id=leg.call_id, tenant_id=tenant_id, agent_id=agent_id,
                          caller=leg.caller, callee=leg.callee, direction=direction,
                          media_node=self.system.node_id, lease_seconds=lease_seconds)
        self.legs.register(leg)
        try:
            await self.system.ref(CALLS_KIND, CALLS_ID).ask(
                start, timeout=self.start_timeout, reply_type=CallSpawned)
        except BaseException as exc:  # cancelled too: never leave the leg registered
            self.legs.unregister(leg.call_id, leg)
            if isinstance(exc, Exception):
                log.warning("SIP call %s: the call actor did not start (%s)", leg.call_id,
                            type(exc).__name__)
            raise

    async def release(self, tenant_id: str, call_id: str, reason: str) -> None:
        """Give the slot back (idempotent at the tenant); its lease lapses if this fails."""
        try:
            await self.system.ref(TENANT_KIND, tenant_id).tell(
                CallFinished(call_id=call_id, reason=reason), must_deliver=True)
        except (ActorError, TransportError) as exc:
            log.warning("SIP call %s: could not release its slot (%s); its lease will lapse",
                        call_id, type(exc).__name__)
