"""SDP (RFC 8866) and the RFC 3264 offer/answer model, for one audio stream.

An INVITE's body is an offer: `answer_offer` picks the first codec of our preference order that
the caller offered (PCMU 0, PCMA 8, G.722 9), keeps the caller's telephone-event payload type
(RFC 4733) and mirrors its direction, so a re-INVITE with `sendonly` (hold) gets `recvonly`.
Outbound calls use `create_offer` and then `accept_answer`. Each returns a `NegotiatedAudio`,
everything the RTP session needs. Anything but one usable audio stream raises
`NoCommonCodec` (488); broken syntax raises `SdpParseError` (400).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from switchboard.gateways.sip.codecs import G722, PCMA, PCMU, Codec
from switchboard.gateways.sip.errors import NoCommonCodec, SdpParseError

__all__ = [
    "DIRECTIONS",
    "Connection",
    "MediaDescription",
    "NegotiatedAudio",
    "SessionDescription",
    "accept_answer",
    "answer_offer",
    "create_offer",
]

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")  # RFC 3264 §5.1
DEFAULT_PREFERENCES: tuple[Codec, ...] = (G722, PCMU, PCMA)
# RFC 3551 table 4: static payload types usable without an rtpmap line.
_STATIC = {0: ("PCMU", 8000), 8: ("PCMA", 8000), 9: ("G722", 8000), 3: ("GSM", 8000),
           18: ("G729", 8000), 13: ("CN", 8000)}  # fmt: skip
_AUDIO_PROTOS = ("RTP/AVP", "RTP/AVPF")  # no SRTP yet: RTP/SAVP offers are refused


def _number(text: str) -> int | None:
    """An ASCII decimal (str.isdigit also accepts "²", which int() rejects), else None."""
    return int(text) if text.isascii() and text.isdigit() else None


@dataclass(frozen=True, slots=True)
class Connection:
    """`c=IN IP4 192.0.2.1` (RFC 8866 §5.7)."""

    address: str
    nettype: str = "IN"
    addrtype: str = "IP4"

    @classmethod
    def parse(cls, value: str) -> Connection:
        parts = value.split()
        if len(parts) != 3:
            raise SdpParseError("bad c= line")
        return cls(nettype=parts[0], addrtype=parts[1], address=parts[2].split("/")[0])

    @classmethod
    def for_host(cls, host: str) -> Connection:
        return cls(address=host, addrtype="IP6" if ":" in host else "IP4")

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(slots=True)
class MediaDescription:
    """One `m=` section with its own c=, b= and a= lines (RFC 8866 §5.14)."""

    media: str
    port: int
    proto: str
    formats: list[str]
    connection: Connection | None = None
    title: str | None = None
    bandwidths: list[str] = field(default_factory=list)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)

    def attribute(self, name: str) -> str | None:
        """Value of the first `a=name:value`; "" for a flag, None when absent."""
        for key, value in self.attributes:
            if key == name:
                return value if value is not None else ""
        return None

    def rtpmaps(self) -> dict[int, tuple[str, int]]:
        """Payload type → (encoding name, clock rate), static types filled in (RFC 3551)."""
        out: dict[int, tuple[str, int]] = {}
        for key, value in self.attributes:
            if key == "rtpmap" and value:
                pt_text, _, encoding = value.partition(" ")
                fields = encoding.strip().split("/")
                pt, clock = _number(pt_text), _number(fields[1]) if len(fields) > 1 else None
                if pt is not None and clock is not None:
                    out[pt] = (fields[0].upper(), clock)  # encoding names are case-insensitive
        for fmt in self.formats:
            pt = _number(fmt)
            if pt is not None and pt not in out and pt in _STATIC:
                out[pt] = _STATIC[pt]
        return out

    def fmtp(self, payload_type: int) -> str | None:
        prefix = f"{payload_type} "
        for key, value in self.attributes:
            if key == "fmtp" and value and value.startswith(prefix):
                return value[len(prefix) :].strip()
        return None

    @property
    def direction(self) -> str:
        for key, value in self.attributes:
            if value is None and key in DIRECTIONS:
                return key
        return "sendrecv"


@dataclass(slots=True)
class SessionDescription:
    """A whole SDP body; `parse(encode(x)) == x` for anything this module produces."""

    origin: str  # `username sess-id sess-version nettype addrtype address`, kept verbatim
    session_name: str = "-"
    connection: Connection | None = None
    info: list[tuple[str, str]] = field(default_factory=list)  # i=, u=, e=, p= lines
    bandwidths: list[str] = field(default_factory=list)
    timing: list[tuple[str, str]] = field(default_factory=lambda: [("t", "0 0")])  # t=, r=, z=
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        """Parse an SDP body; raises `SdpParseError`. Accepts bare LF line ends (§5)."""
        text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
        lines = [line for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
        if not lines or lines[0].strip() != "v=0":
            raise SdpParseError("SDP must start with v=0")
        sdp = cls(origin="", timing=[])
        current: MediaDescription | None = None
        for line in lines[1:]:
            kind, eq, value = line.partition("=")
            if not eq or len(kind) != 1:
                raise SdpParseError("bad SDP line")
            value = value.strip()
            if kind == "m":
                current = _parse_media_line(value)
                sdp.media.append(current)
            elif kind == "a":
                name, colon, attr = value.partition(":")
                entry = (name, attr.strip() if colon else None)
                (current.attributes if current else sdp.attributes).append(entry)
            elif kind == "c":
                if current is not None:
                    current.connection = Connection.parse(value)
                else:
                    sdp.connection = Connection.parse(value)
            elif kind == "b":
                (current.bandwidths if current else sdp.bandwidths).append(value)
            elif current is not None:
                if kind == "i":
                    current.title = value
            elif kind == "o":
                if len(value.split()) != 6:
                    raise SdpParseError("bad o= line")
                sdp.origin = value
            elif kind == "s":
                sdp.session_name = value
            elif kind in "iuep":
                sdp.info.append((kind, value))
            elif kind in "trz":
                sdp.timing.append((kind, value))
            # Other line types (k=, unknown letters) are skipped: they change nothing for us.
        if not sdp.origin:
            raise SdpParseError("SDP has no o= line")
        return sdp

    def encode(self) -> bytes:
        """Serialize in RFC 8866 §5 order with CRLF line ends."""
        lines = ["v=0", f"o={self.origin}", f"s={self.session_name}"]
        lines += [f"{k}={v}" for k, v in self.info]
        if self.connection is not None:
            lines.append(f"c={self.connection}")
        lines += [f"b={b}" for b in self.bandwidths]
        lines += [f"{k}={v}" for k, v in self.timing]
        lines += _attribute_lines(self.attributes)
        for m in self.media:
            lines.append(f"m={m.media} {m.port} {m.proto} {' '.join(m.formats)}")
            if m.title is not None:
                lines.append(f"i={m.title}")
            if m.connection is not None:
                lines.append(f"c={m.connection}")
            lines += [f"b={b}" for b in m.bandwidths]
            lines += _attribute_lines(m.attributes)
        return ("\r\n".join(lines) + "\r\n").encode()


def _attribute_lines(attributes: list[tuple[str, str | None]]) -> list[str]:
    return [f"a={k}" if v is None else f"a={k}:{v}" for k, v in attributes]


def _parse_media_line(value: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 4:
        raise SdpParseError("bad m= line")
    port_text = parts[1].split("/")[0]  # `port/count` is only used for layered multicast
    port = _number(port_text)
    if port is None or port > 65535:
        raise SdpParseError("bad m= port")
    return MediaDescription(media=parts[0], port=port, proto=parts[2], formats=parts[3:])


@dataclass(frozen=True, slots=True)
class NegotiatedAudio:
    """The outcome of offer/answer: what to send, where, and whether we may send or hear."""

    codec: Codec
    payload_type: int  # as the peer numbered it (RFC 3264 §6.1 keeps the offerer's numbers)
    dtmf_payload_type: int | None
    remote_host: str
    remote_port: int
    direction: str  # ours: "sendrecv", "sendonly" (peer on hold), "recvonly", "inactive"
    ptime: int = 20

    @property
    def may_send(self) -> bool:
        return self.direction in ("sendrecv", "sendonly")

    @property
    def may_receive(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")


_FLAGS = {"sendrecv": (True, True), "sendonly": (True, False),
          "recvonly": (False, True), "inactive": (False, False)}  # fmt: skip


def _direction(send: bool, recv: bool) -> str:
    return next(name for name, flags in _FLAGS.items() if flags == (send, recv))


def _select(m: MediaDescription, preferences: Sequence[Codec]) -> tuple[Codec, int] | None:
    offered = m.rtpmaps()
    for codec in preferences:
        for fmt in m.formats:
            pt = _number(fmt)
            if pt is not None and offered.get(pt, ("", 0)) == (codec.name, codec.clock_rate):
                return codec, pt
    return None


def _dtmf_type(m: MediaDescription, codec: Codec) -> int | None:
    # RFC 4733 §2.1: telephone-event uses the same clock rate as the audio it accompanies.
    for pt, (name, clock) in m.rtpmaps().items():
        if name == "TELEPHONE-EVENT" and clock == codec.clock_rate and str(pt) in m.formats:
            return pt
    return None


def _remote(sdp: SessionDescription, m: MediaDescription) -> tuple[str, str, int]:
    connection = m.connection or sdp.connection
    if connection is None:
        raise SdpParseError("audio stream has no c= line")
    ptime = _number(m.attribute("ptime") or _session_attribute(sdp, "ptime") or "")
    direction = m.direction if m.attribute(m.direction) is not None else _session_direction(sdp)
    return connection.address, direction, ptime if ptime and ptime <= 200 else 20


def _session_attribute(sdp: SessionDescription, name: str) -> str | None:
    return next((v or "" for k, v in sdp.attributes if k == name), None)


def _session_direction(sdp: SessionDescription) -> str:
    return next((k for k, v in sdp.attributes if v is None and k in DIRECTIONS), "sendrecv")


def _audio_section(
    host: str, port: int, codec: Codec, pt: int, dtmf_pt: int | None, fmtp: str, direction: str
) -> MediaDescription:
    formats = [str(pt)] + ([str(dtmf_pt)] if dtmf_pt is not None else [])
    attributes: list[tuple[str, str | None]] = [("rtpmap", f"{pt} {codec.name}/{codec.clock_rate}")]
    if dtmf_pt is not None:
        attributes += [("rtpmap", f"{dtmf_pt} telephone-event/{codec.clock_rate}"),
                       ("fmtp", f"{dtmf_pt} {fmtp}")]  # fmt: skip
    attributes += [("ptime", "20"), (direction, None)]
    return MediaDescription("audio", port, "RTP/AVP", formats, attributes=attributes)


def _origin(username: str, session_id: int, version: int, host: str) -> str:
    return f"{username} {session_id} {version} IN {Connection.for_host(host).addrtype} {host}"


def answer_offer(
    offer: SessionDescription,
    *,
    local_host: str,
    local_port: int,
    session_id: int,
    session_version: int = 1,
    preferences: Sequence[Codec] = DEFAULT_PREFERENCES,
    direction: str = "sendrecv",
    username: str = "switchboard",
) -> tuple[SessionDescription, NegotiatedAudio]:
    """RFC 3264 §6: answer every m-line, accepting the first usable audio stream.

    `direction` is what we want (`sendonly` to put the caller on hold); the answer is its
    intersection with the offer. Raises `NoCommonCodec` when no audio stream is usable.
    """
    answer = SessionDescription(origin=_origin(username, session_id, session_version, local_host),
                                connection=Connection.for_host(local_host))  # fmt: skip
    chosen: NegotiatedAudio | None = None
    for m in offer.media:
        selected = _select(m, preferences) if m.media == "audio" and m.port else None
        if chosen is not None or selected is None or m.proto not in _AUDIO_PROTOS:
            # §6: a refused stream stays in place, with port 0 and one of the offered formats.
            answer.media.append(MediaDescription(m.media, 0, m.proto, m.formats[:1]))
            continue
        codec, pt = selected
        host, offered_dir, ptime = _remote(offer, m)
        their_send, their_recv = _FLAGS[offered_dir]
        if host in ("0.0.0.0", "::"):
            their_recv = False  # RFC 3264 §8.4: the pre-RFC 3264 way to say "hold"
        want_send, want_recv = _FLAGS.get(direction, (True, True))
        ours = _direction(want_send and their_recv, want_recv and their_send)
        dtmf_pt = _dtmf_type(m, codec)
        fmtp = (m.fmtp(dtmf_pt) if dtmf_pt is not None else None) or "0-16"
        answer.media.append(_audio_section(local_host, local_port, codec, pt, dtmf_pt, fmtp, ours))
        chosen = NegotiatedAudio(codec=codec, payload_type=pt, dtmf_payload_type=dtmf_pt,
                                 remote_host=host, remote_port=m.port, direction=ours,
                                 ptime=ptime)  # fmt: skip
    if chosen is None:
        raise NoCommonCodec("no offered audio stream uses PCMU, PCMA or G.722 over RTP/AVP")
    return answer, chosen


def create_offer(
    *,
    local_host: str,
    local_port: int,
    session_id: int,
    session_version: int = 1,
    preferences: Sequence[Codec] = DEFAULT_PREFERENCES,
    dtmf_payload_type: int | None = 101,
    direction: str = "sendrecv",
    username: str = "switchboard",
) -> SessionDescription:
    """An offer listing our codecs in preference order, plus telephone-event (§5)."""
    formats = [str(c.payload_type) for c in preferences]
    attributes: list[tuple[str, str | None]] = [
        ("rtpmap", f"{c.payload_type} {c.name}/{c.clock_rate}") for c in preferences
    ]
    if dtmf_payload_type is not None:
        formats.append(str(dtmf_payload_type))
        attributes += [("rtpmap", f"{dtmf_payload_type} telephone-event/8000"),
                       ("fmtp", f"{dtmf_payload_type} 0-16")]  # fmt: skip
    attributes += [("ptime", "20"), (direction, None)]
    return SessionDescription(
        origin=_origin(username, session_id, session_version, local_host),
        connection=Connection.for_host(local_host),
        media=[MediaDescription("audio", local_port, "RTP/AVP", formats, attributes=attributes)],
    )


def accept_answer(offer: SessionDescription, answer: SessionDescription) -> NegotiatedAudio:
    """RFC 3264 §7: read the answer to our offer; the first accepted audio stream wins."""
    for ours, m in zip(offer.media, answer.media, strict=False):
        if m.media != "audio" or m.port == 0 or m.proto not in _AUDIO_PROTOS:
            continue
        offered = [c for c in DEFAULT_PREFERENCES if str(c.payload_type) in ours.formats]
        selected = _select(m, offered)
        if selected is None:
            continue
        codec, pt = selected
        host, their_dir, ptime = _remote(answer, m)
        their_send, their_recv = _FLAGS[their_dir]
        if host in ("0.0.0.0", "::"):
            their_recv = False
        my_send, my_recv = _FLAGS[ours.direction]
        return NegotiatedAudio(
            codec=codec,
            payload_type=pt,
            dtmf_payload_type=_dtmf_type(m, codec),
            remote_host=host,
            remote_port=m.port,
            direction=_direction(my_send and their_recv, my_recv and their_send),
            ptime=ptime,
        )
    raise NoCommonCodec("the answer accepted no audio stream we offered")
