"""The web gateway's HTTP API answers every refusal with a clear JSON error and the right
status, before any media is set up: 401 without a valid token, 403 for another agent, 404 for
an unknown agent or call, 429 over quota or rate (with retry_after and Retry-After), 503 when
the tenant cannot be reached, 400 for a broken request. Refusals cost the tenant no slot.

The node here is in-process (actors on a LocalBus, the gateway on a loopback port); the
refused calls never reach the point where media is negotiated.
"""

from __future__ import annotations

import time

import aiohttp
import pytest
from switchboard.gateways.webrtc.tokens import mint_call_token, mint_token_for
from switchboard.protocols.call import AdmitCall, GetUsage, Usage
from switchboard.protocols.tenants import Secret

from tests.support.web import ACME_SECRET, post, web_directory, web_node

pytestmark = pytest.mark.unit

# Enough SDP for the gateway's syntax check; refused calls never negotiate it.
OFFER = "\r\n".join([
    "v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "t=0 0",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 0", "c=IN IP4 127.0.0.1", "a=mid:0", "a=sendrecv",
    "a=rtcp-mux", "a=rtpmap:111 opus/48000/2", "a=rtpmap:0 PCMU/8000",
    "a=ice-ufrag:abcd", "a=ice-pwd:abcdefghijklmnopqrstuvwx",
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), "a=setup:actpass", ""])


def error_of(body: object) -> dict[str, object]:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict) and isinstance(error["message"], str) and error["message"]
    return error


async def usage(node, tenant: str) -> Usage:  # type: ignore[no-untyped-def]
    return await node.system.ref("tenant", tenant).ask(GetUsage(), reply_type=Usage)


async def test_no_token_is_401_with_how_to_get_one() -> None:
    async with web_node(web_directory()) as node:
        status, headers, body = await post(f"{node.url}/api/calls",
                                           {"sdp": OFFER, "agent": "support"})
    error = error_of(body)
    assert status == 401 and error["code"] == "unauthorized"
    assert "token" in str(error["message"]) and "retry_after" not in error
    assert headers["Access-Control-Allow-Origin"] == "*"  # a widget can read the refusal


async def test_expired_and_forged_tokens_are_401() -> None:
    expired = mint_call_token(Secret(ACME_SECRET), tenant_id="acme", agent_id="support",
                              ttl=60, now=time.time() - 120)
    forged = mint_call_token(Secret("not-acme-but-long-enough-0123456789"), tenant_id="acme",
                             agent_id="support")
    async with web_node(web_directory()) as node:
        s1, _, b1 = await post(f"{node.url}/api/calls", {"sdp": OFFER}, token=expired)
        s2, _, b2 = await post(f"{node.url}/api/calls", {"sdp": OFFER, "token": forged})
    assert s1 == 401 and "expired" in str(error_of(b1)["message"])
    assert s2 == 401 and "signature" in str(error_of(b2)["message"])


async def test_a_token_for_one_agent_cannot_call_another() -> None:
    directory = web_directory()
    token = mint_token_for(directory, "acme", "support")
    async with web_node(directory) as node:
        status, _, body = await post(f"{node.url}/api/calls", {"sdp": OFFER, "agent": "sales"},
                                     token=token)
        assert (await usage(node, "acme")).active_calls == 0
    assert status == 403 and error_of(body)["code"] == "forbidden"


async def test_unknown_agent_is_404_from_the_tenant_actor() -> None:
    token = mint_call_token(Secret(ACME_SECRET), tenant_id="acme", agent_id="nobody")
    async with web_node(web_directory()) as node:
        status, _, body = await post(f"{node.url}/api/calls", {"sdp": OFFER}, token=token)
    error = error_of(body)
    assert status == 404 and error["code"] == "not_found" and "nobody" in str(error["message"])


async def test_over_quota_is_429_with_retry_after() -> None:
    directory = web_directory()
    token = mint_token_for(directory, "closed", "support")
    async with web_node(directory) as node:
        status, headers, body = await post(f"{node.url}/api/calls", {"sdp": OFFER},
                                           token=token)
    error = error_of(body)
    assert status == 429 and error["code"] == "quota_exceeded"
    assert error["retry_after"] == 7.0 and headers["Retry-After"] == "7"
    assert "concurrent calls" in str(error["message"])


async def test_over_the_rate_is_429_rate_limited() -> None:
    directory = web_directory(calls_per_minute=1)
    token = mint_token_for(directory, "acme", "support")
    async with web_node(directory) as node:
        await node.system.ref("tenant", "acme").ask(AdmitCall(call_id="earlier",
                                                              agent_id="support"))
        status, headers, body = await post(f"{node.url}/api/calls", {"sdp": OFFER},
                                           token=token)
    error = error_of(body)
    assert status == 429 and error["code"] == "rate_limited"
    assert 0 < float(error["retry_after"]) <= 60 and int(headers["Retry-After"]) >= 1


async def test_unreachable_tenant_is_503_retryable() -> None:
    directory = web_directory()
    token = mint_token_for(directory, "acme", "support")
    async with web_node(directory, tenants=False) as node:
        status, headers, body = await post(f"{node.url}/api/calls", {"sdp": OFFER},
                                           token=token)
    error = error_of(body)
    assert status == 503 and error["code"] == "unavailable" and "Retry-After" in headers


async def test_broken_requests_are_400_and_cost_no_slot() -> None:
    directory = web_directory()
    token = mint_token_for(directory, "acme", "support")
    no_audio = OFFER.replace("m=audio 9 UDP/TLS/RTP/SAVPF 111 0",
                             "m=application 9 UDP/DTLS/SCTP webrtc-datachannel")
    async with web_node(directory) as node:
        url = f"{node.url}/api/calls"
        answers = [await post(url, b"{not json", token=token),
                   await post(url, {"agent": "support"}, token=token),
                   await post(url, {"sdp": "hello"}, token=token),
                   await post(url, {"sdp": no_audio}, token=token)]
        assert (await usage(node, "acme")).calls_last_minute == 0
    for status, _, body in answers:
        assert status == 400 and error_of(body)["code"] == "bad_request"
    assert "not JSON" in str(answers[0][2]["error"]["message"])
    assert "no audio" in str(answers[3][2]["error"]["message"])


async def test_demo_mode_lets_local_pages_call_the_demo_tenant_only() -> None:
    async with web_node(web_directory(), demo_mode=True) as node:
        async with aiohttp.ClientSession() as session, session.get(
                f"{node.url}/api/config") as response:
            config = await response.json()
        status, _, body = await post(f"{node.url}/api/calls",
                                     {"sdp": OFFER, "agent": "support", "tenant": "acme"})
    assert config["tenant"] == "demo" and config["demo"] is True
    assert [a["id"] for a in config["agents"]] == ["demo"]
    assert config["ice_servers"] == []
    assert status == 401 and "demo tenant" in str(error_of(body)["message"])


async def test_config_with_a_token_lists_only_its_agent() -> None:
    directory = web_directory()
    token = mint_token_for(directory, "acme", "sales")
    async with web_node(directory) as node, aiohttp.ClientSession() as session:
        async with session.get(f"{node.url}/api/config",
                               headers={"Authorization": f"Bearer {token}"}) as response:
            config = await response.json()
        async with session.get(f"{node.url}/api/config") as response:
            anonymous = response.status
    assert config["tenant"] == "acme" and config["demo"] is False
    assert config["agents"] == [{"id": "sales", "name": "Sales", "v": 1}]
    assert anonymous == 401


async def test_unknown_calls_and_paths_are_404_json_and_preflight_is_allowed() -> None:
    async with web_node(web_directory()) as node, aiohttp.ClientSession() as session:
        hangup = await post(f"{node.url}/api/calls/web-nope/hangup", {"call_secret": "x"})
        restart = await post(f"{node.url}/api/calls/web-nope/ice-restart",
                             {"sdp": OFFER, "call_secret": "x"})
        async with session.get(f"{node.url}/api/nothing-here") as response:
            missing = (response.status, await response.json())
        async with session.options(f"{node.url}/api/calls", headers={
                "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type"}) as response:
            preflight = (response.status, dict(response.headers))
        async with session.get(f"{node.url}/") as response:
            page = (response.status, await response.text(), dict(response.headers))
        async with session.get(f"{node.url}/widget.js") as response:
            widget = (response.status, await response.text())
    assert hangup[0] == 404 and error_of(hangup[2])["code"] == "not_found"
    assert restart[0] == 404
    assert missing[0] == 404 and error_of(missing[1])["code"] == "not_found"
    assert preflight[0] == 204
    assert "Authorization" in preflight[1]["Access-Control-Allow-Headers"]
    assert page[0] == 200 and "<title>Switchboard" in page[1]
    assert "microphone=(self)" in page[2]["Permissions-Policy"]
    assert widget[0] == 200 and "data-token" in widget[1]
