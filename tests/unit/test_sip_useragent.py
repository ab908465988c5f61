"""Two user agents over loopback (UDP, TCP, TLS): outbound and inbound halves against each other.

Fast timers (T1 = 50 ms). Covers what sipp cannot easily drive: our re-INVITE, session-timer
refresh and expiry, a refused REFER, INFO, CANCEL on ring timeout, failures with Retry-After,
allow-lists, connection reuse and TLS.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from switchboard.gateways.sip.call import SipCall
from switchboard.gateways.sip.dtmf import DtmfDigit
from switchboard.gateways.sip.errors import CallFailed, TransferFailed
from switchboard.gateways.sip.handler import (
    CANCELLED,
    MAX_DURATION,
    REMOTE_HANGUP,
    RTP_TIMEOUT,
    SESSION_EXPIRED,
    Accept,
    Admission,
    CallEnd,
    MediaOptions,
    Refuse,
)
from switchboard.gateways.sip.message import SipResponse, parse_message
from switchboard.gateways.sip.sdp import SessionDescription, create_offer
from switchboard.gateways.sip.session_timer import SessionTimerConfig
from switchboard.gateways.sip.transaction import Timers
from switchboard.gateways.sip.transport import StreamFlow, TransportConfig
from switchboard.gateways.sip.trunk import Trunk
from switchboard.gateways.sip.useragent import UserAgent, UserAgentConfig

pytestmark = pytest.mark.unit

FAST = Timers(t1=0.05, t2=0.2, t4=0.25)
_next_rtp = [41000]


class Callee:
    """Answers at once unless told to refuse or to ring; records digits and endings."""

    def __init__(self, refuse: Refuse | None = None, ring: bool = False, admit_delay: float = 0,
                 **options: Any) -> None:  # fmt: skip
        self.refuse = refuse
        self.ring = ring
        self.admit_delay = admit_delay
        self.options = options
        self.calls: list[SipCall] = []
        self.digits: list[str] = []
        self.ended: list[CallEnd] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def admit(self, call: SipCall) -> Admission:
        self.calls.append(call)
        await asyncio.sleep(self.admit_delay)  # asking the tenant actor takes a while
        if self.refuse is not None:
            return self.refuse
        if not self.ring:
            task = asyncio.get_running_loop().create_task(call.answer())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return Accept(self.media())

    def call_ended(self, call: SipCall, end: CallEnd) -> None:
        self.ended.append(end)

    def media(self) -> MediaOptions:
        return media(on_dtmf=lambda d: self.digits.append(d.digit), **self.options)


def media(on_dtmf: Any = None, **options: Any) -> MediaOptions:
    return MediaOptions(on_audio=lambda pcm, at, c: None, on_dtmf=on_dtmf, pcm_rate=8000,
                        **options)  # fmt: skip


def config(**overrides: Any) -> UserAgentConfig:
    base = _next_rtp[0]
    _next_rtp[0] += 200
    options: dict[str, Any] = {"transport": TransportConfig(host="127.0.0.1", port=0),
                               "rtp_ports": (base, base + 198), "rtp_host": "127.0.0.1",
                               "timers": FAST}  # fmt: skip
    options.update(overrides)
    return UserAgentConfig(**options)


@asynccontextmanager
async def agent(handler: Any, **overrides: Any) -> AsyncIterator[UserAgent]:
    ua = UserAgent(config(**overrides), handler)
    await ua.start()
    try:
        yield ua
    finally:
        await ua.aclose()
    assert ua.statistics().task_failures == 0


def target(ua: UserAgent, transport: str = "udp") -> str:
    port = ua.transport.local_address(transport.upper())[1]
    return f"sip:+15550100@127.0.0.1:{port};transport={transport}"


async def eventually(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_call_and_hangup_by_the_callee(transport: str) -> None:
    callee = Callee()
    async with agent(Callee()) as a, agent(callee) as b:
        call = await a.place_call(target(b, transport), media=media(), caller_id="+15550111",
                                  timeout=3)  # fmt: skip
        assert call.state == "active" and callee.calls[0].callee == "+15550100"
        await eventually(lambda: callee.calls[0].state == "active")
        await callee.calls[0].hangup()
        assert await asyncio.wait_for(call.wait_ended(), 3) == CallEnd(REMOTE_HANGUP, "remote")
        if transport == "tcp":  # §18: one connection, reused by the callee for its BYE
            assert a.transport.statistics().connections == 1
            assert b.transport.statistics().connections == 1
            assert isinstance(callee.calls[0].dialog and callee.calls[0].dialog.flow, StreamFlow)


async def test_refusal_reaches_the_caller_with_retry_after() -> None:
    async with agent(Callee()) as a, agent(Callee(Refuse(486, retry_after=30))) as b:
        with pytest.raises(CallFailed) as failed:
            await a.place_call(target(b), media=media(), timeout=3)
        assert (failed.value.status, failed.value.retry_after) == (486, 30)
        assert a.calls == [] and a.rtp_ports.size > 0


async def test_ring_timeout_sends_cancel() -> None:
    callee = Callee(ring=True)
    async with agent(Callee()) as a, agent(callee) as b:
        with pytest.raises(CallFailed) as failed:
            await a.place_call(target(b), media=media(), timeout=0.5)
        assert failed.value.status == 408
        await eventually(lambda: callee.ended == [CallEnd(CANCELLED, "remote", 487)])
        assert b.calls == []


async def test_cancelling_the_dialling_task_cancels_the_call() -> None:
    callee = Callee(ring=True)
    async with agent(Callee()) as a, agent(callee) as b:
        dialling = asyncio.get_running_loop().create_task(
            a.place_call(target(b), media=media(), timeout=10))
        await eventually(lambda: bool(callee.calls) and callee.calls[0].state == "ringing")
        dialling.cancel()
        with pytest.raises(asyncio.CancelledError):
            await dialling
        await eventually(lambda: callee.ended == [CallEnd(CANCELLED, "remote", 487)])


async def test_cancel_while_admit_runs_is_reported_once_admit_accepts() -> None:
    callee = Callee(admit_delay=0.4)
    async with agent(Callee()) as a, agent(callee) as b:
        dialling = asyncio.get_running_loop().create_task(
            a.place_call(target(b), media=media(), timeout=10))
        await eventually(lambda: bool(callee.calls))
        await asyncio.sleep(0.1)  # our 100 Trying is the provisional that allows CANCEL
        dialling.cancel()
        with pytest.raises(asyncio.CancelledError):
            await dialling
        await eventually(lambda: callee.ended == [CallEnd(CANCELLED, "remote", 487)])
        assert callee.calls[0].rtp is None and b.calls == []


@pytest.mark.parametrize(("options", "reason"), [
    ({"inactivity_timeout": 0.3}, RTP_TIMEOUT), ({"max_duration": 0.3}, MAX_DURATION)])  # fmt: skip
async def test_calls_whose_bye_was_lost_still_end(options: dict[str, float], reason: str) -> None:
    callee = Callee(**options)
    async with agent(Callee()) as a, agent(callee) as b:
        call = await a.place_call(target(b), media=media(), timeout=3)
        assert call.rtp is not None
        if reason == RTP_TIMEOUT:
            await call.rtp.aclose()  # the caller's media vanishes, its BYE never comes
        assert await asyncio.wait_for(callee.calls[0].wait_ended(), 3) == CallEnd(reason, "local")
        assert await asyncio.wait_for(call.wait_ended(), 3) == CallEnd(REMOTE_HANGUP, "remote")
        assert b.calls == []


async def test_invite_without_sdp_gets_our_offer_and_the_ack_carries_the_answer() -> None:
    callee = Callee()
    async with agent(callee) as b:
        loop = asyncio.get_running_loop()
        got: asyncio.Queue[bytes] = asyncio.Queue()

        class Peer(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                got.put_nowait(data)

        sock, _ = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
        me = sock.get_extra_info("sockname")[1]
        head = (f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKlate{{b}};rport\r\n"
                f"From: <sip:a@127.0.0.1>;tag=lt\r\nTo: <sip:+15550100@127.0.0.1>{{t}}\r\n"
                f"Call-ID: late-offer\r\nCSeq: 1 {{m}}\r\nContact: <sip:a@127.0.0.1:{me}>\r\n"
                "Content-Length: {l}\r\n\r\n{body}")  # fmt: skip
        port = b.transport.local_address("UDP")[1]
        try:
            sock.sendto((f"INVITE sip:+15550100@127.0.0.1:{port} SIP/2.0\r\n" + head.format(
                b=1, t="", m="INVITE", l=0, body="")).encode(), ("127.0.0.1", port))  # fmt: skip
            while True:
                answer = parse_message(await asyncio.wait_for(got.get(), 3))
                if isinstance(answer, SipResponse) and answer.status == 200:
                    break
            offer = SessionDescription.parse(answer.body)
            assert offer.media[0].port == callee.calls[0].rtp.local_address[1]  # type: ignore[union-attr]
            sdp = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                   "m=audio 40998 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n")  # fmt: skip
            ack = f"ACK sip:switchboard@127.0.0.1:{port} SIP/2.0\r\n" + head.format(
                b=2, t=f";tag={answer.to_addr.tag}", m="ACK", l=len(sdp), body=sdp)
            sock.sendto(ack.replace("CSeq: 1 ACK\r\n", "CSeq: 1 ACK\r\nContent-Type: "
                                    "application/sdp\r\n").encode(), ("127.0.0.1", port))  # fmt: skip
            rtp = callee.calls[0].rtp
            assert rtp is not None
            await eventually(lambda: rtp.media.remote_port == 40998)
            assert rtp.media.codec.name == "PCMA"
        finally:
            sock.close()


async def test_reinvite_hold_and_info_dtmf_from_our_side() -> None:
    callee = Callee()
    async with agent(Callee()) as a, agent(callee) as b:
        call = await a.place_call(target(b), media=media(), timeout=3)
        assert call.rtp is not None
        held = create_offer(local_host="127.0.0.1", local_port=call.rtp.local_address[1],
                            session_id=call.sdp_session_id, session_version=2,
                            direction="sendonly")  # fmt: skip
        response = await call.reinvite(held)
        assert response.status == 200 and call.rtp.media.direction == "sendonly"
        assert callee.calls[0].on_hold  # the callee must not send to us now
        await a.request_in_dialog(call, "INFO", body=b"Signal=7\r\nDuration=160\r\n",
                                  content_type="application/dtmf-relay")  # fmt: skip
        await eventually(lambda: callee.digits == ["7"])
        with pytest.raises(TransferFailed) as refused:
            await call.transfer("+15550999")
        assert refused.value.status == 501 and call.state == "active"  # the call goes on
        await call.hangup()
        await eventually(lambda: callee.ended == [CallEnd(REMOTE_HANGUP, "remote")])


async def test_session_timer_refreshes_and_expiry_ends_the_call() -> None:
    short = SessionTimerConfig(interval=2, min_se=1)
    callee = Callee()
    async with agent(Callee(), session_timer=short) as a, agent(callee, session_timer=short) as b:
        call = await a.place_call(target(b), media=media(), timeout=3)
        timer = call.session_timer
        assert timer is not None and timer.we_refresh  # RFC 4028: the UAC refreshes
        await asyncio.sleep(2.5)  # refreshed by UPDATE at 1 s and 2 s; still up
        assert call.state == "active" and callee.calls[0].state == "active"
        callee_timer = callee.calls[0].session_timer
        assert callee_timer is not None and not callee_timer.we_refresh
        timer.stop()  # the caller stops refreshing, as a crashed phone would
        end = await asyncio.wait_for(callee.calls[0].wait_ended(), 4)
        assert end == CallEnd(SESSION_EXPIRED, "local")
        assert await asyncio.wait_for(call.wait_ended(), 2) == CallEnd(REMOTE_HANGUP, "remote")


async def test_session_interval_below_min_se_is_retried_with_422() -> None:
    async with agent(Callee(), session_timer=SessionTimerConfig(interval=1, min_se=1)) as a, \
            agent(Callee(), session_timer=SessionTimerConfig(min_se=5)) as b:  # fmt: skip
        call = await a.place_call(target(b), media=media(), timeout=3)
        assert call.session_timer is not None and call.session_timer.terms.interval == 5
        await call.hangup()


async def test_allow_list_refuses_or_ignores_other_sources() -> None:
    trunk = Trunk(name="carrier", networks=["127.0.0.2/32"])
    async with agent(Callee()) as a, \
            agent(Callee(), trunks=[trunk], only_trunks=True, on_denied="reject") as b:  # fmt: skip
        with pytest.raises(CallFailed) as refused:
            await a.place_call(target(b), media=media(), timeout=3)
        assert refused.value.status == 403
    async with agent(Callee()) as a, \
            agent(Callee(), trunks=[trunk], only_trunks=True, on_denied="drop") as b:  # fmt: skip
        with pytest.raises(CallFailed) as ignored:
            await a.place_call(target(b), media=media(), timeout=1)
        assert ignored.value.status == 408 and b.statistics().transport.dropped_denied >= 1


async def test_call_limit_answers_503() -> None:
    async with agent(Callee()) as a, agent(Callee(ring=True), max_calls=1) as b:
        first = asyncio.get_running_loop().create_task(
            a.place_call(target(b), media=media(), timeout=2))
        await eventually(lambda: len(b.calls) == 1)
        with pytest.raises(CallFailed) as busy:
            await a.place_call(target(b), media=media(), timeout=2)
        assert busy.value.status == 503 and busy.value.retry_after == 5
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first


async def test_outbound_media_flows_both_ways() -> None:
    heard: list[np.ndarray] = []
    callee = Callee()
    async with agent(Callee()) as a, agent(callee) as b:
        call = await a.place_call(target(b), media=MediaOptions(
            on_audio=lambda pcm, at, c: heard.append(pcm), pcm_rate=8000), timeout=3)
        await eventually(lambda: callee.calls[0].rtp is not None)
        tone = (np.sin(np.arange(8000) * 2 * np.pi * 440 / 8000) * 5000).astype(np.int16)
        callee_rtp = callee.calls[0].rtp
        assert callee_rtp is not None
        callee_rtp.send_audio_nowait(tone)
        await asyncio.sleep(1.2)
        audio = np.concatenate(heard)
        assert np.max(np.abs(audio)) > 4000  # the callee's tone reached the caller
        await call.hangup()


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)  # fmt: skip
    return str(cert), str(key)


async def test_call_over_tls(certificate: tuple[str, str]) -> None:
    cert, key = certificate
    tls = TransportConfig(host="127.0.0.1", port=0, tls_port=0, tls_cert=cert, tls_key=key)
    client_tls = TransportConfig(host="127.0.0.1", port=0, tls_verify=False)
    callee = Callee()
    async with agent(Callee(), transport=client_tls) as a, agent(callee, transport=tls) as b:
        assert "TLS" in b.transport.transports and "TLS" not in a.transport.transports
        call = await a.place_call(target(b, "tls"), media=media(), timeout=3)
        await eventually(lambda: bool(callee.calls) and callee.calls[0].state == "active")
        assert callee.calls[0].dialog is not None
        flow = callee.calls[0].dialog.flow
        assert isinstance(flow, StreamFlow) and flow.transport_name == "TLS"
        await callee.calls[0].hangup()  # the BYE goes back over the same TLS connection
        assert await asyncio.wait_for(call.wait_ended(), 3) == CallEnd(REMOTE_HANGUP, "remote")


async def test_digest_client_answers_our_own_server() -> None:
    from switchboard.gateways.sip.auth import Credentials

    inbound = Trunk(name="pbx", networks=["127.0.0.0/8"], inbound_users={"pbx": "pw-1"})
    callee = Callee()
    async with agent(callee, trunks=[inbound]) as b:
        outbound = Trunk(name="out", proxy_host="127.0.0.1",
                         proxy_port=b.transport.local_address("UDP")[1],
                         credentials=Credentials("pbx", "pw-1"))  # fmt: skip
        async with agent(Callee(), trunks=[outbound]) as a:
            call = await a.place_call("+15550100", trunk="out", media=media(), timeout=3)
            assert callee.calls[0].trunk == "pbx" and callee.calls[0].callee == "+15550100"
            digest = b.trunks.digest(inbound)
            assert digest is not None and digest.counts["ok"] == 1  # SHA-256 both ways
            await call.hangup()
        wrong = Trunk(name="out", proxy_host="127.0.0.1",
                      proxy_port=b.transport.local_address("UDP")[1],
                      credentials=Credentials("pbx", "nope"))  # fmt: skip
        async with agent(Callee(), trunks=[wrong]) as a:
            with pytest.raises(CallFailed) as refused:
                await a.place_call("+15550100", trunk="out", media=media(), timeout=3)
            assert refused.value.status == 401


def test_dtmf_digit_type() -> None:
    assert DtmfDigit(digit="5", duration_ms=100, volume=0).digit == "5"
