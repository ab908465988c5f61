"""The node: the one place that wires transport, storage, actors and supervision together.

A node connects to NATS, opens the JetStream buckets (membership, leases, state, call
snapshots), starts an `ActorSystem`, a root supervisor (with a dynamic supervisor for virtual
actors under it), the virtual-actor host and the heartbeat. `drain()` is the graceful stop:
leave placement (draining heartbeat), hand virtual actors back (state persisted, leases
released), stop the tree in reverse order, withdraw from membership. When the root supervisor
gives up, the node's `exit_code` becomes 1 and `wait()` returns: the process exits non-zero so
systemd or Kubernetes restarts it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from switchboard.actors import ActorCell, ActorSystem, Decision, Directive
from switchboard.actors.agent import AgentFactory
from switchboard.actors.call import CallServices
from switchboard.actors.call_state import CallBucket
from switchboard.actors.echo_agent import EchoBrain
from switchboard.actors.media_registry import MediaLegRegistry
from switchboard.actors.membership import Membership
from switchboard.actors.pool import ProviderPool
from switchboard.actors.tenant import TenantActor
from switchboard.actors.transport_nats import NatsTransport
from switchboard.actors.virtual import VirtualActor, VirtualHost
from switchboard.gateways.sip.gateway import SipGateway
from switchboard.gateways.webrtc import CallStarter, WebConfig, WebGateway
from switchboard.protocols import NodeInfo
from switchboard.protocols.events import (
    CALL_EVENTS_DUPLICATE_WINDOW,
    CALL_EVENTS_STREAM,
    CALL_EVENTS_SUBJECTS,
)
from switchboard.protocols.pools import PoolLimits
from switchboard.protocols.providers_config import LlmProvider
from switchboard.protocols.sip_config import SipConfig
from switchboard.protocols.subjects import (
    CALL_STATE_TTL,
    CALLS_BUCKET,
    CALLS_OBJECTS,
    LEASE_TTL,
    LEASES_BUCKET,
    NODE_TTL,
    NODES_BUCKET,
    STATE_BUCKET,
    STATE_OBJECTS,
)
from switchboard.protocols.tenants import TenantDirectory
from switchboard.providers.base import Vad
from switchboard.storage.events import JetStreamEvents, open_stream
from switchboard.storage.jetstream import open_kv, open_objects
from switchboard.storage.tenants_file import StaticTenantDirectory, load_tenants
from switchboard.supervisor import brains as conversation
from switchboard.supervisor.calls import CallsSupervisor
from switchboard.supervisor.edges import start_sip_gateway
from switchboard.supervisor.heartbeat import Heartbeat
from switchboard.supervisor.media_probe import MediaProbe
from switchboard.supervisor.spec import ChildSpec, Restart, RestartIntensity
from switchboard.supervisor.supervisor import Supervisor, SupervisorParent

from switchboard import __version__

log = logging.getLogger("switchboard.node")


def default_node_id() -> str:
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    return f"{host[:40]}-{os.getpid()}-{secrets.token_hex(2)}"


@dataclass
class NodeConfig:
    nats_urls: list[str]
    node_id: str = field(default_factory=default_node_id)
    region: str = "local"
    capacity: int = 1000
    heartbeat_interval: float = 0.5
    node_ttl: float = NODE_TTL
    lease_ttl: float = LEASE_TTL
    # max_age of the call snapshot buckets (sb_calls, sb_calls_objects; actors/call_state.py),
    # applied when this node creates them: above the longest `max_call_seconds` of any agent.
    call_state_ttl: float = CALL_STATE_TTL
    replicas: int = 1
    virtual_kinds: list[type[VirtualActor]] = field(default_factory=list)
    children: list[ChildSpec] = field(default_factory=list)
    tenants_file: Path | None = None
    # The cloud/self-hosted LLMs (storage/providers_file.py); None: OPENAI_API_KEY and
    # ANTHROPIC_API_KEY offer `openai` and `anthropic` when set.
    providers_file: Path | None = None
    warm_up_models: bool = True  # load Whisper and Piper in the background at start
    call_vad: str = "silero"  # the VAD of call legs: silero, or webrtc (supervisor/brains.py)
    web: WebConfig | None = None  # the web gateway (page, widget, WebRTC); None: not served
    sip: SipConfig | None = None  # the SIP gateway (supervisor/edges.py); None: not served


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.exit_code = 0
        self.started_at = time.time()
        self.draining = False
        self._stopped = asyncio.Event()
        self.transport: NatsTransport | None = None
        self.system: ActorSystem | None = None
        self.host: VirtualHost | None = None
        self.membership: Membership | None = None
        self.heartbeat: Heartbeat | None = None
        self.web: WebGateway | None = None
        self.sip: SipGateway | None = None
        self.media_probe: MediaProbe | None = None  # SWITCHBOARD_MEDIA_PROBE: bench timing
        # What the gateways use: the media legs of this node's calls, and the tenants.
        self.legs = MediaLegRegistry()
        self.directory: TenantDirectory = StaticTenantDirectory([])
        # The agent brains this node can run (echo now; flow and llm once started).
        self.brains: dict[str, AgentFactory] = {"echo": EchoBrain()}
        self.conversations: conversation.Conversations | None = None

    async def start(self) -> None:
        cfg = self.config
        flows = None
        llm = conversation.node_llm_providers(cfg.providers_file)  # a bad file fails here too
        if cfg.tenants_file is not None:  # a bad file fails here, before anything connects
            directory = load_tenants(cfg.tenants_file, brains=set(conversation.BRAINS))
            conversation.check_failover_orders(directory.tenants(),
                                               conversation.offered_providers(llm),
                                               source=str(cfg.tenants_file))
            flows = conversation.load_flows(directory.tenants())
            self.directory = directory
        self.transport = await NatsTransport.connect(cfg.nats_urls,
                                                     name=f"switchboard-node-{cfg.node_id}")
        js = self.transport.nc.jetstream()
        nodes = await open_kv(js, NODES_BUCKET, ttl=cfg.node_ttl, replicas=cfg.replicas)
        leases = await open_kv(js, LEASES_BUCKET, ttl=cfg.lease_ttl, replicas=cfg.replicas)
        states = await open_kv(js, STATE_BUCKET, replicas=cfg.replicas)
        objects = await open_objects(js, STATE_OBJECTS, replicas=cfg.replicas)
        # Call snapshots expire by themselves: a call whose node died is ended by nobody.
        call_states = CallBucket(
            await open_kv(js, CALLS_BUCKET, ttl=cfg.call_state_ttl, replicas=cfg.replicas),
            await open_objects(js, CALLS_OBJECTS, ttl=cfg.call_state_ttl, replicas=cfg.replicas),
            max_value=self.transport.nc.max_payload, node_id=cfg.node_id)
        await open_stream(js, CALL_EVENTS_STREAM, [CALL_EVENTS_SUBJECTS],
                          duplicate_window=CALL_EVENTS_DUPLICATE_WINDOW, replicas=cfg.replicas)
        system = ActorSystem(self.transport, node_id=cfg.node_id, region=cfg.region,
                             on_error=self._task_failed)
        self.system = system
        await system.start()
        self.membership = Membership(nodes)
        await self.membership.refresh()
        system.tasks.spawn(self.membership.run(), name="membership")

        virtual_spec = ChildSpec(
            id="virtual", actor=Supervisor, expose=False,
            factory=lambda: Supervisor(dynamic_restart=Restart.TRANSIENT,
                                       intensity=RestartIntensity(50, 10.0)))
        call_vad = await self._start_conversations(system, flows, llm)
        services = CallServices(legs=self.legs, directory=self.directory,
                                events=JetStreamEvents(js), brains=self.brains,
                                vad=call_vad, states=call_states)  # calls resume from it
        root_specs = [virtual_spec, CallsSupervisor.spec(services), *cfg.children]
        await system.spawn(Supervisor, "root", parent=self, expose=False,
                           factory=lambda: Supervisor(root_specs))
        virtual_ref = system.ref("supervisor", "virtual")
        virtual_cell = system.cell(virtual_ref)
        assert virtual_cell is not None
        self.host = VirtualHost(system, leases=leases, states=states, objects=objects,
                                membership=self.membership, lease_ttl=cfg.lease_ttl,
                                supervisor=SupervisorParent(virtual_cell))
        self.host.register(TenantActor.bind(self.directory))
        self.host.register(ProviderPool.bind(default=PoolLimits(max_concurrent=cfg.capacity)))
        for kind in cfg.virtual_kinds:
            self.host.register(kind)
        await self.host.start()
        self.heartbeat = Heartbeat(nodes, self.info, interval=cfg.heartbeat_interval)
        await self.heartbeat.beat()
        await self.membership.refresh()
        system.tasks.spawn(self.heartbeat.run(), name="heartbeat")
        # What exists now (modules, configs, models) lives as long as the node: frozen out of
        # the collector's sight, a full collection takes a few ms instead of ~60 ms that would
        # hold up every call's 20 ms audio frames (bench/sip_media.py measures both).
        gc.collect()
        gc.freeze()
        self.media_probe = MediaProbe.from_environment(self.brains)  # off unless the env asks
        if cfg.web is not None:  # last: a call may arrive as soon as it listens
            self.web = WebGateway(CallStarter(system, self.legs, self.directory), cfg.web)
            await self.web.start()
        if cfg.sip is not None:  # also last; it hosts this node's `trunk` actors
            self.sip = await start_sip_gateway(self, cfg.sip)
        log.info("node %s up in region %s (NATS %s)", cfg.node_id, cfg.region,
                 ",".join(cfg.nats_urls))

    # -- the conversation brains, providers and pools (supervisor/brains.py) --------------

    async def _start_conversations(self, system: ActorSystem,
                                   flows: conversation.FlowLibrary | None,
                                   llm: list[LlmProvider]) -> Callable[[int], Vad]:
        """Build the flow and llm brains; models load in the background (fast start)."""
        call_vad = await conversation.load_call_vad(self.config.call_vad)
        # Whisper's endpointing decides what is transcribed: it keeps the accurate VAD.
        stt_vad = (call_vad if self.config.call_vad == "silero"
                   else await conversation.load_call_vad("silero"))
        registry = conversation.embedded_registry(stt_vad)
        conversation.add_llm_providers(registry, llm)
        self.conversations = conversation.build_brains(system, registry,
                                                       flows or conversation.FlowLibrary(),
                                                       llm=llm)
        self.brains.update(self.conversations.brains)
        if self.config.warm_up_models:
            system.tasks.spawn(conversation.warm_up(registry), name="warm-up-models")
        return call_vad

    def info(self) -> NodeInfo:
        actors = len(self.system.local_actors()) if self.system else 0
        return NodeInfo(node_id=self.config.node_id, region=self.config.region,
                        capacity=self.config.capacity, load=actors, actors=actors,
                        started_at=self.started_at, draining=self.draining,
                        version=__version__,
                        kinds=self.host.hosted_kinds() if self.host else [])

    # -- Parent of the root supervisor ----------------------------------------------------

    async def child_exited(self, child: ActorCell, reason: BaseException | None) -> Decision:
        log.critical("root supervisor stopped (%s); the node exits so its service manager "
                     "restarts it", type(reason).__name__ if reason else "normal exit")
        self.exit_code = 1
        self._stopped.set()
        return Decision(Directive.STOP)

    def _task_failed(self, name: str, exc: BaseException) -> None:
        log.critical("node task %s failed: %r; the node exits", name, exc, exc_info=exc)
        self.exit_code = 1
        self._stopped.set()

    # -- stopping -------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stopped.set()

    async def wait(self) -> int:
        await self._stopped.wait()
        return self.exit_code

    async def drain(self, timeout: float = 10.0) -> None:
        """Graceful stop: no new work, hand virtual actors over, stop the tree, leave."""
        self.draining = True
        if self.sip is not None:  # first, like the web: calls end while NATS is still up
            await self.sip.close(timeout)
        if self.web is not None:
            # First: no new web calls, and the calls up end as `shutdown` while their
            # tenants and NATS are still there to release quota and record call.ended.
            await self.web.close(timeout)
        if self.heartbeat is not None:
            try:
                await self.heartbeat.beat()
            except Exception as exc:  # noqa: BLE001 - best effort: the TTL covers it
                log.warning("draining heartbeat failed: %r", exc)
        if self.host is not None:
            moved = await self.host.drain(timeout)
            log.info("drain: handed over %d virtual actors", moved)
        if self.system is not None:
            await self.system.stop(self.system.ref("supervisor", "root"), timeout)
        if self.heartbeat is not None:
            await self.heartbeat.withdraw(self.config.node_id)
        if self.system is not None:
            await self.system.shutdown(timeout)
        if self.conversations is not None:
            await self.conversations.aclose()
        if self.media_probe is not None:
            self.media_probe.close()
        if self.transport is not None:
            await self.transport.close()
