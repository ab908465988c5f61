"""RTP packets (RFC 3550 §5.1, §5.3.1) and wraparound of sequence numbers and timestamps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from switchboard.gateways.sip.errors import RtpParseError
from switchboard.gateways.sip.rtp import RtpExtension, RtpPacket, Unwrapper, is_rtcp, serial_diff

pytestmark = pytest.mark.unit


@st.composite
def packets(draw: st.DrawFn) -> RtpPacket:
    words = draw(st.integers(0, 4))
    return RtpPacket(
        payload_type=draw(st.integers(0, 127)),
        sequence_number=draw(st.integers(0, 0xFFFF)),
        timestamp=draw(st.integers(0, 0xFFFFFFFF)),
        ssrc=draw(st.integers(0, 0xFFFFFFFF)),
        payload=draw(st.binary(max_size=320)),
        marker=draw(st.booleans()),
        csrc=tuple(draw(st.lists(st.integers(0, 0xFFFFFFFF), max_size=15))),
        extension=draw(st.one_of(st.none(), st.builds(
            RtpExtension, st.integers(0, 0xFFFF), st.binary(min_size=4 * words, max_size=4 * words)
        ))),
        padding=draw(st.integers(0, 255)),
    )  # fmt: skip


@given(packets())
def test_packet_round_trips(packet: RtpPacket) -> None:
    assert RtpPacket.parse(packet.serialize()) == packet


@given(st.binary(max_size=100))
def test_parser_raises_only_rtp_parse_error(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpParseError:
        return
    assert RtpPacket.parse(packet.serialize()) == packet


def test_known_g711_packet() -> None:
    # V=2, M=1, PT=0, seq=0x1234, ts=0x00000A00, SSRC=0xDEADBEEF, 160 bytes of µ-law silence.
    data = bytes.fromhex("80801234 00000a00 deadbeef".replace(" ", "")) + b"\xff" * 160
    packet = RtpPacket.parse(data)
    assert (packet.payload_type, packet.marker, packet.sequence_number) == (0, True, 0x1234)
    assert (packet.timestamp, packet.ssrc, len(packet.payload)) == (0xA00, 0xDEADBEEF, 160)
    assert packet.serialize() == data


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\x00\x00",  # shorter than the fixed header
        bytes.fromhex("400012340000000000000001"),  # version 1
        bytes.fromhex("830012340000000000000001") + b"\x00" * 8,  # 3 CSRCs announced, 2 present
        bytes.fromhex("900012340000000000000001") + b"\xbe\xde\x00\x02" + b"\x00" * 4,  # short ext
        bytes.fromhex("a00012340000000000000001") + b"\x00\x00\x00",  # padding count 0
        bytes.fromhex("a00012340000000000000001") + b"\x00\x09",  # padding longer than packet
    ],
)
def test_malformed_packets_raise(data: bytes) -> None:
    with pytest.raises(RtpParseError):
        RtpPacket.parse(data)


def test_serialize_rejects_impossible_fields() -> None:
    with pytest.raises(ValueError):
        RtpPacket(0, 0, 0, 0, csrc=tuple(range(16))).serialize()
    with pytest.raises(ValueError):
        RtpPacket(0, 0, 0, 0, extension=RtpExtension(1, b"abc")).serialize()


def test_rtcp_is_recognised_for_rtcp_mux() -> None:
    assert is_rtcp(bytes([0x80, 200]) + bytes(6))  # sender report
    assert not is_rtcp(bytes([0x80, 0x00]) + bytes(10))


def test_serial_diff() -> None:
    assert serial_diff(1, 65535) == 2
    assert serial_diff(65535, 1) == -2
    assert serial_diff(5, 5) == 0
    assert serial_diff(0, 0xFFFFFFFF, bits=32) == 1


def test_unwrapper_crosses_wrap_and_places_late_packets_before_it() -> None:
    unwrap = Unwrapper(16).unwrap
    values = [unwrap(s) for s in (65533, 65534, 65535, 0, 65534, 1, 2)]
    assert values == [65533, 65534, 65535, 65536, 65534, 65537, 65538]


@given(st.integers(0, 0xFFFF), st.lists(st.integers(-100, 300), min_size=1, max_size=200))
def test_unwrapped_sequence_matches_true_position(start: int, steps: list[int]) -> None:
    """Jumps below half the space (reordering, loss) are always placed correctly."""
    unwrapper = Unwrapper(16)
    true = start
    assert unwrapper.unwrap(start) == start
    highest = start
    for step in steps:
        true = max(true + step, highest - 1000)  # late packets come from near the front
        highest = max(highest, true)
        assert unwrapper.unwrap(true & 0xFFFF) == true


def test_timestamp_unwrapper_is_32_bit() -> None:
    unwrap = Unwrapper(32).unwrap
    assert [unwrap(t) for t in (0xFFFFFF60, 0x00000000, 0x000000A0)] == [
        0xFFFFFF60,
        0x100000000,
        0x1000000A0,
    ]


def test_unwrapper_matches_serial_number_arithmetic() -> None:
    import random

    from switchboard.gateways.sip.rtp import Unwrapper, serial_diff

    rng = random.Random(5)
    for bits in (16, 32):
        mask = (1 << bits) - 1
        unwrapper, highest, value = Unwrapper(bits), None, rng.randrange(1 << bits)
        for _ in range(5000):
            value = (value + rng.choice((1, 1, 1, 2, -1, -3, 160, 30000))) & mask
            got = unwrapper.unwrap(value)
            if highest is None:
                want = value
            else:
                want = highest + serial_diff(value, highest & mask, bits)
            assert got == want and got & mask == value
            highest = want if highest is None else max(highest, want)
