"""The caller side of bench/sip_media.py: many SIP calls with live G.711 RTP both ways.

A process of its own (pinned to the load-generator core by the benchmark), built on our own
user agent (`gateways.sip.UserAgent` as UAC, one `RtpSession` per call): each call sends 20 ms
of PCMU every 20 ms for as long as it lasts, a cycle of 1.5 s of speech (the echo greeting's
recording) and 2.5 s of pause, with white noise at -70 dBov under both as on a real line
(`--line-noise-dbov`), at a random phase per call, so the node's VAD hears turns and
its echo agent talks back during the pauses. What the node sends back is counted per call:
frames, frames concealed (lost or late past the jitter buffer), frames with sound (the echo).

It is driven over stdin/stdout, one JSON object per line:

    {"cmd": "ramp", "calls": 150, "rate": 25}   place calls until 150 are up (25 new per second)
    {"cmd": "stats"}                             counters since the start (the driver diffs them)
    {"cmd": "stop"}                              hang every call up (BYE) and exit

Every command is answered with one JSON line. Calls that fail to set up, or that the node ends
while the benchmark runs, are counted as failed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import sys
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from switchboard.gateways.sip import frame_clock
from switchboard.gateways.sip.call import SipCall
from switchboard.gateways.sip.codecs import PCMU
from switchboard.gateways.sip.errors import CallFailed, SipError
from switchboard.gateways.sip.handler import Admission, CallEnd, MediaOptions, Refuse
from switchboard.gateways.sip.session_timer import SessionTimerConfig
from switchboard.gateways.sip.transport import TransportConfig
from switchboard.gateways.sip.useragent import UserAgent, UserAgentConfig

# Independent callers' packets arrive at any moment of a frame, not in the 10 bursts a node's
# clock makes: the load generator spreads its calls over 20 phases of 1 ms.
frame_clock.PHASES = 20
frame_clock.PHASE_SECONDS = frame_clock.FRAME_SECONDS / frame_clock.PHASES

SPEECH_S = 1.5
CYCLE_S = 4.0
RATE = 8000


def speech_clip(path: Path) -> np.ndarray:
    """1.5 s of speech at 8 kHz from a PCM16 mono WAV (the echo greeting)."""
    with wave.open(str(path), "rb") as wav:
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), np.int16)
        rate = wav.getframerate()
    if rate != RATE:
        pcm = np.interp(np.arange(0, len(pcm), rate / RATE), np.arange(len(pcm)),
                        pcm).astype(np.int16)
    start = int(0.3 * RATE)
    return np.ascontiguousarray(pcm[start : start + int(SPEECH_S * RATE)])


class NoInbound:
    """The load generator only calls out: any INVITE to it is refused."""

    async def admit(self, call: SipCall) -> Admission:
        return Refuse(403)

    def call_ended(self, call: SipCall, end: CallEnd) -> None:
        pass


class LoadCall:
    """One outbound call and what it heard from the node."""

    __slots__ = ("frames", "lost", "sip", "voiced")

    def __init__(self) -> None:
        self.frames = self.lost = self.voiced = 0
        self.sip: SipCall | None = None

    def on_audio(self, pcm: np.ndarray, at: float, concealed: bool) -> None:
        self.frames += 1
        if concealed:
            self.lost += 1
        elif pcm.any():
            self.voiced += 1


def _add_counts(totals: dict[str, int], record: LoadCall) -> None:
    """Add what one call heard and sent to `totals` (retired calls and live ones alike)."""
    totals["frames"] += record.frames
    totals["lost"] += record.lost
    totals["voiced"] += record.voiced
    if record.sip is not None and record.sip.rtp is not None:
        s = record.sip.rtp.statistics()
        totals["sent"] += s.packets_sent
        totals["late"] += s.late_sends
        totals["skipped"] += s.skipped_slots


class LoadGenerator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.target = f"sip:{args.number}@{args.target}"
        cycle = np.concatenate((speech_clip(Path(args.speech)),
                                np.zeros(int((CYCLE_S - SPEECH_S) * RATE), np.int16)))
        if args.line_noise_dbov is not None:
            # A phone line is never digitally silent: white noise at this level (comfort
            # noise, a quiet room) runs under the speech and through the pauses.
            rms = 32768 * 10 ** (args.line_noise_dbov / 20)
            noise = np.random.default_rng(1).standard_normal(cycle.size) * rms
            cycle = np.clip(cycle + noise, -32768, 32767).astype(np.int16)
        self.cycle = cycle
        first, last = (int(p) for p in args.rtp_ports.split("-"))
        config = UserAgentConfig(
            transport=TransportConfig(host="127.0.0.1", port=args.sip_port, tcp=False),
            rtp_ports=(first, last), rtp_host="127.0.0.1", flood=None,
            session_timer=SessionTimerConfig(enabled=False), max_calls=100_000,
            user_agent="switchboard-bench")
        self.ua = UserAgent(config, NoInbound())
        self.calls: set[LoadCall] = set()
        self.finished = {"frames": 0, "lost": 0, "voiced": 0, "sent": 0, "late": 0,
                         "skipped": 0}
        self.feed: dict[LoadCall, float] = {}  # call -> when its queue needs the next cycle
        self.placed = self.setup_failed = self.dropped = self.setting_up = 0
        self.setup_times: list[float] = []
        self.stopping = False
        self.group = asyncio.TaskGroup()

    async def run(self) -> None:
        async with self.ua, self.group:
            gc.collect()
            gc.freeze()  # startup objects out of the collector's sight: short pauses
            self.group.create_task(self.feed_audio())
            reader = asyncio.StreamReader()
            loop = asyncio.get_running_loop()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
            while line := await reader.readline():
                command = json.loads(line)
                reply = await self.command(command)
                print(json.dumps(reply), flush=True)
                if command["cmd"] == "stop":
                    break
            self.stopping = True
            for task in list(self.group._tasks):
                task.cancel()

    async def command(self, command: dict[str, Any]) -> dict[str, Any]:
        if command["cmd"] == "ramp":
            await self.ramp(int(command["calls"]), float(command.get("rate", 25)))
            return {"active": len(self.calls), **self.stats()}
        if command["cmd"] == "stats":
            return self.stats()
        if command["cmd"] == "stop":
            await self.hang_up_all()
            return self.stats()
        return {"error": f"unknown command {command['cmd']!r}"}

    async def ramp(self, calls: int, rate: float) -> None:
        """Place calls until `calls` are up, `rate` new calls per second; wait for answers.
        Fewer than are up: hang up the surplus."""
        surplus = [r.sip for r in list(self.calls)[calls:] if r.sip is not None]
        if surplus:
            self.stopping = True  # the ends we cause are not failures
            await self.hang_up(surplus)
            self.stopping = False
        loop = asyncio.get_running_loop()
        started = loop.time()
        for n in range(max(calls - len(self.calls), 0)):
            await asyncio.sleep(max(0.0, started + n / rate - loop.time()))
            self.placed += 1
            self.group.create_task(self.call())
        deadline = loop.time() + 30
        while self.setting_up and loop.time() < deadline:
            await asyncio.sleep(0.05)

    async def call(self) -> None:
        record = LoadCall()
        media = MediaOptions(on_audio=record.on_audio, pcm_rate=RATE, preferences=[PCMU],
                             inactivity_timeout=3600.0)
        self.setting_up += 1
        t0 = time.monotonic()
        try:
            call = await self.ua.place_call(self.target, media=media, caller_id="+15550111",
                                            timeout=30.0)
        except (CallFailed, SipError, OSError, TimeoutError) as exc:
            self.setup_failed += 1
            print(f"call setup failed: {exc!r}", file=sys.stderr, flush=True)
            return
        finally:
            self.setting_up -= 1
        self.setup_times.append(time.monotonic() - t0)
        record.sip = call
        self.calls.add(record)
        # A random phase per call: callers do not all start speaking in the same 20 ms.
        self.feed[record] = time.monotonic() + random.uniform(0.0, CYCLE_S)
        try:
            end = await call.wait_ended()
        finally:
            self.calls.discard(record)
            self.feed.pop(record, None)
            self.retire(record)
        if not self.stopping and end.by == "remote":
            self.dropped += 1
            print(f"call dropped by the node: {end.reason}", file=sys.stderr, flush=True)

    async def feed_audio(self) -> None:
        """Keep every call's send queue one cycle ahead: speech, then silence, forever."""
        while True:
            now = time.monotonic()
            for record, due in list(self.feed.items()):
                if due - now < 1.0 and record.sip is not None and record.sip.rtp is not None:
                    record.sip.rtp.send_audio_nowait(self.cycle)
                    self.feed[record] = due + CYCLE_S
            await asyncio.sleep(0.25)

    def retire(self, record: LoadCall) -> None:
        _add_counts(self.finished, record)

    def stats(self) -> dict[str, Any]:
        totals = dict(self.finished)
        for record in self.calls:
            _add_counts(totals, record)
        setup = sorted(self.setup_times)
        return {"active": len(self.calls), "placed": self.placed,
                "setup_failed": self.setup_failed, "dropped": self.dropped,
                "setup_p50_ms": 1000 * setup[len(setup) // 2] if setup else None,
                "setup_max_ms": 1000 * setup[-1] if setup else None,
                "at": time.monotonic(), **totals}

    async def hang_up_all(self) -> None:
        self.stopping = True
        await self.hang_up([r.sip for r in self.calls if r.sip is not None])

    async def hang_up(self, calls: list[SipCall]) -> None:
        for i in range(0, len(calls), 50):
            await asyncio.gather(*(c.hangup() for c in calls[i : i + 50]),
                                 return_exceptions=True)
            await asyncio.sleep(0.2)  # under the node's per-source flood limit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", required=True, help="the node's SIP host:port")
    p.add_argument("--number", default="+15550100", help="the number to dial")
    p.add_argument("--sip-port", type=int, default=5090)
    p.add_argument("--rtp-ports", default="40000-49998")
    p.add_argument("--speech", default=str(ROOT / "configs" / "audio" / "echo-greeting.wav"))
    p.add_argument("--line-noise-dbov", type=float, default=-70.0,
                   help="white noise under the speech and in the pauses, dBov RMS "
                        "(default -70: a quiet line)")
    p.add_argument("--digital-silence", dest="line_noise_dbov", action="store_const",
                   const=None, help="pauses of exact zeros, as no real line has")
    uvloop.run(LoadGenerator(p.parse_args()).run())


if __name__ == "__main__":
    main()
