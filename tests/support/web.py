"""Helpers for the web gateway's tests: tenants, an in-process node with the gateway, and an
aiortc peer that stands in for a browser.

    async with web_node(directory, demo_mode=True) as node:      # LocalBus actors + gateway
        caller = AiortcCaller(tone_hz=440)
        answer = await post_offer(node.gateway.url, await caller.offer(), token=...)
        await caller.accept(answer["sdp"])

The node is the real thing minus NATS: the tenant actor (virtual, on in-memory KV), the calls
supervisor with the echo brain, and `WebGateway` on a free loopback port. `AiortcCaller`
plays a tone or a PCM buffer (48 kHz, paced like a microphone), keeps every frame it hears
with its arrival time, and the live events of the `events` data channel.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from switchboard.actors.call import CallServices
from switchboard.actors.echo_agent import EchoBrain
from switchboard.actors.media_registry import MediaLegRegistry
from switchboard.actors.system import ActorSystem
from switchboard.actors.tenant import TenantActor
from switchboard.gateways.webrtc.admission import CallStarter
from switchboard.gateways.webrtc.server import WebConfig, WebGateway
from switchboard.protocols.call import CALLS_ID
from switchboard.protocols.tenants import AgentConfig, Limits, Secret, TenantConfig
from switchboard.providers.fakes import FakeVad
from switchboard.storage.events import MemoryEvents
from switchboard.storage.kv_memory import MemoryKeyValue
from switchboard.storage.tenants_file import StaticTenantDirectory
from switchboard.supervisor.calls import CallsSupervisor

from tests.support.harness import actor_system, host_virtual

GREETING_WAV = Path(__file__).parents[2] / "configs" / "audio" / "echo-greeting.wav"
ACME_SECRET = "acme-web-token-secret-0123456789abcdef"


def web_directory(*, max_calls: int = 10, calls_per_minute: int = 60,
                  greeting: bool = True) -> StaticTenantDirectory:
    """Tenant `acme` (agents `support`, `sales`; a token secret), tenant `demo` (agent `demo`,
    no secret), and tenant `closed` (quota 0)."""
    audio = str(GREETING_WAV) if greeting else ""
    limits = Limits(max_concurrent_calls=max_calls, calls_per_minute=calls_per_minute,
                    retry_after_seconds=7.0)
    return StaticTenantDirectory([
        TenantConfig(id="acme", limits=limits, web_token_secret=Secret(ACME_SECRET),
                     agents=[AgentConfig(id="support", name="Support", greeting_audio=audio),
                             AgentConfig(id="sales", name="Sales", greeting_audio=audio)]),
        TenantConfig(id="demo", limits=limits,
                     agents=[AgentConfig(id="demo", name="Demo echo agent",
                                         greeting_audio=audio)]),
        TenantConfig(id="closed", web_token_secret=Secret(ACME_SECRET),
                     limits=Limits(max_concurrent_calls=0, retry_after_seconds=7.0),
                     agents=[AgentConfig(id="support")]),
    ])


@dataclass
class WebNode:
    system: ActorSystem
    legs: MediaLegRegistry
    events: MemoryEvents
    gateway: WebGateway

    @property
    def url(self) -> str:
        return self.gateway.url.rstrip("/")


@asynccontextmanager
async def web_node(directory: StaticTenantDirectory, *, demo_mode: bool = False,
                   tenants: bool = True, **config: Any) -> AsyncIterator[WebNode]:
    """An in-process node (LocalBus) with the web gateway on a free loopback port.
    `tenants=False`: nothing hosts tenant actors (admission cannot be answered)."""
    legs, events = MediaLegRegistry(), MemoryEvents()
    services = CallServices(legs=legs, directory=directory, events=events,
                            brains={"echo": EchoBrain()}, vad=lambda rate: FakeVad(rate))
    async with actor_system() as system:
        if tenants:
            await host_virtual(system, TenantActor.bind(directory), leases=MemoryKeyValue(),
                               states=MemoryKeyValue())
        await system.spawn(CallsSupervisor, CALLS_ID, factory=lambda: CallsSupervisor(services),
                           expose=False)
        starter = CallStarter(system, legs, directory, admit_timeout=1.0, start_timeout=2.0)
        gateway = WebGateway(starter, WebConfig(host="127.0.0.1", port=0, demo_mode=demo_mode,
                                                **config))
        await gateway.start()
        try:
            yield WebNode(system=system, legs=legs, events=events, gateway=gateway)
        finally:
            await gateway.close()


async def post(url: str, body: Any, *, token: str = "") -> tuple[int, dict[str, Any], Any]:
    """POST JSON; returns (status, headers, decoded body or None)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.post(
            url, data=body if isinstance(body, (bytes, str)) else json.dumps(body),
            headers=headers, timeout=aiohttp.ClientTimeout(total=15)) as response:
        raw = await response.read()
        return response.status, dict(response.headers), json.loads(raw) if raw else None


def tone(seconds: float, rate: int, hz: float, amplitude: float = 8000.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def dominant_hz(pcm: np.ndarray, rate: int) -> float:
    x = pcm.astype(float) * np.hanning(len(pcm))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[np.argmax(np.abs(np.fft.rfft(x)))])


class SourceTrack(MediaStreamTrack):
    """A microphone: 20 ms frames at 48 kHz, paced in real time; a tone, or `pcm` then
    silence."""

    kind = "audio"
    RATE = 48000

    def __init__(self, *, tone_hz: float = 440.0, pcm: np.ndarray | None = None) -> None:
        super().__init__()
        self._hz = tone_hz
        self._pcm = pcm
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            delay = self._start + self._n * 0.02 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        size = self.RATE // 50
        if self._pcm is not None:
            part = self._pcm[self._n * size:(self._n + 1) * size]
            samples = np.concatenate([part, np.zeros(size - len(part), np.int16)])
        else:
            t = (np.arange(size) + self._n * size) / self.RATE
            samples = (8000 * np.sin(2 * np.pi * self._hz * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.RATE
        frame.pts = self._n * size
        frame.time_base = fractions.Fraction(1, self.RATE)
        self._n += 1
        return frame


class AiortcCaller:
    """A browser stand-in: sends a tone (or PCM), records what it hears and the live events."""

    def __init__(self, *, tone_hz: float = 440.0, pcm: np.ndarray | None = None,
                 codec: str | None = None) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.track = SourceTrack(tone_hz=tone_hz, pcm=pcm)
        transceiver = self.pc.addTransceiver(self.track, direction="sendrecv")
        if codec is not None:
            codecs = [c for c in RTCRtpSender.getCapabilities("audio").codecs
                      if c.mimeType.lower() == f"audio/{codec.lower()}"]
            transceiver.setCodecPreferences(codecs)
        self.channel = self.pc.createDataChannel("events")
        self.messages: list[dict[str, Any]] = []
        self.heard: list[tuple[float, np.ndarray, int]] = []  # (arrival, mono pcm, rate)
        self._readers: list[asyncio.Task[None]] = []
        self.channel.on("message", lambda data: self.messages.append(json.loads(data)))
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._readers.append(asyncio.ensure_future(self._read(track)))

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            pcm = frame.to_ndarray().reshape(-1)
            if frame.layout.name == "stereo":
                pcm = pcm[::2]
            self.heard.append((time.monotonic(), pcm.astype(np.int16), frame.sample_rate))

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    def states(self) -> list[str]:
        return [m["state"] for m in self.messages if m.get("type") == "state"]

    def heard_since(self, since: float) -> np.ndarray:
        frames = [pcm for at, pcm, _ in self.heard if at >= since]
        return np.concatenate(frames) if frames else np.zeros(0, np.int16)

    @property
    def heard_rate(self) -> int:
        return self.heard[-1][2] if self.heard else 48000

    def send(self, message: dict[str, Any]) -> None:
        self.channel.send(json.dumps(message))

    async def close(self) -> None:
        await self.pc.close()
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
