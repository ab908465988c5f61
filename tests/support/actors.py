"""Actor kinds used by the tests and benchmarks (loaded into node processes with --kinds)."""

from __future__ import annotations

import os
from typing import Any

import msgspec

from switchboard.actors import Actor, Refusal
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


def node_env() -> dict[str, str]:
    """Environment for node subprocesses: the repo on the path, so `tests.support` imports."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env
