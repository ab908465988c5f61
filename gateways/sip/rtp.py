"""RTP packets (RFC 3550 §5) and wraparound-safe sequence and timestamp arithmetic.

`RtpPacket.parse`/`serialize` cover the whole fixed header, CSRC list, header extension and
padding, because carriers' SBCs do send extensions and padding even for G.711. 16-bit sequence
numbers wrap every 21 minutes at 50 packets/s and 32-bit timestamps every 6 days at 8 kHz;
`Unwrapper` turns them into ever-growing integers (the "extended" numbers of RFC 3550 §A.1)
so the jitter buffer and the DTMF receiver can compare with plain `<`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from switchboard.gateways.sip.errors import RtpParseError

__all__ = ["RtpExtension", "RtpPacket", "Unwrapper", "is_rtcp", "serial_diff"]

RTP_VERSION = 2
_HEADER = struct.Struct("!BBHII")
_EXTENSION = struct.Struct("!HH")


@dataclass(frozen=True, slots=True)
class RtpExtension:
    """RFC 3550 §5.3.1 header extension: a profile id and whole 32-bit words of data."""

    profile: int
    data: bytes


@dataclass(slots=True)
class RtpPacket:
    """One RTP data packet; `padding` is the number of padding octets (0 for none)."""

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = field(default=())
    extension: RtpExtension | None = None
    padding: int = 0

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse a datagram; raises `RtpParseError` for anything RFC 3550 §5.1 forbids."""
        if len(data) < _HEADER.size:
            raise RtpParseError("RTP packet shorter than its 12-byte header")
        first, second, seq, timestamp, ssrc = _HEADER.unpack_from(data)
        if first >> 6 != RTP_VERSION:
            raise RtpParseError("RTP version is not 2")
        offset = _HEADER.size
        csrc_count = first & 0x0F
        csrc: tuple[int, ...] = ()
        if csrc_count:
            end = offset + 4 * csrc_count
            if len(data) < end:
                raise RtpParseError("RTP CSRC list runs past the packet")
            csrc = struct.unpack_from(f"!{csrc_count}I", data, offset)
            offset = end
        extension = None
        if first & 0x10:
            if len(data) < offset + 4:
                raise RtpParseError("RTP extension header runs past the packet")
            profile, words = _EXTENSION.unpack_from(data, offset)
            end = offset + 4 + 4 * words
            if len(data) < end:
                raise RtpParseError("RTP extension runs past the packet")
            extension = RtpExtension(profile, bytes(data[offset + 4 : end]))
            offset = end
        padding = 0
        end = len(data)
        if first & 0x20:
            # §5.1: the last octet counts the padding octets, itself included.
            padding = data[-1]
            if padding == 0 or offset + padding > len(data):
                raise RtpParseError("RTP padding count is invalid")
            end -= padding
        return cls(
            payload_type=second & 0x7F,
            sequence_number=seq,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=bytes(data[offset:end]),
            marker=bool(second & 0x80),
            csrc=csrc,
            extension=extension,
            padding=padding,
        )

    def serialize(self) -> bytes:
        """Encode the packet; padding octets are zeros ending with their count."""
        if len(self.csrc) > 15:
            raise ValueError("an RTP packet carries at most 15 CSRCs")
        if self.extension is not None and len(self.extension.data) % 4:
            raise ValueError("RTP extension data must be whole 32-bit words")
        if not 0 <= self.padding <= 255:
            raise ValueError("RTP padding is 0 to 255 octets")
        first = (RTP_VERSION << 6) | len(self.csrc)
        if self.padding:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        second = (0x80 if self.marker else 0) | self.payload_type
        parts = [_HEADER.pack(first, second, self.sequence_number, self.timestamp, self.ssrc)]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            ext = self.extension
            parts += [_EXTENSION.pack(ext.profile, len(ext.data) // 4), ext.data]
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4: RTCP packet types 200-204 show up as payload types 72-76 in byte two."""
    return len(data) >= 2 and 72 <= (data[1] & 0x7F) <= 76


def serial_diff(a: int, b: int, bits: int = 16) -> int:
    """a - b in serial number arithmetic (RFC 1982): the shortest way round the circle."""
    half = 1 << (bits - 1)
    return ((a - b + half) % (1 << bits)) - half


class Unwrapper:
    """Extends wrapping 16-bit sequence numbers or 32-bit timestamps (RFC 3550 §A.1).

    Each value is placed nearest to the highest one seen so far, so late reordered packets
    from before a wrap get smaller extended values, not ones 65,536 ahead.
    """

    __slots__ = ("_bits", "_half", "_highest", "_mask")

    def __init__(self, bits: int = 16) -> None:
        self._bits = bits
        self._mask = (1 << bits) - 1
        self._half = 1 << (bits - 1)
        self._highest: int | None = None

    def unwrap(self, value: int) -> int:
        """The extended value of `value` (50 times a second per stream: no calls inside)."""
        highest = self._highest
        if highest is None:
            self._highest = value
            return value
        ahead = (value - highest) & self._mask  # serial_diff, mod 2**bits
        if ahead < self._half:
            self._highest = highest + ahead
            return highest + ahead
        return highest + ahead - self._mask - 1

    def reset(self) -> None:
        """Forget history, e.g. when the SSRC changes."""
        self._highest = None
