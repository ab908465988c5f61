"""The two audio paths between aiortc and a call: the agent's paced playout, the caller's frames.

`PlayoutTrack` is the track aiortc sends: its sender calls `recv()` in a loop and encodes
what it gets (Opus, G.722 or G.711, resampling as the codec needs), so pacing is the track's
job. Each `recv()` waits for the next absolute 20 ms deadline on the loop's monotonic clock
(so scheduling error never accumulates) and returns one frame: the next frame of the leg's
`Playout`, or silence when the agent has nothing to say. After a stall of the loop it
re-anchors instead of bursting the missed frames out at once (the browser's jitter buffer
would drop them anyway); the frames' pts stay contiguous, so the RTP clock stays true.

`read_caller_audio` drains the track aiortc receives. aiortc decodes on its own thread and
hands over `av.AudioFrame`s (Opus: 20 ms stereo at 48 kHz; G.711: mono at 8 kHz; G.722: mono
at 16 kHz); libswresample (PyAV, in C) turns them into 16 kHz mono PCM16 and the
`ChunkAssembler` cuts 20 ms chunks. Frames whose pts jump forward (packets lost beyond what
aiortc's jitter buffer hid) are preceded by silence of the gap's length, so the stream clock
follows the caller's real time. No media for `inactivity` seconds is reported once, until
media flows again.
"""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import Callable

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from switchboard.gateways.webrtc.chunks import ChunkAssembler
from switchboard.gateways.webrtc.playout import Playout
from switchboard.protocols.audio import AudioChunk

FRAME_SECONDS = 0.02
_STALL_SECONDS = 0.1  # later than this: re-anchor the pacing clock rather than burst


class PlayoutTrack(MediaStreamTrack):
    """The agent's audio as an aiortc track; see the module docstring.

    `on_frame(had_audio)` is called for every frame sent (the leg derives the call's state
    from it: greeting / speaking / listening).
    """

    kind = "audio"

    def __init__(self, playout: Playout, *,
                 on_frame: Callable[[bool], None] | None = None) -> None:
        super().__init__()
        self._playout = playout
        self._on_frame = on_frame
        self._samples = playout.frame_bytes // 2
        self._time_base = fractions.Fraction(1, playout.sample_rate)
        self._silence = bytes(playout.frame_bytes)
        self._anchor: float | None = None
        self._sent = 0
        self.late_frames = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._anchor is None:
            self._anchor = loop.time()
        else:
            deadline = self._anchor + self._sent * FRAME_SECONDS
            behind = loop.time() - deadline
            if behind > _STALL_SECONDS:
                self.late_frames += 1
                self._anchor += behind  # skip the lost slots, do not burst
            elif behind < 0:
                await asyncio.sleep(-behind)
            if self.readyState != "live":
                raise MediaStreamError
        pcm = self._playout.pop()
        if self._on_frame is not None:
            self._on_frame(pcm is not None)
        frame = av.AudioFrame(format="s16", layout="mono", samples=self._samples)
        frame.planes[0].update(pcm if pcm is not None else self._silence)
        frame.sample_rate = self._playout.sample_rate
        frame.time_base = self._time_base
        frame.pts = self._sent * self._samples
        self._sent += 1
        return frame


async def read_caller_audio(track: MediaStreamTrack, assembler: ChunkAssembler,
                            deliver: Callable[[AudioChunk], None], *, inactivity: float,
                            on_inactive: Callable[[float], None]) -> None:
    """Decode `track` into 20 ms chunks for `deliver` until the track ends."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=assembler.sample_rate)
    next_time: float | None = None
    reported = False
    while True:
        try:
            async with asyncio.timeout(inactivity):
                frame = await track.recv()
        except TimeoutError:
            if not reported:
                reported = True
                on_inactive(inactivity)
            continue
        except MediaStreamError:
            return
        reported = False
        if not isinstance(frame, av.AudioFrame):
            continue
        start = _seconds(frame)
        if start is not None:
            gap = start - next_time if next_time is not None else 0.0
            if gap > FRAME_SECONDS / 2:  # jitter of a few samples is not a loss
                for chunk in assembler.pad_silence(gap):
                    deliver(chunk)
            next_time = start + frame.samples / frame.sample_rate
        for out in resampler.resample(frame):
            for chunk in assembler.push(out.to_ndarray().tobytes()):
                deliver(chunk)


def _seconds(frame: av.AudioFrame) -> float | None:
    if frame.pts is None or frame.time_base is None:
        return None
    return float(frame.pts * frame.time_base)
