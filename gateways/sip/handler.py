"""What the SIP user agent asks of the gateway that hands calls to call actors.

The user agent owns SIP and RTP; it knows nothing of tenants or actors. For each new INVITE
it asks a `CallHandler` to `admit` the call (route the dialled number, ask the tenant actor
for a slot); the answer is an `Accept`, with the `MediaOptions` that say where the caller's
audio and DTMF go, or a `Refuse` with the SIP status (404, 486, 503 + Retry-After...).

After `Accept` the caller hears 180 Ringing; the 200 OK with the SDP answer is sent when the
gateway calls `SipCall.answer()` (the agent is ready to greet). `call_ended` is called exactly
once for every call that was accepted (even if the caller left while `admit` still ran) and
for every outbound call that was answered: this is where a gateway frees the tenant's slot.

Callbacks (`on_audio`, `on_dtmf`, `on_inactive`, `call_ended`) run on the event loop, inside
the datagram or message handler: they must not block. Digits, numbers and audio are personal
data; the user agent never logs them, and a handler must not either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from switchboard.gateways.sip.codecs import Codec, Pcm
from switchboard.gateways.sip.dtmf import DtmfDigit
from switchboard.gateways.sip.sdp import DEFAULT_PREFERENCES

if TYPE_CHECKING:
    from switchboard.gateways.sip.call import SipCall

__all__ = [
    "ACK_TIMEOUT",
    "CANCELLED",
    "ERROR",
    "LOCAL_HANGUP",
    "MAX_DURATION",
    "REFUSED",
    "REMOTE_HANGUP",
    "RTP_TIMEOUT",
    "SESSION_EXPIRED",
    "SHUTDOWN",
    "TRANSFERRED",
    "Accept",
    "Admission",
    "CallEnd",
    "CallHandler",
    "MediaOptions",
    "Refuse",
]

# Why a call ended (`CallEnd.reason`). New reasons may be added; match the ones you know.
REMOTE_HANGUP = "remote_hangup"  # BYE from the peer
LOCAL_HANGUP = "local_hangup"  # hangup() without a reason of its own
CANCELLED = "cancelled"  # CANCEL before we answered (or BYE on the early dialog)
REFUSED = "refused"  # admit() returned Refuse (only wait_ended() sees it, not call_ended)
TRANSFERRED = "transferred"  # our REFER succeeded and we left the call
ACK_TIMEOUT = "ack_timeout"  # the peer never ACKed our 200 OK (§13.3.1.4): BYE sent
SESSION_EXPIRED = "session_expired"  # RFC 4028: no session refresh came: BYE sent
RTP_TIMEOUT = "rtp_timeout"  # no RTP for `inactivity_timeout` and no on_inactive callback
MAX_DURATION = "max_duration"  # MediaOptions.max_duration reached: BYE sent
SHUTDOWN = "shutdown"  # the user agent is closing
ERROR = "error"  # media could not be set up, or a request to the peer failed


@dataclass(frozen=True, slots=True)
class CallEnd:
    """How a call ended: `reason` (above), `by` whom, and the SIP status when one applies
    (the final status we answered an unanswered INVITE with, or the BYE's answer)."""

    reason: str
    by: Literal["remote", "local"]
    status: int | None = None


@dataclass(frozen=True, slots=True)
class MediaOptions:
    """How a call's RTP is set up and where its audio goes.

    `on_audio(pcm, at, concealed)`: 20 ms (or the peer's ptime) of int16 PCM at `pcm_rate`,
    `at` on the caller stream's clock, `concealed` when it stands in for a lost packet.
    `on_dtmf(digit)`: one key press, RFC 4733 or SIP INFO, once at its end.
    `on_inactive()`: no RTP for `inactivity_timeout` s while not on hold; without it the user
    agent hangs up itself (reason `rtp_timeout`). `max_duration`: BYE after this many seconds.
    """

    on_audio: Callable[[Pcm, float, bool], None]
    on_dtmf: Callable[[DtmfDigit], None] | None = None
    on_inactive: Callable[[], None] | None = None
    pcm_rate: int = 16000
    preferences: Sequence[Codec] = DEFAULT_PREFERENCES
    inactivity_timeout: float = 30.0
    max_duration: float | None = None


@dataclass(frozen=True, slots=True)
class Accept:
    """Admit the call: ring (180) now, answer when the gateway calls `SipCall.answer()`."""

    media: MediaOptions
    ring: bool = True


@dataclass(frozen=True, slots=True)
class Refuse:
    """Refuse the call with a final status: 403, 404, 480, 486, 488, 503, 603...

    `retry_after` (seconds) becomes a Retry-After header (RFC 3261 §20.33), as 486/503 over
    quota should carry. `reason` overrides the standard reason phrase (never personal data).
    """

    status: int
    reason: str | None = None
    retry_after: float | None = None

    def __post_init__(self) -> None:
        if not 300 <= self.status <= 699:
            raise ValueError("a refusal needs a final status from 300 to 699")


Admission = Accept | Refuse


class CallHandler(Protocol):
    """Implemented by the gateway glue; see the module docstring for the contract."""

    async def admit(self, call: SipCall) -> Admission:
        """Decide on a new inbound call. Runs while the caller hears nothing but 100 Trying;
        the user agent answers 503 if it takes longer than `UserAgentConfig.admit_timeout`
        and 500 if it raises."""
        ...

    def call_ended(self, call: SipCall, end: CallEnd) -> None:
        """The call is over (see the module docstring for when this is called)."""
        ...
