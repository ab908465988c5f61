"""Call tokens: a page may call exactly the agent its tenant's secret allowed, for at most
15 minutes, and a forged, foreign, expired or overlong token is refused with a reason that
never echoes the token."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from switchboard.gateways.webrtc.tokens import (
    AUDIENCE,
    MAX_TTL_SECONDS,
    TokenExpired,
    TokenInvalid,
    TokenTenantUnknown,
    mint_call_token,
    mint_token_for,
    verify_call_token,
)
from switchboard.protocols.tenants import Secret

from tests.support.web import ACME_SECRET, web_directory

pytestmark = pytest.mark.unit

DIRECTORY = web_directory()


def test_a_minted_token_grants_its_tenant_and_agent() -> None:
    token = mint_token_for(DIRECTORY, "acme", "support", ttl=300, subject="user-17")
    grant = verify_call_token(token, DIRECTORY)
    assert (grant.tenant_id, grant.agent_id, grant.caller) == ("acme", "support", "user-17")
    assert time.time() + 290 < grant.expires_at <= time.time() + 300
    claims = jwt.decode(token, ACME_SECRET, algorithms=["HS256"], audience=AUDIENCE)
    assert claims["exp"] - claims["iat"] == 300 and claims["iss"] == "switchboard"


def test_an_expired_token_is_refused() -> None:
    token = mint_call_token(Secret(ACME_SECRET), tenant_id="acme", agent_id="support",
                            ttl=600, now=time.time() - 700)
    with pytest.raises(TokenExpired, match="expired"):
        verify_call_token(token, DIRECTORY)


def test_a_token_claiming_another_tenant_is_forged() -> None:
    # Signed with a secret that is not the claimed tenant's: acme cannot call as demo's
    # neighbour "closed" by naming it, even though "closed" has a secret too.
    token = mint_call_token(Secret("some-other-tenants-secret-0123456789"),
                            tenant_id="acme", agent_id="support")
    with pytest.raises(TokenInvalid, match="signature"):
        verify_call_token(token, DIRECTORY)


def test_a_tampered_token_fails_its_signature() -> None:
    token = mint_token_for(DIRECTORY, "acme", "support")
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["agent"] = "sales"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenInvalid, match="signature"):
        verify_call_token(f"{header}.{forged}.{signature}", DIRECTORY)


def test_unsigned_and_garbage_tokens_are_refused() -> None:
    now = int(time.time())
    unsigned = jwt.encode({"tenant": "acme", "agent": "support", "aud": AUDIENCE,
                           "iss": "switchboard", "iat": now, "exp": now + 60}, None,
                          algorithm="none")
    with pytest.raises(TokenInvalid):
        verify_call_token(unsigned, DIRECTORY)
    with pytest.raises(TokenInvalid, match="well-formed"):
        verify_call_token("not-a-jwt", DIRECTORY)


def test_a_token_signed_for_too_long_is_refused() -> None:
    now = int(time.time())
    claims = {"tenant": "acme", "agent": "support", "aud": AUDIENCE, "iss": "switchboard",
              "iat": now, "exp": now + 24 * 3600}
    token = jwt.encode(claims, ACME_SECRET, algorithm="HS256")
    with pytest.raises(TokenInvalid, match="longer than 900"):
        verify_call_token(token, DIRECTORY)
    with pytest.raises(ValueError, match="at most 900"):
        mint_call_token(Secret(ACME_SECRET), tenant_id="acme", agent_id="support",
                        ttl=MAX_TTL_SECONDS + 1)


def test_a_token_for_another_audience_is_refused() -> None:
    token = mint_call_token(Secret(ACME_SECRET), tenant_id="acme", agent_id="support",
                            audience="some-other-service")
    with pytest.raises(TokenInvalid, match="not meant for"):
        verify_call_token(token, DIRECTORY)


def test_tenants_without_web_calls_cannot_mint_or_verify() -> None:
    with pytest.raises(TokenTenantUnknown, match="no web_token_secret"):
        mint_token_for(DIRECTORY, "demo", "demo")
    with pytest.raises(TokenTenantUnknown, match="no agent"):
        mint_token_for(DIRECTORY, "acme", "nobody")
    foreign = mint_call_token(Secret(ACME_SECRET), tenant_id="ghost", agent_id="x")
    with pytest.raises(TokenTenantUnknown):
        verify_call_token(foreign, DIRECTORY)


def test_errors_never_echo_the_token_or_the_secret() -> None:
    token = mint_call_token(Secret(ACME_SECRET), tenant_id="acme", agent_id="support",
                            ttl=60, now=time.time() - 120)
    with pytest.raises(TokenExpired) as caught:
        verify_call_token(token, DIRECTORY)
    text = str(caught.value)
    assert token not in text and ACME_SECRET not in text and token.split(".")[1] not in text
