"""`SipLeg`, the call actor's view of a SIP call: RTP callbacks become media events (audio
as AudioChunks, DTMF, inactivity, the end with the right reason), agent audio goes to the RTP
pacer, and each failure of the SIP call surfaces as the media error the actor expects. Also
the SIP answers to tenant refusals, and the reasons of outbound calls never answered."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from switchboard.actors.errors import ActorNotFound, AskTimeout, RemoteError
from switchboard.gateways.sip.call import CallGone
from switchboard.gateways.sip.codecs import PCMU
from switchboard.gateways.sip.dialer import dial_outcome
from switchboard.gateways.sip.dtmf import DtmfDigit
from switchboard.gateways.sip.errors import TransferFailed
from switchboard.gateways.sip.gateway import refusal_for
from switchboard.gateways.sip.handler import CallEnd
from switchboard.gateways.sip.leg import SipLeg
from switchboard.gateways.sip.rtp_session import SendQueueFull
from switchboard.protocols.audio import AudioChunk
from switchboard.protocols.media import (
    DtmfReceived,
    LegClosed,
    LegEnded,
    MediaError,
    MediaInactive,
    PlayoutFull,
    TransferNotSupported,
)

pytestmark = pytest.mark.unit


class FakeRtp:
    def __init__(self, rate: int = 8000) -> None:
        self.sent: list[np.ndarray] = []
        self.queued = 0
        self.rate = rate
        self.full = False

    def send_audio_nowait(self, pcm: np.ndarray) -> None:
        if self.full:
            raise SendQueueFull("full")
        self.sent.append(pcm)
        self.queued += len(pcm)

    @property
    def queued_seconds(self) -> float:
        return self.queued / self.rate

    def clear_audio(self) -> int:
        frames, self.queued = self.queued // 160, 0
        return frames


class FakeCall:
    """The part of `SipCall` a leg uses."""

    def __init__(self) -> None:
        self.rtp: FakeRtp | None = None
        self.end: CallEnd | None = None
        self.hangups: list[tuple[str, int]] = []
        self.refer: Exception | None = None
        self.dtmf: list[str] = []

    async def answer(self) -> None:
        if self.end is not None:
            raise CallGone("gone")
        self.rtp = FakeRtp()

    async def hangup(self, reason: str, *, status: int = 480) -> None:
        self.hangups.append((reason, status))

    async def transfer(self, target: str) -> None:
        if self.refer is not None:
            raise self.refer

    def send_dtmf(self, digits: str) -> None:
        if self.rtp is None:
            raise CallGone("no media")
        if digits == "x":
            raise ValueError("not negotiated")
        self.dtmf.append(digits)


def make_leg(**kwargs: Any) -> tuple[SipLeg, FakeCall]:
    leg = SipLeg("sip-1", caller="+15550111", callee="+15550100", direction="inbound",
                 sample_rate=8000, **kwargs)
    call = FakeCall()
    leg.bind(call)  # type: ignore[arg-type]
    return leg, call


async def drain(leg: SipLeg, count: int) -> list[Any]:
    events = leg.events()
    out = []
    async with asyncio.timeout(1):
        async for event in events:
            out.append(event)
            if len(out) == count:
                break
    await events.aclose()  # type: ignore[attr-defined]
    return out


async def test_rtp_callbacks_become_media_events_in_order() -> None:
    leg, _ = make_leg()
    options = leg.media_options(preferences=[PCMU], inactivity_timeout=12.0, max_duration=60)
    assert (options.pcm_rate, options.inactivity_timeout, options.max_duration) == (8000, 12, 60)
    pcm = np.arange(160, dtype=np.int16)
    options.on_audio(pcm, 0.02, False)
    assert options.on_dtmf is not None and options.on_inactive is not None
    options.on_dtmf(DtmfDigit(digit="5", duration_ms=100, volume=10))
    options.on_inactive()
    leg.ended(CallEnd("remote_hangup", "remote"))
    chunk, key, quiet, end = await drain(leg, 4)
    assert isinstance(chunk, AudioChunk) and chunk.pcm == pcm.tobytes()
    assert (chunk.sample_rate, chunk.timestamp) == (8000, 0.02)
    assert key == DtmfReceived(digit="5")
    assert quiet == MediaInactive(seconds=12.0)
    assert end == LegEnded(reason="remote_hangup")


@pytest.mark.parametrize(("sip_reason", "media_reason"), [
    ("remote_hangup", "remote_hangup"), ("cancelled", "cancelled"),
    ("transferred", "transferred"), ("max_duration", "max_duration"),
    ("shutdown", "shutdown"), ("ack_timeout", "transport_failed"),
    ("session_expired", "transport_failed"), ("error", "transport_failed")])
async def test_how_the_sip_call_ended_is_the_legs_end_reason(sip_reason: str,
                                                             media_reason: str) -> None:
    leg, _ = make_leg()
    leg.ended(CallEnd(sip_reason, "remote"))
    leg.ended(CallEnd("remote_hangup", "remote"))  # once only
    assert await drain(leg, 1) == [LegEnded(reason=media_reason)]
    assert leg.statistics().events_queued == 1  # kept for a resumed consumer


async def test_audio_past_the_queue_limit_is_dropped_not_the_end() -> None:
    leg, _ = make_leg(max_queued_chunks=3)
    options = leg.media_options(preferences=[PCMU], inactivity_timeout=30, max_duration=None)
    for i in range(5):
        options.on_audio(np.zeros(160, np.int16), i * 0.02, i == 4)
    leg.ended(CallEnd("remote_hangup", "remote"))
    events = await drain(leg, 4)
    assert [type(e) for e in events] == [AudioChunk, AudioChunk, AudioChunk, LegEnded]
    stats = leg.statistics()
    assert (stats.frames_delivered, stats.frames_dropped) == (3, 2)


async def test_a_restarted_call_actor_resumes_on_the_same_leg() -> None:
    leg, _ = make_leg()
    options = leg.media_options(preferences=[PCMU], inactivity_timeout=30, max_duration=None)
    first = leg.events()
    with pytest.raises(RuntimeError):
        leg.events()  # one consumer at a time
    options.on_audio(np.zeros(160, np.int16), 0.0, False)
    assert isinstance(await anext(first), AudioChunk)  # type: ignore[arg-type]
    await first.aclose()  # type: ignore[attr-defined]
    options.on_audio(np.ones(160, np.int16), 0.02, False)
    (chunk,) = await drain(leg, 1)
    assert chunk.timestamp == 0.02


async def test_agent_audio_waits_for_the_answer_then_goes_to_rtp() -> None:
    leg, call = make_leg()
    leg.play(np.ones(400, np.int16).tobytes())
    assert leg.playout_queued == pytest.approx(0.05)
    await leg.answer()
    assert call.rtp is not None and [len(p) for p in call.rtp.sent] == [400]
    leg.play(np.ones(160, np.int16).tobytes() + b"\x01")  # an odd byte is not a sample
    assert call.rtp.queued == 560 and leg.playout_queued == pytest.approx(0.07)
    assert leg.clear_playout() == pytest.approx(0.07)
    assert leg.playout_queued == 0 and leg.statistics().agent_seconds == pytest.approx(0.07)
    call.rtp.full = True
    with pytest.raises(PlayoutFull):
        leg.play(b"\x00\x00")


async def test_a_caller_who_left_cannot_be_answered_played_to_or_transferred() -> None:
    leg, call = make_leg()
    call.end = CallEnd("cancelled", "remote", 487)
    with pytest.raises(LegClosed):
        await leg.answer()
    leg.ended(call.end)
    with pytest.raises(LegClosed):
        leg.play(b"\x00\x00")
    with pytest.raises(LegClosed):
        await leg.transfer("+15550999")
    with pytest.raises(LegClosed):
        leg.send_dtmf("1")


async def test_hangup_transfer_and_dtmf_map_to_the_sip_call() -> None:
    leg, call = make_leg()
    await leg.answer()
    await leg.hangup("agent_hangup")
    await leg.hangup("error")
    assert call.hangups == [("agent_hangup", 480), ("error", 503)]
    leg.send_dtmf("12#")
    assert call.dtmf == ["12#"]
    with pytest.raises(MediaError):
        leg.send_dtmf("x")
    call.refer = TransferFailed(603, "Decline")
    with pytest.raises(TransferNotSupported, match="603"):
        await leg.transfer("+15550999")
    call.refer = ValueError("bad target")
    with pytest.raises(MediaError):
        await leg.transfer("not a uri")


def test_tenant_refusals_become_sip_answers_with_retry_after() -> None:
    quota = refusal_for(RemoteError("quota_exceeded", "full", True, 30.0))
    assert (quota.status, quota.retry_after) == (486, 30)
    rate = refusal_for(RemoteError("rate_limited", "slow down", True, 0.4))
    assert (rate.status, rate.retry_after) == (503, 1)  # rounded up, never 0
    assert refusal_for(RemoteError("forbidden", "no")).status == 403
    for failure in (AskTimeout("late"), ActorNotFound("no node"),
                    RemoteError("actor_crashed", "boom", True)):
        refused = refusal_for(failure)
        assert refused.status == 503 and refused.retry_after is not None


@pytest.mark.parametrize(("status", "reason"), [
    (486, "busy"), (600, "busy"), (408, "no_answer"), (480, "no_answer"), (487, "no_answer"),
    (603, "rejected"), (403, "rejected"), (404, "unreachable"), (503, "unreachable")])
def test_outbound_calls_never_answered_say_why(status: int, reason: str) -> None:
    assert dial_outcome(status) == reason
