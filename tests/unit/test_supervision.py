"""Supervision: OTP strategies, restart types, intensity and escalation, back-off, and what a
restarted child keeps (its mailbox). Children record their lifecycle hooks in one shared list,
so each test can read which children were stopped and started, and in which order."""

import asyncio
import time

import pytest
from switchboard.actors import ActorRef, ActorSystem, RemoteError
from switchboard.protocols.supervision import Children, WhichChildren
from switchboard.supervisor import (
    Backoff,
    ChildSpec,
    Restart,
    RestartIntensity,
    Strategy,
    Supervisor,
    SupervisorGaveUp,
)

from tests.support.actors import Count, Crash, Exit, Get, Hold, Incr, Tally
from tests.support.harness import RecordingParent, actor_system, wait_until

pytestmark = pytest.mark.unit

Events = list[tuple[str, str]]
NO_BACKOFF = Backoff(initial=0.0)


def worker(
    name: str,
    events: Events,
    *,
    restart: Restart = Restart.PERMANENT,
    gate: asyncio.Event | None = None,
    start_delay: float = 0.0,
) -> ChildSpec:
    return ChildSpec(
        id=name,
        actor=Tally,
        restart=restart,
        factory=lambda: Tally(events, gate=gate, start_delay=start_delay),
    )


def slow_to_fast(names: str, events: Events) -> list[ChildSpec]:
    """Children that take less time to start the later they come: if the supervisor started
    them all at once, the last would report first."""
    return [
        worker(name, events, start_delay=0.01 * (len(names) - i)) for i, name in enumerate(names)
    ]


async def start_supervisor(
    system: ActorSystem,
    children: list[ChildSpec],
    *,
    name: str = "sup",
    strategy: Strategy = Strategy.ONE_FOR_ONE,
    intensity: RestartIntensity | None = None,
    backoff: Backoff = NO_BACKOFF,
    parent: RecordingParent | None = None,
) -> ActorRef:
    return await system.spawn(
        Supervisor,
        name,
        parent=parent or RecordingParent(),
        expose=False,
        factory=lambda: Supervisor(
            children,
            strategy=strategy,
            backoff=backoff,
            intensity=intensity or RestartIntensity(10, 5.0),
        ),
    )


async def crash(system: ActorSystem, name: str) -> None:
    with pytest.raises(RemoteError):
        await system.ref("tally", name).ask(Crash())


async def children_of(system: ActorSystem, name: str = "sup") -> list[str]:
    answer = await system.ref("supervisor", name).ask(WhichChildren())
    assert isinstance(answer, Children)
    return [child.id for child in answer.children]


# -- strategies --------------------------------------------------------------------------------


async def test_children_start_in_order_and_stop_in_reverse_order() -> None:
    events: Events = []
    async with actor_system() as system:
        sup = await start_supervisor(system, [worker(n, events) for n in "abc"])
        assert events == [("started", "a"), ("started", "b"), ("started", "c")]
        events.clear()
        await system.stop(sup)
        assert events == [("stopping", "c"), ("stopping", "b"), ("stopping", "a")]
        assert system.local_actors() == []


async def test_one_for_one_restarts_only_the_child_that_crashed() -> None:
    events: Events = []
    async with actor_system() as system:
        await start_supervisor(system, [worker(n, events) for n in "abc"])
        events.clear()
        await crash(system, "b")
        await wait_until(lambda: ("restarted", "b") in events, what="b restarted")
        assert events == [("stopping", "b"), ("restarted", "b")]
        incarnations = {n: system.cell(system.ref("tally", n)).incarnation for n in "abc"}
        assert incarnations == {"a": 1, "b": 2, "c": 1}
        assert await system.ref("tally", "b").ask(Get()) == Count(value=0, node="node-1")


async def test_one_for_all_stops_the_others_in_reverse_and_restarts_all_in_order() -> None:
    events: Events = []
    async with actor_system() as system:
        await start_supervisor(system, slow_to_fast("abcd", events), strategy=Strategy.ONE_FOR_ALL)
        events.clear()
        await crash(system, "b")
        await wait_until(lambda: len(events) == 8, what="all four restarted")
        assert events == [
            ("stopping", "b"),  # the crashed child, at once
            ("stopping", "d"),
            ("stopping", "c"),
            ("stopping", "a"),
            ("restarted", "a"),
            ("restarted", "b"),
            ("restarted", "c"),
            ("restarted", "d"),
        ]
        await asyncio.sleep(0.02)
        assert len(events) == 8  # nothing restarted twice


async def test_rest_for_one_restarts_the_failed_child_and_those_started_after_it() -> None:
    events: Events = []
    async with actor_system() as system:
        await start_supervisor(system, slow_to_fast("abcd", events), strategy=Strategy.REST_FOR_ONE)
        events.clear()
        await crash(system, "b")
        await wait_until(lambda: len(events) == 6, what="b, c, d restarted")
        assert events == [
            ("stopping", "b"),
            ("stopping", "d"),
            ("stopping", "c"),
            ("restarted", "b"),
            ("restarted", "c"),
            ("restarted", "d"),
        ]
        assert system.cell(system.ref("tally", "a")).incarnation == 1
        for name in "abcd":
            assert await system.ref("tally", name).ask(Get()) == Count(value=0, node="node-1")


# -- restart types -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("restart", "message", "restarted"),
    [
        (Restart.PERMANENT, Crash(), True),
        (Restart.PERMANENT, Exit(), True),
        (Restart.TRANSIENT, Crash(), True),
        (Restart.TRANSIENT, Exit(), False),
        (Restart.TEMPORARY, Crash(), False),
        (Restart.TEMPORARY, Exit(), False),
    ],
    ids=lambda v: getattr(v, "value", type(v).__name__),
)
async def test_restart_type_decides_after_a_crash_or_a_normal_exit(
    restart: Restart, message: object, restarted: bool
) -> None:
    events: Events = []
    async with actor_system() as system:
        await start_supervisor(
            system, [worker("keep", events), worker("w", events, restart=restart)]
        )
        ref = system.ref("tally", "w")
        try:
            await ref.ask(message)
        except RemoteError:
            assert isinstance(message, Crash)
        if restarted:
            await wait_until(lambda: ("restarted", "w") in events, what="w restarted")
            assert await ref.ask(Get()) == Count(value=0, node="node-1")
            assert await children_of(system) == ["keep", "w"]
        else:
            await wait_until(lambda: system.cell(ref) is None, what="w gone")
            assert ("restarted", "w") not in events
            assert await children_of(system) == ["keep"]
        assert system.cell(system.ref("tally", "keep")).incarnation == 1


async def test_a_dynamic_child_is_adopted_with_the_dynamic_restart_type() -> None:
    events: Events = []
    async with actor_system() as system:
        sup_ref = await start_supervisor(system, [])
        sup = system.cell(sup_ref).instance
        ref = await system.spawn(Tally, "dyn", factory=lambda: Tally(events), parent=sup)
        await crash(system, "dyn")  # transient by default: a crash restarts it
        await wait_until(lambda: ("restarted", "dyn") in events, what="dyn restarted")
        await ref.ask(Exit())  # a normal exit does not
        await wait_until(lambda: system.cell(ref) is None, what="dyn gone")
        assert await children_of(system) == []


# -- what a restart keeps ------------------------------------------------------------------


async def test_messages_queued_behind_a_crash_reach_the_restarted_child() -> None:
    events: Events = []
    gate = asyncio.Event()
    async with actor_system() as system:
        await start_supervisor(system, [worker("w", events, gate=gate)])
        ref = system.ref("tally", "w")
        await ref.tell(Hold())
        await ref.tell(Incr(n=100))
        crashed = asyncio.ensure_future(ref.ask(Crash()))
        await asyncio.sleep(0)  # the crash is queued before what follows
        await ref.tell(Incr(n=1))
        after = asyncio.ensure_future(ref.ask(Incr(n=2)))
        await wait_until(lambda: len(system.cell(ref).mailbox) == 4, what="messages queued")
        gate.set()
        with pytest.raises(RemoteError):
            await crashed
        # The new instance starts from scratch (100 is gone) but gets the queued messages.
        assert await after == Count(value=3, node="node-1")
        assert ("restarted", "w") in events


# -- intensity, escalation and back-off --------------------------------------------------


async def test_too_many_restarts_escalate_up_the_tree_to_the_top_parent() -> None:
    events: Events = []
    top_parent = RecordingParent()
    async with actor_system() as system:
        mid = ChildSpec(
            id="mid",
            actor=Supervisor,
            expose=False,
            factory=lambda: Supervisor(
                [worker("w", events)], intensity=RestartIntensity(1, 10.0), backoff=NO_BACKOFF
            ),
        )
        top = await start_supervisor(
            system, [mid], name="top", intensity=RestartIntensity(0, 10.0), parent=top_parent
        )
        await crash(system, "w")  # restart 1 of 1 allowed
        await wait_until(lambda: ("restarted", "w") in events, what="w restarted")
        assert not top_parent.exits
        await crash(system, "w")  # one too many for mid, and top allows none
        await asyncio.wait_for(top_parent.exited.wait(), 2)
        ((cell, reason),) = top_parent.exits
        assert cell.ref == top
        assert isinstance(reason, SupervisorGaveUp)
        await wait_until(lambda: system.local_actors() == [], what="whole tree stopped")


async def test_a_supervisor_that_gave_up_is_restarted_by_its_parent_with_fresh_children() -> None:
    events: Events = []
    top_parent = RecordingParent()
    async with actor_system() as system:
        mid = ChildSpec(
            id="mid",
            actor=Supervisor,
            expose=False,
            factory=lambda: Supervisor(
                [worker("w", events)], intensity=RestartIntensity(0, 10.0), backoff=NO_BACKOFF
            ),
        )
        await start_supervisor(system, [mid], name="top", parent=top_parent)
        ref = system.ref("tally", "w")
        await ref.ask(Incr(n=5))
        await crash(system, "w")  # mid allows no restart: it gives up, top restarts it
        await wait_until(lambda: events.count(("started", "w")) == 2, what="fresh w")
        assert ("restarted", "w") not in events
        assert await ref.ask(Get()) == Count(value=0, node="node-1")
        assert system.cell(system.ref("supervisor", "mid")).restarts == 1
        assert not top_parent.exits


async def test_restarts_outside_the_intensity_window_do_not_add_up() -> None:
    events: Events = []
    parent = RecordingParent()
    async with actor_system() as system:
        await start_supervisor(
            system, [worker("w", events)], parent=parent, intensity=RestartIntensity(1, 0.05)
        )
        for round_ in range(1, 4):
            await crash(system, "w")
            await wait_until(
                lambda r=round_: events.count(("restarted", "w")) == r, what=f"restart {round_}"
            )
            await asyncio.sleep(0.06)
        assert not parent.exits


def test_backoff_delay_grows_exponentially_up_to_its_cap() -> None:
    backoff = Backoff(initial=0.1, factor=2.0, maximum=0.5)
    assert [backoff.delay(n) for n in range(1, 7)] == [0.0, 0.1, 0.2, 0.4, 0.5, 0.5]


async def test_restarts_in_a_burst_wait_longer_each_time() -> None:
    events: Events = []
    async with actor_system() as system:
        await start_supervisor(
            system, [worker("w", events)], backoff=Backoff(initial=0.04, factor=2.0, maximum=1.0)
        )
        gaps = []
        for attempt in range(1, 5):
            started = time.monotonic()
            await crash(system, "w")
            await wait_until(
                lambda a=attempt: events.count(("restarted", "w")) == a, what=f"restart {attempt}"
            )
            gaps.append(time.monotonic() - started)
        expected = [0.0, 0.04, 0.08, 0.16]
        assert all(gap >= delay for gap, delay in zip(gaps, expected, strict=True)), gaps
        assert gaps[0] < 0.1, gaps  # the first restart of a burst is immediate
        assert gaps[3] - gaps[1] >= 0.08, gaps  # the wait grew (by 0.12 s)
