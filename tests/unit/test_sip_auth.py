"""Digest authentication: RFC test vectors, challenge/verify round trips, replay, stale nonces,
and passwords that never reach a log."""

from __future__ import annotations

import logging

import pytest
from switchboard.gateways.sip.auth import (
    AuthOutcome,
    Credentials,
    DigestClient,
    DigestServer,
    _response,
    format_digest,
    parse_digest,
)
from switchboard.gateways.sip.headers import Headers
from switchboard.gateways.sip.message import SipRequest, build_response

from tests.support.sip import request

pytestmark = pytest.mark.unit

SECRET = "Circle of Life"


def test_rfc_7616_and_2617_vectors() -> None:
    # RFC 7616 §3.9.1: the same request answered with SHA-256 and with MD5.
    args = {"username": "Mufasa", "realm": "http-auth@example.org", "password": SECRET,
            "method": "GET", "uri": "/dir/index.html",
            "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"}
    cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
    assert _response("SHA-256", **args, qop="auth", nc="00000001", cnonce=cnonce) == (
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1")  # fmt: skip
    assert _response("MD5", **args, qop="auth", nc="00000001", cnonce=cnonce) == (
        "8ca523f5e9506fed4657c9700eebdbec")  # fmt: skip
    # RFC 2617 §3.5.
    assert _response("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life", "GET",
                     "/dir/index.html", "dcd98b7102dd2f0e8b11d0f600bfb0c093", qop="auth",
                     nc="00000001", cnonce="0a4f113b") == "6629fae49393a05397450978507c4ef1"  # fmt: skip


def test_digest_header_round_trip() -> None:
    params = {"username": 'we"ird', "realm": "r", "nonce": "n,1", "qop": "auth", "nc": "00000001"}
    assert parse_digest(format_digest(params)) == params
    assert parse_digest('Basic dXNlcjpwYXNz') is None


def challenge_and_answer(server: DigestServer, client: DigestClient,
                         invite: SipRequest) -> SipRequest:  # fmt: skip
    challenge = server.challenge(invite)
    answer = client.authorize(challenge, invite.method, str(invite.uri))
    assert answer is not None
    retried = request("INVITE", cseq=2, extra=[answer])
    return retried


def test_server_challenges_sha256_first_and_accepts_the_client() -> None:
    server = DigestServer("switchboard", {"trunk1": SECRET})
    invite = request("INVITE")
    assert server.verify(invite) is AuthOutcome.MISSING
    challenge = server.challenge(invite)
    assert challenge.status == 401 and challenge.to_addr.tag
    offered = [parse_digest(v) for v in challenge.headers.get_all("WWW-Authenticate")]
    assert [p["algorithm"] for p in offered if p] == ["SHA-256", "MD5"]  # RFC 8760 §2.4
    client = DigestClient(Credentials("trunk1", SECRET))
    retried = challenge_and_answer(server, client, invite)
    sent = parse_digest(retried.headers.get("Authorization") or "")
    assert sent is not None and sent["algorithm"] == "SHA-256" and sent["qop"] == "auth"
    assert server.verify(retried) is AuthOutcome.OK
    assert server.verify(retried) is AuthOutcome.FAILED  # the same nonce count again: replay


def test_md5_only_peer_and_wrong_password() -> None:
    server = DigestServer("switchboard", {"trunk1": SECRET}, algorithms=("MD5",))
    ok = challenge_and_answer(server, DigestClient(Credentials("trunk1", SECRET)), request())
    assert server.verify(ok) is AuthOutcome.OK
    bad = challenge_and_answer(server, DigestClient(Credentials("trunk1", "guess")), request())
    assert server.verify(bad) is AuthOutcome.FAILED
    stranger = challenge_and_answer(server, DigestClient(Credentials("nobody", SECRET)),
                                    request())  # fmt: skip
    assert server.verify(stranger) is AuthOutcome.FAILED


def test_expired_nonce_is_stale_and_forged_nonce_fails() -> None:
    now = [1_000_000.0]
    server = DigestServer("switchboard", {"trunk1": SECRET}, nonce_ttl=60, clock=lambda: now[0])
    client = DigestClient(Credentials("trunk1", SECRET))
    retried = challenge_and_answer(server, client, request())
    now[0] += 61
    assert server.verify(retried) is AuthOutcome.STALE
    assert 'stale=true' in (server.challenge(retried, stale=True).headers.get(
        "WWW-Authenticate") or "")  # fmt: skip
    forged = challenge_and_answer(server, client, request())
    value = forged.headers.get("Authorization") or ""
    params = parse_digest(value) or {}
    params["nonce"] = params["nonce"][:-1] + ("0" if params["nonce"][-1] != "0" else "1")
    forged.headers.set("Authorization", format_digest(params))
    assert server.verify(forged) is AuthOutcome.FAILED


def test_proxy_challenge_uses_407_and_proxy_authorization() -> None:
    server = DigestServer("carrier", {"acct": SECRET}, proxy=True)
    invite = request()
    challenge = server.challenge(invite)
    assert challenge.status == 407 and challenge.headers.get("Proxy-Authenticate")
    answer = DigestClient(Credentials("acct", SECRET)).authorize(challenge, "INVITE",
                                                                 str(invite.uri))  # fmt: skip
    assert answer is not None and answer[0] == "Proxy-Authorization"
    assert server.verify(request("INVITE", cseq=2, extra=[answer])) is AuthOutcome.OK


def test_client_refuses_unknown_algorithms() -> None:
    invite = request()
    challenge = build_response(invite, 401, headers=Headers([
        ("WWW-Authenticate", 'Digest realm="r", nonce="n", algorithm=SHA-512-256')]))  # fmt: skip
    assert DigestClient(Credentials("u", "p")).authorize(challenge, "INVITE", "sip:x") is None


def test_passwords_never_show(caplog: pytest.LogCaptureFixture) -> None:
    credentials = Credentials("trunk1", SECRET)
    assert SECRET not in repr(credentials)
    caplog.set_level(logging.DEBUG)
    server = DigestServer("switchboard", {"trunk1": SECRET})
    retried = challenge_and_answer(server, DigestClient(credentials), request())
    server.verify(retried)
    authorization = retried.headers.get("Authorization") or ""
    assert SECRET not in caplog.text and authorization not in caplog.text
