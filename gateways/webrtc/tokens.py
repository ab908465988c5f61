"""Call tokens: short-lived JWTs that let a web page call one agent of one tenant.

A tenant's site (or, later, the tenant API) mints a token with the tenant's `web_token_secret`
from the tenants file, and hands it to the widget (`data-token`). The token says which tenant
and agent it may call and until when; the gateway checks it before asking the tenant actor
for a slot. Nothing else is trusted from the browser.

    header  {"alg": "HS256", "typ": "JWT"}
    claims  {"iss": "switchboard", "aud": "switchboard-web", "tenant": "demo", "agent": "demo",
             "iat": 1700000000, "exp": 1700000600, "jti": "...", "sub": "<optional caller ref>"}

Rules, and why:
- HS256 only (RFC 8725 §3.1: the verifier fixes the algorithm; `none` and RS/HS confusion are
  refused because no other algorithm is accepted).
- `exp - iat` is at most `MAX_TTL_SECONDS` (15 min), checked on verification too, so a site
  that signs a long-lived token by mistake gets a refusal rather than a token that leaks for
  days. A call may outlast its token: after set-up the page holds a per-call secret instead.
- `aud` must be ours, so a token minted for another service with the same secret is refused.
- The tenant is read from the unverified claims only to pick the secret; the signature is then
  checked with that tenant's secret, so a token claiming another tenant fails as forged.
- `sub` (optional) is the tenant's own reference for the caller; it becomes the call's
  `caller` (personal data: it goes to the call's `pii` fields, never to a log).

Error texts never include the token or the secret.
"""

from __future__ import annotations

import logging
import secrets
import time
import warnings
from dataclasses import dataclass
from typing import Any

import jwt
from switchboard.protocols.tenants import Secret, TenantDirectory

log = logging.getLogger("switchboard.web.tokens")

ALGORITHM = "HS256"
AUDIENCE = "switchboard-web"
ISSUER = "switchboard"
MAX_TTL_SECONDS = 900.0
DEFAULT_TTL_SECONDS = 600.0
LEEWAY_SECONDS = 5.0  # clock skew between the minting site and this node
_MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash
_short_secret_warned: set[str] = set()


class TokenError(Exception):
    """A call token was refused; the message says why (never what the token contained)."""


class TokenExpired(TokenError):
    pass


class TokenInvalid(TokenError):
    """Malformed, forged, for another audience, or signed for longer than allowed."""


class TokenTenantUnknown(TokenError):
    """The tenant the token names is not configured here, or has no web_token_secret."""


@dataclass(frozen=True, slots=True)
class CallGrant:
    """What a verified token allows: calls from `tenant_id` to `agent_id` until `expires_at`."""

    tenant_id: str
    agent_id: str
    expires_at: float
    caller: str = ""  # the token's `sub`: personal data


def mint_call_token(secret: Secret | str, *, tenant_id: str, agent_id: str,
                    ttl: float = DEFAULT_TTL_SECONDS, subject: str = "",
                    audience: str = AUDIENCE, now: float | None = None) -> str:
    """A token for calls to `agent_id` of `tenant_id`, valid `ttl` seconds (at most 15 min)."""
    if not 0 < ttl <= MAX_TTL_SECONDS:
        raise ValueError(f"a call token lives at most {MAX_TTL_SECONDS:.0f} s; got {ttl:g} s")
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {"iss": ISSUER, "aud": audience, "tenant": tenant_id,
                              "agent": agent_id, "iat": issued, "exp": issued + int(ttl),
                              "jti": secrets.token_urlsafe(12)}
    if subject:
        claims["sub"] = subject
    key = secret.reveal() if isinstance(secret, Secret) else secret
    with _quiet_short_keys():
        return jwt.encode(claims, key, algorithm=ALGORITHM)


def mint_token_for(directory: TenantDirectory, tenant_id: str, agent_id: str, *,
                   ttl: float = DEFAULT_TTL_SECONDS, subject: str = "") -> str:
    """A token signed with the tenant's secret from the tenants file (`switchboard token`)."""
    tenant = directory.tenant(tenant_id)
    if tenant is None:
        raise TokenTenantUnknown(f"tenant {tenant_id} is not in the tenants file")
    if tenant.agent(agent_id) is None:
        raise TokenTenantUnknown(f"tenant {tenant_id} has no agent {agent_id}")
    if tenant.web_token_secret is None:
        raise TokenTenantUnknown(f"tenant {tenant_id} has no web_token_secret; add one to the "
                                 "tenants file to allow web calls")
    return mint_call_token(tenant.web_token_secret, tenant_id=tenant_id, agent_id=agent_id,
                           ttl=ttl, subject=subject)


def verify_call_token(token: str, directory: TenantDirectory, *,
                      audience: str = AUDIENCE) -> CallGrant:
    """Check a token against its tenant's secret; raise a `TokenError` subclass if refused."""
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise TokenInvalid("the call token is not a well-formed JWT") from None
    tenant_id = unverified.get("tenant")
    if not isinstance(tenant_id, str) or not tenant_id:
        raise TokenInvalid("the call token names no tenant")
    tenant = directory.tenant(tenant_id)
    if tenant is None or tenant.web_token_secret is None:
        raise TokenTenantUnknown("the call token's tenant does not accept web calls here")
    key = tenant.web_token_secret.reveal()
    _warn_short_secret(tenant_id, key)
    try:
        with _quiet_short_keys():
            claims = jwt.decode(token, key, algorithms=[ALGORITHM], audience=audience,
                                issuer=ISSUER, leeway=LEEWAY_SECONDS,
                                options={"require": ["exp", "iat", "aud", "tenant", "agent"]})
    except jwt.ExpiredSignatureError:
        raise TokenExpired("the call token has expired; ask the site for a new one") from None
    except jwt.InvalidSignatureError:
        raise TokenInvalid("the call token's signature does not match its tenant's secret") \
            from None
    except jwt.InvalidAudienceError:
        raise TokenInvalid(f"the call token is not meant for {audience}") from None
    except jwt.PyJWTError as exc:
        raise TokenInvalid(f"the call token is invalid ({type(exc).__name__})") from None
    iat, exp = claims["iat"], claims["exp"]
    if not isinstance(iat, (int, float)) or exp - iat > MAX_TTL_SECONDS:
        raise TokenInvalid(f"the call token lives longer than {MAX_TTL_SECONDS:.0f} s; mint "
                           "tokens that expire sooner")
    agent_id = claims["agent"]
    if not isinstance(agent_id, str) or not agent_id:
        raise TokenInvalid("the call token names no agent")
    subject = claims.get("sub", "")
    return CallGrant(tenant_id=tenant_id, agent_id=agent_id, expires_at=float(exp),
                     caller=subject if isinstance(subject, str) else "")


def _warn_short_secret(tenant_id: str, key: str) -> None:
    if len(key.encode()) < _MIN_SECRET_BYTES and tenant_id not in _short_secret_warned:
        _short_secret_warned.add(tenant_id)
        log.warning("tenant %s: web_token_secret is shorter than %d bytes; use a longer random "
                    "secret (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)",
                    tenant_id, _MIN_SECRET_BYTES)


class _quiet_short_keys(warnings.catch_warnings):
    """PyJWT warns on every use of a short key; we warn once per tenant instead (above)."""

    def __enter__(self) -> None:
        super().__enter__()
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
