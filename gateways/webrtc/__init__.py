"""The web gateway: callers talk to agents from a browser over WebRTC (issue 5).

- `server`: `WebGateway`, the node's HTTP(S) server: the page, the widget, the API.
- `api`: the API handlers and who may call (tokens, demo mode); shapes in protocols/web.py.
- `tokens`: short-lived call tokens (JWT, HS256, per-tenant secret).
- `admission`: `CallStarter`, tenant admission and hand-off to a call actor on this node.
- `leg`: `WebRtcLeg`, the `MediaLeg` over aiortc; `tracks`, `playout`, `chunks` carry its
  audio; `live_channel` carries live events to the page (protocols/live.py).
- `ice`, `tls`: STUN/TURN servers and HTTPS certificates.
- `livekit_leg`, `livekit_agent`: an agent joining a LiveKit room (optional `livekit`
  packages; not imported here).
- `static/`: the page (`index.html`, `app.js`), the widget (`widget.js`) and `call.js`,
  the call client both use. Plain scripts, no build step.

Import from the modules; this package re-exports what a node needs to run the gateway.
"""

from switchboard.gateways.webrtc.admission import CallStarter
from switchboard.gateways.webrtc.ice import IceServer, ice_servers_from_flags
from switchboard.gateways.webrtc.leg import WebRtcLeg
from switchboard.gateways.webrtc.server import ListenError, WebConfig, WebGateway
from switchboard.gateways.webrtc.tls import TlsConfig
from switchboard.gateways.webrtc.tokens import (
    TokenError,
    mint_call_token,
    mint_token_for,
    verify_call_token,
)

__all__ = [
    "CallStarter",
    "IceServer",
    "ListenError",
    "TlsConfig",
    "TokenError",
    "WebConfig",
    "WebGateway",
    "WebRtcLeg",
    "ice_servers_from_flags",
    "mint_call_token",
    "mint_token_for",
    "verify_call_token",
]
