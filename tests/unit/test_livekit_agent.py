"""LiveKit, as far as it can be tested without a LiveKit server: room tokens minted with
`livekit-api` carry exactly the grants we mean (checked with its own `TokenVerifier`), and the
`LiveKitLeg` adapter turns the SDK's own `AudioFrame`s (48 kHz stereo, 10 ms, as a room
delivers) into the call actor's 16 kHz 20 ms chunks and the agent's audio into frames for an
`rtc.AudioSource`, paced by the source itself and cleared at once on barge-in.

Not tested here (no server): joining a room, subscribing to the caller's track, publishing
the agent's track and data messages (see docs/web.md)."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import AsyncIterator

import msgspec
import numpy as np
import pytest
from livekit import api, rtc
from switchboard.gateways.webrtc.livekit_agent import LiveKitSettings, mint_room_token
from switchboard.gateways.webrtc.livekit_leg import LiveKitLeg
from switchboard.protocols.audio import AudioChunk
from switchboard.protocols.live import CallState
from switchboard.protocols.media import LegEnded, MediaEvent, MediaInactive
from switchboard.protocols.tenants import Secret

from tests.support.harness import wait_until
from tests.support.web import dominant_hz, tone

pytestmark = pytest.mark.unit

SETTINGS = LiveKitSettings(url="wss://lk.example.invalid", api_key="APIkey123",
                           api_secret=Secret("lk-secret-0123456789abcdef0123456789"))


def test_room_tokens_grant_one_room_and_mark_the_agent() -> None:
    token = mint_room_token(SETTINGS, room="support-42", identity="switchboard-agent-lk-1",
                            agent=True, ttl=datetime.timedelta(minutes=10))
    claims = api.TokenVerifier(SETTINGS.api_key, SETTINGS.api_secret.reveal()).verify(token)
    assert claims.identity == "switchboard-agent-lk-1" and claims.kind == "agent"
    video = claims.video
    assert video is not None and video.room_join and video.room == "support-42"
    assert video.can_publish and video.can_subscribe and video.can_publish_data
    assert not video.room_admin and not video.room_create
    import jwt  # the raw claims: issuer is the API key, lifetime as asked
    raw = jwt.decode(token, options={"verify_signature": False})
    assert raw["iss"] == SETTINGS.api_key and 590 <= raw["exp"] - time.time() <= 600
    with pytest.raises(jwt.InvalidSignatureError):
        api.TokenVerifier(SETTINGS.api_key, "another-secret-0123456789abcdef-0123").verify(token)


def test_a_caller_token_is_a_plain_participant() -> None:
    token = mint_room_token(SETTINGS, room="support-42", identity="user-17",
                            can_publish=True)
    claims = api.TokenVerifier(SETTINGS.api_key, SETTINGS.api_secret.reveal()).verify(token)
    assert claims.identity == "user-17" and claims.kind != "agent"


def room_frames(pcm48: np.ndarray, *, channels: int = 2) -> list[rtc.AudioFrame]:
    """10 ms frames at 48 kHz, as a LiveKit AudioStream delivers without resampling."""
    frames = []
    for start in range(0, len(pcm48) - 479, 480):
        block = np.repeat(pcm48[start:start + 480, None], channels, axis=1)
        frames.append(rtc.AudioFrame(block.astype(np.int16).tobytes(), 48000, channels, 480))
    return frames


async def feed(frames: list[rtc.AudioFrame], *, end: bool = True) -> AsyncIterator[rtc.AudioFrame]:
    for frame in frames:
        yield frame
        await asyncio.sleep(0)
    if not end:
        await asyncio.sleep(3600)


class RecordingSink:
    """An AudioSink that keeps frames (an `rtc.AudioSource` plays them into the room)."""

    def __init__(self) -> None:
        self.frames: list[rtc.AudioFrame] = []
        self.cleared = 0

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        self.frames.append(frame)
        await asyncio.sleep(0.02)  # a source consumes in real time

    def clear_queue(self) -> None:
        self.cleared += 1

    @property
    def queued_duration(self) -> float:
        return 0.0


async def collect(leg: LiveKitLeg, into: list[MediaEvent]) -> None:
    async for event in leg.events():
        into.append(event)


async def test_room_audio_becomes_16k_chunks_and_agent_audio_goes_out() -> None:
    sink = RecordingSink()
    sent: list[bytes] = []

    async def send_data(data: bytes) -> None:
        sent.append(data)

    leg = LiveKitLeg("lk-1", caller="user-17", callee="livekit:room", sink=sink,
                     send_data=send_data)
    events: list[MediaEvent] = []
    consumer = asyncio.ensure_future(collect(leg, events))
    await leg.answer()
    leg.attach_caller(feed(room_frames(tone(1.0, 48000, 440)), end=False))
    await wait_until(lambda: len(events) >= 45, what="a second of caller audio")
    chunks = [e for e in events if isinstance(e, AudioChunk)]
    assert all(c.sample_rate == 16000 and len(c.pcm) == 640 for c in chunks)
    assert np.allclose(np.diff([c.timestamp for c in chunks]), 0.02)
    heard = np.frombuffer(b"".join(c.pcm for c in chunks[5:45]), np.int16)
    assert abs(dominant_hz(heard, 16000) - 440) < 15

    leg.play(tone(0.3, 16000, 1000).tobytes())
    await wait_until(lambda: leg.agent_frames_sent == 15, timeout=2, what="the agent's audio")
    out = np.concatenate([np.frombuffer(f.data, np.int16) for f in sink.frames
                          if np.abs(np.frombuffer(f.data, np.int16)).max() > 0])
    assert all(f.sample_rate == 16000 and f.samples_per_channel == 320 for f in sink.frames)
    assert len(out) == 15 * 320 and abs(dominant_hz(out, 16000) - 1000) < 15

    leg.play(tone(2.0, 16000, 1000).tobytes())
    await asyncio.sleep(0.1)
    assert leg.clear_playout() > 1.8 and leg.playout_queued == 0 and sink.cleared == 1

    leg.publish(CallState(state="listening"))
    await wait_until(lambda: len(sent) == 1, what="a live event on the room's data channel")
    assert msgspec.json.decode(sent[0]) == {"type": "state", "state": "listening", "reason": "",
                                            "v": 1}
    await leg.hangup("agent_hangup")
    consumer.cancel()


async def test_the_callers_track_ending_ends_the_leg_and_silence_is_reported() -> None:
    closed: list[bool] = []

    async def on_close() -> None:
        closed.append(True)

    leg = LiveKitLeg("lk-2", caller="u", callee="r", sink=RecordingSink(),
                     inactivity_timeout=0.2, on_close=on_close)
    events: list[MediaEvent] = []
    consumer = asyncio.ensure_future(collect(leg, events))
    await leg.answer()

    async def silent_then_gone() -> AsyncIterator[rtc.AudioFrame]:
        await asyncio.sleep(0.5)
        for frame in room_frames(tone(0.1, 48000, 300)):
            yield frame

    leg.attach_caller(silent_then_gone())
    await wait_until(lambda: bool(events) and isinstance(events[-1], LegEnded), timeout=3,
                     what="the leg ended")
    assert isinstance(events[0], MediaInactive)
    last = events[-1]
    assert isinstance(last, LegEnded) and last.reason == "remote_hangup"
    await wait_until(lambda: closed == [True], what="the room left")
    await consumer


async def test_a_real_audio_source_paces_the_agent_and_clears_on_barge_in() -> None:
    source = rtc.AudioSource(16000, 1, queue_size_ms=100)
    leg = LiveKitLeg("lk-3", caller="u", callee="r", sink=source)
    leg.play(tone(3.0, 16000, 1000).tobytes())
    started = time.monotonic()
    await leg.answer()
    await asyncio.sleep(1.0)
    sent = leg.agent_frames_sent
    assert 40 <= sent <= 60, sent  # the source takes audio in real time, not all at once
    assert 1.8 < leg.playout_queued < 2.2
    leg.clear_playout()
    assert leg.playout_queued == 0 and source.queued_duration == 0
    before = leg.frames_sent
    await asyncio.sleep(0.2)
    assert leg.agent_frames_sent == sent  # nothing more of the agent's audio after barge-in
    assert leg.frames_sent - before >= 5  # the line stays live: silence goes on
    assert time.monotonic() - started < 2.0
    await leg.hangup("agent_hangup")
    await source.aclose()
