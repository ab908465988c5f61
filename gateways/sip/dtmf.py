"""RFC 4733 telephone-events: DTMF digits carried in RTP, in both directions.

One key press is many packets with the same RTP timestamp (the event start, §2.5.1.2): a first
packet with the marker bit, updates with a growing duration, and a final packet with the E bit
sent three times (§2.5.1.4). `DtmfReceiver` turns any such sequence (reordered, retransmitted,
with lost end packets) into exactly one `DtmfDigit`; `DtmfSender` builds the sequence for a
digit. Digits are personal data: never log them (CONVENTIONS.md).
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from switchboard.gateways.sip.errors import RtpParseError
from switchboard.gateways.sip.rtp import RtpPacket

__all__ = ["EVENTS", "DtmfDigit", "DtmfReceiver", "DtmfSender", "TelephoneEvent"]

# RFC 4733 §3.2 table 7: events 0-15 are the DTMF keys, 16 is flash (hook flash, "!").
EVENTS = "0123456789*#ABCD!"
_PAYLOAD = struct.Struct("!BBH")


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """The 4-byte payload of §2.3: event, End bit, volume (-dBm0), duration (clock ticks)."""

    event: int
    end: bool = False
    volume: int = 10
    duration: int = 0

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        """Read the first event of a payload; raises `RtpParseError` when it is too short."""
        if len(payload) < 4:
            raise RtpParseError("telephone-event payload shorter than 4 bytes")
        event, flags, duration = _PAYLOAD.unpack_from(payload)
        # §2.3: the R bit is reserved; receivers ignore it.
        return cls(event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration)

    def serialize(self) -> bytes:
        if not (0 <= self.event <= 255 and 0 <= self.volume <= 63 and 0 <= self.duration <= 0xFFFF):
            raise ValueError("telephone-event field out of range")
        return _PAYLOAD.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """A received key press: the key ("0"-"9", "*", "#", "A"-"D", "!" for flash)."""

    digit: str
    duration_ms: int
    volume: int  # -dBm0


@dataclass(slots=True)
class _Event:
    timestamp: int
    event: int
    duration: int
    volume: int
    last_seen: float
    earlier: int = 0  # duration of the earlier segments of a long event (§2.5.1.3)


class DtmfReceiver:
    """Reports each telephone-event exactly once, when it ends.

    An event ends with its first E packet; or when another event starts; or when no packet
    for it came for `timeout` seconds (`expire`), since all three end packets can be lost.
    Finished events are remembered by (timestamp, event) so their retransmissions are ignored.
    """

    def __init__(self, clock_rate: int = 8000, timeout: float = 0.5) -> None:
        self.clock_rate = clock_rate
        self.timeout = timeout
        self._current: _Event | None = None
        self._finished: deque[tuple[int, int]] = deque(maxlen=16)

    def feed(
        self, timestamp: int, payload: bytes, now: float, marker: bool = False
    ) -> list[DtmfDigit]:
        """Handle one telephone-event packet; returns the digits that ended (usually 0 or 1).

        Raises `RtpParseError` for a short payload.
        """
        ev = TelephoneEvent.parse(payload)
        if ev.event >= len(EVENTS) or (timestamp, ev.event) in self._finished:
            return []
        out: list[DtmfDigit] = []
        current = self._current
        if current is not None and (current.timestamp, current.event) != (timestamp, ev.event):
            if not marker and self._continues(current, timestamp, ev.event):
                # §2.5.1.3: an event longer than 0xFFFF ticks goes on in a new segment whose
                # timestamp is the old one plus the old duration; it is the same key press.
                self._finished.append((current.timestamp, current.event))
                current.earlier += current.duration
                current.duration = ev.duration
                current.timestamp = timestamp
            else:
                out.append(self._finish(current))
                current = None
        if current is None:
            current = _Event(timestamp, ev.event, ev.duration, ev.volume, now)
            self._current = current
        elif current.timestamp == timestamp:
            current.duration = max(current.duration, ev.duration)
        current.last_seen = now
        current.volume = ev.volume
        if ev.end:
            out.append(self._finish(current))
        return out

    @property
    def pending(self) -> bool:
        """An event is under way (`expire` may have to finish it)."""
        return self._current is not None

    def expire(self, now: float) -> list[DtmfDigit]:
        """Finish an event whose end packets never came."""
        current = self._current
        if current is not None and now - current.last_seen > self.timeout:
            return [self._finish(current)]
        return []

    def _continues(self, current: _Event, timestamp: int, event: int) -> bool:
        # Only a segment that reached the 16-bit duration limit is continued by another.
        gap = (timestamp - current.timestamp) & 0xFFFFFFFF
        slack = self.clock_rate // 10
        return (
            event == current.event
            and current.duration >= 0xFFFF - slack
            and abs(gap - current.duration) <= slack
        )

    def _finish(self, current: _Event) -> DtmfDigit:
        self._finished.append((current.timestamp, current.event))
        self._current = None
        return DtmfDigit(
            digit=EVENTS[current.event],
            duration_ms=(current.earlier + current.duration) * 1000 // self.clock_rate,
            volume=current.volume,
        )


class DtmfSender:
    """Builds the RTP packets of one key press (RFC 4733 §2.5.1), one per packet interval."""

    def __init__(
        self,
        *,
        payload_type: int,
        ssrc: int,
        clock_rate: int = 8000,
        ptime_ms: int = 20,
        volume: int = 10,
    ) -> None:
        self.payload_type = payload_type
        self.ssrc = ssrc
        self.step = clock_rate * ptime_ms // 1000
        self.ptime_ms = ptime_ms
        self.volume = volume

    def packets(
        self, digit: str, *, timestamp: int, sequence: int, duration_ms: int = 100
    ) -> list[RtpPacket]:
        """The packets for `digit`, starting at RTP `timestamp` and `sequence`.

        Every packet carries the event's start timestamp (§2.5.1.2) and its own sequence
        number (RFC 3550 §5.1); the first has the marker bit (§2.5.1.1); durations grow by one
        packet interval; the final packet, with the E bit, goes three times (§2.5.1.4).
        """
        event = EVENTS.find(digit.upper()) if len(digit) == 1 else -1
        if event < 0:
            raise ValueError("not a DTMF key: expected one of 0-9 * # A-D !")
        intervals = max(1, duration_ms // self.ptime_ms)
        durations = [i * self.step for i in range(1, intervals + 1)] + [intervals * self.step] * 2
        out = []
        for i, duration in enumerate(durations):
            payload = TelephoneEvent(event, end=i >= intervals - 1, volume=self.volume,
                                     duration=min(duration, 0xFFFF))  # fmt: skip
            out.append(
                RtpPacket(
                    payload_type=self.payload_type,
                    sequence_number=(sequence + i) & 0xFFFF,
                    timestamp=timestamp & 0xFFFFFFFF,
                    ssrc=self.ssrc,
                    payload=payload.serialize(),
                    marker=i == 0,
                )
            )
        return out
