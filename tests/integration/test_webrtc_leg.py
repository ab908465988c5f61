"""`WebRtcLeg` against a real WebRTC peer in the same process (aiortc plays the browser, over
real UDP sockets, ICE, DTLS-SRTP): for every codec a browser may pick, a tone from the caller
reaches the call actor's side as 16 kHz 20 ms chunks on a contiguous clock, and the agent's
audio comes back out; the page sees the call's state; a page hang-up ends the leg; barge-in
silences the agent within a frame; a lost connection recovers on a fresh peer connection
(the reconnect the page does), or ends the leg after the grace period.

ICE runs over this machine's own host addresses (aioice skips loopback): traffic never
leaves the machine.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from switchboard.gateways.webrtc.ice import rtc_configuration
from switchboard.gateways.webrtc.leg import WebRtcLeg
from switchboard.gateways.webrtc.page_state import QUIET_FRAMES
from switchboard.protocols.audio import AudioChunk
from switchboard.protocols.media import LegClosed, LegEnded, MediaEvent

from tests.support.harness import wait_until
from tests.support.web import AiortcCaller, dominant_hz, tone

pytestmark = pytest.mark.integration


def new_leg(**kwargs: float) -> WebRtcLeg:
    return WebRtcLeg("call-1", caller="web", callee="web:demo",
                     rtc_config=lambda: rtc_configuration([], "call-1"), **kwargs)


async def connect(leg: WebRtcLeg, caller: AiortcCaller) -> None:
    await caller.accept(await leg.accept_offer(await caller.offer()))
    async with asyncio.timeout(10):
        await leg.answer()


class Ear:
    """The call actor's side: collects the leg's events."""

    def __init__(self, leg: WebRtcLeg) -> None:
        self.events: list[MediaEvent] = []
        self._task = asyncio.ensure_future(self._run(leg))

    async def _run(self, leg: WebRtcLeg) -> None:
        async for event in leg.events():
            self.events.append(event)

    @property
    def chunks(self) -> list[AudioChunk]:
        return [e for e in self.events if isinstance(e, AudioChunk)]

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.mark.parametrize(("codec", "expected"), [(None, "opus/48000"), ("PCMU", "PCMU/8000"),
                                                 ("PCMA", "PCMA/8000"), ("G722", "G722/8000")])
async def test_caller_audio_in_16k_chunks_and_agent_audio_out(codec: str | None,
                                                              expected: str) -> None:
    leg, caller = new_leg(), AiortcCaller(tone_hz=440, codec=codec)
    try:
        await connect(leg, caller)
        assert leg.statistics().codec == expected
        ear = Ear(leg)
        await wait_until(lambda: len(ear.chunks) >= 60, timeout=5, what="1.2 s of caller audio")
        chunks = ear.chunks[:60]
        assert all(c.sample_rate == 16000 and len(c.pcm) == 640 for c in chunks)
        stamps = np.array([c.timestamp for c in chunks])
        assert np.allclose(np.diff(stamps), 0.02)  # one clock, no gaps, no overlaps
        heard = np.frombuffer(b"".join(c.pcm for c in chunks[20:]), np.int16)
        assert abs(dominant_hz(heard, 16000) - 440) < 15

        started = time.monotonic()
        leg.play(tone(1.0, 16000, 1000).tobytes())
        await asyncio.sleep(1.4)
        out = caller.heard_since(started)
        loud = out[np.abs(out) > 2000]
        assert len(loud) > 0.6 * caller.heard_rate, "most of the agent's second arrived"
        assert abs(dominant_hz(out, caller.heard_rate) - 1000) < 15
        await wait_until(lambda: caller.states()[-1:] == ["listening"], timeout=2,
                         what="the page told the agent stopped")
        assert "greeting" in caller.states()

        caller.send({"type": "hangup"})
        await wait_until(lambda: bool(ear.events) and isinstance(ear.events[-1], LegEnded),
                         timeout=3, what="the page's hang-up")
        last = ear.events[-1]
        assert isinstance(last, LegEnded) and last.reason == "remote_hangup"
        await ear.close()
    finally:
        await leg.hangup("test_over")
        await caller.close()


async def test_barge_in_silences_the_agent_at_the_next_frame() -> None:
    leg, caller = new_leg(), AiortcCaller()
    try:
        await connect(leg, caller)
        leg.play(tone(5.0, 16000, 1000).tobytes())
        await asyncio.sleep(0.5)
        sent = leg.statistics().agent_frames_sent
        dropped = leg.clear_playout()
        assert 4.0 < dropped < 4.8 and leg.playout_queued == 0
        await asyncio.sleep(0.3)
        assert leg.statistics().agent_frames_sent - sent <= 1  # at most the frame in flight
        await wait_until(lambda: caller.states()[-1:] == ["listening"], timeout=1,
                         what="listening shown after barge-in")
    finally:
        await leg.hangup("test_over")
        await caller.close()


async def test_a_lost_connection_recovers_on_a_fresh_peer_connection() -> None:
    leg, first = new_leg(reconnect_grace=5.0), AiortcCaller(tone_hz=440)
    second = AiortcCaller(tone_hz=880)
    try:
        await connect(leg, first)
        ear = Ear(leg)
        await wait_until(lambda: len(ear.chunks) >= 10, timeout=5, what="audio before")
        await first.close()  # the page's network path is gone
        await wait_until(lambda: leg.statistics().state == "reconnecting", timeout=3,
                         what="the leg noticed")
        await second.accept(await leg.restart(await second.offer()))
        await wait_until(lambda: leg.statistics().state == "listening", timeout=5,
                         what="media up again")
        count = len(ear.chunks)
        await wait_until(lambda: len(ear.chunks) >= count + 40, timeout=5, what="audio after")
        after = np.frombuffer(b"".join(c.pcm for c in ear.chunks[-25:]), np.int16)
        assert abs(dominant_hz(after, 16000) - 880) < 15  # the new connection's microphone
        assert not any(isinstance(e, LegEnded) for e in ear.events)
        assert leg.statistics().reconnects == 1
        leg.play(tone(0.5, 16000, 1000).tobytes())
        started = time.monotonic()
        await asyncio.sleep(0.8)
        assert np.abs(second.heard_since(started)).max() > 2000  # the agent is heard again
        await ear.close()
    finally:
        await leg.hangup("test_over")
        await second.close()


async def test_without_a_reconnect_the_leg_ends_after_the_grace() -> None:
    leg, caller = new_leg(reconnect_grace=0.5), AiortcCaller()
    try:
        await connect(leg, caller)
        ear = Ear(leg)
        await caller.close()
        await wait_until(lambda: bool(ear.events) and isinstance(ear.events[-1], LegEnded),
                         timeout=3, what="the leg gave up")
        last = ear.events[-1]
        assert isinstance(last, LegEnded) and last.reason == "transport_failed"
        await ear.close()
    finally:
        await leg.hangup("test_over")


async def test_a_page_that_never_connects_is_not_answered() -> None:
    leg, caller = new_leg(connect_timeout=0.5), AiortcCaller()
    try:
        await leg.accept_offer(await caller.offer())  # the answer never reaches the page
        with pytest.raises(LegClosed, match="did not connect"):
            await leg.answer()
        assert leg.end_reason == "transport_failed"
    finally:
        await leg.hangup("test_over")
        await caller.close()


def test_quiet_frames_is_300_ms() -> None:
    assert QUIET_FRAMES * 0.02 == pytest.approx(0.3)
