"""Errors of the SIP gateway, each carrying what the edge answers with.

The tree (like httpx's errors module, so a caller sees at a glance what it can catch)::

    SipError                    base of everything the gateway raises on bad input
    ├── SipParseError           a SIP message could not be parsed: `status`, `reason`, `respondable`
    ├── SdpError                an SDP body is unusable: `status`
    │   ├── SdpParseError       syntax (answer 400 Bad Request)
    │   └── NoCommonCodec       offer/answer found nothing we can speak (488 Not Acceptable Here)
    └── RtpParseError           an RTP or RFC 4733 packet is malformed (dropped and counted)

Messages name the cause; they never echo header values, digits or numbers (personal data,
CONVENTIONS.md), only which header or field was wrong.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from switchboard.gateways.sip.headers import Headers

__all__ = [
    "NoCommonCodec",
    "RtpParseError",
    "SdpError",
    "SdpParseError",
    "SipError",
    "SipParseError",
]


class SipError(Exception):
    """Base of the errors the SIP gateway raises on bad wire input."""


class SipParseError(SipError):
    """A SIP message could not be parsed.

    `status`/`reason` is the response to send (400, 413, 416, 505, 513). `respondable` is true
    only when the message was a request whose Via, From, To, Call-ID and CSeq could be read:
    without them a response cannot be routed or matched (RFC 3261 §8.2.6.2), so the transport
    drops the message and counts it. `headers` and `method` are then set for
    `message.error_response()`.
    """

    def __init__(
        self,
        reason: str,
        *,
        status: int = 400,
        detail: str = "",
        respondable: bool = False,
        method: str | None = None,
        headers: Headers | None = None,
    ) -> None:
        super().__init__(f"{status} {reason}" + (f": {detail}" if detail else ""))
        self.status = status
        self.reason = reason
        self.detail = detail
        self.respondable = respondable
        self.method = method
        self.headers = headers


class SdpError(SipError):
    """An SDP body was unusable; `status` is the SIP response to answer the offer with."""

    status: int = 400
    reason: str = "Bad Request"


class SdpParseError(SdpError):
    """The SDP body is not valid RFC 8866 syntax."""


class NoCommonCodec(SdpError):
    """RFC 3264 §6: no offered audio stream uses a codec we support; answer 488."""

    status = 488
    reason = "Not Acceptable Here"


class RtpParseError(SipError):
    """An RTP (RFC 3550) or telephone-event (RFC 4733) packet is malformed; drop it."""
