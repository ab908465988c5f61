"""The HTTP API of the web gateway (protocols/web.py has the shapes): handlers and who may call.

Who may call, in order:
1. a call token (`Authorization: Bearer`, or `token` in the JSON body), checked against its
   tenant's `web_token_secret` (tokens.py); the body may not ask for another tenant or agent;
2. in demo mode only, a page on the node's own loopback address with a loopback Host header,
   for the demo tenant's agents (behind a reverse proxy the Host header is the public name, so
   a proxied request never passes as local);
3. nobody else: 401 with how to get a token.

A call set-up (`POST /api/calls`) is: authorize, admit at the tenant (a refusal becomes 404 /
429 / 503 here), answer the SDP offer with a new `WebRtcLeg`, start the call actor on this
node, and return the answer with the call's id and secret. Every failure after admission
gives the slot back.
"""

from __future__ import annotations

import hmac
import logging
import math
import secrets
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from aiohttp import web
from switchboard.gateways.webrtc.admission import CallStarter
from switchboard.gateways.webrtc.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    Unauthorized,
    Unavailable,
    WebError,
)
from switchboard.gateways.webrtc.ice import IceServer, browser_ice_servers, rtc_configuration
from switchboard.gateways.webrtc.leg import WebRtcLeg, check_offer
from switchboard.gateways.webrtc.tls import is_loopback
from switchboard.gateways.webrtc.tokens import CallGrant, TokenError, verify_call_token
from switchboard.protocols.media import LegClosed
from switchboard.protocols.web import (
    AgentInfo,
    CallAnswer,
    CallHangup,
    CallOffer,
    IceRestart,
    WebConfigReply,
)

log = logging.getLogger("switchboard.web")

T = TypeVar("T")
MAX_BODY = 64 * 1024  # an SDP offer is a few kB


@dataclass(frozen=True, slots=True)
class ApiSettings:
    ice_servers: tuple[IceServer, ...] = ()
    demo_mode: bool = False
    demo_tenant: str = "demo"
    max_calls: int = 100            # web calls this node carries at once (~4 % of a core each)
    connect_timeout: float = 15.0   # offer answered -> media up, or the call ends
    reconnect_grace: float = 15.0   # media lost -> the page must reconnect within this


@dataclass(slots=True)
class _WebCall:
    leg: WebRtcLeg
    secret: str
    tenant_id: str


class CallApi:
    """The handlers; `WebGateway` mounts them (see `routes`)."""

    def __init__(self, starter: CallStarter, settings: ApiSettings) -> None:
        self.starter = starter
        self.settings = settings
        self.calls: dict[str, _WebCall] = {}

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/config", self.config),
                web.post("/api/calls", self.create_call),
                web.post("/api/calls/{call_id}/ice-restart", self.ice_restart),
                web.post("/api/calls/{call_id}/hangup", self.hangup)]

    # -- handlers ---------------------------------------------------------------------------

    async def config(self, request: web.Request) -> web.Response:
        grant = self._authorize(request, token="", agent="", tenant="")
        tenant = self.starter.directory.tenant(grant.tenant_id)
        if tenant is None:
            raise NotFound(f"tenant {grant.tenant_id} is not configured on this node")
        agents = [AgentInfo(id=a.id, name=a.name) for a in tenant.agents
                  if not grant.agent_id or a.id == grant.agent_id]
        reply = WebConfigReply(tenant=tenant.id, agents=agents, demo=not grant.agent_id,
                               ice_servers=browser_ice_servers(list(self.settings.ice_servers),
                                                               f"cfg-{secrets.token_hex(4)}"))
        return _json(reply)

    async def create_call(self, request: web.Request) -> web.Response:
        offer = await _read(request, CallOffer)
        grant = self._authorize(request, token=offer.token, agent=offer.agent,
                                tenant=offer.tenant)
        if not grant.agent_id:
            raise BadRequest("name the agent to call (`agent`)")
        check_offer(offer.sdp)  # before admission: a broken page must not use up quota
        if len(self.calls) >= self.settings.max_calls:
            raise Unavailable("this node carries as many web calls as it is allowed to; try "
                              "again shortly", retry_after=5.0)
        call_id = f"web-{secrets.token_hex(10)}"
        starter = self.starter
        admitted = await starter.admit(call_id, grant.tenant_id, grant.agent_id)
        tenant = starter.directory.tenant(grant.tenant_id)
        agent = tenant.agent(grant.agent_id) if tenant is not None else None
        ice = list(self.settings.ice_servers)
        leg = WebRtcLeg(call_id, caller=grant.caller or "web",
                        callee=f"web:{grant.agent_id}",
                        rtc_config=lambda: rtc_configuration(ice, call_id),
                        inactivity_timeout=agent.rtp_inactivity_seconds if agent else 30.0,
                        connect_timeout=self.settings.connect_timeout,
                        reconnect_grace=self.settings.reconnect_grace,
                        on_closed=self._leg_closed)
        try:
            answer = await leg.accept_offer(offer.sdp)
        except (WebError, LegClosed):
            await leg.hangup("error")
            await starter.release(grant.tenant_id, call_id)
            raise
        call = _WebCall(leg=leg, secret=secrets.token_urlsafe(24), tenant_id=grant.tenant_id)
        self.calls[call_id] = call
        await starter.start(leg, admitted)  # cleans up and raises WebError on failure
        log.info("web call %s started for tenant %s agent %s", call_id, grant.tenant_id,
                 grant.agent_id)
        return _json(CallAnswer(call_id=call_id, call_secret=call.secret, sdp=answer,
                                codec=leg.statistics().codec), status=201)

    async def ice_restart(self, request: web.Request) -> web.Response:
        body = await _read(request, IceRestart)
        call = self._call(request, body.call_secret)
        try:
            answer = await call.leg.restart(body.sdp)
        except LegClosed:
            raise NotFound("this call has ended; start a new one") from None
        return _json(CallAnswer(call_id=call.leg.call_id, call_secret=call.secret, sdp=answer,
                                codec=call.leg.statistics().codec))

    async def hangup(self, request: web.Request) -> web.Response:
        body = await _read(request, CallHangup)
        call = self._call(request, body.call_secret)
        call.leg.disconnect()
        return web.Response(status=204)

    # -- helpers ----------------------------------------------------------------------------

    def _authorize(self, request: web.Request, *, token: str, agent: str,
                   tenant: str) -> CallGrant:
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            token = token or header[7:].strip()
        if token:
            try:
                grant = verify_call_token(token, self.starter.directory)
            except TokenError as exc:
                raise Unauthorized(str(exc)) from None
            if (agent and agent != grant.agent_id) or (tenant and tenant != grant.tenant_id):
                raise Forbidden("the call token is for another agent; ask the site for a "
                                "token for this one")
            return grant
        settings = self.settings
        if settings.demo_mode and _is_local(request):
            if tenant and tenant != settings.demo_tenant:
                raise Unauthorized("without a token, only the demo tenant can be called")
            demo = self.starter.directory.tenant(settings.demo_tenant)
            if demo is None:
                raise NotFound(f"demo mode is on but tenant {settings.demo_tenant} is not in "
                               "the tenants file")
            return CallGrant(tenant_id=demo.id, agent_id=agent, expires_at=math.inf)
        raise Unauthorized("this call needs a call token: the site that embeds the widget mints "
                           "one with its tenant's web_token_secret (docs/web.md); on your own "
                           "machine, start the node in demo mode")

    def _call(self, request: web.Request, secret: str) -> _WebCall:
        call = self.calls.get(request.match_info["call_id"])
        if call is None:
            raise NotFound("no such call on this node (it ended, or it runs elsewhere)")
        if not hmac.compare_digest(call.secret.encode(), secret.encode()):
            raise Forbidden("this call belongs to another page")
        return call

    def _leg_closed(self, leg: WebRtcLeg) -> None:
        call = self.calls.get(leg.call_id)
        if call is not None and call.leg is leg:
            del self.calls[leg.call_id]


def _is_local(request: web.Request) -> bool:
    host = (request.url.host or "").strip("[]")
    return request.remote is not None and is_loopback(request.remote) and is_loopback(host)


async def _read(request: web.Request, kind: type[T]) -> T:
    # sendBeacon posts text/plain: the body is decoded whatever its declared type.
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise BadRequest(f"the request body is larger than {MAX_BODY // 1024} kB")
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"the request body does not match the API: {exc}") from None
    except msgspec.DecodeError:
        raise BadRequest("the request body is not JSON") from None


_ENCODER = msgspec.json.Encoder()


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_ENCODER.encode(body), status=status,
                        content_type="application/json")


def error_response(error: WebError) -> web.Response:
    response = _json(error.body(), status=error.status)
    response.headers.update(error.headers())
    return response

