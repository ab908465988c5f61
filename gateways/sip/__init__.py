"""The SIP gateway: Switchboard terminates SIP and RTP itself (issue 3).

Wire-level pieces, one protocol per module, pure and testable without sockets:

- `uri`, `headers`, `message`: RFC 3261 URIs, header fields and messages (parse, serialize,
  build responses; hostile input raises only `SipParseError`, carrying the status to answer).
- `sdp`: SDP and RFC 3264 offer/answer for one audio stream (PCMU, PCMA, G.722, DTMF).
- `codecs`: G.711 and G.722 on numpy int16 frames, 8 kHz ↔ 16 kHz resampling.
- `rtp`, `jitterbuffer`, `dtmf`: RFC 3550 packets, reordering and loss, RFC 4733 events.
- `rtp_session`: one call's RTP over asyncio UDP (pacing, latching, inactivity).
- `errors`: the exception tree.

Signalling (RFC 3261), on asyncio with no actors inside:

- `transport`, `flows`, `source_policy`: UDP/TCP/TLS listeners and connections (§18),
  allow-lists and per-IP flood limits.
- `transaction`, `transaction_layer`: client and server transactions with their timers (§17).
- `dialog`, `session_timer`: dialogs (§12), 2xx retransmission (§13.3.1.4), RFC 4028.
- `auth`, `trunk`: digest (RFC 8760 / 7616 / 2617) both ways; trunks by address and proxy.
- `useragent` (with `uas`, `uac`), `call`, `handler`, `rtp_ports`: the user agent, one
  `SipCall` per dialog, and the `CallHandler` interface the gateway glue implements.

The gateway glue, between the user agent and the actors (imported from its modules only, so
the stack above stays usable without the actor runtime):

- `gateway`: `SipGateway`, the node's `CallHandler` (routing, admission, call actor start);
- `leg`: `SipLeg`, a `SipCall` as the call actor's `MediaLeg`;
- `starter`, `dialer`, `trunk_actor`: asking the actors, outbound calls, the `trunk` actor;
- `settings`: a node's `SipConfig` (protocols/sip_config.py) as the user agent's config.

Import from the modules (`switchboard.gateways.sip.message`); this package re-exports the
names a gateway author needs most.
"""

from switchboard.gateways.sip.auth import Credentials
from switchboard.gateways.sip.call import CallGone, SipCall
from switchboard.gateways.sip.codecs import G722, PCMA, PCMU, AudioDecoder, AudioEncoder, Codec
from switchboard.gateways.sip.errors import (
    CallFailed,
    NoCommonCodec,
    RtpParseError,
    SdpError,
    SdpParseError,
    SipError,
    SipParseError,
    TransferFailed,
    TransportError,
)
from switchboard.gateways.sip.handler import (
    Accept,
    Admission,
    CallEnd,
    CallHandler,
    MediaOptions,
    Refuse,
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
from switchboard.gateways.sip.session_timer import SessionTimerConfig
from switchboard.gateways.sip.source_policy import FloodLimit
from switchboard.gateways.sip.transaction import Timers
from switchboard.gateways.sip.transport import TransportConfig
from switchboard.gateways.sip.trunk import Trunk
from switchboard.gateways.sip.useragent import UserAgent, UserAgentConfig

__all__ = [
    "G722",
    "PCMA",
    "PCMU",
    "Accept",
    "Admission",
    "AudioDecoder",
    "AudioEncoder",
    "CallEnd",
    "CallFailed",
    "CallGone",
    "CallHandler",
    "Codec",
    "Credentials",
    "FloodLimit",
    "MediaOptions",
    "NegotiatedAudio",
    "NoCommonCodec",
    "Refuse",
    "RtpParseError",
    "RtpSession",
    "SdpError",
    "SdpParseError",
    "SessionDescription",
    "SessionTimerConfig",
    "SipCall",
    "SipError",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "StreamFramer",
    "Timers",
    "TransferFailed",
    "TransportConfig",
    "TransportError",
    "Trunk",
    "UserAgent",
    "UserAgentConfig",
    "accept_answer",
    "answer_offer",
    "build_response",
    "create_offer",
    "error_response",
    "parse_message",
]
