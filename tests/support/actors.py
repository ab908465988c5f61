"""Actor kinds used by the tests and benchmarks (loaded into node processes with --kinds)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import msgspec
from switchboard.actors import Actor, Overflow, Refusal, StopActor
from switchboard.actors.virtual import VirtualActor


class Incr(msgspec.Struct, frozen=True, kw_only=True, tag="test.incr"):
    n: int = 1


class Get(msgspec.Struct, frozen=True, kw_only=True, tag="test.get"):
    pass


class Crash(msgspec.Struct, frozen=True, kw_only=True, tag="test.crash"):
    pass


class Refuse(msgspec.Struct, frozen=True, kw_only=True, tag="test.refuse"):
    pass


class Count(msgspec.Struct, frozen=True, kw_only=True, tag="test.count"):
    value: int
    node: str = ""


class Echo(msgspec.Struct, frozen=True, kw_only=True, tag="test.echo"):
    payload: bytes = b""


class CounterState(msgspec.Struct, kw_only=True):
    value: int = 0


class Counter(VirtualActor):
    """A virtual counter that persists after every increment (the node-kill tests use it)."""

    kind = "counter"
    accepts = Incr | Get | Crash | Refuse
    State = CounterState

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Incr):
            self.state.value += message.n
            await self.persist()
            return Count(value=self.state.value, node=self.context.system.node_id)
        if isinstance(message, Get):
            return Count(value=self.state.value, node=self.context.system.node_id)
        if isinstance(message, Refuse):
            raise Refusal("refused", "this counter refuses on request")
        raise RuntimeError("crash requested")


class EchoActor(Actor):
    """Replies with what it got: the benchmark's actor (no work, only the actor layer)."""

    kind = "echo"
    accepts = Echo

    async def receive(self, message: Echo) -> Echo:
        return message


class Forward(msgspec.Struct, frozen=True, kw_only=True, tag="test.forward"):
    counter_id: str
    n: int = 1


class Relayed(msgspec.Struct, frozen=True, kw_only=True, tag="test.relayed"):
    via: str
    count: Count


class RelayState(msgspec.Struct, kw_only=True):
    forwarded: int = 0


class Relay(VirtualActor):
    """Asks a Counter wherever it lives: the actor-to-actor path between node processes."""

    kind = "relay"
    accepts = Forward
    State = RelayState

    async def receive(self, message: Forward) -> Relayed:
        counter = self.context.system.ref("counter", message.counter_id)
        count = await counter.ask(Incr(n=message.n), reply_type=Count)
        self.state.forwarded += 1
        return Relayed(via=self.context.system.node_id, count=count)


class Bomb(Actor):
    """A root-supervisor child that crashes on every `Crash` (and echoes `Echo`): enough crashes
    in a row exhaust the root's restart intensity, which must end the node process."""

    kind = "bomb"
    accepts = Crash | Echo

    async def receive(self, message: Crash | Echo) -> Echo:
        if isinstance(message, Echo):
            return message
        raise RuntimeError("crash requested")


def node_env() -> dict[str, str]:
    """Environment for node subprocesses: the repo on the path, so `tests.support` imports."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


# -- kinds for the unit tests of the runtime (tests/unit/test_actor_system.py and friends) ----


class Exit(msgspec.Struct, frozen=True, kw_only=True, tag="test.exit"):
    """Ask the actor to end normally (it raises `StopActor`)."""


class Hold(msgspec.Struct, frozen=True, kw_only=True, tag="test.hold"):
    """Park the actor: until its gate opens (a `Tally` given one), else for `seconds`."""

    seconds: float = 10.0


class Tally(Actor):
    """A plain (non-virtual) counter that records its lifecycle in a shared `events` list.

    Events are `(hook, actor_id)` pairs: ("started", "a"), ("restarted", "a"), ("stopping",
    "a"), and ("handled", "a") after each message; supervision tests read start/stop order
    from them.
    """

    kind = "tally"
    accepts = Incr | Get | Crash | Refuse | Exit | Hold

    def __init__(
        self,
        events: list[tuple[str, str]] | None = None,
        gate: asyncio.Event | None = None,
        start_delay: float = 0.0,
    ) -> None:
        self.events = events if events is not None else []
        self.gate = gate
        self.start_delay = start_delay  # a slow start shows whether siblings wait for it
        self.value = 0

    def _record(self, hook: str) -> None:
        self.events.append((hook, self.context.ref.id))

    async def on_started(self) -> None:
        await asyncio.sleep(self.start_delay)
        self._record("started")

    async def on_restarted(self, reason: BaseException | None) -> None:
        await asyncio.sleep(self.start_delay)
        self._record("restarted")

    async def on_stopping(self) -> None:
        self._record("stopping")

    async def receive(self, message: Any) -> Any:
        match message:
            case Incr(n=n):
                self.value += n
            case Crash():
                raise RuntimeError("crash requested")
            case Refuse():
                raise Refusal("refused", "this tally refuses on request", retry_after=1.5)
            case Exit():
                raise StopActor
            case Hold(seconds=seconds):
                if self.gate is not None:
                    await self.gate.wait()
                else:
                    await asyncio.sleep(seconds)
        self._record("handled")
        return Count(value=self.value, node=self.context.system.node_id)


class SmallTally(Tally):
    """A tally whose mailbox holds one message and refuses more (Overflow.REJECT)."""

    kind = "tally_small"
    mailbox_capacity = 1


class StreamTally(Tally):
    """A tally for real-time streams: two queued messages, the oldest dropped on overflow."""

    kind = "tally_stream"
    mailbox_capacity = 2
    overflow = Overflow.DROP_OLDEST


class SlowCounter(Counter):
    """A virtual counter that can be parked with `Hold` (it sleeps `seconds`)."""

    kind = "slow_counter"
    accepts = Incr | Get | Crash | Refuse | Hold

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Hold):
            await asyncio.sleep(message.seconds)
            return Count(value=self.state.value, node=self.context.system.node_id)
        return await super().receive(message)


class CarelessCounter(Counter):
    """A virtual counter whose `Crash` first changes its state without persisting it."""

    kind = "careless_counter"

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Crash):
            self.state.value += 1000
        return await super().receive(message)
