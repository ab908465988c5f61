"""Calls through a real node (NATS JetStream, tenant actors, call actors with the echo agent)
and its SIP gateway, with sipp as the peer (Debian package sip-tester) and our own
`switchboard dial` as a caller.

Inbound: speech from a pcap reaches the call actor and is echoed back, DTMF keys become
call.dtmf events, hang-ups from either side (BYE, max call length, RTP inactivity) end the
call actor and record call.ended, CANCEL during admission gets 487, a tenant over quota gets
486 / 503 with Retry-After, an unknown number 404, and 100 concurrent calls are all answered.
Outbound: `switchboard call` (originate) through the tenant and the trunk actor to a sipp
UAS, which answers or is busy.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from switchboard.actors.echo_agent import GreetingAudio
from switchboard.gateways.sip.codecs import alaw_encode
from switchboard.protocols.call import GetUsage, Usage
from switchboard.protocols.events import (
    CallAnswered,
    CallDtmf,
    CallEnded,
    CallEvent,
    CallStarted,
)
from switchboard.protocols.sip_config import SipTrunkConfig
from switchboard.supervisor.client import connect_client
from switchboard.supervisor.dial import DialOptions, dial
from switchboard.supervisor.nats_server import NatsServer
from switchboard.supervisor.originate import originate_command

from tests.support.harness import wait_until
from tests.support.sip_node import (
    GREETING_WAV,
    SCENARIOS,
    SipNode,
    free_udp_port,
    run_sipp,
    sip_node,
    write_rtp_pcap,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("sipp") is None,
                       reason="sipp missing: scripts/bootstrap-system.sh test installs sip-tester"),
    pytest.mark.skipif(not Path("/usr/share/sip-tester/dtmf_2833_1.pcap").exists(),
                       reason="sipp's pcaps (sip-tester) are missing"),
]

ECHO, BRIEF, QUIET = "+15550100", "+15550101", "+15550102"


def speech_pcap(path: Path, *, speech_seconds: float = 2.4, silence_seconds: float = 1.6) -> Path:
    """The greeting's first words as the caller's speech (8 kHz A-law), then silence: the
    VAD needs the silence to end the caller's turn (sipp sends nothing after a pcap)."""
    pcm = np.frombuffer(GreetingAudio.load(GREETING_WAV).at_rate(8000), dtype=np.int16)
    pcm = np.concatenate([pcm[: int(speech_seconds * 8000)],
                          np.zeros(int(silence_seconds * 8000), np.int16)])
    frames = [alaw_encode(pcm[i:i + 160]) for i in range(0, len(pcm) - 159, 160)]
    return write_rtp_pcap(path, frames, payload_type=8)


def kinds(events: list[CallEvent]) -> list[str]:
    return [type(e).__name__.removeprefix("Call").lower() for e in events]


def ended(events: list[CallEvent]) -> CallEnded:
    return next(e for e in events if isinstance(e, CallEnded))


async def usage(sn: SipNode, tenant: str = "acme") -> Usage:
    assert sn.node.system is not None
    result: Usage = await sn.node.system.ref("tenant", tenant).ask(GetUsage(), reply_type=Usage)
    return result


async def all_over(sn: SipNode, call_ids: list[str], timeout: float = 10.0) -> None:
    """Every call actor gone, every leg unregistered, the tenant's slots released."""
    await wait_until(lambda: not any(sn.call_running(c) for c in call_ids), timeout=timeout,
                     what="the call actors ended")
    await wait_until(lambda: len(sn.node.legs) == 0 and sn.gateway.active_calls == 0,
                     timeout=timeout, what="the legs were released")
    assert (await usage(sn)).active_calls == 0


# -- inbound ----------------------------------------------------------------------------------


async def test_inbound_speech_is_heard_and_echoed_and_dtmf_reaches_the_agent(
        nats_server: NatsServer, tmp_path: Path) -> None:
    speech_pcap(tmp_path / "caller_speech.pcap")
    async with sip_node(nats_server, tmp_path) as sn:
        rc, log = await run_sipp(sn.uac("uac_speech.xml", ECHO, "-m", "1"), tmp_path)
        assert rc == 0, log
        assert len(sn.legs) == 1
        leg = sn.legs[0]
        await all_over(sn, [leg.call_id])
        events = await sn.wait_events(leg.call_id, lambda ev: "ended" in kinds(ev))
        stats = leg.statistics()
    assert kinds(events) == ["started", "answered", "dtmf", "dtmf", "ended"]
    started = events[0]
    assert isinstance(started, CallStarted) and started.direction == "inbound"
    assert started.pii is not None  # caller id and dialled number reached the call actor
    assert (started.pii.caller, started.pii.callee) == ("+15550111", ECHO)
    digits = [e.pii.digit for e in events if isinstance(e, CallDtmf) and e.pii is not None]
    assert digits == ["1", "#"]
    end = ended(events)
    assert end.reason == "caller_hangup" and end.answered and end.talk_seconds > 7
    # The call actor read the caller's audio: 4 s of speech and silence, at 20 ms a frame.
    assert stats.frames_delivered >= 190 and stats.frames_dropped == 0
    # The greeting was interrupted by the caller (barge-in), then the speech came back.
    assert stats.cleared >= 1 and stats.plays >= 2
    greeting_s = len(GreetingAudio.load(GREETING_WAV).at_rate(16000)) / 2 / 16000
    assert stats.agent_seconds > greeting_s + 1.5


async def test_the_agent_audio_reaches_sipp_and_comes_back(nats_server: NatsServer,
                                                           tmp_path: Path) -> None:
    async with sip_node(nats_server, tmp_path) as sn:
        # sipp echoes our RTP (-rtp_echo): the agent hears its own greeting as the caller.
        rc, log = await run_sipp(sn.uac("uac_echo.xml", ECHO, "-m", "1", "-d", "3000",
                                        "-rtp_echo"), tmp_path)
        assert rc == 0, log
        leg = sn.legs[0]
        await all_over(sn, [leg.call_id])
        stats = leg.statistics()
    # The greeting went out, came back through sipp, was taken for the caller speaking over
    # the agent (the greeting stops) and was echoed in turn.
    assert stats.frames_delivered >= 140
    assert stats.cleared >= 1 and stats.plays >= 2


@pytest.mark.parametrize(("number", "reason"), [(BRIEF, "max_duration"),
                                                (QUIET, "rtp_timeout")])
async def test_the_node_hangs_up(nats_server: NatsServer, tmp_path: Path, number: str,
                                 reason: str) -> None:
    async with sip_node(nats_server, tmp_path) as sn:
        started = time.monotonic()
        rc, log = await run_sipp(sn.uac("uac_wait_bye.xml", number, "-m", "1"), tmp_path)
        assert rc == 0, log  # sipp received our BYE and answered it
        assert time.monotonic() - started < 6
        leg = sn.legs[0]
        await all_over(sn, [leg.call_id])
        events = await sn.wait_events(leg.call_id, lambda ev: "ended" in kinds(ev))
    assert kinds(events) == ["started", "answered", "ended"]
    assert ended(events).reason == reason


async def test_cancel_during_admission_gets_487_and_frees_everything(
        nats_server: NatsServer, tmp_path: Path) -> None:
    async with sip_node(nats_server, tmp_path) as sn:
        rc, log = await run_sipp(sn.uac("uac_cancel_early.xml", ECHO, "-m", "3", "-r", "5"),
                                 tmp_path)
        assert rc == 0, log  # 200 to each CANCEL, 487 to each INVITE, never a 200
        call_ids = [leg.call_id for leg in sn.legs]
        # Each CANCEL came while the tenant decided (no call actor), or just after.
        assert sn.gateway.refusals.get(487, 0) + len(call_ids) == 3
        await all_over(sn, call_ids)
        for call_id in call_ids:  # a call actor that had started ended without answering
            events = await sn.events(call_id)
            assert not any(isinstance(e, CallAnswered) for e in events)


@pytest.mark.parametrize(("number", "scenario", "status"), [
    ("+15550200", "uac_busy.xml", 486),         # at max_concurrent_calls: Retry-After 30
    ("+15550300", "uac_unavailable.xml", 503),  # over calls_per_minute: Retry-After
    ("+15559999", "uac_not_found.xml", 404),    # no tenant owns the number
])
async def test_refused_calls(nats_server: NatsServer, tmp_path: Path, number: str,
                             scenario: str, status: int) -> None:
    async with sip_node(nats_server, tmp_path) as sn:
        rc, log = await run_sipp(sn.uac(scenario, number, "-m", "2"), tmp_path)
        assert rc == 0, log  # sipp checked the status and a numeric Retry-After
        assert sn.gateway.refusals == {status: 2}
        assert sn.legs == [] and len(sn.node.legs) == 0
        assert await sn.events() == []  # refused calls start no call actor


async def test_hundred_concurrent_calls_answered_by_the_echo_agent(
        nats_server: NatsServer, tmp_path: Path) -> None:
    # sipp is a trunk here: 50 calls/s from one address is past the per-IP flood limit.
    loadgen = SipTrunkConfig(name="loadgen", networks=["127.0.0.1/32"])
    async with sip_node(nats_server, tmp_path, trunks=[loadgen]) as sn:
        started = time.monotonic()
        rc, log = await run_sipp(sn.uac("uac_load.xml", ECHO, "-l", "100", "-m", "100",
                                        "-r", "50", "-d", "5000"), tmp_path, timeout=90)
        elapsed = time.monotonic() - started
        assert rc == 0, log  # every one of the 100 calls was answered and hung up by sipp
        call_ids = [leg.call_id for leg in sn.legs]
        assert len(set(call_ids)) == 100
        await all_over(sn, call_ids, timeout=20)
        events = await sn.events()
    ends = [e for e in events if isinstance(e, CallEnded)]
    assert len(ends) == 100 and all(e.reason == "caller_hangup" and e.answered for e in ends)
    stats = [leg.statistics() for leg in sn.legs]
    assert all(s.frames_delivered > 100 and s.frames_dropped == 0 for s in stats)
    rtp = [leg.call.rtp.statistics() for leg in sn.legs
           if leg.call is not None and leg.call.rtp is not None]
    sent, late = sum(r.packets_sent for r in rtp), sum(r.late_sends for r in rtp)
    print(f"100 calls through the node in {elapsed:.1f} s; {sent} RTP packets sent, "
          f"{100 * late / max(sent, 1):.2f} % late")


async def test_switchboard_dial_records_the_greeting_and_the_echo(
        nats_server: NatsServer, tmp_path: Path) -> None:
    question = tmp_path / "question.wav"
    with wave.open(str(question), "wb") as wav:  # the greeting's first words as a question
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        pcm = GreetingAudio.load(GREETING_WAV).at_rate(8000)
        wav.writeframes(pcm[: 2 * 8000 * 2])
    lines: list[str] = []
    async with sip_node(nats_server, tmp_path) as sn:
        result = await dial(DialOptions(target=sn.gateway.uri(ECHO), play=question,
                                        record=tmp_path / "reply.wav", max_seconds=20),
                            out=lines.append)
        await all_over(sn, [leg.call_id for leg in sn.legs])
    text = "\n".join(lines)
    assert result.answered and result.exit_code == 0, text
    for step in ("INVITE sent", "180 Ringing", "200 OK", "first agent audio",
                 "question played", "first answer audio", "BYE sent"):
        assert step in text, text
    assert result.heard_seconds > 3.0  # the greeting, then the echo of the question
    with wave.open(str(tmp_path / "reply.wav"), "rb") as wav:  # what the caller heard
        recorded = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        assert wav.getnframes() / wav.getframerate() > 5
    assert np.abs(recorded).max() > 3000


async def test_switchboard_dial_says_when_nothing_listens() -> None:
    lines: list[str] = []
    target = f"sip:{ECHO}@127.0.0.1:{free_udp_port()}"
    result = await dial(DialOptions(target=target, response_timeout=0.5), out=lines.append)
    assert not result.answered and result.exit_code == 2
    assert "is a node listening there?" in "\n".join(lines)


# -- outbound ---------------------------------------------------------------------------------


async def sipp_uas(tmp_path: Path, *args: str) -> tuple[asyncio.Task[tuple[int, str]], int]:
    port = free_udp_port()
    task = asyncio.get_running_loop().create_task(
        run_sipp([*args, "-p", str(port), "-mp", str(free_udp_port()), "-m", "1"], tmp_path))
    await asyncio.sleep(0.3)  # sipp binds its socket
    return task, port


def trunk_to(port: int) -> SipTrunkConfig:
    return SipTrunkConfig(name="default", proxy="127.0.0.1", proxy_port=port)


async def test_switchboard_call_places_an_outbound_call_through_the_trunk(
        nats_server: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uas, port = await sipp_uas(tmp_path, "-sn", "uas", "-rtp_echo")
    async with sip_node(nats_server, tmp_path, trunks=[trunk_to(port)]) as sn:
        # The `brief` agent hangs up after 1.5 s: the command follows the call to its end.
        code = await originate_command([sn.nats_url], "acme", "brief", "+15550199")
        rc, log = await uas
        assert rc == 0, log  # sipp answered, got our ACK, then our BYE
        out = capsys.readouterr().out
        assert code == 0, out
        leg = sn.legs[0]
        await all_over(sn, [leg.call_id])
        events = await sn.wait_events(leg.call_id, lambda ev: "ended" in kinds(ev))
    assert f"call {leg.call_id} dialling" in out and "answered" in out
    assert "ended: max_duration" in out
    assert kinds(events) == ["started", "answered", "ended"]
    started = events[0]
    assert isinstance(started, CallStarted) and started.direction == "outbound"
    assert started.pii is not None and started.pii.callee == "+15550199"
    assert started.pii.caller == ECHO  # the tenant's first number is the caller id
    assert leg.statistics().frames_delivered > 50  # the callee's audio reached the actor


async def test_a_busy_callee_frees_the_slot_and_records_why(nats_server: NatsServer,
                                                           tmp_path: Path) -> None:
    uas, port = await sipp_uas(tmp_path, "-sf", str(SCENARIOS / "uas_busy.xml"))
    async with sip_node(nats_server, tmp_path, trunks=[trunk_to(port)]) as sn, \
            connect_client([sn.nats_url]) as client:
        code = await originate_command([sn.nats_url], "acme", "echo", "+15550199")
        rc, log = await uas
        assert rc == 0, log
        assert code == 1  # not answered
        assert await originate_command([sn.nats_url], "acme", "nobody", "+15550199") == 2
        assert sn.legs == []
        ends = [e for e in await sn.events() if isinstance(e, CallEnded)]
        assert [(e.reason, e.answered) for e in ends] == [("busy", False)]
        tenant = client.ref("tenant", "acme")
        assert (await tenant.ask(GetUsage(), reply_type=Usage)).active_calls == 0
