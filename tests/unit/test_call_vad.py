"""The node's call VAD choice (`switchboard node --call-vad`, supervisor/brains.py)."""

from __future__ import annotations

import pytest
from switchboard.providers.vad.silero import BatchedSileroVad
from switchboard.providers.vad.webrtc import WebRtcVad
from switchboard.supervisor import brains
from switchboard.supervisor.cli import _parser as build_parser

pytestmark = pytest.mark.unit


async def test_silero_is_the_default_and_batched_at_telephone_rates() -> None:
    make = await brains.load_call_vad()
    assert isinstance(make(8000), BatchedSileroVad)
    assert isinstance(make(16000), BatchedSileroVad)
    assert isinstance(make(48000), WebRtcVad)  # Silero runs at 8 and 16 kHz only


async def test_webrtc_puts_every_call_on_the_webrtc_vad() -> None:
    make = await brains.load_call_vad("webrtc")
    assert all(isinstance(make(rate), WebRtcVad) for rate in (8000, 16000, 48000))


async def test_an_unknown_vad_names_the_choices() -> None:
    with pytest.raises(ValueError, match="silero, webrtc"):
        await brains.load_call_vad("energy")


def test_node_and_up_take_the_option() -> None:
    parser = build_parser()
    assert parser.parse_args(["node", "--nats", "nats://127.0.0.1:4222", "--call-vad", "webrtc"]).call_vad == "webrtc"
    assert parser.parse_args(["up"]).call_vad == "silero"
    with pytest.raises(SystemExit):
        parser.parse_args(["node", "--nats", "nats://127.0.0.1:4222", "--call-vad", "energy"])
