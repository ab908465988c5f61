"""The SIP/RTP layer alone, for `bench/sip_media.py --node rtp-echo`: no actors, VAD or NATS.

A bare `UserAgent` answers every call at once, PCMU or PCMA at 8 kHz, and sends each caller
frame straight back (an RTP echo through our codec, jitter buffer and pacing). It writes the
same media-probe file as a node (supervisor/media_probe.py): the frame clock's send figures,
and the lag of each received frame between the socket and this handler.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from functools import partial
from pathlib import Path

import numpy as np
import uvloop
from switchboard.gateways.sip.call import CallGone, SipCall
from switchboard.gateways.sip.codecs import PCMA, PCMU
from switchboard.gateways.sip.handler import Accept, Admission, CallEnd, MediaOptions
from switchboard.gateways.sip.session_timer import SessionTimerConfig
from switchboard.gateways.sip.transport import TransportConfig
from switchboard.gateways.sip.useragent import UserAgent, UserAgentConfig
from switchboard.supervisor.media_probe import GcPauses, ReceiveLag, StreamLag, snapshot


class Echo:
    def __init__(self) -> None:
        self.receive = ReceiveLag()
        self.gc = GcPauses()
        gc.callbacks.append(self.gc.on_gc)
        self._tasks: set[asyncio.Task[None]] = set()

    async def admit(self, call: SipCall) -> Admission:
        lag = self.receive.stream()
        media = MediaOptions(on_audio=partial(self._audio, call, lag), pcm_rate=8000,
                             preferences=[PCMU, PCMA], inactivity_timeout=60.0)
        task = asyncio.get_running_loop().create_task(self._answer(call))
        self._tasks.add(task)  # owned here until it ends (a handful of ms)
        task.add_done_callback(self._tasks.discard)
        return Accept(media, ring=False)

    async def _answer(self, call: SipCall) -> None:
        try:
            await call.answer()
        except CallGone:
            pass

    def _audio(self, call: SipCall, lag: StreamLag, pcm: np.ndarray, at: float,
               concealed: bool) -> None:
        lag.observe(at, time.monotonic())
        if call.rtp is not None and call.state == "active":
            call.rtp.send_audio_nowait(pcm)

    def call_ended(self, call: SipCall, end: CallEnd) -> None:
        pass


def write_probe(path: Path, echo: Echo) -> None:
    path.with_suffix(".tmp").write_text(json.dumps(snapshot(echo.receive, echo.gc)))
    path.with_suffix(".tmp").replace(path)


async def serve(port: int, probe: Path) -> None:
    echo = Echo()
    config = UserAgentConfig(transport=TransportConfig(host="127.0.0.1", port=port, tcp=False),
                             rtp_host="127.0.0.1", flood=None, max_calls=100_000,
                             session_timer=SessionTimerConfig(enabled=False))
    async with UserAgent(config, echo):
        gc.collect()
        gc.freeze()  # as the node does (supervisor/node.py): short full collections
        print("rtp echo node ready", flush=True)
        while True:
            write_probe(probe, echo)
            await asyncio.sleep(1.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=5080)
    p.add_argument("--probe", required=True, help="where to write the media probe (JSON)")
    args = p.parse_args()
    uvloop.run(serve(args.port, Path(args.probe)))


if __name__ == "__main__":
    main()
