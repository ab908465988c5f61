"""STUN and TURN servers: one list in the node's configuration, given to both ends of a call.

Behind NAT a browser and the node find a path with ICE (RFC 8445): STUN tells each side its
public address, TURN relays media when no direct path exists (symmetric NATs, UDP blocked).
The same servers go to the browser (`RTCPeerConnection({iceServers})`, in `GET /api/config`)
and to aiortc (`RTCConfiguration`), so both sides gather the same kinds of candidates.

TURN credentials are either static (`username` + `credential`) or minted per call from a
secret shared with the TURN server: the "TURN REST API" scheme that coturn implements as
`use-auth-secret` (draft-uberti-behave-turn-rest-00): username = `<expiry>:<label>`,
password = base64(HMAC-SHA1(secret, username)). Minted credentials expire with the call's
token lifetime, so a page that leaks them gives away little.

With no servers configured, aiortc gets an explicitly empty list: aiortc's own default is a
public Google STUN server, which a self-hosted platform must not contact unasked (and which
cannot be reached from a network without internet, where gathering would stall).

aioice (aiortc's ICE) uses the first STUN and the first TURN server of the list only; the
browser uses them all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field

from aiortc import RTCConfiguration, RTCIceServer
from switchboard.protocols.tenants import Secret

DEFAULT_REST_TTL = 3600.0


@dataclass(frozen=True, slots=True)
class IceServer:
    """One STUN or TURN server. `urls`: `stun:host[:port]`, `turn:host[:port][?transport=tcp]`,
    `turns:host[:port]`. For TURN, either `username` + `credential`, or `shared_secret`."""

    urls: tuple[str, ...]
    username: str = ""
    credential: Secret | None = field(default=None, repr=False)
    shared_secret: Secret | None = field(default=None, repr=False)
    rest_ttl: float = DEFAULT_REST_TTL

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("an ICE server needs at least one URL")
        for url in self.urls:
            if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
                raise ValueError(f"ICE server URL {url!r} must start with stun:, stuns:, turn: "
                                 "or turns:")
        if self.is_turn and self.shared_secret is None and (not self.username
                                                            or self.credential is None):
            raise ValueError(f"TURN server {self.urls[0]} needs a username and credential, or a "
                             "shared_secret (coturn use-auth-secret)")

    @property
    def is_turn(self) -> bool:
        return any(url.startswith(("turn:", "turns:")) for url in self.urls)

    def credentials(self, label: str, now: float | None = None) -> tuple[str, str]:
        """(username, password) for one call; empty for STUN."""
        if not self.is_turn:
            return "", ""
        if self.shared_secret is not None:
            expiry = int((now if now is not None else time.time()) + self.rest_ttl)
            username = f"{expiry}:{label}"
            digest = hmac.new(self.shared_secret.reveal().encode(), username.encode(),
                              hashlib.sha1).digest()
            return username, base64.b64encode(digest).decode()
        assert self.credential is not None  # __post_init__ checked
        return self.username, self.credential.reveal()


def browser_ice_servers(servers: list[IceServer], label: str,
                        now: float | None = None) -> list[dict[str, object]]:
    """The `iceServers` list for `new RTCPeerConnection({iceServers})` (W3C RTCIceServer)."""
    out: list[dict[str, object]] = []
    for server in servers:
        entry: dict[str, object] = {"urls": list(server.urls)}
        username, password = server.credentials(label, now)
        if username:
            entry["username"] = username
            entry["credential"] = password
        out.append(entry)
    return out


def rtc_configuration(servers: list[IceServer], label: str,
                      now: float | None = None) -> RTCConfiguration:
    """aiortc's configuration for one call's peer connection (never aiortc's default STUN)."""
    ice = []
    for server in servers:
        username, password = server.credentials(label, now)
        ice.append(RTCIceServer(urls=list(server.urls), username=username or None,
                                credential=password or None))
    return RTCConfiguration(iceServers=ice)


def ice_servers_from_flags(*, stun: list[str], turn: list[str], turn_username: str = "",
                           turn_password: str = "", turn_secret: str = ""
                           ) -> tuple[IceServer, ...]:
    """The servers of `--stun URL` / `--turn URL` command-line flags; the TURN password or
    REST secret apply to every TURN URL (read them from the environment, not the command
    line, where `ps` shows them)."""
    servers = [IceServer(urls=(url,)) for url in stun]
    for url in turn:
        servers.append(IceServer(
            urls=(url,), username=turn_username,
            credential=Secret(turn_password) if turn_password else None,
            shared_secret=Secret(turn_secret) if turn_secret else None))
    return tuple(servers)
