"""The two-lane mailbox: system lane first, bounded data lane, overflow policies, flushing."""

import asyncio

import pytest
from switchboard.actors import ActorDeadError, MailboxFull, Overflow
from switchboard.actors.mailbox import Envelope, Mailbox

from tests.support.actors import Count, Get, Hold, Incr, SmallTally, StreamTally, Tally
from tests.support.harness import actor_system, dead_letters_total

pytestmark = pytest.mark.unit


def data(name: str, *, must_deliver: bool = False) -> Envelope:
    return Envelope(name, must_deliver=must_deliver)


def system(name: str) -> Envelope:
    return Envelope(name, system=True)


def drain(mailbox: Mailbox) -> list[str]:
    out = []
    while (env := mailbox.get_nowait()) is not None:
        out.append(env.message)
    return out


async def test_system_lane_is_served_before_queued_data() -> None:
    mailbox = Mailbox(capacity=10)
    mailbox.put_nowait(data("d1"))
    mailbox.put_nowait(data("d2"))
    mailbox.put_nowait(system("stop"))
    assert (await mailbox.get()).message == "stop"
    assert drain(mailbox) == ["d1", "d2"]


async def test_get_waits_for_a_message() -> None:
    mailbox = Mailbox(capacity=1)
    getter = asyncio.ensure_future(mailbox.get())
    await asyncio.sleep(0.01)
    assert not getter.done()
    mailbox.put_nowait(data("late"))
    assert (await asyncio.wait_for(getter, 1)).message == "late"


def test_reject_refuses_when_the_data_lane_is_full() -> None:
    mailbox = Mailbox(capacity=2, overflow=Overflow.REJECT)
    mailbox.put_nowait(data("a"))
    mailbox.put_nowait(data("b"))
    with pytest.raises(MailboxFull):
        mailbox.put_nowait(data("c"))
    assert drain(mailbox) == ["a", "b"]
    stats = mailbox.statistics()
    assert (stats.rejected, stats.dropped, stats.received) == (1, 0, 2)


def test_system_lane_is_not_bounded_by_the_data_capacity() -> None:
    mailbox = Mailbox(capacity=1)
    mailbox.put_nowait(data("a"))
    for i in range(5):
        mailbox.put_nowait(system(f"s{i}"))
    assert drain(mailbox) == ["s0", "s1", "s2", "s3", "s4", "a"]


def test_drop_oldest_evicts_the_oldest_droppable_message_and_reports_it() -> None:
    dropped: list[tuple[str, str]] = []
    mailbox = Mailbox(
        capacity=3,
        overflow=Overflow.DROP_OLDEST,
        on_drop=lambda env, why: dropped.append((env.message, why)),
    )
    mailbox.put_nowait(data("persist-turn", must_deliver=True))
    mailbox.put_nowait(data("audio-1"))
    mailbox.put_nowait(data("audio-2"))
    mailbox.put_nowait(data("audio-3"))
    assert dropped == [("audio-1", "dropped_oldest")]
    assert drain(mailbox) == ["persist-turn", "audio-2", "audio-3"]
    assert mailbox.statistics().dropped == 1


def test_drop_oldest_never_drops_must_deliver_messages() -> None:
    mailbox = Mailbox(capacity=2, overflow=Overflow.DROP_OLDEST)
    mailbox.put_nowait(data("usage-1", must_deliver=True))
    mailbox.put_nowait(data("usage-2", must_deliver=True))
    with pytest.raises(MailboxFull):
        mailbox.put_nowait(data("audio"))
    assert drain(mailbox) == ["usage-1", "usage-2"]


def test_flush_data_keeps_must_deliver_and_the_system_lane() -> None:
    mailbox = Mailbox(capacity=10)
    mailbox.put_nowait(data("audio-1"))
    mailbox.put_nowait(data("persist-turn", must_deliver=True))
    mailbox.put_nowait(data("audio-2"))
    mailbox.put_nowait(system("lease-lost"))
    flushed = mailbox.flush_data()
    assert [env.message for env in flushed] == ["audio-1", "audio-2"]
    assert drain(mailbox) == ["lease-lost", "persist-turn"]


def test_closed_mailbox_refuses_and_hands_back_what_was_queued() -> None:
    mailbox = Mailbox(capacity=10)
    mailbox.put_nowait(data("d"))
    mailbox.put_nowait(system("s"))
    assert [env.message for env in mailbox.close()] == ["s", "d"]
    with pytest.raises(MailboxFull):
        mailbox.put_nowait(data("late"))
    assert len(mailbox) == 0


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Mailbox(capacity=0)


# -- the policies as an actor sees them ---------------------------------------------------


async def test_reject_policy_raises_on_a_full_local_actor_and_keeps_what_it_had() -> None:
    gate = asyncio.Event()
    async with actor_system() as sys:
        ref = await sys.spawn(SmallTally, "t", factory=lambda: SmallTally(gate=gate))
        busy = asyncio.ensure_future(ref.ask(Hold()))
        await asyncio.sleep(0.01)  # the actor is parked on Hold; its one slot is free
        ref.tell_nowait(Incr(n=1))
        with pytest.raises(MailboxFull):
            ref.tell_nowait(Incr(n=10))
        with pytest.raises(MailboxFull):
            await ref.ask(Incr(n=100))
        gate.set()
        await busy
        assert await ref.ask(Get()) == Count(value=1, node="node-1")


async def test_drop_oldest_fails_the_dropped_ask_and_dead_letters_it() -> None:
    gate = asyncio.Event()
    before = dead_letters_total("tally_stream", "dropped_oldest")
    async with actor_system() as sys:
        ref = await sys.spawn(StreamTally, "s", factory=lambda: StreamTally(gate=gate))
        busy = asyncio.ensure_future(ref.ask(Hold()))
        await asyncio.sleep(0.01)
        oldest = asyncio.ensure_future(ref.ask(Incr(n=1)))
        await asyncio.sleep(0)
        ref.tell_nowait(Incr(n=10), must_deliver=True)
        ref.tell_nowait(Incr(n=100))  # full: evicts the oldest droppable one, the ask
        with pytest.raises(MailboxFull):
            await asyncio.wait_for(oldest, 1)
        gate.set()
        await busy
        assert await ref.ask(Get()) == Count(value=110, node="node-1")
    assert dead_letters_total("tally_stream", "dropped_oldest") == before + 1


async def test_flush_mailbox_from_the_actor_fails_flushed_asks_but_keeps_must_deliver() -> None:
    gate = asyncio.Event()
    async with actor_system() as sys:
        ref = await sys.spawn(Tally, "t", factory=lambda: Tally(gate=gate))
        busy = asyncio.ensure_future(ref.ask(Hold()))
        await asyncio.sleep(0.01)
        flushed_ask = asyncio.ensure_future(ref.ask(Incr(n=1)))
        await asyncio.sleep(0)
        ref.tell_nowait(Incr(n=10), must_deliver=True)
        ref.tell_nowait(Incr(n=100))
        cell = sys.cell(ref)
        assert cell.instance.context.flush_mailbox() == 2
        with pytest.raises(MailboxFull):
            await asyncio.wait_for(flushed_ask, 1)
        gate.set()
        await busy
        assert await ref.ask(Get()) == Count(value=10, node="node-1")


async def test_messages_queued_when_the_actor_stops_fail_at_once() -> None:
    gate = asyncio.Event()
    async with actor_system() as sys:
        ref = await sys.spawn(Tally, "t", factory=lambda: Tally(gate=gate))
        busy = asyncio.ensure_future(ref.ask(Hold(), timeout=5))
        await asyncio.sleep(0.01)
        queued = asyncio.ensure_future(ref.ask(Get(), timeout=5))
        stopping = asyncio.ensure_future(sys.stop(ref))
        await asyncio.sleep(0.01)
        gate.set()  # the current message finishes, then the stop overtakes the queued ask
        await stopping
        assert await busy == Count(value=0, node="node-1")
        with pytest.raises(ActorDeadError):
            await asyncio.wait_for(queued, 1)
