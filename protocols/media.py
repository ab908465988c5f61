"""The media leg: one call's audio and signalling, as the call actor sees it.

The SIP gateway (RTP) and the WebRTC gateway implement `MediaLeg`; the call actor uses it and
never knows which edge it talks to (ARCHITECTURE.md: actors never import gateways). The
gateway registers the leg in the node-local `actors.media_registry.MediaLegRegistry` under the
call id and sends the call actor only a serializable `StartCall`, so audio never crosses NATS.

Caller side, one async iterator of `MediaEvent`s, in arrival order:

- `AudioChunk`: 20 ms of caller PCM16 mono at `leg.sample_rate` (8000 or 16000 Hz), stamped on
  the stream's clock. The chunk the leg builds from its decoder is the object the actor gets:
  no re-buffering, re-chunking or copy between leg and actor (the queue holds references).
- `DtmfReceived`: one key press (RFC 4733 or SIP INFO), after its end.
- `MediaInactive`: no media arrived for the agent's `rtp_inactivity_seconds` while the call was
  not on hold (the leg knows hold; the actor does not): the actor hangs up.
- `LegEnded`: the far end hung up, cancelled, or the transport failed; the iterator then ends.

Agent side: `play` queues PCM at the leg's rate, the leg paces it at 20 ms and sends silence
(or comfort noise) when the queue is empty; `clear_playout` drops everything queued at once
(barge-in). Digits, the dialled number and caller id are personal data: a leg never logs them.

    MediaError                  base of what a leg raises
    ├── LegClosed               the leg has ended: nothing more can be played, sent or answered
    ├── PlayoutFull             more agent audio queued than the leg holds
    └── TransferNotSupported    this kind of leg cannot transfer (e.g. WebRTC), or the peer
                                refused REFER
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal, Protocol

import msgspec
from switchboard.protocols.audio import AudioChunk

Direction = Literal["inbound", "outbound"]

# Why a leg ended (`LegEnded.reason`); the call actor copies it into the call.ended event.
REMOTE_HANGUP = "remote_hangup"      # BYE from the peer, or the browser closed the connection
CANCELLED = "cancelled"              # CANCEL before answer
TRANSPORT_FAILED = "transport_failed"
TRANSFERRED = "transferred"          # the peer accepted a REFER and left the call


class DtmfReceived(msgspec.Struct, frozen=True, kw_only=True, tag="media.dtmf"):
    """One DTMF key (0-9 * # A-D), reported once at its end. The digit is personal data."""

    digit: str
    at: float = 0.0  # on the caller stream's clock
    v: int = 1


class MediaInactive(msgspec.Struct, frozen=True, kw_only=True, tag="media.inactive"):
    """No caller media for `seconds`: the peer probably vanished without a BYE."""

    seconds: float
    v: int = 1


class LegEnded(msgspec.Struct, frozen=True, kw_only=True, tag="media.leg_ended"):
    """The leg is over (the last event of `events()`); `reason` is one of the constants above."""

    reason: str
    v: int = 1


MediaEvent = AudioChunk | DtmfReceived | MediaInactive | LegEnded


class MediaError(Exception):
    """A media leg could not do what was asked; the message names why (never any digits)."""


class LegClosed(MediaError):
    """The leg has ended."""


class PlayoutFull(MediaError):
    """`play` would queue more agent audio than the leg holds; clear or wait first."""


class TransferNotSupported(MediaError):
    """The leg cannot transfer this call (no REFER on this edge, or the peer refused it)."""


class MediaLeg(Protocol):
    """One call's media, implemented by a gateway; see the module docstring for the contract."""

    @property
    def call_id(self) -> str: ...

    @property
    def caller(self) -> str:
        """Caller id (E.164 or SIP URI user, as received); personal data."""
        ...

    @property
    def callee(self) -> str:
        """The dialled number (inbound) or the target (outbound); personal data."""
        ...

    @property
    def direction(self) -> Direction: ...

    @property
    def sample_rate(self) -> int:
        """Rate of the PCM both ways: 8000 (G.711) or 16000 (G.722, Opus)."""
        ...

    def events(self) -> AsyncIterator[MediaEvent]:
        """Caller audio, DTMF, inactivity and the end of the leg; one consumer only."""
        ...

    async def answer(self) -> None:
        """Accept an inbound call (SIP 200 OK) once the agent is ready to greet.

        Idempotent; a no-op on an outbound leg, which is answered when the callee picks up.
        Raises `LegClosed` if the caller already left (CANCEL).
        """
        ...

    def play(self, pcm: bytes) -> None:
        """Queue PCM16 mono at `sample_rate` (any length); the leg paces it at 20 ms.

        Raises `PlayoutFull` past the leg's queue limit, `LegClosed` after the end.
        """
        ...

    def clear_playout(self) -> float:
        """Drop all queued agent audio at once (barge-in); return the seconds dropped."""
        ...

    @property
    def playout_queued(self) -> float:
        """Seconds of agent audio queued and not yet sent: 0.0 when the agent is silent."""
        ...

    def send_dtmf(self, digits: str) -> None:
        """Queue DTMF keys to the far end (RFC 4733); raises MediaError if not negotiated."""
        ...

    async def hangup(self, reason: str) -> None:
        """End the leg (BYE, or a final answer if not yet answered). Idempotent."""
        ...

    async def transfer(self, target: str) -> None:
        """Blind transfer to `target` (SIP REFER, RFC 3515); returns once the peer accepted.

        Raises `TransferNotSupported` when this leg cannot transfer. The leg then ends with
        `LegEnded(reason=TRANSFERRED)`.
        """
        ...
