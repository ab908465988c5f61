"""Virtual actors on in-memory KV: activation on first message, single activation by lease,
state restored on re-activation, takeover from a dead node, fencing of a stale activation,
and asks that fail as soon as the actor's node is seen to be gone."""

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec
import pytest
from switchboard.actors import (
    ActorDeadError,
    ActorNotFound,
    ActorSystem,
    LeaseLost,
    RemoteError,
)
from switchboard.actors.membership import Membership
from switchboard.actors.placement import choose_node
from switchboard.actors.transport_local import LocalBus
from switchboard.actors.virtual import VirtualHost
from switchboard.protocols import LeaseRecord, NodeInfo, StateRecord
from switchboard.storage.kv_memory import MemoryKeyValue
from switchboard.supervisor import Restart, Supervisor
from switchboard.supervisor.supervisor import SupervisorParent

from tests.support.actors import (
    CarelessCounter,
    Count,
    Counter,
    CounterState,
    Crash,
    Get,
    Hold,
    Incr,
    SlowCounter,
)
from tests.support.harness import actor_system, host_virtual, wait_until

pytestmark = pytest.mark.unit

KINDS = (Counter, SlowCounter, CarelessCounter)


@dataclass
class Cluster:
    """Nodes on one bus sharing the lease and state buckets, like nodes on one NATS cluster."""

    bus: LocalBus
    leases: MemoryKeyValue
    states: MemoryKeyValue

    async def lease_holder(self, kind: str, actor_id: str) -> str | None:
        entry = await self.leases.get(f"{kind}.{actor_id}")
        return (
            None if entry is None else msgspec.msgpack.decode(entry.value, type=LeaseRecord).node_id
        )

    async def stored_value(self, kind: str, actor_id: str) -> tuple[str, int]:
        entry = await self.states.get(f"{kind}.{actor_id}")
        assert entry is not None
        record = msgspec.msgpack.decode(entry.value, type=StateRecord)
        return record.node_id, msgspec.msgpack.decode(record.data, type=CounterState).value


@pytest.fixture
def cluster() -> Cluster:
    return Cluster(LocalBus(), MemoryKeyValue(), MemoryKeyValue())


async def node(cluster: Cluster, system: ActorSystem, **options: object) -> VirtualHost:
    return await host_virtual(
        system, *KINDS, leases=cluster.leases, states=cluster.states, **options
    )


@pytest.fixture
async def n1(cluster: Cluster) -> AsyncIterator[tuple[ActorSystem, VirtualHost]]:
    async with actor_system(cluster.bus, node_id="n1") as system:
        yield system, await node(cluster, system)


@pytest.fixture
async def n2(cluster: Cluster) -> AsyncIterator[tuple[ActorSystem, VirtualHost]]:
    async with actor_system(cluster.bus, node_id="n2") as system:
        yield system, await node(cluster, system)


def cells(*systems: ActorSystem, kind: str, actor_id: str) -> list[str]:
    """The nodes where the actor has a live cell."""
    return [
        s.node_id
        for s in systems
        if (c := s.cell(s.ref(kind, actor_id))) is not None and not c.closed
    ]


# -- activation and state ---------------------------------------------------------------------


async def test_first_ask_activates_the_actor_and_takes_its_lease(cluster, n1) -> None:
    system, _ = n1
    ref = system.ref("counter", "c1")
    assert system.cell(ref) is None
    assert await ref.ask(Incr(n=2), reply_type=Count) == Count(value=2, node="n1")
    assert cells(system, kind="counter", actor_id="c1") == ["n1"]
    assert await cluster.lease_holder("counter", "c1") == "n1"
    assert await cluster.stored_value("counter", "c1") == ("n1", 2)


async def test_first_tell_activates_the_actor_too(cluster, n1) -> None:
    system, _ = n1
    await system.ref("counter", "c1").tell(Incr(n=7))
    await wait_until(
        lambda: system.cell(system.ref("counter", "c1")) is not None, what="activation by a tell"
    )
    assert await system.ref("counter", "c1").ask(Get(), reply_type=Count) == Count(
        value=7, node="n1"
    )


async def test_state_is_restored_when_the_actor_is_activated_again(cluster, n1) -> None:
    system, _ = n1
    ref = system.ref("counter", "c1")
    for _ in range(3):
        await ref.ask(Incr())
    first = system.cell(ref)
    await system.stop(ref)

    async def lease_released() -> bool:
        return await cluster.lease_holder("counter", "c1") is None

    await wait_until(lease_released, what="lease released")
    assert await ref.ask(Get(), reply_type=Count) == Count(value=3, node="n1")
    assert system.cell(ref) is not first


async def test_a_crashed_virtual_actor_restarts_with_its_last_persisted_state(cluster) -> None:
    async with actor_system(cluster.bus, node_id="n1") as system:
        sup_ref = await system.spawn(
            Supervisor,
            "virtual",
            expose=False,
            factory=lambda: Supervisor(dynamic_restart=Restart.TRANSIENT),
        )
        await node(cluster, system, supervisor=SupervisorParent(system.cell(sup_ref)))
        ref = system.ref("careless_counter", "c1")
        assert await ref.ask(Incr(n=3), reply_type=Count) == Count(value=3, node="n1")
        cell = system.cell(ref)
        with pytest.raises(RemoteError, match="crashed"):
            await ref.ask(Crash())  # it changed its state (+1000) without persisting, then died
        await wait_until(
            lambda: cell.incarnation == 2 and cell.instance is not None,
            what="restarted by its supervisor",
        )
        assert await ref.ask(Get(), reply_type=Count) == Count(value=3, node="n1")


# -- single activation --------------------------------------------------------------------


async def test_two_nodes_racing_to_activate_one_actor_end_with_one_activation(
    cluster, n1, n2
) -> None:
    (s1, h1), (s2, h2) = n1, n2
    holders = await asyncio.gather(
        h1.activate_here("counter", "race"), h2.activate_here("counter", "race")
    )
    assert holders[0] == holders[1]
    assert cells(s1, s2, kind="counter", actor_id="race") == [holders[0]]
    assert await cluster.lease_holder("counter", "race") == holders[0]


async def test_concurrent_first_asks_from_two_nodes_reach_one_activation(cluster, n1, n2) -> None:
    (s1, _), (s2, _) = n1, n2
    replies = await asyncio.gather(
        *(s.ref("counter", "hot").ask(Incr(), reply_type=Count) for s in (s1, s2, s1, s2))
    )
    assert sorted(r.value for r in replies) == [1, 2, 3, 4]
    assert len({r.node for r in replies}) == 1
    assert cells(s1, s2, kind="counter", actor_id="hot") == [replies[0].node]


async def test_a_client_places_the_actor_on_the_node_rendezvous_hashing_picks(cluster) -> None:
    nodes_kv = MemoryKeyValue()
    infos = [
        NodeInfo(node_id=n, region="local", capacity=100, kinds=["counter"]) for n in ("n1", "n2")
    ]
    for info in infos:
        await nodes_kv.put(info.node_id, msgspec.msgpack.encode(info))
    membership = Membership(nodes_kv)
    await membership.refresh()
    async with (
        actor_system(cluster.bus, node_id="n1") as s1,
        actor_system(cluster.bus, node_id="n2") as s2,
        actor_system(cluster.bus, node_id="client") as client,
    ):
        await node(cluster, s1)
        await node(cluster, s2)
        await host_virtual(
            client, leases=cluster.leases, states=cluster.states, membership=membership
        )
        for i in range(6):
            ref = client.ref("counter", f"p{i}")
            reply = await ref.ask(Get(), reply_type=Count)
            assert (
                reply.node
                == choose_node(ref.subject, infos, region="local", kind="counter").node_id
            )
            assert cells(s1, s2, client, kind="counter", actor_id=f"p{i}") == [reply.node]


async def test_a_kind_no_node_hosts_is_not_found(cluster) -> None:
    membership = Membership(MemoryKeyValue())
    async with actor_system(cluster.bus, node_id="client") as client:
        await host_virtual(
            client, leases=cluster.leases, states=cluster.states, membership=membership
        )
        with pytest.raises(ActorNotFound):
            await client.ref("nobody_hosts_this", "x").ask(Get(), timeout=1)


# -- a node that dies: takeover, fencing, pending asks -------------------------------------


async def test_another_node_takes_over_with_the_state_when_the_holder_is_gone(
    cluster, n1, n2
) -> None:
    (s1, _), (s2, _) = n1, n2
    assert await s1.ref("counter", "c1").ask(Incr(n=5), reply_type=Count) == Count(
        value=5, node="n1"
    )
    await s1.transport.close()  # n1 is gone: its subjects have no responders any more

    assert await s2.ref("counter", "c1").ask(Get(), reply_type=Count) == Count(value=5, node="n2")
    assert await cluster.lease_holder("counter", "c1") == "n2"
    assert cells(s2, kind="counter", actor_id="c1") == ["n2"]


async def test_a_stale_activation_cannot_persist_after_a_takeover(cluster, n1, n2) -> None:
    (s1, _), (s2, _) = n1, n2
    await s1.ref("counter", "c1").ask(Incr(n=5))
    await s1.transport.close()
    await s2.ref("counter", "c1").ask(Get())  # n2 took over

    # n1 was only cut off: its activation still runs, and tries to save an increment.
    with pytest.raises(LeaseLost):
        await s1.ref("counter", "c1").ask(Incr(n=100))
    await wait_until(
        lambda: s1.cell(s1.ref("counter", "c1")) is None, what="the stale activation stopped"
    )
    assert await cluster.stored_value("counter", "c1") == ("n2", 5)
    assert await s2.ref("counter", "c1").ask(Get(), reply_type=Count) == Count(value=5, node="n2")


async def test_a_stale_activation_stops_when_its_lease_renewal_fails(cluster) -> None:
    async with (
        actor_system(cluster.bus, node_id="n1", allow_task_errors=True) as s1,
        actor_system(cluster.bus, node_id="n2") as s2,
    ):
        await node(cluster, s1, lease_ttl=0.15)  # renews every 50 ms
        await node(cluster, s2)
        await s1.ref("counter", "c1").ask(Incr())
        await s1.transport.close()
        await s2.ref("counter", "c1").ask(Get())
        await wait_until(
            lambda: s1.cell(s1.ref("counter", "c1")) is None,
            timeout=1,
            what="n1 noticed it lost the lease",
        )
        assert await cluster.lease_holder("counter", "c1") == "n2"


async def test_pending_asks_fail_as_soon_as_the_actors_node_is_seen_gone(cluster) -> None:
    # n1's own answer to the ask cannot go out once it is cut off: that failure is expected.
    async with (
        actor_system(cluster.bus, node_id="n1", allow_task_errors=True) as s1,
        actor_system(cluster.bus, node_id="n2") as s2,
    ):
        await node(cluster, s1)
        await node(cluster, s2)
        await s1.ref("slow_counter", "s").ask(Get())  # activated on n1
        pending = asyncio.ensure_future(
            s2.ref("slow_counter", "s").ask(Hold(seconds=30), timeout=5)
        )
        cell = s1.cell(s1.ref("slow_counter", "s"))
        await wait_until(lambda: cell.mailbox.statistics().received == 2, what="ask arrived")
        started = time.monotonic()
        await s1.transport.close()
        with pytest.raises(ActorDeadError):
            await pending
        assert time.monotonic() - started < 1  # seen by the lease check, not the 5 s deadline


async def test_a_slow_actor_on_a_live_node_is_not_declared_dead(cluster, n1, n2) -> None:
    (s1, _), (s2, _) = n1, n2
    await s1.ref("slow_counter", "s").ask(Get())
    reply = await s2.ref("slow_counter", "s").ask(Hold(seconds=0.3), timeout=5, reply_type=Count)
    assert reply == Count(value=0, node="n1")


# -- lease renewal racing a release (a JetStream round trip takes a while) -----------------


class SlowLeases(MemoryKeyValue):
    """A lease bucket whose writes can be held in flight, like a slow JetStream round trip."""

    def __init__(self, *, hold_deletes: bool) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.in_flight = 0
        self._hold_deletes = hold_deletes

    async def _held(self) -> None:
        self.in_flight += 1
        try:
            await self.gate.wait()
        finally:
            self.in_flight -= 1

    async def update(self, key: str, value: bytes, revision: int) -> int:
        await self._held()
        return await super().update(key, value, revision)

    async def delete(self, key: str, revision: int | None = None) -> None:
        if self._hold_deletes:
            await self._held()
        await super().delete(key, revision)


async def test_a_lease_released_during_its_renewal_is_not_kept_alive() -> None:
    cluster = Cluster(LocalBus(), SlowLeases(hold_deletes=True), MemoryKeyValue())
    async with actor_system(cluster.bus, node_id="n1") as system:
        await node(cluster, system, lease_ttl=0.03)
        ref = system.ref("counter", "c1")
        await ref.ask(Incr())
        cluster.leases.gate.clear()
        await wait_until(lambda: cluster.leases.in_flight == 1, what="a renewal in flight")
        await system.stop(ref)  # its release waits behind the renewal
        await wait_until(lambda: cluster.leases.in_flight == 2, what="the release in flight")
        cluster.leases.gate.set()

        async def lease_gone() -> bool:
            return await cluster.lease_holder("counter", "c1") is None

        await wait_until(lease_gone, timeout=0.5, what="lease released")
        await asyncio.sleep(0.05)  # several renewal periods: nobody renews it back
        assert await lease_gone()


async def test_a_renewal_that_lost_a_race_with_a_release_spares_the_next_activation() -> None:
    cluster = Cluster(LocalBus(), SlowLeases(hold_deletes=False), MemoryKeyValue())
    async with actor_system(cluster.bus, node_id="n1") as system:
        await node(cluster, system, lease_ttl=0.03)
        ref = system.ref("counter", "c1")
        await ref.ask(Incr())
        cluster.leases.gate.clear()
        await wait_until(lambda: cluster.leases.in_flight == 1, what="a renewal in flight")
        await system.stop(ref)  # released at once: the lease is gone
        assert await ref.ask(Incr(), reply_type=Count) == Count(value=2, node="n1")
        again = system.cell(ref)
        cluster.leases.gate.set()  # the stale renewal now fails on the new lease's revision
        await asyncio.sleep(0.05)
        assert system.cell(ref) is again and not again.closed
        assert await cluster.lease_holder("counter", "c1") == "n1"
