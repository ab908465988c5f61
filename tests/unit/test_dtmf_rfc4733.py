"""RFC 4733 telephone-events: payload format, exactly-once digit reception, sender sequence."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from switchboard.gateways.sip.dtmf import EVENTS, DtmfReceiver, DtmfSender, TelephoneEvent
from switchboard.gateways.sip.errors import RtpParseError
from switchboard.gateways.sip.rtp import RtpPacket

pytestmark = pytest.mark.unit


@given(st.integers(0, 255), st.booleans(), st.integers(0, 63), st.integers(0, 0xFFFF))
def test_payload_round_trips(event: int, end: bool, volume: int, duration: int) -> None:
    ev = TelephoneEvent(event, end, volume, duration)
    assert TelephoneEvent.parse(ev.serialize()) == ev


def test_payload_layout_and_reserved_bit() -> None:
    # Event 5, E=1, R=1 (ignored), volume 10, duration 800 (RFC 4733 §2.3 figure 1).
    assert TelephoneEvent.parse(bytes([5, 0x80 | 0x40 | 10, 0x03, 0x20])) == TelephoneEvent(
        5, True, 10, 800
    )
    with pytest.raises(RtpParseError):
        TelephoneEvent.parse(b"\x05\x80")


def sent(digit: str, *, timestamp: int = 1000, sequence: int = 7, ms: int = 100) -> list[RtpPacket]:
    return DtmfSender(payload_type=101, ssrc=99).packets(
        digit, timestamp=timestamp, sequence=sequence, duration_ms=ms
    )


def test_sender_builds_the_rfc_sequence() -> None:
    packets = sent("#", ms=100)
    events = [TelephoneEvent.parse(p.payload) for p in packets]
    assert len(packets) == 5 + 2  # five 20 ms updates, the end packet sent three times in all
    assert [p.marker for p in packets] == [True] + [False] * 6  # §2.5.1.1
    assert {p.timestamp for p in packets} == {1000}  # the event's start, §2.5.1.2
    assert [p.sequence_number for p in packets] == list(range(7, 14))
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3  # §2.5.1.4
    assert {e.event for e in events} == {11}
    with pytest.raises(ValueError):
        sent("x")


def test_receiver_reports_each_press_once() -> None:
    rx = DtmfReceiver()
    digits = []
    for i, packet in enumerate(sent("5") + sent("5", timestamp=3000, sequence=20)):
        digits += rx.feed(packet.timestamp, packet.payload, now=i * 0.02, marker=packet.marker)
    assert [d.digit for d in digits] == ["5", "5"]  # two presses of the same key
    assert digits[0].duration_ms == 100 and digits[0].volume == 10


def test_lost_end_packets_end_the_event_on_the_next_one_or_on_timeout() -> None:
    rx = DtmfReceiver(timeout=0.3)
    first = [p for p in sent("1") if not TelephoneEvent.parse(p.payload).end]
    out = []
    for p in first + sent("2", timestamp=5000):
        out += rx.feed(p.timestamp, p.payload, now=0.0, marker=p.marker)
    assert [d.digit for d in out] == ["1", "2"]
    for p in [p for p in sent("3", timestamp=9000) if not TelephoneEvent.parse(p.payload).end]:
        assert rx.feed(p.timestamp, p.payload, now=1.0, marker=p.marker) == []
    assert rx.expire(now=1.1) == []
    assert [d.digit for d in rx.expire(now=1.5)] == ["3"]
    late_end = sent("3", timestamp=9000)[-1]
    assert rx.feed(late_end.timestamp, late_end.payload, now=1.6) == []  # already reported


def test_long_event_segments_are_one_press() -> None:
    """§2.5.1.3: past 0xFFFF ticks the event continues in a segment with a new timestamp."""
    rx = DtmfReceiver()
    out = []
    first = TelephoneEvent(9, end=False, duration=0xFFFF).serialize()
    out += rx.feed(0, first, now=0.0, marker=True)
    second = TelephoneEvent(9, end=True, duration=800).serialize()
    for _ in range(3):
        out += rx.feed(0xFFFF, second, now=8.2)
    assert [d.digit for d in out] == ["9"]
    assert out[0].duration_ms == (0xFFFF + 800) // 8


def test_unknown_events_are_ignored() -> None:
    assert DtmfReceiver().feed(0, TelephoneEvent(200, end=True).serialize(), now=0.0) == []


@given(st.text(EVENTS, min_size=1, max_size=8), st.randoms(use_true_random=False),
       st.integers(0, 2**32 - 1))  # fmt: skip
def test_any_reordering_and_duplication_yields_each_digit_once(
    keys: str, rnd: random.Random, start: int
) -> None:
    """Digits survive duplication and local reordering within each press (jitter), in order."""
    stream: list[RtpPacket] = []
    timestamp, sequence = start, 0
    for key in keys:
        packets = sent(key, timestamp=timestamp, sequence=sequence, ms=rnd.choice([40, 100, 200]))
        dup = packets + [rnd.choice(packets) for _ in range(rnd.randint(0, 3))]
        rnd.shuffle(dup[1:])  # the first packet still leads; the rest arrive in any order
        stream += dup[:1] + sorted(dup[1:], key=lambda _: rnd.random())
        timestamp = (timestamp + 8000) & 0xFFFFFFFF
        sequence += len(packets)
    rx = DtmfReceiver()
    digits = []
    for i, p in enumerate(stream):
        digits += rx.feed(p.timestamp, p.payload, now=i * 0.01, marker=p.marker)
    digits += rx.expire(now=1e9)
    assert "".join(d.digit for d in digits) == keys
