"""The web gateway's HTTP API: what the page and the widget send and get back (JSON).

    GET  /api/config                     -> WebConfigReply   (agents the caller may call, ICE)
    POST /api/calls              CallOffer -> CallAnswer (201)
    POST /api/calls/<id>/ice-restart  IceRestart -> CallAnswer
    POST /api/calls/<id>/hangup       CallHangup -> 204

Authentication: a call token (gateways/webrtc/tokens.py) in `Authorization: Bearer <token>`
or in `CallOffer.token`, never in a URL (URLs end up in logs and browser history). In demo
mode a page on the node's own loopback address may call the demo tenant without a token.
After set-up the page proves it owns the call with `call_secret`, not the token, so a call
may outlive its (short-lived) token.

Errors: `{"error": {"code": ..., "message": ..., "retry_after": ...}}` with 400 bad_request,
401 unauthorized, 403 forbidden, 404 not_found, 429 quota_exceeded / rate_limited (and a
Retry-After header), 503 unavailable (gateways/webrtc/errors.py). Unknown fields are ignored,
so an older page keeps working against a newer node. `v` is the schema version.
"""

from __future__ import annotations

import msgspec


class CallOffer(msgspec.Struct, frozen=True, kw_only=True):
    sdp: str
    type: str = "offer"
    agent: str = ""   # empty: the token's agent (or, in demo mode, the demo tenant's first)
    tenant: str = ""  # empty: the token's tenant
    token: str = ""   # alternative to the Authorization header
    v: int = 1


class CallAnswer(msgspec.Struct, frozen=True, kw_only=True):
    call_id: str
    call_secret: str  # proves ownership of the call to ice-restart and hangup
    sdp: str
    type: str = "answer"
    codec: str = ""
    v: int = 1


class IceRestart(msgspec.Struct, frozen=True, kw_only=True):
    """A new offer from a fresh RTCPeerConnection after the page lost its network path."""

    sdp: str
    call_secret: str
    type: str = "offer"
    v: int = 1


class CallHangup(msgspec.Struct, frozen=True, kw_only=True):
    call_secret: str
    v: int = 1


class AgentInfo(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str = ""
    v: int = 1


class WebConfigReply(msgspec.Struct, frozen=True, kw_only=True):
    tenant: str
    agents: list[AgentInfo]
    ice_servers: list[dict[str, object]]  # W3C RTCIceServer dictionaries
    demo: bool = False
    v: int = 1
