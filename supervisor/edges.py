"""The node's edges that are not built into `Node` itself: the SIP gateway, started on a
running node (its flags and the `call`/`dial` commands are in supervisor/sip_cli.py).

    gateway = await start_sip_gateway(node, config)    last step of Node.start()
    print(sip_banner(gateway, node.directory))          "call an agent over SIP at sip:..."
    await gateway.close(timeout)                         first step of Node.drain()

Starting the gateway also registers the `trunk` virtual actor kind on this node, so tenants'
outbound calls are placed by a node that terminates SIP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from switchboard.gateways.sip.gateway import GatewayServices, SipGateway
from switchboard.gateways.sip.trunk_actor import TrunkActor
from switchboard.protocols.sip_config import SipConfig
from switchboard.protocols.tenants import TenantDirectory
from switchboard.storage.events import JetStreamEvents

if TYPE_CHECKING:
    from switchboard.supervisor.node import Node

__all__ = ["sip_banner", "start_sip_gateway"]


async def start_sip_gateway(node: Node, config: SipConfig) -> SipGateway:
    """Listen for SIP on a started node and host its trunk actors; the node closes it first
    when it drains (`await gateway.close(timeout)`)."""
    system, host, transport = node.system, node.host, node.transport
    if system is None or host is None or transport is None:
        raise RuntimeError("start the node before its SIP gateway")
    services = GatewayServices(system=system, legs=node.legs, directory=node.directory,
                               events=JetStreamEvents(transport.nc.jetstream()))
    gateway = SipGateway(services, config)
    await gateway.start()
    host.register(TrunkActor.bind(gateway))
    # Announce the `trunk` kind now, not at the next heartbeat: a tenant may originate at once.
    if node.heartbeat is not None and node.membership is not None:
        await node.heartbeat.beat()
        await node.membership.refresh()
    return gateway


def sip_banner(gateway: SipGateway, directory: TenantDirectory) -> str:
    """What `up` prints: the URI of the first number of the first tenant with one."""
    tenants = getattr(directory, "tenants", None)
    numbers = [route.number for tenant in (tenants() if callable(tenants) else [])
               for route in tenant.numbers]
    target = gateway.uri(numbers[0]) if numbers else gateway.uri("<number>")
    return f"switchboard: call an agent over SIP at {target}"
