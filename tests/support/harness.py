"""The one harness for actor tests: in-process systems on a `LocalBus`, and `run_actor`.

    async with actor_system() as system:              # an ActorSystem on its own LocalBus
        ref = await system.spawn(Tally, "t1")

    await run_actor(Tally, send=[Incr(n=2), Get()], expect=[Count(value=2), Count(value=2)])
    await run_actor(Tally, send=[Refuse()], expect=[RemoteError("refused", "")], remote=True)

Several systems on one `LocalBus` behave like nodes on one NATS server: a ref resolved through
another system takes the remote path (encode, subject, reply subject, decode). A system's
background tasks must not fail silently: `actor_system` fails the test when one did, unless
the test breaks things on purpose (`allow_task_errors=True`).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from prometheus_client import REGISTRY
from switchboard.actors import Actor, ActorCell, ActorSystem, Decision, Directive, Parent
from switchboard.actors.membership import Membership
from switchboard.actors.transport_local import LocalBus, LocalTransport
from switchboard.actors.virtual import VirtualActor, VirtualHost
from switchboard.storage.kv_memory import MemoryKeyValue


@asynccontextmanager
async def actor_system(
    bus: LocalBus | None = None,
    *,
    node_id: str = "node-1",
    region: str = "local",
    lease_check_interval: float = 0.05,
    allow_task_errors: bool = False,
) -> AsyncIterator[ActorSystem]:
    """A started ActorSystem on `bus` (a fresh one if None), shut down on exit."""
    errors: list[tuple[str, BaseException]] = []
    transport = LocalTransport(bus if bus is not None else LocalBus())
    system = ActorSystem(
        transport,
        node_id=node_id,
        region=region,
        lease_check_interval=lease_check_interval,
        on_error=lambda name, exc: errors.append((name, exc)),
    )
    await system.start()
    try:
        yield system
    finally:
        await system.shutdown(timeout=0.5)
        await transport.close()
    if errors and not allow_task_errors:
        raise AssertionError(f"background tasks of {node_id} failed: {errors!r}")


async def host_virtual(
    system: ActorSystem,
    *kinds: type[VirtualActor],
    leases: MemoryKeyValue,
    states: MemoryKeyValue,
    lease_ttl: float = 30.0,
    membership: Membership | None = None,
    supervisor: Parent | None = None,
) -> VirtualHost:
    """Make `system` host virtual actors of `kinds` (none: a client that only places them),
    with leases and state in memory. Without `membership` it places every actor on itself."""
    host = VirtualHost(
        system,
        leases=leases,
        states=states,
        lease_ttl=lease_ttl,
        membership=membership,
        supervisor=supervisor,
    )
    for kind in kinds:
        host.register(kind)
    await host.start()
    return host


def _check(outcome: Any, expected: Any) -> None:
    if isinstance(expected, type) and issubclass(expected, BaseException):
        assert isinstance(outcome, expected), f"expected {expected.__name__}, got {outcome!r}"
    elif isinstance(expected, BaseException):
        assert isinstance(outcome, type(expected)), f"expected {expected!r}, got {outcome!r}"
        assert getattr(outcome, "code", None) == getattr(expected, "code", None), (
            f"expected code {getattr(expected, 'code', None)!r}, got {outcome!r}"
        )
    else:
        assert outcome == expected


async def run_actor(
    actor: type[Actor],
    *,
    send: Sequence[Any],
    expect: Sequence[Any] | None = None,
    factory: Callable[[], Actor] | None = None,
    remote: bool = False,
    reply_type: Any = None,
    actor_id: str = "subject",
    timeout: float = 2.0,
) -> list[Any]:
    """Spawn `actor`, ask it each message of `send` in turn, and return the outcomes.

    An outcome is the reply, or the exception the ask raised. `expect` lists, per message,
    the reply (compared with ==), an exception class the ask must raise, or an exception
    instance whose type and `code` it must match. `remote=True` asks from a second system on
    the same bus, through the wire (replies decoded as `reply_type`).
    """
    if expect is not None:
        assert len(expect) == len(send), "give one expectation per message sent"
    bus = LocalBus()
    outcomes: list[Any] = []
    async with actor_system(bus, node_id="host") as host:
        ref = await host.spawn(actor, actor_id, factory=factory)
        async with actor_system(bus, node_id="client") as client:
            asker = client.ref(ref.kind, ref.id) if remote else ref
            for message in send:
                try:
                    outcomes.append(
                        await asker.ask(message, timeout=timeout, reply_type=reply_type)
                    )
                except Exception as exc:  # noqa: BLE001 - the outcome under test
                    outcomes.append(exc)
    for i, (outcome, expected) in enumerate(zip(outcomes, expect or [], strict=False)):
        try:
            _check(outcome, expected)
        except AssertionError as failure:
            raise AssertionError(f"message {i} ({send[i]!r}): {failure}") from None
    return outcomes


class RecordingParent:
    """A fake top of a supervision tree: records every exit and stops the child."""

    def __init__(self) -> None:
        self.exits: list[tuple[ActorCell, BaseException | None]] = []
        self.exited = asyncio.Event()

    async def child_exited(self, child: ActorCell, reason: BaseException | None) -> Decision:
        self.exits.append((child, reason))
        self.exited.set()
        return Decision(Directive.STOP)


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float = 2.0, what: str = "condition"
) -> None:
    """Poll `condition` (plain or async) until it holds; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not await _holds(condition):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout}s")
        await asyncio.sleep(0.005)


async def _holds(condition: Callable[[], bool | Awaitable[bool]]) -> bool:
    result = condition()
    return bool(await result) if inspect.isawaitable(result) else bool(result)


def dead_letters_total(kind: str, reason: str) -> float:
    """The `switchboard_dead_letters_total` sample for (kind, reason), 0 if never counted."""
    value = REGISTRY.get_sample_value(
        "switchboard_dead_letters_total", {"kind": kind, "reason": reason}
    )
    return value or 0.0
