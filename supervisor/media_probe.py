"""`MediaProbe`: optional timing of a node's media, for bench/sip_media.py. Off by default.

Set `SWITCHBOARD_MEDIA_PROBE=/path/file.json` in a node's environment and the node writes,
every second (atomically: a temporary file, then rename), what the benchmark needs to count
late frames without stopping the node:

- `send`: the `FrameClock` of the node's loop (gateways/sip/frame_clock.py): every RTP frame
  sent, how many left more than 5 ms after their 20 ms slot, how many slots a stalled loop
  skipped, the worst lateness;
- `receive`: how long caller audio waited before the call actor handed it to the agent. Each
  agent is wrapped (`MeteredBrain`) so that every caller frame's arrival at the agent is
  timed against its place on the stream's clock (`AudioChunk.timestamp`, from the RTP
  timestamps): offset = arrival - timestamp. The smallest offset seen on a stream is the
  path's own transit (the stream's origin); a frame's lag is its offset above that. This
  covers everything between the caller's socket and the agent (kernel buffer while the loop
  was busy, jitter buffer, leg queue, actor mailbox) with one monotonic clock and no
  correlation between layers; it charges the sender's own lateness to the node, which errs
  on the safe side (the load generator reports its own);
- `gc`: the cyclic collector's collections and pauses, which stop the loop like any long
  callback.

Without the variable nothing is wrapped and nothing is written: the hot paths are untouched.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from switchboard.actors.agent import (
    Agent,
    AgentFactory,
    CallControl,
    CallInfo,
    Greeting,
    VoiceActivity,
)
from switchboard.gateways.sip.frame_clock import FrameClock
from switchboard.protocols.audio import AudioChunk
from switchboard.protocols.tenants import AgentConfig

__all__ = ["ENV", "GcPauses", "MediaProbe", "MeteredBrain", "ReceiveLag", "snapshot"]

log = logging.getLogger("switchboard.node")

ENV = "SWITCHBOARD_MEDIA_PROBE"
STALL_ENV = "SWITCHBOARD_MEDIA_PROBE_STALL_MS"  # e.g. 30: keep the loop's stack past 30 ms
RECEIVE_LATE_AFTER = 0.020  # received audio waiting longer than a frame is late
_BINS = 200  # 1 ms bins; the last one holds everything from 199 ms up


class ReceiveLag:
    """Counts caller frames and their lag over all streams; see the module docstring."""

    def __init__(self) -> None:
        self.frames = 0
        self.late = 0
        self.max_lag = 0.0
        self.histogram = [0] * _BINS

    def stream(self) -> StreamLag:
        return StreamLag(self)

    def snapshot(self) -> dict[str, Any]:
        return {"frames": self.frames, "late_frames": self.late, "max_lag": self.max_lag,
                "histogram_ms": list(self.histogram)}


class StreamLag:
    __slots__ = ("_meter", "_origin")

    def __init__(self, meter: ReceiveLag) -> None:
        self._meter = meter
        self._origin: float | None = None

    def observe(self, stream_time: float, now: float) -> None:
        offset = now - stream_time
        if self._origin is None or offset < self._origin:
            self._origin = offset
        lag = offset - self._origin
        meter = self._meter
        meter.frames += 1
        if lag > RECEIVE_LATE_AFTER:
            meter.late += 1
            meter.max_lag = max(meter.max_lag, lag)
        meter.histogram[min(int(lag * 1000), _BINS - 1)] += 1


class GcPauses:
    """The cyclic collector's pauses: they stop the loop like any long callback."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.seconds = 0.0
        self.max_pause = 0.0
        self._started = 0.0

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        self.collections[info["generation"]] += 1
        self.seconds += pause
        self.max_pause = max(self.max_pause, pause)

    def snapshot(self) -> dict[str, Any]:
        return {"collections": list(self.collections), "seconds": self.seconds,
                "max_pause": self.max_pause}


class MeteredAgent:
    """An agent that times each caller frame's arrival, then hands it on unchanged."""

    def __init__(self, agent: Agent, lag: StreamLag) -> None:
        self._agent = agent
        self._lag = lag

    async def on_start(self, call: CallInfo, control: CallControl) -> Greeting | None:
        return await self._agent.on_start(call, control)

    def on_audio(self, frame: AudioChunk, vad: VoiceActivity) -> None:
        self._lag.observe(frame.timestamp, time.monotonic())
        self._agent.on_audio(frame, vad)

    def on_dtmf(self, digit: str) -> None:
        self._agent.on_dtmf(digit)

    async def on_end(self, reason: str) -> None:
        await self._agent.on_end(reason)

    def __getattr__(self, name: str) -> Any:  # whatever else the call actor asks of the agent
        return getattr(self._agent, name)


class StallWatch:
    """Finds what blocks the loop: a 5 ms tick on the loop and a thread that, when the tick is
    `after` seconds overdue, keeps the loop thread's stack (the culprit, or the code after
    it when the culprit held the GIL, like the collector). The last `keep` go to the probe
    file, each with how long the loop stalled."""

    def __init__(self, *, after: float = 0.03, keep: int = 20) -> None:
        self.after = after
        self.stalls: list[dict[str, Any]] = []
        self._keep = keep
        self._tick = time.monotonic()
        self._stop = threading.Event()
        self._loop_thread = threading.get_ident()
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._beat()
        threading.Thread(target=self._watch, name="stall-watch", daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.cancel()

    def _beat(self) -> None:
        now = time.monotonic()
        if self.stalls and self.stalls[-1].get("open"):
            stall = self.stalls[-1]
            stall["ms"] = round(1000 * (now - stall.pop("since")), 1)
            del stall["open"]
        self._tick = now
        self._timer = asyncio.get_running_loop().call_later(0.005, self._beat)

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            since = self._tick
            if time.monotonic() - since < self.after:
                continue
            if self.stalls and self.stalls[-1].get("open"):
                continue
            frame = sys._current_frames().get(self._loop_thread)
            stack = traceback.format_stack(frame)[-8:] if frame is not None else []
            self.stalls.append({"open": True, "since": since, "ms": None,
                                "stack": [line.strip() for line in stack]})
            del self.stalls[: -self._keep]

    def snapshot(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in stall.items() if k not in ("open", "since")}
                for stall in self.stalls if not stall.get("open")]


class MeteredBrain:
    """Wraps an `AgentFactory`: every agent it makes is a `MeteredAgent`."""

    def __init__(self, brain: AgentFactory, meter: ReceiveLag) -> None:
        self.brain = brain
        self.meter = meter

    def __call__(self, config: AgentConfig) -> Agent:
        return MeteredAgent(self.brain(config), self.meter.stream())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.brain, name)


def snapshot(receive: ReceiveLag, pauses: GcPauses) -> dict[str, Any]:
    """What the probe file holds: the loop's frame clock, the receive lag, the collector."""
    send = FrameClock.current().statistics()
    return {"at": time.monotonic(), "pid": os.getpid(),
            "send": {"sessions": send.sessions, "frames": send.frames,
                     "late_frames": send.late_frames, "skipped_slots": send.skipped_slots,
                     "max_lateness": send.max_lateness},
            "receive": receive.snapshot(), "gc": pauses.snapshot()}


class MediaProbe:
    """Wraps a node's brains and writes the JSON snapshot every `interval` seconds."""

    def __init__(self, path: Path, brains: MutableMapping[str, Any], *,
                 interval: float = 1.0) -> None:
        self.path = path
        self.interval = interval
        self.receive = ReceiveLag()
        for name, brain in list(brains.items()):
            brains[name] = MeteredBrain(brain, self.receive)
        self._timer: asyncio.TimerHandle | None = None
        self.gc = GcPauses()
        gc.callbacks.append(self.gc.on_gc)
        # Off unless asked for: its thread takes the GIL every 5 ms, which itself can make
        # a frame late on a one-core node.
        stall_ms = os.environ.get(STALL_ENV)
        self.stalls = StallWatch(after=float(stall_ms) / 1000) if stall_ms else None

    @classmethod
    def from_environment(cls, brains: MutableMapping[str, Any], *,
                         interval: float = 1.0) -> MediaProbe | None:
        """A started probe if `SWITCHBOARD_MEDIA_PROBE` is set, else None."""
        path = os.environ.get(ENV)
        if not path:
            return None
        probe = cls(Path(path), brains, interval=interval)
        probe.start()
        return probe

    def start(self) -> None:
        if self.stalls is not None:
            self.stalls.start()
        self._write()

    def close(self) -> None:
        if self.stalls is not None:
            self.stalls.close()
        if self.gc.on_gc in gc.callbacks:
            gc.callbacks.remove(self.gc.on_gc)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def snapshot(self) -> dict[str, Any]:
        stalls = self.stalls.snapshot() if self.stalls is not None else []
        return {**snapshot(self.receive, self.gc), "stalls": stalls}

    def _write(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(self.snapshot()))
            temporary.replace(self.path)
        except OSError as exc:  # a benchmark aid must never stop a node; the reader sees staleness
            log.warning("media probe: cannot write %s (%s)", self.path, exc.strerror)
        self._timer = asyncio.get_running_loop().call_later(self.interval, self._write)
