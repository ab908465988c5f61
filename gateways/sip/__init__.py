"""The SIP gateway: Switchboard terminates SIP and RTP itself (issue 3).

Wire-level pieces, one protocol per module, pure and testable without sockets:

- `uri`, `headers`, `message`: RFC 3261 URIs, header fields and messages (parse, serialize,
  build responses; hostile input raises only `SipParseError`, carrying the status to answer).
- `sdp`: SDP and RFC 3264 offer/answer for one audio stream (PCMU, PCMA, G.722, DTMF).
- `codecs`: G.711 and G.722 on numpy int16 frames, 8 kHz ↔ 16 kHz resampling.
- `rtp`, `jitterbuffer`, `dtmf`: RFC 3550 packets, reordering and loss, RFC 4733 events.
- `rtp_session`: one call's RTP over asyncio UDP (pacing, latching, inactivity).
- `errors`: the exception tree.

Import from the modules (`switchboard.gateways.sip.message`); this package re-exports the
names a gateway author needs most.
"""

from switchboard.gateways.sip.codecs import G722, PCMA, PCMU, AudioDecoder, AudioEncoder, Codec
from switchboard.gateways.sip.errors import (
    NoCommonCodec,
    RtpParseError,
    SdpError,
    SdpParseError,
    SipError,
    SipParseError,
)
from switchboard.gateways.sip.message import (
    SipRequest,
    SipResponse,
    StreamFramer,
    build_response,
    error_response,
    parse_message,
)
from switchboard.gateways.sip.rtp_session import RtpSession
from switchboard.gateways.sip.sdp import (
    NegotiatedAudio,
    SessionDescription,
    accept_answer,
    answer_offer,
    create_offer,
)

__all__ = [
    "G722",
    "PCMA",
    "PCMU",
    "AudioDecoder",
    "AudioEncoder",
    "Codec",
    "NegotiatedAudio",
    "NoCommonCodec",
    "RtpParseError",
    "RtpSession",
    "SdpError",
    "SdpParseError",
    "SessionDescription",
    "SipError",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "StreamFramer",
    "accept_answer",
    "answer_offer",
    "build_response",
    "create_offer",
    "error_response",
    "parse_message",
]
