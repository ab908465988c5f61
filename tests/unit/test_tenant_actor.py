"""The tenant actor's admission control: concurrent quota and rate limit refusals with
retry_after, idempotent admission and release, leases that free the slots of calls whose node
died, state kept across re-activation, and outbound calls handed to the trunk."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from switchboard.actors import Actor, ActorError, ActorSystem, RemoteError
from switchboard.actors.tenant import TenantActor
from switchboard.actors.transport_local import LocalBus
from switchboard.protocols.call import (
    AdmitCall,
    Admitted,
    CallFinished,
    GetUsage,
    Originate,
    Originated,
    PlaceCall,
    Placing,
    RenewCall,
    Usage,
)
from switchboard.protocols.tenants import AgentConfig, Limits, NumberRoute, TenantConfig
from switchboard.storage.kv_memory import MemoryKeyValue
from switchboard.storage.tenants_file import StaticTenantDirectory

from tests.support.harness import actor_system, host_virtual

pytestmark = pytest.mark.unit

LEASE = 30.0


def acme(limits: Limits) -> TenantConfig:
    return TenantConfig(
        id="acme",
        numbers=[NumberRoute(number="+15550200", agent="front"),
                 NumberRoute(number="+15550201", agent="front")],
        limits=limits,
        agents=[AgentConfig(id="front")],
        trunk="main",
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    system: ActorSystem
    clock: Clock
    states: MemoryKeyValue
    placed: list[PlaceCall]

    def tenant(self, tenant_id: str = "acme"):  # type: ignore[no-untyped-def]
        return self.system.ref("tenant", tenant_id)

    async def admit(self, call_id: str, agent_id: str = "front") -> Admitted:
        return await self.tenant().ask(AdmitCall(call_id=call_id, agent_id=agent_id),
                                       reply_type=Admitted)

    async def refusal(self, call_id: str, agent_id: str = "front",
                      tenant_id: str = "acme") -> ActorError:
        # ActorError, not RemoteError: `not_found` comes back as ActorNotFound (same code).
        with pytest.raises(ActorError) as caught:
            await self.tenant(tenant_id).ask(AdmitCall(call_id=call_id, agent_id=agent_id))
        return caught.value

    async def usage(self) -> Usage:
        return await self.tenant().ask(GetUsage(), reply_type=Usage)


class FakeTrunk(Actor):
    kind = "trunk"
    accepts = PlaceCall

    def __init__(self, placed: list[PlaceCall]) -> None:
        self.placed = placed

    async def receive(self, message: PlaceCall) -> Placing:
        self.placed.append(message)
        return Placing(call_id=message.call_id, node_id=self.context.system.node_id)


@pytest.fixture
def limits() -> Limits:
    """The tenant's limits; a test overrides them with `@pytest.mark.parametrize("limits")`."""
    return Limits(max_concurrent_calls=2, calls_per_minute=100, retry_after_seconds=7.0)


@pytest.fixture
async def env(limits: Limits) -> AsyncIterator[Env]:
    clock = Clock()
    states = MemoryKeyValue()
    directory = StaticTenantDirectory([acme(limits)])
    async with actor_system(LocalBus()) as system:
        await host_virtual(system, TenantActor.bind(directory, clock=clock, lease_seconds=LEASE),
                           leases=MemoryKeyValue(), states=states)
        yield Env(system, clock, states, [])


async def test_calls_beyond_the_concurrent_quota_are_refused_with_retry_after(env: Env) -> None:
    first = await env.admit("c1")
    assert (first.tenant_id, first.agent_id, first.lease_seconds) == ("acme", "front", LEASE)
    await env.admit("c2")
    refused = await env.refusal("c3")
    assert refused.code == "quota_exceeded"
    assert refused.retry_after == 7.0 and refused.retryable

    await env.tenant().tell(CallFinished(call_id="c1", reason="caller_hangup"))
    await env.admit("c3")  # the finished call's slot is free again
    assert (await env.usage()).active_calls == 2


async def test_admission_is_idempotent_per_call_id(env: Env) -> None:
    await env.admit("c1")
    await env.admit("c1")  # a retried ask (the first reply was lost): no second slot
    await env.admit("c2")
    assert (await env.usage()).active_calls == 2


async def test_call_finished_twice_releases_one_slot(env: Env) -> None:
    await env.admit("c1")
    await env.admit("c2")
    for _ in range(2):
        await env.tenant().tell(CallFinished(call_id="c1", reason="caller_hangup"))
    await env.tenant().tell(CallFinished(call_id="never-admitted", reason="error"))
    assert (await env.usage()).active_calls == 1


@pytest.mark.parametrize("limits", [Limits(max_concurrent_calls=100, calls_per_minute=3)])
async def test_the_rate_limit_refuses_with_the_time_until_a_slot_frees(env: Env) -> None:
    for n in range(3):
        await env.admit(f"c{n}")
        env.clock.now += 10.0
    refused = await env.refusal("c3")
    assert refused.code == "rate_limited"
    assert refused.retry_after == pytest.approx(30.0)  # the first admission ages out at 60 s
    env.clock.now += 30.0
    await env.admit("c3")
    assert (await env.usage()).calls_last_minute == 3


async def test_unknown_agent_or_tenant_is_not_found(env: Env) -> None:
    assert (await env.refusal("c1", agent_id="nobody")).code == "not_found"
    assert (await env.refusal("c1", tenant_id="initech")).code == "not_found"
    assert (await env.usage()).active_calls == 0


async def test_calls_whose_node_died_stop_counting_after_their_lease(env: Env) -> None:
    await env.admit("dead")   # its node dies: no renewals, no CallFinished
    await env.admit("alive")
    assert (await env.refusal("c3")).code == "quota_exceeded"
    for _ in range(4):  # the live call renews every lease/3
        env.clock.now += LEASE / 3
        await env.tenant().tell(RenewCall(call_id="alive", agent_id="front"))
    await env.admit("c3")  # the dead call's lease lapsed; the live one still counts
    assert (await env.usage()).active_calls == 2
    assert (await env.refusal("c4")).code == "quota_exceeded"


async def test_a_renewal_after_the_call_finished_does_not_bring_it_back(env: Env) -> None:
    await env.admit("c1")
    await env.tenant().tell(CallFinished(call_id="c1", reason="caller_hangup"))
    await env.tenant().tell(RenewCall(call_id="c1", agent_id="front"))
    assert (await env.usage()).active_calls == 0


async def test_a_live_call_that_lost_its_lease_counts_again_when_it_renews(env: Env) -> None:
    await env.admit("c1")
    env.clock.now += LEASE + 1  # renewals lost, e.g. a network partition
    assert (await env.usage()).active_calls == 0
    await env.tenant().tell(RenewCall(call_id="c1", agent_id="front"))
    assert (await env.usage()).active_calls == 1


async def test_admitted_calls_survive_reactivation_of_the_tenant(env: Env) -> None:
    await env.admit("c1")
    await env.admit("c2")
    await env.system.stop(env.tenant())  # e.g. its node drained: the state is persisted
    assert await env.states.get("tenant.acme") is not None
    assert (await env.refusal("c3")).code == "quota_exceeded"  # re-activated, still full


async def test_a_refusal_reaches_a_remote_gateway_with_code_and_retry_after(env: Env) -> None:
    await env.admit("c1")
    await env.admit("c2")
    bus = env.system.transport.bus  # type: ignore[attr-defined]
    async with actor_system(bus, node_id="gateway") as gateway:
        with pytest.raises(RemoteError) as caught:
            await gateway.ref("tenant", "acme").ask(AdmitCall(call_id="c3", agent_id="front"))
    assert caught.value.code == "quota_exceeded" and caught.value.retry_after == 7.0


async def test_originate_admits_the_call_and_hands_it_to_the_trunk(env: Env) -> None:
    await env.system.spawn(FakeTrunk, "main", factory=lambda: FakeTrunk(env.placed))
    answer = await env.tenant().ask(Originate(agent_id="front", target="sip:bob@example.com"),
                                    reply_type=Originated)
    assert answer.node_id == env.system.node_id
    (placed,) = env.placed
    assert placed.call_id == answer.call_id and placed.tenant_id == "acme"
    assert placed.caller_id == "+15550200"  # the tenant's first number by default
    assert placed.target == "sip:bob@example.com" and placed.lease_seconds == LEASE
    assert (await env.usage()).active_calls == 1

    again = await env.tenant().ask(Originate(agent_id="front", target="sip:bob@example.com",
                                             caller_id="+1 555 0201", call_id="out-2"),
                                   reply_type=Originated)
    assert again.call_id == "out-2" and env.placed[-1].caller_id == "+15550201"


async def test_originate_refuses_a_caller_id_the_tenant_does_not_own(env: Env) -> None:
    await env.system.spawn(FakeTrunk, "main", factory=lambda: FakeTrunk(env.placed))
    with pytest.raises(RemoteError) as caught:
        await env.tenant().ask(Originate(agent_id="front", target="sip:bob@example.com",
                                         caller_id="+15559999"))
    assert caught.value.code == "forbidden" and "15559999" not in str(caught.value)
    assert env.placed == [] and (await env.usage()).active_calls == 0


async def test_originate_without_a_reachable_trunk_releases_the_slot(env: Env) -> None:
    with pytest.raises(RemoteError) as caught:
        await env.tenant().ask(Originate(agent_id="front", target="sip:bob@example.com"))
    assert caught.value.code == "unavailable" and caught.value.retryable
    assert (await env.usage()).active_calls == 0
