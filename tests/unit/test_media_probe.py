"""The node's optional media probe (bench/sip_media.py): receive lag, brain wrapping, the file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from switchboard.actors.agent import SILENT
from switchboard.protocols.audio import AudioChunk
from switchboard.supervisor.media_probe import ENV, MediaProbe, ReceiveLag

pytestmark = pytest.mark.unit


def test_lag_is_measured_above_the_streams_own_transit() -> None:
    meter = ReceiveLag()
    stream = meter.stream()
    # Frames every 20 ms of stream time, arriving 100 s + 3 ms later (the path's transit)...
    for n in range(50):
        stream.observe(n * 0.02, 100.003 + n * 0.02)
    # ...then one 25 ms late (late: over 20 ms) and one 15 ms late (not late).
    stream.observe(1.00, 100.003 + 1.00 + 0.025)
    stream.observe(1.02, 100.003 + 1.02 + 0.015)
    assert meter.frames == 52 and meter.late == 1
    assert meter.max_lag == pytest.approx(0.025, abs=1e-6)
    assert meter.histogram[0] == 50 and meter.histogram[25] == 1 and meter.histogram[15] == 1


def test_streams_have_their_own_origin() -> None:
    meter = ReceiveLag()
    a, b = meter.stream(), meter.stream()
    a.observe(0.0, 10.0)
    b.observe(0.0, 55.0)  # another call, started later: not late
    assert meter.late == 0


class Agent:
    def __init__(self) -> None:
        self.frames: list[AudioChunk] = []
        self.extra = "kept"

    async def on_start(self, call: Any, control: Any) -> None:
        return None

    def on_audio(self, frame: AudioChunk, vad: Any) -> None:
        self.frames.append(frame)

    def on_dtmf(self, digit: str) -> None: ...

    async def on_end(self, reason: str) -> None: ...


async def test_the_probe_wraps_brains_and_writes_its_file(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "probe.json"
    monkeypatch.setenv(ENV, str(path))
    brains: dict[str, Any] = {"echo": lambda config: Agent()}
    probe = MediaProbe.from_environment(brains, interval=0.05)
    assert probe is not None
    try:
        agent = brains["echo"](None)
        chunk = AudioChunk(pcm=b"\0\0" * 160, sample_rate=8000, timestamp=0.0)
        agent.on_audio(chunk, SILENT)
        assert agent._agent.frames == [chunk]
        assert agent.extra == "kept"  # anything else reaches the wrapped agent
        await asyncio.sleep(0.1)
        snapshot = json.loads(path.read_text())
        assert snapshot["receive"]["frames"] == 1
        assert set(snapshot["send"]) >= {"frames", "late_frames", "skipped_slots"}
    finally:
        probe.close()


def test_no_probe_without_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    brains: dict[str, Any] = {"echo": object()}
    assert MediaProbe.from_environment(brains) is None
    assert brains["echo"].__class__ is object  # untouched
