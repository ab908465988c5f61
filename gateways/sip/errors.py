"""Errors of the SIP gateway, each carrying what the edge answers with.

The tree (like httpx's errors module, so a caller sees at a glance what it can catch)::

    SipError                    base of everything the gateway raises on bad input
    ├── SipParseError           a SIP message could not be parsed: `status`, `reason`, `respondable`
    ├── SdpError                an SDP body is unusable: `status`
    │   ├── SdpParseError       syntax (answer 400 Bad Request)
    │   └── NoCommonCodec       offer/answer found nothing we can speak (488 Not Acceptable Here)
    ├── RtpParseError           an RTP or RFC 4733 packet is malformed (dropped and counted)
    ├── TransportError          a message could not be sent (connection refused or closed)
    ├── TransactionTimeout      no final response in time (RFC 3261 §17 Timer B / F)
    ├── TooManyTransactions     the cap on live transactions was reached
    └── CallFailed              an outbound call or in-dialog request got a final failure:
        │                       `status`, `reason`, `retry_after`
        └── TransferFailed      the peer refused our REFER (or never answered it)

Messages name the cause; they never echo header values, digits or numbers (personal data,
CONVENTIONS.md), only which header or field was wrong.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from switchboard.gateways.sip.headers import Headers

__all__ = [
    "CallFailed",
    "NoCommonCodec",
    "RtpParseError",
    "SdpError",
    "SdpParseError",
    "SipError",
    "SipParseError",
    "TooManyTransactions",
    "TransactionTimeout",
    "TransferFailed",
    "TransportError",
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


class TransportError(SipError):
    """A SIP message could not be sent: no route, connection refused or closed (§18)."""


class TransactionTimeout(SipError):
    """A client transaction got no final response (Timer B or F fired, RFC 3261 §17.1)."""


class TooManyTransactions(SipError):
    """The transaction layer holds its maximum of live transactions; try again later."""


class CallFailed(SipError):
    """A request we sent ended without success: the final `status` (408 on timeout,
    503 on a transport error) and, when the peer sent one, `retry_after` seconds."""

    def __init__(self, status: int, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


class TransferFailed(CallFailed):
    """Our REFER (RFC 3515) was refused or not answered; the call goes on."""
