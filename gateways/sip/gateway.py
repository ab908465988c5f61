"""`SipGateway`: the node's SIP edge, the `CallHandler` between the user agent and the actors.

Inbound, for each INVITE (`admit`, while the caller hears 100 Trying):

    route the dialled number (TenantDirectory.route)        no route, no agent: 404
    AdmitCall -> tenant/<tenant>                             quota_exceeded: 486, rate_limited:
                                                             503, both with Retry-After;
                                                             no answer in time: 503
    SipLeg registered, StartCall -> calls/calls (here)      failure: 503, slot released
    Accept(MediaOptions)                                     the caller hears 180 Ringing

The call actor answers the leg (200 OK) once the agent's greeting is ready. The agent's
`rtp_inactivity_seconds` becomes the RTP inactivity timeout (the leg reports it, the actor
hangs up) and `max_call_seconds` plus a grace becomes the user agent's own maximum duration,
a backstop behind the actor's clock. The caller id and the dialled number (E.164 when it
routes) travel in `StartCall` to the agent. When the SIP call ends (`call_ended`), the leg
emits `LegEnded`; the call actor then ends, releases the tenant's slot and publishes
`call.ended`. If admission is cancelled (the user agent's `admit_timeout`) or the call actor
does not start, the leg is dropped and the slot released at once (`CallFinished`, idempotent).

Outbound: `place` (from the trunk actor) hands the call to the `Dialer`.

`close()` stops listening, cancels calls still dialling, hangs up every call (reason
`shutdown`) and waits, bounded, for their call actors to end while NATS is still there to
release quotas and record `call.ended`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from switchboard.actors.errors import ActorError, ActorNotFound, RemoteError
from switchboard.actors.media_registry import MediaLegRegistry
from switchboard.actors.system import ActorSystem
from switchboard.actors.tasks import TaskOwner
from switchboard.actors.transport import TransportError
from switchboard.gateways.sip.call import SipCall
from switchboard.gateways.sip.dialer import MAX_DURATION_GRACE, Dialer
from switchboard.gateways.sip.handler import Accept, Admission, CallEnd, Refuse
from switchboard.gateways.sip.leg import SipLeg
from switchboard.gateways.sip.settings import codec_preferences, user_agent_config
from switchboard.gateways.sip.starter import CallStarter
from switchboard.gateways.sip.useragent import UserAgent
from switchboard.protocols.call import CALLER_HANGUP, ERROR, PlaceCall
from switchboard.protocols.sip_config import SipConfig
from switchboard.protocols.tenants import TenantDirectory, normalize_number
from switchboard.storage.events import EventPublisher

__all__ = ["GatewayServices", "SipGateway", "SipListenError", "refusal_for"]

log = logging.getLogger("switchboard.sip")
BUSY_RETRY_AFTER = 2.0  # Retry-After when the cluster, not the tenant, could not answer


@dataclass(frozen=True, slots=True)
class GatewayServices:
    """What the gateway uses of its node."""

    system: ActorSystem
    legs: MediaLegRegistry
    directory: TenantDirectory
    events: EventPublisher | None = None  # records outbound calls that never connected
    clock: Callable[[], float] = time.time


class SipListenError(OSError):
    """The gateway cannot listen as configured (port taken, address not ours, TLS files, or
    settings that cannot work together); the message says which setting to change."""


def refusal_for(exc: ActorError | TransportError) -> Refuse:
    """The SIP answer to an INVITE the tenant (or the cluster) did not admit."""
    if isinstance(exc, RemoteError):
        retry = math.ceil(exc.retry_after) if exc.retry_after is not None else None
        if exc.code == "quota_exceeded":
            return Refuse(486, retry_after=retry if retry is not None else 10)
        if exc.code == "rate_limited":
            return Refuse(503, retry_after=retry if retry is not None else 5)
        if exc.code == "forbidden":
            return Refuse(403)
    # Timeouts, no node hosting tenants (ActorNotFound), a crash: the platform, not the
    # caller, is at fault, and it may be back in a moment.
    return Refuse(503, retry_after=BUSY_RETRY_AFTER)


class SipGateway:
    """See the module docstring. `start()`, then `close()`; it is the user agent's handler."""

    def __init__(self, services: GatewayServices, config: SipConfig) -> None:
        self.services = services
        self.config = config
        self.directory = services.directory
        self.starter = CallStarter(services.system, services.legs,
                                   admit_timeout=min(3.0, config.admit_timeout / 2),
                                   start_timeout=min(3.0, config.admit_timeout / 2))
        self.preferences = codec_preferences(config) if config.codecs else ()  # start() checks
        self.ua: UserAgent | None = None
        self.dialer = Dialer(starter=self.starter, directory=services.directory,
                             events=services.events, preferences=self.preferences,
                             pcm_rate=config.pcm_rate, ring_timeout=config.ring_timeout,
                             on_answered=self._track, clock=services.clock)
        self._legs: dict[str, SipLeg] = {}  # by SipCall.id, while the SIP call is up
        self._cleanup = TaskOwner()
        self._closing = False
        self.refusals: dict[int, int] = {}

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen; with `any_port_if_busy`, a taken port falls back to a free one.

        Raises `SipListenError` (an OSError) naming the setting to change."""
        cfg = self.config
        try:
            codec_preferences(cfg)
            user_agent_config(cfg)
        except ValueError as exc:
            raise SipListenError(f"the SIP settings cannot work: {exc}") from None
        try:
            if cfg.port == 0:
                self.ua = await self._listen_anywhere()
            else:
                try:
                    self.ua = await self._listen(None)
                except OSError:
                    if not cfg.any_port_if_busy:
                        raise
                    log.info("SIP port %d is taken; listening on a free port instead",
                             cfg.port)
                    self.ua = await self._listen_anywhere()
        except OSError as exc:
            raise SipListenError(f"cannot listen for SIP on {cfg.host}:{cfg.port} "
                                 f"({exc.strerror or exc}); choose another --sip-port (0: any "
                                 "free port) or --sip-host, or check the TLS files") from None
        self.dialer.ua = self.ua
        host, port = self.address
        log.info("SIP gateway listening on %s:%d (%s)", host, port,
                 "+".join(n for n, on in (("UDP", self.config.udp), ("TCP", self.config.tcp))
                          if on))

    async def _listen_anywhere(self, attempts: int = 5) -> UserAgent:
        # UDP picks a free port and TCP binds the same number, which may be taken: try again.
        for _ in range(attempts - 1):
            try:
                return await self._listen(0)
            except OSError:
                continue
        return await self._listen(0)

    async def _listen(self, port: int | None) -> UserAgent:
        ua = UserAgent(user_agent_config(self.config, port=port), self)
        try:
            await ua.start()
        except BaseException:
            await ua.aclose()
            raise
        return ua

    @property
    def address(self) -> tuple[str, int]:
        """(advertised host, port) where callers reach us."""
        if self.ua is None:
            raise RuntimeError("the SIP gateway is not started")
        name = "UDP" if self.config.udp else "TCP"
        return self.ua.transport.local_address(name)

    def uri(self, user: str) -> str:
        """The SIP URI to call `user` (a number) here, e.g. sip:+15550100@127.0.0.1:5060."""
        host, port = self.address
        host = f"[{host}]" if ":" in host else host
        suffix = "" if self.config.udp else ";transport=tcp"
        return f"sip:{user}@{host}:{port}{suffix}"

    @property
    def active_calls(self) -> int:
        return len(self._legs)

    async def close(self, timeout: float = 10.0) -> None:
        """No new calls; end the ones up as `shutdown` and wait (bounded) for their actors.
        Idempotent."""
        if self._closing:
            return
        self._closing = True
        await self.dialer.close(timeout)
        legs = list(self._legs.values())
        if self.ua is not None:
            await self.ua.aclose()
        legs_registry = self.services.legs
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(leg.call_id in legs_registry for leg in legs) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await self._cleanup.close(max(0.5, deadline - loop.time()))

    # -- CallHandler: inbound ---------------------------------------------------------------

    async def admit(self, call: SipCall) -> Admission:
        if self._closing:
            return self._refuse(Refuse(503, retry_after=5))
        route = self.directory.route(call.callee)
        tenant = self.directory.tenant(route.tenant_id) if route is not None else None
        agent = tenant.agent(route.agent_id) if route is not None and tenant else None
        if route is None or agent is None:
            return self._refuse(Refuse(404))
        leg = SipLeg(call.id, caller=call.caller,
                     callee=normalize_number(call.callee) or call.callee,
                     direction="inbound", sample_rate=self.config.pcm_rate)
        leg.bind(call)
        media = leg.media_options(preferences=self.preferences,
                                  inactivity_timeout=agent.rtp_inactivity_seconds,
                                  max_duration=agent.max_call_seconds + MAX_DURATION_GRACE)
        try:
            admitted = await self.starter.admit(call.id, route.tenant_id, route.agent_id)
            if call.end is not None:  # CANCELled while the tenant decided: no actor for it
                self._forget(call, leg)
                self._release(route.tenant_id, call.id, CALLER_HANGUP)
                return self._refuse(Refuse(487))
            self._track(call, leg)
            await self.starter.start(leg, tenant_id=route.tenant_id, agent_id=route.agent_id,
                                     direction="inbound", lease_seconds=admitted.lease_seconds)
        except RemoteError as exc:
            self._forget(call, leg)
            if exc.code not in ("quota_exceeded", "rate_limited", "forbidden"):
                self._release(route.tenant_id, call.id)
            return self._refuse(refusal_for(exc))
        except (ActorError, TransportError, ValueError) as exc:
            # Timed out, no node for tenants, or the call actor failed: the tenant may have
            # admitted the call meanwhile, so give the slot back (idempotent).
            self._forget(call, leg)
            self._release(route.tenant_id, call.id)
            if isinstance(exc, ActorNotFound):
                log.warning("SIP call %s: no live node hosts tenant actors", call.id)
            return self._refuse(refusal_for(exc) if not isinstance(exc, ValueError)
                                else Refuse(503, retry_after=BUSY_RETRY_AFTER))
        except asyncio.CancelledError:
            # The user agent gave up (admit_timeout): it answers 503 itself.
            self._forget(call, leg)
            self._release(route.tenant_id, call.id)
            raise
        return Accept(media)

    def call_ended(self, call: SipCall, end: CallEnd) -> None:
        leg = self._legs.pop(call.id, None)
        if leg is not None:
            leg.ended(end)

    # -- outbound (the trunk actor) ---------------------------------------------------------

    def has_trunk(self, name: str) -> bool:
        return self.ua is not None and self.ua.trunks.get(name) is not None

    def place(self, place: PlaceCall, trunk: str) -> None:
        """Dial an admitted outbound call through `trunk` (returns at once)."""
        if self._closing or self.ua is None:
            raise RuntimeError("the SIP gateway is closing")
        self.dialer.place(place, trunk)

    # -- helpers ------------------------------------------------------------------------------

    def _track(self, call: SipCall, leg: SipLeg) -> None:
        self._legs[call.id] = leg

    def _forget(self, call: SipCall, leg: SipLeg) -> None:
        self._legs.pop(call.id, None)
        self.services.legs.unregister(leg.call_id, leg)
        leg.abandon()  # a call actor that started meanwhile finds the leg over

    def _release(self, tenant_id: str, call_id: str, reason: str = ERROR) -> None:
        try:
            self._cleanup.spawn(self.starter.release(tenant_id, call_id, reason),
                                name=f"sip-release:{call_id}")
        except RuntimeError:
            log.warning("SIP call %s: gateway closing, its slot lapses with its lease",
                        call_id)

    def _refuse(self, refuse: Refuse) -> Refuse:
        self.refusals[refuse.status] = self.refusals.get(refuse.status, 0) + 1
        return refuse
