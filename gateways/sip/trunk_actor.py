"""`TrunkActor`: the outbound side of one SIP trunk (a virtual actor, id = the trunk's name).

A tenant's `Originate` admits the call at the tenant, which then asks `trunk/<its trunk>`
`PlaceCall` and expects `Placing` within its originate timeout. Only nodes that run the SIP
gateway register this kind (`TrunkActor.bind(gateway)`), so placement activates the trunk on
one of them; the actor checks that this node's SIP config declares the trunk, hands the call
to the gateway's dialler (which owns the dial, so a trunk actor moving to another node does
not drop ringing calls) and answers `Placing` at once. Every SIP node should declare the same
trunks, as every node loads the same tenants file.

Refusals: `not_found` (this node has no such trunk: fix the SIP config), `unavailable` (the
gateway is closing: the tenant's caller may retry).
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import msgspec
from switchboard.actors.errors import Refusal
from switchboard.actors.virtual import VirtualActor
from switchboard.protocols.call import TRUNK_KIND, PlaceCall, Placing

__all__ = ["OutboundGateway", "TrunkActor"]


class OutboundGateway(Protocol):
    """What the trunk actor needs of the SIP gateway (`gateway.SipGateway`)."""

    def has_trunk(self, name: str) -> bool: ...

    def place(self, place: PlaceCall, trunk: str) -> None: ...


class TrunkState(msgspec.Struct, kw_only=True):
    """Nothing to keep: calls being dialled belong to the gateway of this node."""

    v: int = 1


class TrunkActor(VirtualActor):
    kind = TRUNK_KIND
    accepts = PlaceCall
    State = TrunkState
    state: TrunkState

    gateway: ClassVar[OutboundGateway]

    @classmethod
    def bind(cls, gateway: OutboundGateway) -> type[TrunkActor]:
        """The class a SIP node registers with its `VirtualHost`, bound to its gateway."""
        return type(cls.__name__, (cls,), {"gateway": gateway, "__module__": cls.__module__})

    async def receive(self, message: Any) -> Any:
        if not isinstance(message, PlaceCall):
            return None
        trunk = self.context.ref.id
        node = self.context.system.node_id
        if not self.gateway.has_trunk(trunk):
            raise Refusal("not_found", f"trunk {trunk} is not configured on SIP node {node}; "
                          "declare it under `trunks` in the node's SIP config")
        try:
            self.gateway.place(message, trunk)
        except RuntimeError:
            raise Refusal("unavailable", f"SIP node {node} is shutting down; retry",
                          retryable=True) from None
        return Placing(call_id=message.call_id, node_id=node)
