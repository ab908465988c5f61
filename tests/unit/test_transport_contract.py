"""The `Transport` contract: what the actor runtime relies on from NATS, checked against the
in-process transport here and against a real nats-server by
tests/integration/test_transport_contract_nats.py, which reuses `TransportContract`.

A subclass provides the `pair` fixture: two transports on one bus or server, like two nodes.
Subscribers `flush()` before the other side publishes (a NATS subscription is live once the
server has it).
"""

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from switchboard.actors.transport import (
    Inbound,
    NoResponders,
    Transport,
    TransportError,
    TransportTimeout,
)
from switchboard.actors.transport_local import LocalBus, LocalTransport, subject_matches

pytestmark = pytest.mark.unit

Pair = tuple[Transport, Transport]


async def listen(transport: Transport, subject: str, *, queue: str = "") -> asyncio.Queue:
    """Subscribe `subject` into a queue, live once this returns."""
    received: asyncio.Queue[Inbound] = asyncio.Queue()

    async def handler(msg: Inbound) -> None:
        received.put_nowait(msg)

    await transport.subscribe(subject, handler, queue=queue)
    await transport.flush()
    return received


async def next_message(received: asyncio.Queue) -> Inbound:
    # Generous: a loaded CI machine can be slow; a missing message still fails the test.
    return await asyncio.wait_for(received.get(), 10)


async def until_marker(received: asyncio.Queue, marker: str) -> list[str]:
    """Subjects received up to and including `marker` (deliveries per subscription are ordered)."""
    subjects = []
    while not subjects or subjects[-1] != marker:
        subjects.append((await next_message(received)).subject)
    return subjects


class TransportContract:
    """The contract tests; subclasses named Test* run them with their `pair` fixture."""

    @pytest.fixture
    async def pair(self) -> AsyncIterator[Pair]:
        raise NotImplementedError("a transport's contract test class provides `pair`")
        yield  # pragma: no cover

    async def test_publish_reaches_a_subscriber_with_data_and_headers(self, pair: Pair) -> None:
        sender, receiver = pair
        received = await listen(receiver, "contract.hello")
        await sender.publish("contract.hello", b"\x00payload", headers={"X-Trace": "t1"})
        msg = await next_message(received)
        assert (msg.subject, msg.data, msg.reply, msg.status) == (
            "contract.hello",
            b"\x00payload",
            "",
            0,
        )
        assert msg.headers is not None and msg.headers["X-Trace"] == "t1"

    async def test_wildcards_match_one_token_or_the_rest(self, pair: Pair) -> None:
        sender, receiver = pair
        one = await listen(receiver, "w.*.end")
        rest = await listen(receiver, "w.>")
        for subject in ("w", "w.a.end", "w.a.b.end", "w.a", "x.a.end", "w.z.end"):
            await sender.publish(subject, b"")
        assert await until_marker(one, "w.z.end") == ["w.a.end", "w.z.end"]
        assert await until_marker(rest, "w.z.end") == ["w.a.end", "w.a.b.end", "w.a", "w.z.end"]

    async def test_a_queue_group_gets_each_message_once(self, pair: Pair) -> None:
        sender, receiver = pair
        members = [await listen(t, "jobs", queue="workers") for t in (sender, receiver)]
        everyone = await listen(receiver, "jobs")
        for i in range(40):
            await sender.publish("jobs", str(i).encode())
        await sender.flush()
        assert [(await next_message(everyone)).data for _ in range(40)] == [
            str(i).encode() for i in range(40)
        ]
        got: list[list[bytes]] = [[], []]
        deadline = time.monotonic() + 2
        while sum(map(len, got)) < 40 and time.monotonic() < deadline:
            for queue, into in zip(members, got, strict=True):
                while not queue.empty():
                    into.append(queue.get_nowait().data)
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # a duplicate would arrive by now
        for queue, into in zip(members, got, strict=True):
            while not queue.empty():
                into.append(queue.get_nowait().data)
        assert sorted(got[0] + got[1]) == sorted(str(i).encode() for i in range(40))
        assert got[0] and got[1]  # spread over the members

    async def test_request_gets_the_reply_with_its_headers(self, pair: Pair) -> None:
        client, server = pair

        async def reverse(msg: Inbound) -> None:
            assert msg.headers is not None and msg.headers["X-Req"] == "1"
            await server.publish(msg.reply, msg.data[::-1], headers={"X-Rep": "2"})

        await server.subscribe("svc.reverse", reverse)
        await server.flush()
        reply = await client.request("svc.reverse", b"abc", timeout=2, headers={"X-Req": "1"})
        assert reply.data == b"cba"
        assert reply.headers is not None and reply.headers["X-Rep"] == "2"

    async def test_request_to_nobody_fails_at_once_with_no_responders(self, pair: Pair) -> None:
        client, _ = pair
        started = time.monotonic()
        with pytest.raises(NoResponders):
            await client.request("nobody.home", b"", timeout=5)
        assert time.monotonic() - started < 1

    async def test_publish_to_nobody_with_a_reply_subject_answers_status_503(
        self, pair: Pair
    ) -> None:
        client, _ = pair
        inbox = client.new_inbox()
        replies = await listen(client, inbox)
        await client.publish("nobody.home", b"tell", reply=inbox)
        msg = await next_message(replies)
        assert (msg.subject, msg.status) == (inbox, 503)

    async def test_request_without_an_answer_times_out(self, pair: Pair) -> None:
        client, server = pair
        await listen(server, "svc.silent")
        started = time.monotonic()
        with pytest.raises(TransportTimeout) as failure:
            await client.request("svc.silent", b"", timeout=0.1)
        assert isinstance(failure.value, TimeoutError)
        assert 0.09 <= time.monotonic() - started < 1

    async def test_unsubscribed_subject_has_no_responders(self, pair: Pair) -> None:
        client, server = pair

        async def answer(msg: Inbound) -> None:
            await server.publish(msg.reply, b"here")

        sub = await server.subscribe("svc.once", answer)
        await server.flush()
        assert (await client.request("svc.once", b"", timeout=2)).data == b"here"
        await sub.unsubscribe()
        await server.flush()
        with pytest.raises(NoResponders):
            await client.request("svc.once", b"", timeout=2)

    async def test_a_failing_handler_keeps_its_subscription(self, pair: Pair) -> None:
        sender, receiver = pair
        seen: asyncio.Queue[bytes] = asyncio.Queue()

        async def flaky(msg: Inbound) -> None:
            seen.put_nowait(msg.data)
            if msg.data == b"1":
                raise RuntimeError("handler bug")

        await receiver.subscribe("flaky", flaky)
        await receiver.flush()
        await sender.publish("flaky", b"1")
        await sender.publish("flaky", b"2")
        assert [await asyncio.wait_for(seen.get(), 10) for _ in range(2)] == [b"1", b"2"]

    async def test_inboxes_are_unique(self, pair: Pair) -> None:
        first, second = pair
        inboxes = {first.new_inbox(), first.new_inbox(), second.new_inbox()}
        assert len(inboxes) == 3

    async def test_a_closed_transport_refuses_to_publish(self, pair: Pair) -> None:
        client, _ = pair
        await client.close()
        with pytest.raises(TransportError):
            await client.publish("after.close", b"")


class TestLocalTransport(TransportContract):
    @pytest.fixture
    async def pair(self) -> AsyncIterator[Pair]:
        bus = LocalBus()
        first, second = LocalTransport(bus), LocalTransport(bus)
        yield first, second
        await first.close()
        await second.close()


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("a.b", "a.b", True),
        ("a.b", "a.b.c", False),
        ("a.*", "a.b", True),
        ("a.*", "a", False),
        ("a.*", "a.b.c", False),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        ("*.b.>", "x.b.y", True),
        (">", "a", True),
    ],
)
def test_local_subject_matching_follows_nats(pattern: str, subject: str, matches: bool) -> None:
    assert subject_matches(pattern, subject) is matches
