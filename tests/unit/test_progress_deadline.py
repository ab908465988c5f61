"""ProgressDeadline: when an item is owed, and from when the clock runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from switchboard.providers import ProgressDeadline, ProviderStalled

pytestmark = pytest.mark.unit


async def _ticks(*delays: float, closed: list[bool] | None = None) -> AsyncIterator[int]:
    """Yields 0, 1, ... after each delay in turn."""
    try:
        for number, delay in enumerate(delays):
            await asyncio.sleep(delay)
            yield number
    finally:
        if closed is not None:
            closed.append(True)


async def test_items_in_time_pass_through() -> None:
    stream = ProgressDeadline(_ticks(0.01, 0.01, 0.01), stall_ms=200)
    assert [item async for item in stream] == [0, 1, 2]


async def test_first_item_gets_its_own_budget() -> None:
    stream = ProgressDeadline(_ticks(0.15, 0.01), stall_ms=50, first_item_ms=400)
    assert [item async for item in stream] == [0, 1]
    with pytest.raises(ProviderStalled):
        async for _ in ProgressDeadline(_ticks(0.15), stall_ms=400, first_item_ms=50):
            pass


async def test_a_stall_closes_the_source_and_says_how_long_it_waited() -> None:
    closed: list[bool] = []
    stream = ProgressDeadline(_ticks(0.0, 10.0, closed=closed), stall_ms=80, provider="p")
    assert await anext(stream) == 0
    with pytest.raises(ProviderStalled) as stalled:
        await anext(stream)
    assert closed == [True]
    assert 70 <= stalled.value.waited_ms < 300
    assert "provider p sent no item" in str(stalled.value)


async def test_a_slow_consumer_does_not_count_against_the_provider() -> None:
    stream = ProgressDeadline(_ticks(0.0, 0.05), stall_ms=100)
    assert await anext(stream) == 0
    await asyncio.sleep(0.3)  # the consumer is busy; the clock starts when it asks again
    assert await anext(stream) == 1


async def test_nothing_owed_means_no_deadline_until_owe() -> None:
    stream = ProgressDeadline(_ticks(0.3, 10.0), stall_ms=50, owed=False)
    assert await anext(stream) == 0  # waited 300 ms with nothing owed: fine

    async def owe_soon() -> None:
        await asyncio.sleep(0.1)
        stream.owe()

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        group.create_task(owe_soon())
        with pytest.raises(ProviderStalled):
            await anext(stream)
    assert 0.14 < time.perf_counter() - started < 0.4  # 100 ms unowed + 50 ms owed


async def test_settle_lifts_the_deadline() -> None:
    stream = ProgressDeadline(_ticks(0.2), stall_ms=50)

    async def settle_soon() -> None:
        await asyncio.sleep(0.02)
        stream.settle()

    async with asyncio.TaskGroup() as group:
        group.create_task(settle_soon())
        assert await anext(stream) == 0
    assert not stream.owed


async def test_the_sources_own_timeout_is_not_a_stall() -> None:
    async def failing() -> AsyncIterator[int]:
        raise TimeoutError("the vendor's socket timed out")
        yield 0

    with pytest.raises(TimeoutError, match="vendor"):
        await anext(ProgressDeadline(failing(), stall_ms=1000))
