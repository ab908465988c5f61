"""The web leg's media pieces on their own: the agent's playout (whole frames, cleared at
once, bounded), the caller's chunking (20 ms at 16 kHz on one clock, lost audio padded), the
paced sender (one frame per 20 ms, silence when idle, no burst after a stall), the live
event channel (queued until open, the current state re-sent to a reconnected page) and the
call state the page shows."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from switchboard.gateways.webrtc.chunks import MAX_GAP_SECONDS, ChunkAssembler
from switchboard.gateways.webrtc.live_channel import LiveChannel
from switchboard.gateways.webrtc.page_state import QUIET_FRAMES, PageState
from switchboard.gateways.webrtc.playout import Playout
from switchboard.gateways.webrtc.tracks import PlayoutTrack
from switchboard.protocols.live import CallState, LiveTranscript, PageDtmf, PageHangup
from switchboard.protocols.media import PlayoutFull

pytestmark = pytest.mark.unit


def pcm(seconds: float, value: int = 1000, rate: int = 16000) -> bytes:
    return value.to_bytes(2, "little", signed=True) * int(seconds * rate)


def test_playout_hands_out_whole_frames_and_pads_the_last() -> None:
    playout = Playout(16000)
    playout.play(pcm(0.05))  # 2.5 frames
    assert playout.queued == pytest.approx(0.05)
    frames = [playout.pop() for _ in range(4)]
    assert [len(f) if f else None for f in frames] == [640, 640, 640, None]
    last = frames[2]
    assert last is not None and last[:320] == pcm(0.01) and last[320:] == bytes(320)
    assert playout.statistics().frames_played == 3


def test_playout_joins_odd_pieces_without_gaps() -> None:
    playout = Playout(16000)
    for _ in range(3):
        playout.play(pcm(0.0125))  # 200 samples each: frames only form across pieces
    first = playout.pop()
    assert first == pcm(0.02) and playout.queued == pytest.approx(0.0175)


def test_clear_drops_everything_at_once_and_says_how_much() -> None:
    playout = Playout(16000)
    playout.play(pcm(2.5))
    assert playout.clear() == pytest.approx(2.5)
    assert playout.pop() is None and playout.queued == 0
    assert playout.statistics().seconds_cleared == pytest.approx(2.5)


def test_playout_is_bounded() -> None:
    playout = Playout(16000, max_seconds=1.0)
    playout.play(pcm(0.9))
    with pytest.raises(PlayoutFull, match="agent audio queued"):
        playout.play(pcm(0.2))
    assert playout.queued == pytest.approx(0.9)  # nothing half-added


def test_chunks_are_20ms_on_a_contiguous_clock() -> None:
    assembler = ChunkAssembler(16000)
    chunks = []
    for size in (100, 333, 7, 900, 60):  # samples, as decoders hand them over
        chunks += assembler.push(bytes(2 * size))
    assert [len(c.pcm) for c in chunks] == [640] * 4
    assert [c.timestamp for c in chunks] == [0.0, 0.02, 0.04, 0.06]
    assert assembler.position == pytest.approx(0.08)


def test_lost_audio_is_padded_but_a_long_pause_is_not() -> None:
    assembler = ChunkAssembler(16000)
    assembler.push(bytes(640))
    padded = assembler.pad_silence(0.06)
    assert len(padded) == 3 and padded[-1].timestamp == pytest.approx(0.06)
    assert assembler.pad_silence(MAX_GAP_SECONDS + 0.5) == []


async def test_playout_track_sends_one_frame_per_slot_and_silence_when_idle() -> None:
    playout = Playout(16000)
    sent: list[bool] = []
    track = PlayoutTrack(playout, on_frame=sent.append)
    playout.play(pcm(0.04, value=3000))
    loop = asyncio.get_running_loop()
    start = loop.time()
    frames = [await track.recv() for _ in range(6)]
    elapsed = loop.time() - start
    assert 0.09 < elapsed < 0.16  # 5 waits of 20 ms
    assert sent == [True, True, False, False, False, False]
    assert [f.pts for f in frames] == [0, 320, 640, 960, 1280, 1600]
    assert frames[0].sample_rate == 16000 and frames[0].samples == 320
    assert frames[0].to_ndarray().max() == 3000 and frames[2].to_ndarray().max() == 0
    track.stop()


async def test_playout_track_does_not_burst_after_a_stall() -> None:
    track = PlayoutTrack(Playout(16000))
    await track.recv()
    await asyncio.sleep(0.3)  # the loop stalled for 15 slots
    loop = asyncio.get_running_loop()
    await track.recv()
    start = loop.time()
    await track.recv()
    assert loop.time() - start > 0.015  # paced again, not catching up at once
    assert track.late_frames == 1
    track.stop()


class FakeChannel:
    """Stands in for aiortc's RTCDataChannel (label, readyState, send, on)."""

    def __init__(self, state: str = "connecting") -> None:
        self.label = "events"
        self.readyState = state
        self.bufferedAmount = 0
        self.sent: list[dict[str, Any]] = []
        self.handlers: dict[str, Any] = {}

    def on(self, event: str, handler: Any) -> None:
        self.handlers[event] = handler

    def send(self, data: str) -> None:
        self.sent.append(msgspec.json.decode(data))

    def open(self) -> None:
        self.readyState = "open"
        self.handlers["open"]()

    def receive(self, data: str) -> None:
        self.handlers["message"](data)


def test_live_events_wait_for_the_channel_and_a_new_channel_gets_the_state() -> None:
    received: list[object] = []
    live = LiveChannel(on_message=received.append)
    live.publish(CallState(state="greeting"))
    first = FakeChannel()
    live.attach(first)
    assert first.sent == []
    first.open()
    live.publish(LiveTranscript(speaker="caller", text="hello", turn=1))
    assert [m["type"] for m in first.sent] == ["state", "transcript"]
    assert first.sent[0] == {"type": "state", "state": "greeting", "reason": "", "v": 1}

    second = FakeChannel(state="open")  # the page reconnected on a new peer connection
    live.attach(second)
    assert second.sent == [{"type": "state", "state": "greeting", "reason": "", "v": 1}]

    first.receive('{"type": "hangup"}')  # the old channel is not listened to any more
    second.receive('{"type": "dtmf", "digit": "5"}')
    second.receive('{"type": "reboot"}')
    second.receive("not json")
    assert received == [PageDtmf(digit="5")] and live.ignored == 2
    second.receive('{"type": "hangup"}')
    assert received[-1] == PageHangup()


def test_page_state_greets_once_and_does_not_flicker_between_chunks() -> None:
    shown: list[tuple[str, str]] = []
    page = PageState(lambda s: shown.append((s.state, s.reason)))

    def update(queued: float = 0.0, *, answered: bool = True, reconnecting: bool = False,
               ended: str | None = None) -> None:
        page.update(answered=answered, reconnecting=reconnecting, end_reason=ended,
                    queued=queued)

    update(answered=False)                     # still connecting: nothing new to say
    page.agent_audio_queued()
    update(1.0)                                # the greeting plays
    for _ in range(QUIET_FRAMES - 1):          # a gap between two TTS chunks...
        assert not page.frame_sent(False)
    update()
    page.frame_sent(True)                      # ...and the greeting goes on
    for _ in range(QUIET_FRAMES - 1):
        page.frame_sent(False)
    assert page.frame_sent(False)              # 300 ms of quiet: now listening
    update()
    page.agent_audio_queued()
    update(0.5)                                # the agent answers
    page.agent_audio_cleared()
    update()                                   # barge-in: listening at once
    update(reconnecting=True)
    update(ended="remote_hangup")
    assert shown == [("greeting", ""), ("listening", ""), ("speaking", ""), ("listening", ""),
                     ("reconnecting", ""), ("ended", "caller_hangup")]
