"""STUN/TURN settings reach both ends as configured (TURN REST credentials minted per call,
never aiortc's default public STUN server); HTTPS uses a configured certificate, plain HTTP
only on loopback, and a self-signed certificate (made once, announced) elsewhere; the tenant
actor's refusals map to the HTTP statuses the page shows."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from switchboard.actors.errors import ActorNotFound, AskTimeout, RemoteError
from switchboard.actors.media_registry import MediaLegRegistry
from switchboard.gateways.webrtc.admission import CallStarter
from switchboard.gateways.webrtc.errors import refusal_to_error
from switchboard.gateways.webrtc.ice import IceServer, browser_ice_servers, rtc_configuration
from switchboard.gateways.webrtc.server import ListenError, WebConfig, WebGateway
from switchboard.gateways.webrtc.tls import TlsConfig, self_signed_certificate, server_ssl_context
from switchboard.protocols.tenants import Secret
from switchboard.storage.tenants_file import StaticTenantDirectory

from tests.support.harness import actor_system

pytestmark = pytest.mark.unit


def test_no_servers_means_none_not_aiortcs_default() -> None:
    config = rtc_configuration([], "call-1")
    assert config.iceServers == []
    assert browser_ice_servers([], "call-1") == []


def test_turn_rest_credentials_are_minted_per_call() -> None:
    turn = IceServer(urls=("turn:turn.example.com:3478?transport=udp",),
                     shared_secret=Secret("coturn-secret"), rest_ttl=600)
    stun = IceServer(urls=("stun:stun.example.com:3478",))
    [stun_entry, turn_entry] = browser_ice_servers([stun, turn], "call-1", now=1000.0)
    assert stun_entry == {"urls": ["stun:stun.example.com:3478"]}
    assert turn_entry["username"] == "1600:call-1"
    expected = base64.b64encode(hmac.new(b"coturn-secret", b"1600:call-1",
                                         hashlib.sha1).digest()).decode()
    assert turn_entry["credential"] == expected
    [_, server] = rtc_configuration([stun, turn], "call-1", now=1000.0).iceServers
    assert (server.username, server.credential) == ("1600:call-1", expected)
    assert "coturn-secret" not in repr(turn)


def test_bad_ice_settings_are_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="must start with stun:"):
        IceServer(urls=("http://turn.example.com",))
    with pytest.raises(ValueError, match="username and credential, or a shared_secret"):
        IceServer(urls=("turn:turn.example.com",), username="u")
    static = IceServer(urls=("turns:turn.example.com:5349",), username="u",
                       credential=Secret("p"))
    assert static.credentials("x") == ("u", "p")


def test_loopback_is_plain_http_other_hosts_get_a_self_signed_certificate(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert server_ssl_context("127.0.0.1", TlsConfig(), tmp_path) is None
    assert server_ssl_context("localhost", TlsConfig(), tmp_path) is None
    with caplog.at_level(logging.WARNING, logger="switchboard.web.tls"):
        context = server_ssl_context("0.0.0.0", TlsConfig(), tmp_path)
    assert isinstance(context, ssl.SSLContext)
    assert "self-signed certificate" in caplog.text
    cert, key = tmp_path / "web-self-signed.crt", tmp_path / "web-self-signed.key"
    assert cert.exists() and key.stat().st_mode & 0o077 == 0
    again = self_signed_certificate("0.0.0.0", tmp_path)
    assert again == (cert, key) and cert.read_bytes() == again[0].read_bytes()  # made once
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    names = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)


def test_a_configured_certificate_is_used(tmp_path: Path) -> None:
    cert, key = self_signed_certificate("voice.example.com", tmp_path / "made")
    context = server_ssl_context("voice.example.com", TlsConfig(cert, key), tmp_path)
    assert isinstance(context, ssl.SSLContext)
    with pytest.raises(ValueError, match="both a certificate and its key"):
        server_ssl_context("voice.example.com", TlsConfig(cert_file=cert), tmp_path)


@pytest.mark.parametrize(("error", "status", "code", "retry"), [
    (RemoteError("quota_exceeded", "at its limit", True, 10.0), 429, "quota_exceeded", 10.0),
    (RemoteError("rate_limited", "too many", True, 0.4), 429, "rate_limited", 0.4),
    (RemoteError("forbidden", "no", False), 403, "forbidden", None),
    (RemoteError("unavailable", "trunk down", True), 503, "unavailable", None),
    (AskTimeout("slow"), 503, "unavailable", 2.0),
    (ActorNotFound("no host"), 503, "unavailable", 2.0),
])
def test_refusals_map_to_http(error: Exception, status: int, code: str,
                              retry: float | None) -> None:
    mapped = refusal_to_error(error)  # type: ignore[arg-type]
    assert (mapped.status, mapped.code, mapped.retry_after) == (status, code, retry)
    body = mapped.body()["error"]
    assert isinstance(body, dict) and body["code"] == code
    assert ("Retry-After" in mapped.headers()) == (retry is not None)
    if retry is not None:
        assert int(mapped.headers()["Retry-After"]) >= 1  # whole seconds, rounded up


async def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with actor_system() as system:
            gateway = WebGateway(CallStarter(system, MediaLegRegistry(),
                                             StaticTenantDirectory([])),
                                 WebConfig(host="127.0.0.1", port=port))
            with pytest.raises(ListenError, match=f"cannot listen on 127.0.0.1:{port}"):
                await gateway.start()
            await gateway.close()
