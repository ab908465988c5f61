"""ActorSystem: tell and ask, local and across systems on one bus, typed replies and errors,
dead letters, full remote mailboxes, and asks that fail at once when their actor dies."""

import asyncio
import time
from collections.abc import AsyncIterator

import msgspec
import pytest
from switchboard.actors import (
    ActorDeadError,
    ActorNotFound,
    ActorRef,
    AskTimeout,
    BadMessage,
    MailboxFull,
    RemoteError,
)
from switchboard.actors.system import ERROR_HEADER, ActorSystem
from switchboard.actors.transport import Inbound
from switchboard.actors.transport_local import LocalBus, LocalTransport
from switchboard.protocols import DeadLetter, ErrorReply

from tests.support.actors import (
    Count,
    Crash,
    Echo,
    Exit,
    Get,
    Hold,
    Incr,
    Refuse,
    SmallTally,
    Tally,
)
from tests.support.harness import actor_system, dead_letters_total, run_actor, wait_until

pytestmark = pytest.mark.unit


def count(value: int, node: str = "host") -> Count:
    return Count(value=value, node=node)


def received(system: ActorSystem, ref: ActorRef) -> int:
    """How many messages the actor's mailbox took so far (parked or queued)."""
    return system.cell(ref).mailbox.statistics().received


@pytest.fixture
async def two_systems() -> AsyncIterator[tuple[ActorSystem, ActorSystem]]:
    """A host system and a client system on one bus, like two nodes on one NATS server."""
    bus = LocalBus()
    async with (
        actor_system(bus, node_id="host") as host,
        actor_system(bus, node_id="client") as client,
    ):
        yield host, client


# -- ask and tell -------------------------------------------------------------------------------


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_ask_returns_each_reply_in_order(remote: bool) -> None:
    await run_actor(
        Tally,
        send=[Incr(n=2), Incr(n=3), Get()],
        expect=[count(2), count(5), count(5)],
        remote=remote,
        reply_type=Count,
    )


async def test_remote_ask_decodes_the_reply_as_the_type_asked_for(two_systems) -> None:
    host, client = two_systems
    await host.spawn(Tally, "t")
    ref = client.ref("tally", "t")
    typed = await ref.ask(Incr(n=4), reply_type=Count)
    assert type(typed) is Count and typed == count(4)
    # Without a reply type the caller gets the plain decoded form (tag included).
    assert await ref.ask(Get()) == {"type": "test.count", "value": 4, "node": "host"}
    # A reply of another type is a typed error naming the fix, not a raw msgspec error.
    with pytest.raises(BadMessage, match="reply_type"):
        await ref.ask(Get(), reply_type=Echo)


async def test_tells_from_another_system_arrive_in_order(two_systems) -> None:
    host, client = two_systems
    local = await host.spawn(Tally, "t")
    ref = client.ref("tally", "t")
    for n in (1, 2, 3):
        await ref.tell(Incr(n=n))
    ref.tell_nowait(Incr(n=4))
    await wait_until(lambda: host.cell(local).instance.value == 10, what="four tells")
    assert await ref.ask(Get(), reply_type=Count) == count(10)


async def test_lifecycle_hooks_run_around_the_messages() -> None:
    events: list[tuple[str, str]] = []
    async with actor_system() as sys:
        ref = await sys.spawn(Tally, "t", factory=lambda: Tally(events))
        assert events == [("started", "t")]
        await ref.tell(Incr())
        await ref.ask(Get())
        await sys.stop(ref)
    assert events == [("started", "t"), ("handled", "t"), ("handled", "t"), ("stopping", "t")]


async def test_a_failed_start_reaches_the_spawner_and_frees_the_name() -> None:
    class Broken(Tally):
        kind = "broken"

        async def on_started(self) -> None:
            raise OSError("no device")

    async with actor_system() as sys:
        with pytest.raises(OSError, match="no device"):
            await sys.spawn(Broken, "b")
        await wait_until(lambda: sys.cell(sys.ref("broken", "b")) is None, what="cell gone")
        assert sys.local_actors() == []
        ref = await sys.spawn(Broken, "b", factory=Tally)  # the name is free again
        assert await ref.ask(Get()) == count(0, node="node-1")


async def test_spawning_a_running_actor_twice_is_refused() -> None:
    async with actor_system() as sys:
        await sys.spawn(Tally, "t")
        with pytest.raises(ValueError, match="already running"):
            await sys.spawn(Tally, "t")


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_ask_past_its_deadline_raises_ask_timeout(remote: bool) -> None:
    gate = asyncio.Event()
    bus = LocalBus()
    async with (
        actor_system(bus, node_id="host") as host,
        actor_system(bus, node_id="client") as client,
    ):
        ref = await host.spawn(Tally, "t", factory=lambda: Tally(gate=gate))
        asker = client.ref("tally", "t") if remote else ref
        await ref.tell(Hold())
        with pytest.raises(AskTimeout):
            await asker.ask(Get(), timeout=0.05)
        gate.set()
        assert await asker.ask(Get(), reply_type=Count) == count(0)


# -- typed errors: refusals and crashes --------------------------------------------------------


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_refusal_is_a_typed_error_and_the_actor_carries_on(remote: bool) -> None:
    outcomes = await run_actor(
        Tally,
        send=[Incr(n=1), Refuse(), Get()],
        expect=[count(1), RemoteError("refused", ""), count(1)],
        remote=remote,
        reply_type=Count,
    )
    error = outcomes[1]
    assert (error.code, error.retryable, error.retry_after) == ("refused", False, 1.5)
    assert "refuses on request" in str(error)


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_crash_fails_the_ask_with_actor_crashed_without_its_text(remote: bool) -> None:
    (error,) = await run_actor(
        Tally, send=[Crash()], expect=[RemoteError("actor_crashed", "")], remote=remote
    )
    assert error.retryable
    assert "RuntimeError" in str(error)
    assert "crash requested" not in str(error)  # exception texts may carry personal data


async def test_an_unsupervised_actor_that_crashed_is_gone(two_systems) -> None:
    host, client = two_systems
    ref = await host.spawn(Tally, "t")
    before = dead_letters_total("tally", "actor_stopped")
    with pytest.raises(RemoteError):
        await ref.ask(Crash())
    assert host.cell(ref) is None
    # Its subject is still being unsubscribed: a message arriving now is told the actor
    # stopped (retryable elsewhere), not that its mailbox is full.
    with pytest.raises(ActorDeadError):
        await client.ref("tally", "t").ask(Get(), timeout=1)
    assert dead_letters_total("tally", "actor_stopped") == before + 1
    with pytest.raises(ActorNotFound):
        await client.ref("tally", "t").ask(Get(), timeout=1)


# -- bad messages and dead letters -------------------------------------------------------------


async def test_unknown_message_over_the_wire_is_dead_lettered_and_the_actor_lives(
    two_systems,
) -> None:
    host, client = two_systems
    ref = await host.spawn(Tally, "t")
    letters: asyncio.Queue[DeadLetter] = asyncio.Queue()

    async def on_letter(msg: Inbound) -> None:
        letters.put_nowait(msgspec.msgpack.decode(msg.data, type=DeadLetter))

    await client.transport.subscribe("sb.deadletter.>", on_letter)
    before = dead_letters_total("tally", "bad_message")

    with pytest.raises(BadMessage):
        await client.ref("tally", "t").ask(Echo(payload=b"hi"))

    letter = await asyncio.wait_for(letters.get(), 1)
    assert (letter.kind, letter.actor_id, letter.reason, letter.node_id) == (
        "tally",
        "t",
        "bad_message",
        "host",
    )
    assert msgspec.msgpack.decode(letter.payload, type=Echo) == Echo(payload=b"hi")
    assert dead_letters_total("tally", "bad_message") == before + 1
    assert host.cell(ref) is not None
    assert await client.ref("tally", "t").ask(Incr(), reply_type=Count) == count(1)


async def test_undecodable_bytes_get_an_error_reply_bad_message(two_systems) -> None:
    host, client = two_systems
    ref = await host.spawn(Tally, "t")
    before = dead_letters_total("tally", "bad_message")
    reply = await client.transport.request(ref.subject, b"\xc1 not msgpack", timeout=1)
    assert reply.headers is not None and ERROR_HEADER in reply.headers
    error = msgspec.msgpack.decode(reply.data, type=ErrorReply)
    assert error.code == "bad_message"
    assert dead_letters_total("tally", "bad_message") == before + 1
    assert host.dead_letters[-1].reason == "bad_message"
    assert await ref.ask(Get()) == count(0)


async def test_undecodable_tell_is_dead_lettered_without_a_reply() -> None:
    async with actor_system(node_id="host") as host:
        ref = await host.spawn(Tally, "t")
        before = dead_letters_total("tally", "bad_message")
        await host.transport.publish(ref.subject, b"\xc1")
        await wait_until(
            lambda: dead_letters_total("tally", "bad_message") == before + 1,
            what="dead letter counted",
        )
        assert await ref.ask(Get()) == count(0)


async def test_local_message_of_the_wrong_type_is_refused_and_dead_lettered() -> None:
    async with actor_system(node_id="host") as host:
        ref = await host.spawn(Tally, "t")
        before = dead_letters_total("tally", "bad_message")
        with pytest.raises(BadMessage):
            await ref.ask(Echo())
        with pytest.raises(BadMessage):
            await ref.tell(Echo())
        assert dead_letters_total("tally", "bad_message") == before + 2
        assert await ref.ask(Get()) == count(0)


async def test_tell_to_an_actor_running_nowhere_is_dead_lettered(two_systems) -> None:
    _, client = two_systems
    before = dead_letters_total("ghost", "no_responders")
    await client.ref("ghost", "g1").tell(Incr())
    await wait_until(
        lambda: dead_letters_total("ghost", "no_responders") == before + 1,
        what="no_responders dead letter",
    )
    letter = client.dead_letters[-1]
    assert (letter.kind, letter.actor_id, letter.reason) == ("ghost", "g1", "no_responders")
    assert msgspec.msgpack.decode(letter.payload, type=Incr) == Incr()


async def test_ask_to_an_actor_running_nowhere_fails_at_once(two_systems) -> None:
    _, client = two_systems
    started = time.monotonic()
    with pytest.raises(ActorNotFound):
        await client.ref("ghost", "g1").ask(Get(), timeout=5)
    assert time.monotonic() - started < 1


# -- a full remote mailbox -------------------------------------------------------------------


async def test_full_remote_mailbox_answers_asks_with_mailbox_full_and_dead_letters_tells(
    two_systems,
) -> None:
    host, client = two_systems
    gate = asyncio.Event()
    local = await host.spawn(SmallTally, "s", factory=lambda: SmallTally(gate=gate))
    ref = client.ref("tally_small", "s")
    busy = asyncio.ensure_future(ref.ask(Hold(), reply_type=Count))
    await wait_until(
        lambda: received(host, local) == 1 and len(host.cell(local).mailbox) == 0,
        what="actor parked",
    )
    await ref.tell(Incr(n=1))  # takes the only slot
    await wait_until(lambda: len(host.cell(local).mailbox) == 1, what="slot taken")
    at_host = dead_letters_total("tally_small", "mailbox_full")
    at_client = dead_letters_total("tally_small", "remote_mailbox_full")

    with pytest.raises(MailboxFull):
        await ref.ask(Incr(n=10), timeout=1)
    await ref.tell(Incr(n=100))
    await wait_until(
        lambda: dead_letters_total("tally_small", "remote_mailbox_full") == at_client + 1,
        what="the sender counts the refused tell",
    )
    assert dead_letters_total("tally_small", "mailbox_full") == at_host + 2
    assert client.dead_letters[-1].reason == "remote_mailbox_full"

    gate.set()
    assert await busy == count(0)
    assert await ref.ask(Get(), reply_type=Count) == count(1)


# -- pending asks fail at once when their actor dies ---------------------------------------


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_queued_asks_fail_at_once_when_the_actor_crashes(remote: bool) -> None:
    bus = LocalBus()
    async with (
        actor_system(bus, node_id="host") as host,
        actor_system(bus, node_id="client") as client,
    ):
        gate = asyncio.Event()
        ref = await host.spawn(Tally, "t", factory=lambda: Tally(gate=gate))
        asker = client.ref("tally", "t") if remote else ref
        await ref.tell(Hold())
        crash = asyncio.ensure_future(asker.ask(Crash(), timeout=5))
        queued = [asyncio.ensure_future(asker.ask(Get(), timeout=5)) for _ in range(3)]
        await wait_until(lambda: len(host.cell(ref).mailbox) == 4, what="asks queued")
        started = time.monotonic()
        gate.set()
        with pytest.raises(RemoteError):
            await crash
        for pending in queued:
            with pytest.raises(ActorDeadError):
                await pending
        assert time.monotonic() - started < 1  # not the 5 s deadline


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_asks_fail_at_once_when_a_stuck_actor_is_stopped(remote: bool) -> None:
    bus = LocalBus()
    async with (
        actor_system(bus, node_id="host") as host,
        actor_system(bus, node_id="client") as client,
    ):
        ref = await host.spawn(Tally, "t")
        asker = client.ref("tally", "t") if remote else ref
        stuck = asyncio.ensure_future(asker.ask(Hold(seconds=30), timeout=5))
        await wait_until(
            lambda: received(host, ref) == 1 and len(host.cell(ref).mailbox) == 0,
            what="actor parked",
        )
        queued = asyncio.ensure_future(asker.ask(Get(), timeout=5))
        await wait_until(lambda: len(host.cell(ref).mailbox) == 1, what="ask queued")
        started = time.monotonic()
        await host.stop(ref, timeout=0.05)  # past the shutdown timeout it is cancelled
        for pending in (stuck, queued):
            with pytest.raises(ActorDeadError):
                await pending
        assert time.monotonic() - started < 1  # not the 5 s deadline


async def test_stopping_after_an_exit_fails_what_was_queued(two_systems) -> None:
    host, client = two_systems
    gate = asyncio.Event()
    ref = await host.spawn(Tally, "t", factory=lambda: Tally(gate=gate))
    await ref.tell(Hold())
    exit_ask = asyncio.ensure_future(client.ref("tally", "t").ask(Exit(), timeout=5))
    queued = asyncio.ensure_future(client.ref("tally", "t").ask(Get(), timeout=5))
    await wait_until(lambda: len(host.cell(ref).mailbox) == 2, what="asks queued")
    gate.set()
    assert await exit_ask is None
    with pytest.raises(ActorDeadError):
        await asyncio.wait_for(queued, 1)


async def test_shutting_down_fails_the_asks_a_system_is_waiting_on(two_systems) -> None:
    host, _ = two_systems
    bus = host.transport.bus
    await host.spawn(Tally, "t")
    client = ActorSystem(LocalTransport(bus), node_id="late")
    await client.start()
    pending = asyncio.ensure_future(client.ref("tally", "t").ask(Hold(seconds=30), timeout=5))
    await wait_until(lambda: received(host, host.ref("tally", "t")) == 1, what="ask arrived")
    await client.shutdown(timeout=0.5)
    with pytest.raises(ActorDeadError):
        await asyncio.wait_for(pending, 1)
