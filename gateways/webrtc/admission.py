"""`CallStarter`: admit a web or LiveKit call at its tenant and hand it to a call actor here.

The same path as a SIP call (protocols/call.py), so web calls count against the same quotas
and produce the same records:

    AdmitCall  -> tenant/<tenant>            Admitted, or a refusal -> HTTP error
    register the leg in this node's MediaLegRegistry
    StartCall  -> calls/calls (this node)    CallSpawned; the call actor answers the leg

The call actor must run on this node because the leg (sockets, tasks) is here: the calls
supervisor is node-local and never exposed on NATS. If anything fails after admission, the
slot goes back at once (`CallFinished`) rather than when its lease lapses, and the leg is
hung up: a refused or broken set-up never leaves a call half-started.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from switchboard.actors.errors import ActorError
from switchboard.actors.media_registry import MediaLegRegistry
from switchboard.actors.system import ActorSystem
from switchboard.actors.transport import TransportError
from switchboard.gateways.webrtc.errors import NotFound, Unavailable, refusal_to_error
from switchboard.protocols.call import (
    CALLS_ID,
    CALLS_KIND,
    ERROR,
    TENANT_KIND,
    AdmitCall,
    Admitted,
    CallFinished,
    CallSpawned,
    StartCall,
)
from switchboard.protocols.media import MediaLeg
from switchboard.protocols.tenants import TenantDirectory

log = logging.getLogger("switchboard.web")


@dataclass(frozen=True, slots=True)
class CallStarter:
    """What a gateway uses of its node to start calls (the node's system, legs, tenants)."""

    system: ActorSystem
    legs: MediaLegRegistry
    directory: TenantDirectory
    admit_timeout: float = 5.0  # the first call may activate the tenant actor (a KV lease)
    start_timeout: float = 5.0

    async def admit(self, call_id: str, tenant_id: str, agent_id: str) -> Admitted:
        """Ask the tenant for a slot; raise the `WebError` its refusal maps to.

        Unknown tenants and agents are answered from this node's directory (the tenants
        file every node loads) without asking: the runtime turns a `not_found` refusal into
        the same `ActorNotFound` as "no node hosts tenant actors", which must be a 503.
        """
        config = self.directory.tenant(tenant_id)
        if config is None or config.agent(agent_id) is None:
            what = f"agent {agent_id} of tenant {tenant_id}" if config else f"tenant {tenant_id}"
            raise NotFound(f"{what} is not configured; check the agent id")
        tenant = self.system.ref(TENANT_KIND, tenant_id)
        try:
            admitted: Admitted = await tenant.ask(
                AdmitCall(call_id=call_id, agent_id=agent_id, direction="inbound",
                          node_id=self.system.node_id),
                timeout=self.admit_timeout, reply_type=Admitted)
        except ActorError as exc:
            error = refusal_to_error(exc)
            log.info("web call %s refused by tenant %s (%s)", call_id, tenant_id, error.code)
            raise error from None
        except TransportError:
            raise Unavailable("the node cannot reach its message bus; try again shortly",
                              retry_after=2.0) from None
        return admitted

    async def start(self, leg: MediaLeg, admitted: Admitted) -> None:
        """Register `leg` and start its call actor; on failure release everything and raise."""
        start = StartCall(call_id=leg.call_id, tenant_id=admitted.tenant_id,
                          agent_id=admitted.agent_id, caller=leg.caller, callee=leg.callee,
                          direction="inbound", media_node=self.system.node_id,
                          lease_seconds=admitted.lease_seconds)
        try:
            self.legs.register(leg)
            await self.system.ref(CALLS_KIND, CALLS_ID).ask(
                start, timeout=self.start_timeout, reply_type=CallSpawned)
        except (ActorError, TransportError, ValueError) as exc:
            log.warning("web call %s: the call actor did not start (%s)", leg.call_id,
                        type(exc).__name__)
            self.legs.unregister(leg.call_id, leg)
            await leg.hangup(ERROR)
            await self.release(admitted.tenant_id, leg.call_id)
            if isinstance(exc, ActorError):
                raise refusal_to_error(exc) from None
            raise Unavailable("the call could not be started on this node; try again",
                              retry_after=2.0) from None

    async def release(self, tenant_id: str, call_id: str, reason: str = ERROR) -> None:
        """Give the slot back (idempotent at the tenant); its lease lapses if this fails."""
        try:
            await self.system.ref(TENANT_KIND, tenant_id).tell(
                CallFinished(call_id=call_id, reason=reason), must_deliver=True)
        except (ActorError, TransportError) as exc:
            log.warning("web call %s: could not release its slot (%s); its lease will lapse",
                        call_id, type(exc).__name__)

