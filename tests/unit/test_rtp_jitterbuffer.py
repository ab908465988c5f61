"""Jitter buffer: order, loss concealment, duplicates, late packets, skips and resets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from switchboard.gateways.sip.jitterbuffer import JitterBuffer, JitterFrame

pytestmark = pytest.mark.unit


def push(jb: JitterBuffer, *sequences: int) -> list[JitterFrame]:
    out: list[JitterFrame] = []
    for seq in sequences:
        jb.put(seq, seq * 160, bytes([seq % 256]))
        while (frame := jb.pop()) is not None:
            out.append(frame)
    return out


def seqs(frames: list[JitterFrame]) -> list[tuple[int, bool]]:
    return [(f.sequence, f.lost) for f in frames]


def test_in_order_frames_come_out_at_once() -> None:
    jb = JitterBuffer(target_depth=2)
    assert seqs(push(jb, 10, 11, 12)) == [(10, False), (11, False), (12, False)]
    assert jb.statistics().buffered == 0


def test_reordered_frame_is_waited_for() -> None:
    jb = JitterBuffer(target_depth=2)
    assert seqs(push(jb, 1, 3)) == [(1, False)]
    assert seqs(push(jb, 2)) == [(2, False), (3, False)]
    assert jb.statistics().reordered == 1 and jb.statistics().lost == 0


def test_missing_frame_is_concealed_after_target_depth() -> None:
    jb = JitterBuffer(target_depth=2)
    assert seqs(push(jb, 1, 3, 4)) == [(1, False)]  # waiting for 2, two frames behind it
    assert seqs(push(jb, 5)) == [(2, True), (3, False), (4, False), (5, False)]
    assert push(jb, 2) == []  # arrives after being concealed
    stats = jb.statistics()
    assert (stats.lost, stats.late, stats.duplicates, stats.delivered) == (1, 1, 0, 4)


def test_depth_zero_never_waits() -> None:
    jb = JitterBuffer(target_depth=0)
    assert seqs(push(jb, 1, 3)) == [(1, False), (2, True), (3, False)]


def test_duplicates_are_dropped() -> None:
    jb = JitterBuffer(target_depth=2)
    assert seqs(push(jb, 1, 1, 3, 3, 2, 2)) == [(1, False), (2, False), (3, False)]
    assert jb.statistics().duplicates == 3


def test_skipped_sequence_numbers_are_not_losses() -> None:
    jb = JitterBuffer(target_depth=1)
    push(jb, 1)
    jb.skip(2)  # a DTMF packet took sequence number 2
    assert seqs(push(jb, 3)) == [(3, False)]
    assert jb.statistics().lost == 0


def test_drain_releases_everything_with_gaps_concealed() -> None:
    jb = JitterBuffer(target_depth=5)
    push(jb, 1, 3, 6)
    assert seqs(jb.drain()) == [(2, True), (3, False), (4, True), (5, True), (6, False)]
    assert jb.statistics().buffered == 0


def test_big_jump_resets_instead_of_concealing_a_second_of_audio() -> None:
    jb = JitterBuffer(target_depth=2, max_gap=50)
    push(jb, 1, 3)
    out = push(jb, 1000, 1001)
    assert seqs(out) == [(2, True), (3, False), (1000, False), (1001, False)]
    assert jb.statistics().resets == 1


def test_reset_forgets_the_stream() -> None:
    jb = JitterBuffer()
    push(jb, 100, 102)
    jb.reset()
    assert seqs(push(jb, 5)) == [(5, False)]


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError):
        JitterBuffer(target_depth=-1)


@given(
    st.integers(0, 1000),
    st.permutations(list(range(40))),
    st.sets(st.integers(0, 39), max_size=10),
    st.lists(st.integers(0, 39), max_size=10),
    st.integers(0, 4),
)
def test_output_is_strictly_ordered_and_complete(
    start: int, order: list[int], dropped: set[int], repeats: list[int], depth: int
) -> None:
    """Whatever the arrival order, loss and duplication: output is in order, each sequence
    number at most once, real frames carry their own payload, and after a drain every
    sequence number from the first released one to the last is accounted for."""
    jb = JitterBuffer(target_depth=depth)
    arrivals = [start + i for i in order if i not in dropped] + [start + i for i in repeats]
    out = push(jb, *arrivals) + jb.drain()
    numbers = [f.sequence for f in out]
    assert numbers == sorted(set(numbers))
    if numbers:
        assert numbers == list(range(numbers[0], numbers[-1] + 1))
    for frame in out:
        if not frame.lost:
            assert frame.payload == bytes([frame.sequence % 256])
    stats = jb.statistics()
    assert stats.delivered + stats.lost == len(out)


def test_in_order_packets_skip_the_buffer_and_keep_the_counts() -> None:
    jb = JitterBuffer()
    jb.put(10, 0, b"a")  # the first packet goes through the buffer
    first = jb.pop()
    assert first is not None and first.sequence == 10
    assert jb.take_next(11) and jb.take_next(12)
    assert not jb.take_next(14)  # a gap: the buffered path decides
    jb.put(14, 640, b"c")
    assert jb.pop() is None
    assert not jb.take_next(13)  # something is held: 13 must be ordered before it
    jb.put(13, 480, b"b")
    assert [f.sequence for f in (jb.pop(), jb.pop())] == [13, 14]  # type: ignore[union-attr]
    assert jb.take_next(15)
    stats = jb.statistics()
    assert (stats.received, stats.delivered, stats.lost, stats.buffered) == (6, 6, 0, 0)
