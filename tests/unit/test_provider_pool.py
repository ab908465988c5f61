"""The provider pool actor: concurrency and rate limits refused at once with retry_after,
expired slots reclaimed, outcomes and health checks driving its circuit breaker, and the same
answers through the wire."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from switchboard.actors import ActorSystem, RemoteError
from switchboard.actors.pool import ProviderPool
from switchboard.actors.ref import ActorRef
from switchboard.actors.transport_local import LocalBus
from switchboard.protocols.pools import (
    AcquireSlot,
    BreakerSettings,
    GetPoolStatus,
    PoolLimits,
    PoolStatus,
    ReleaseSlot,
    RenewSlot,
    ReportOutcome,
    SlotGranted,
)
from switchboard.providers import ProviderUnavailable
from switchboard.storage.kv_memory import MemoryKeyValue

from tests.support.harness import actor_system, host_virtual, wait_until

pytestmark = pytest.mark.unit

POOL = "stt-whisper-local"
BREAKER = BreakerSettings(failure_threshold=2, cool_down_seconds=5.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    system: ActorSystem
    clock: Clock

    def pool(self, pool_id: str = POOL) -> ActorRef:
        return self.system.ref("pool", pool_id)

    async def acquire(self, call_id: str = "c1", **fields: float) -> SlotGranted:
        request = AcquireSlot(kind="stt", provider="whisper", call_id=call_id, **fields)
        granted: SlotGranted = await self.pool().ask(request, reply_type=SlotGranted)
        return granted

    async def refusal(self, call_id: str = "c9") -> RemoteError:
        with pytest.raises(RemoteError) as caught:
            await self.acquire(call_id)
        return caught.value

    async def status(self) -> PoolStatus:
        status: PoolStatus = await self.pool().ask(GetPoolStatus(), reply_type=PoolStatus)
        return status

    async def outcome(self, slot: SlotGranted, ok: bool, release: bool = True) -> None:
        await self.pool().ask(ReportOutcome(slot_id=slot.slot_id, ok=ok, latency_ms=120.0,
                                            error_code="" if ok else "stalled",
                                            release=release))


@pytest.fixture
def limits() -> PoolLimits:
    return PoolLimits(max_concurrent=2, slot_seconds=10.0, breaker=BREAKER)


@pytest.fixture
async def env(limits: PoolLimits) -> AsyncIterator[Env]:
    clock = Clock()
    async with actor_system(LocalBus()) as system:
        await host_virtual(system, ProviderPool.bind({POOL: limits}, clock=clock),
                           leases=MemoryKeyValue(), states=MemoryKeyValue())
        yield Env(system, clock)


async def test_slots_beyond_the_concurrency_limit_are_refused_at_once_with_retry_after(
        env: Env) -> None:
    first = await env.acquire("c1")
    await env.acquire("c2")
    assert first.expires_at == env.clock.now + 10.0 and not first.probe
    refused = await env.refusal()
    assert refused.code == "at_capacity" and refused.retryable
    assert refused.retry_after is not None and 0 < refused.retry_after <= 10.0
    await env.pool().tell(ReleaseSlot(slot_id=first.slot_id))
    await env.acquire("c3")  # the released slot is free again
    status = await env.status()
    assert (status.in_use, status.granted, status.refused) == (2, 3, {"at_capacity": 1})
    assert (status.kind, status.provider) == ("stt", "whisper")


@pytest.mark.parametrize("limits", [PoolLimits(rate_per_second=2.0, burst=2)])
async def test_the_rate_limit_refuses_with_the_time_until_the_next_token(env: Env) -> None:
    for call in ("c1", "c2"):
        slot = await env.acquire(call)
        await env.pool().tell(ReleaseSlot(slot_id=slot.slot_id))
    refused = await env.refusal()
    assert refused.code == "rate_limited" and refused.retryable
    assert refused.retry_after == pytest.approx(0.5)
    env.clock.now += 0.5
    await env.acquire("c3")


async def test_a_slot_whose_holder_died_is_reclaimed_at_expiry(env: Env) -> None:
    kept = await env.acquire("alive")
    await env.acquire("dead")  # its node died: never renewed, never released
    for _ in range(3):
        env.clock.now += 6.0
        await env.pool().ask(RenewSlot(slot_id=kept.slot_id, call_id="alive"))
    status = await env.status()
    assert (status.in_use, status.reclaimed, status.renewed) == (1, 1, 3)
    await env.acquire("new")  # capacity came back: 2 of 2 in use again
    assert (await env.refusal()).code == "at_capacity"


async def test_a_renewal_of_a_slot_the_pool_forgot_counts_it_again(env: Env) -> None:
    slot = await env.acquire("c1")
    env.clock.now += 11.0  # the renewals were lost: reclaimed...
    assert (await env.status()).in_use == 0
    renewed = await env.pool().ask(RenewSlot(slot_id=slot.slot_id), reply_type=SlotGranted)
    assert renewed.expires_at == env.clock.now + 10.0
    assert (await env.status()).in_use == 1  # ...but the stream is real, so it counts


async def test_a_request_that_arrives_after_its_deadline_holds_no_capacity(env: Env) -> None:
    with pytest.raises(RemoteError) as caught:
        await env.acquire("late", deadline=env.clock.now - 0.1)
    assert caught.value.code == "deadline_passed"
    assert (await env.status()).in_use == 0


async def test_failures_open_the_circuit_and_a_probe_after_the_cool_down_closes_it(
        env: Env) -> None:
    for call in ("c1", "c2"):
        await env.outcome(await env.acquire(call), ok=False)
    refused = await env.refusal()
    assert refused.code == "circuit_open" and refused.retry_after == pytest.approx(5.0)
    env.clock.now += 5.0
    probe = await env.acquire("probe")
    assert probe.probe
    assert (await env.refusal()).code == "circuit_open"  # one probe at a time
    await env.outcome(probe, ok=True)
    status = await env.status()
    assert status.circuit == "closed" and (status.successes, status.failures) == (1, 2)
    await env.acquire("c3")


async def test_a_rejected_input_does_not_count_against_the_providers_health(env: Env) -> None:
    for call in ("c1", "c2", "c3"):
        slot = await env.acquire(call)
        await env.pool().ask(ReportOutcome(slot_id=slot.slot_id, ok=False,
                                           error_code="rejected", release=True))
    status = await env.status()
    assert status.circuit == "closed" and status.failures == 3


async def test_refusals_travel_the_wire_with_their_code_and_retry_after(env: Env) -> None:
    await env.acquire("c1")
    await env.acquire("c2")
    bus = env.system.transport.bus  # type: ignore[attr-defined]
    async with actor_system(bus, node_id="client") as client:
        remote = client.ref("pool", POOL)
        with pytest.raises(RemoteError) as caught:
            await remote.ask(AcquireSlot(kind="stt", provider="whisper", call_id="c3"))
        assert caught.value.code == "at_capacity" and caught.value.retry_after
        status = await remote.ask(GetPoolStatus(), reply_type=PoolStatus)
        assert status.in_use == 2 and status.circuit == "closed"


async def test_an_active_health_check_opens_the_circuit_and_closes_it_again() -> None:
    clock = Clock()
    healthy = asyncio.Event()
    checks = 0

    async def check() -> None:
        nonlocal checks
        checks += 1
        if not healthy.is_set():
            raise ProviderUnavailable("down on purpose", provider="deepgram")

    limits = PoolLimits(breaker=BREAKER, health_interval_seconds=0.01)
    pool_id = "stt-deepgram-eu"
    bound = ProviderPool.bind({pool_id: limits}, health_checks={pool_id: check}, clock=clock)
    async with actor_system(LocalBus()) as system:
        await host_virtual(system, bound, leases=MemoryKeyValue(), states=MemoryKeyValue())
        ref = system.ref("pool", pool_id)

        async def circuit() -> str:
            status: PoolStatus = await ref.ask(GetPoolStatus(), reply_type=PoolStatus)
            return status.circuit

        await wait_until(lambda: _is(circuit(), "open"), what="the circuit opening")
        seen = checks
        await asyncio.sleep(0.05)
        assert checks == seen  # open and cooling down: no checks hammer a dead provider
        healthy.set()
        clock.now += 5.0  # the cool-down is over: the next check is the probe
        await wait_until(lambda: _is(circuit(), "closed"), what="the circuit closing")


async def _is(value: object, expected: str) -> bool:
    return await value == expected  # type: ignore[misc]
