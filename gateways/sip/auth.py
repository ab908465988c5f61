"""HTTP Digest authentication for SIP: RFC 3261 §22, RFC 8760 (SHA-256), RFC 2617/7616 qop=auth.

Two sides, both pure (no I/O):

- `DigestServer` protects a trunk that has credentials: it answers an unauthenticated request
  with 401 (or 407 as a proxy) carrying one challenge per algorithm, most preferred first
  (RFC 8760 §2.4: SHA-256 before MD5), and verifies the `Authorization` of the retried request.
  Nonces are stateless: a timestamp and a random part signed with an HMAC key, so any nonce we
  issued can be checked without a table, and an old one is answered with `stale=true`
  (RFC 7616 §3.3) instead of a failure. Replayed nonce counts are refused (§3.4.5).
- `DigestClient` answers a challenge for an outbound call through a trunk: it picks the
  strongest algorithm offered, uses qop=auth when offered and counts nc per nonce.

Passwords and Authorization/Proxy-Authorization values are secrets: they are never logged,
never in an exception text, and `Credentials` hides the password from repr.
auth-int is not supported (it is rarely offered and needs the body hashed).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from switchboard.gateways.sip.headers import Headers
from switchboard.gateways.sip.message import SipRequest, SipResponse, build_response
from switchboard.gateways.sip.uri import SipUri, UriError

__all__ = [
    "ALGORITHMS",
    "AuthOutcome",
    "Credentials",
    "DigestClient",
    "DigestServer",
    "format_digest",
    "parse_digest",
]

# RFC 8760 §2 / RFC 7616 §3.2: algorithm name → hash function; "-sess" variants reuse them.
ALGORITHMS: dict[str, Callable[[bytes], str]] = {
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
    "MD5": lambda data: hashlib.md5(data, usedforsecurity=False).hexdigest(),
}
_PREFERENCE = ("SHA-256", "SHA-256-SESS", "MD5", "MD5-SESS")
_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_\-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*(?:,|$)')
_UNQUOTED = frozenset(("algorithm", "qop", "nc", "stale"))  # RFC 7616 §3.4: sent as tokens


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and password for digest; the password never shows in repr or logs."""

    username: str
    password: str = field(repr=False)


def parse_digest(value: str) -> dict[str, str] | None:
    """The parameters of a `Digest ...` challenge or credentials value, None if not digest.

    Parameter names are lowercased; quoted values are unescaped (RFC 7616 §3.3, RFC 3261 §25.1).
    """
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM_RE.match(rest, pos)
        if m is None or m.end() == pos:
            return None
        name, raw = m.group(1).lower(), m.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[name] = raw
        pos = m.end()
    return params


def format_digest(params: Mapping[str, str], *, challenge: bool = False) -> str:
    """`Digest name="value", ...`, tokens unquoted where RFC 7616 says they are tokens.

    In a challenge `qop` is a quoted list (RFC 7616 §3.3); in credentials a token (§3.4).
    """
    parts = []
    for name, value in params.items():
        if name in _UNQUOTED and not (challenge and name == "qop"):
            parts.append(f"{name}={value}")
        else:
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'{name}="{escaped}"')
    return "Digest " + ", ".join(parts)


def _hash_for(algorithm: str) -> Callable[[bytes], str] | None:
    return ALGORITHMS.get(algorithm.upper().removesuffix("-SESS"))


def _response(
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    *,
    qop: str | None,
    nc: str = "",
    cnonce: str = "",
) -> str:
    """The `response` value of RFC 7616 §3.4.1 (RFC 2617 §3.2.2 when `qop` is None)."""
    h = _hash_for(algorithm)
    if h is None:
        raise ValueError("unsupported digest algorithm")
    ha1 = h(f"{username}:{realm}:{password}".encode())
    if algorithm.upper().endswith("-SESS"):
        ha1 = h(f"{ha1}:{nonce}:{cnonce}".encode())  # RFC 7616 §3.4.2
    ha2 = h(f"{method}:{uri}".encode())
    if qop is None:
        return h(f"{ha1}:{nonce}:{ha2}".encode())
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())


def _same_target(digest_uri: str, request_uri: SipUri) -> bool:
    """§22.4: the digest-uri names the Request-URI; compared by host, since UAs differ on
    whether they keep the port and parameters (RFC 7616 §3.4.6 leaves it to the server)."""
    try:
        return SipUri.parse(digest_uri).host == request_uri.host
    except UriError:
        return False


class AuthOutcome(enum.Enum):
    """What `DigestServer.verify` concluded; anything but OK is answered with a challenge."""

    OK = "ok"
    MISSING = "missing"  # no credentials for our realm: challenge
    STALE = "stale"  # right password, expired nonce: challenge with stale=true
    FAILED = "failed"  # wrong user, password, nonce or replay: challenge again (and count)


class DigestServer:
    """Challenges and verifies requests for one realm.

    `users` maps usernames to passwords. `proxy=True` uses 407/Proxy-Authenticate, as a proxy
    in front of the caller would (§22.3). `clock` is wall time (nonces cross restarts of the
    process only if `key` is configured, which a cluster behind one address needs).
    """

    def __init__(
        self,
        realm: str,
        users: Mapping[str, str],
        *,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        nonce_ttl: float = 300.0,
        key: bytes | None = None,
        proxy: bool = False,
        clock: Callable[[], float] = time.time,
        max_tracked_nonces: int = 10_000,
    ) -> None:
        unknown = [a for a in algorithms if _hash_for(a) is None]
        if unknown or not algorithms:
            raise ValueError("digest algorithms must be a non-empty subset of SHA-256, MD5")
        self.realm = realm
        self._users = dict(users)
        self.algorithms = tuple(a.upper() for a in algorithms)
        self.nonce_ttl = nonce_ttl
        self._key = key or secrets.token_bytes(32)
        self.proxy = proxy
        self._clock = clock
        self._opaque = secrets.token_hex(8)
        self._last_nc: OrderedDict[str, int] = OrderedDict()
        self._max_tracked = max_tracked_nonces
        self.counts = {"challenged": 0, "ok": 0, "failed": 0, "stale": 0}

    @property
    def challenge_status(self) -> int:
        return 407 if self.proxy else 401

    def _nonce(self) -> str:
        stamp = f"{int(self._clock()):x}.{secrets.token_hex(6)}"
        return f"{stamp}.{self._sign(stamp)}"

    def _sign(self, stamp: str) -> str:
        mac = hmac.new(self._key, f"{stamp}:{self.realm}".encode(), hashlib.sha256)
        return mac.hexdigest()[:24]

    def _nonce_state(self, nonce: str) -> AuthOutcome:
        stamp, _, signature = nonce.rpartition(".")
        if not stamp or not hmac.compare_digest(signature, self._sign(stamp)):
            return AuthOutcome.FAILED
        issued = int(stamp.partition(".")[0], 16)
        return AuthOutcome.STALE if self._clock() - issued > self.nonce_ttl else AuthOutcome.OK

    def challenge(self, request: SipRequest, *, stale: bool = False, to_tag: str | None = None
                  ) -> SipResponse:  # fmt: skip
        """A 401/407 for `request` with one challenge per algorithm, preferred first."""
        headers = Headers()
        name = "Proxy-Authenticate" if self.proxy else "WWW-Authenticate"
        nonce = self._nonce()
        for algorithm in self.algorithms:
            params = {"realm": self.realm, "nonce": nonce, "opaque": self._opaque,
                      "algorithm": algorithm, "qop": "auth"}  # fmt: skip
            if stale:
                params["stale"] = "true"
            headers.add(name, format_digest(params, challenge=True))
        self.counts["challenged"] += 1
        return build_response(request, self.challenge_status, to_tag=to_tag, headers=headers)

    def verify(self, request: SipRequest) -> AuthOutcome:
        """Check the request's credentials for our realm (§22.4)."""
        header = "Proxy-Authorization" if self.proxy else "Authorization"
        found: dict[str, str] | None = None
        for value in request.headers.get_all(header):
            params = parse_digest(value)
            if params is not None and params.get("realm") == self.realm:
                found = params
                break
        if found is None:
            return AuthOutcome.MISSING
        outcome = self._check(request, found)
        self.counts[outcome.value if outcome != AuthOutcome.MISSING else "failed"] += 1
        return outcome

    def _check(self, request: SipRequest, p: dict[str, str]) -> AuthOutcome:
        algorithm = p.get("algorithm", "MD5").upper()
        username, nonce, uri = p.get("username"), p.get("nonce", ""), p.get("uri", "")
        password = self._users.get(username or "")
        if algorithm not in self.algorithms or password is None or username is None:
            return AuthOutcome.FAILED
        qop = p.get("qop")
        if qop is not None and qop.lower() != "auth":
            return AuthOutcome.FAILED
        nonce_state = self._nonce_state(nonce)
        if nonce_state == AuthOutcome.FAILED:
            return nonce_state
        nc, cnonce = p.get("nc", ""), p.get("cnonce", "")
        if qop is not None and (not re.fullmatch(r"[0-9a-fA-F]{8}", nc) or not cnonce):
            return AuthOutcome.FAILED
        expected = _response(algorithm, username, self.realm, password, request.method, uri,
                             nonce, qop=qop, nc=nc, cnonce=cnonce)  # fmt: skip
        if not hmac.compare_digest(expected, p.get("response", "").lower()):
            return AuthOutcome.FAILED
        if not _same_target(uri, request.uri):
            return AuthOutcome.FAILED
        if nonce_state == AuthOutcome.STALE:
            return nonce_state
        if qop is not None and not self._fresh_nc(nonce, int(nc, 16)):
            return AuthOutcome.FAILED
        return AuthOutcome.OK

    def _fresh_nc(self, nonce: str, nc: int) -> bool:
        # RFC 7616 §3.4.5: a nonce count must grow; the same count again is a replay.
        last = self._last_nc.get(nonce, 0)
        if nc <= last:
            return False
        self._last_nc[nonce] = nc
        self._last_nc.move_to_end(nonce)
        while len(self._last_nc) > self._max_tracked:
            self._last_nc.popitem(last=False)
        return True


class DigestClient:
    """Answers 401/407 challenges with `Credentials` for requests we send through a trunk."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self._nc: dict[str, int] = {}

    def authorize(self, challenge: SipResponse, method: str, uri: str) -> tuple[str, str] | None:
        """The (header name, value) that answers `challenge` for a request `method uri`.

        None when no challenge uses an algorithm we support (the call then fails with the
        challenge's status). A `stale=true` challenge is answered like a fresh one.
        """
        proxy = challenge.status == 407
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        best: dict[str, str] | None = None
        for value in challenge.headers.get_all(name):
            params = parse_digest(value)
            if params is None or "nonce" not in params or "realm" not in params:
                continue
            algorithm = params.get("algorithm", "MD5").upper()
            if algorithm not in _PREFERENCE:
                continue
            if best is None or _PREFERENCE.index(algorithm) < _PREFERENCE.index(
                best.get("algorithm", "MD5").upper()
            ):
                best = params
        if best is None:
            return None
        return ("Proxy-Authorization" if proxy else "Authorization"), self._answer(best, method,
                                                                                   uri)

    def _answer(self, c: dict[str, str], method: str, uri: str) -> str:
        algorithm = c.get("algorithm", "MD5").upper()
        qops = [q.strip().lower() for q in c.get("qop", "").split(",") if q.strip()]
        qop = "auth" if "auth" in qops else None
        nonce, realm = c["nonce"], c["realm"]
        self._nc[nonce] = nc_value = self._nc.get(nonce, 0) + 1
        if len(self._nc) > 64:  # one entry per live nonce; old ones are useless
            self._nc.pop(next(iter(self._nc)))
        nc, cnonce = f"{nc_value:08x}", secrets.token_hex(8)
        user = self.credentials
        out = {"username": user.username, "realm": realm, "nonce": nonce, "uri": uri,
               "response": _response(algorithm, user.username, realm, user.password, method, uri,
                                     nonce, qop=qop, nc=nc, cnonce=cnonce),
               "algorithm": algorithm}  # fmt: skip
        if "opaque" in c:
            out["opaque"] = c["opaque"]
        if qop is not None:
            out.update(qop=qop, nc=nc, cnonce=cnonce)
        return format_digest(out)
