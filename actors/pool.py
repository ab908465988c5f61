"""`ProviderPool`: the limits and the health of one provider in one region (a virtual actor).

Id `<kind>-<provider>-<region>` (`protocols.pools.pool_id`), kind `pool`. The pool hands out
**slots**; the stream runs on the call's node (actors/failover.py), so no audio and no
provider connection goes through the pool. Per slot request, in this order:

1. the **circuit breaker** (actors/circuit.py) must let it through, else `circuit_open`;
2. fewer than `max_concurrent` slots may be out, else `at_capacity`;
3. the **token bucket** (`rate_per_second`, `burst`) must hold a token, else `rate_limited`.

Every refusal is a `Refusal` (retryable, with `retry_after`), answered at once: a pool never
queues, because a turn cannot wait; the caller fails over to its next provider.

Slots expire (`slot_seconds`, extended by `RenewSlot`): a slot whose holder died is reclaimed
at expiry, lazily before each request, so capacity never leaks. Outcomes (`ReportOutcome`)
feed the breaker; codes in `NEUTRAL_CODES` (the provider refused this input) do not count
against its health. Providers that expose a health check get an active one: a task owned by
the pool runs it every `health_interval_seconds`, as a probe when the circuit is half-open.

The pool's state is soft and not persisted (a KV write per slot would sit on every turn's
path): a pool re-activated on another node starts with a closed circuit and no slots; the
streams still running come back with their next `RenewSlot` (adopted even over the limit,
because they are real), the others expire on their own.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgspec
from prometheus_client import Counter, Gauge
from switchboard.actors.circuit import HALF_OPEN, OPEN, CircuitBreaker, Permit
from switchboard.actors.errors import Refusal
from switchboard.actors.ratelimit import TokenBucket
from switchboard.actors.tasks import TaskOwner
from switchboard.actors.virtual import VirtualActor
from switchboard.protocols.pools import (
    AT_CAPACITY,
    CIRCUIT_OPEN,
    DEADLINE_PASSED,
    NEUTRAL_CODES,
    POOL_KIND,
    RATE_LIMITED,
    AcquireSlot,
    GetPoolStatus,
    PoolLimits,
    PoolStatus,
    ReleaseSlot,
    RenewSlot,
    ReportOutcome,
    SlotGranted,
)

log = logging.getLogger("switchboard.pool")

SLOTS_IN_USE = Gauge("switchboard_pool_slots_in_use", "Slots held, per provider pool", ["pool"])
SLOTS_REFUSED = Counter("switchboard_pool_refusals_total",
                        "Slot requests a provider pool refused, by code", ["pool", "code"])
SLOTS_RECLAIMED = Counter("switchboard_pool_slots_reclaimed_total",
                          "Slots that expired with their holder gone", ["pool"])
CIRCUIT = Gauge("switchboard_pool_circuit_state",
                "Circuit breaker of a provider pool: 0 closed, 1 half-open, 2 open", ["pool"])
_CIRCUIT_VALUE = {"closed": 0, HALF_OPEN: 1, OPEN: 2}
_LATENCY_ALPHA = 0.2
_MIN_RETRY_AFTER = 0.05

DEFAULT_LIMITS = PoolLimits()

HealthCheck = Callable[[], Awaitable[None]]
"""Raises (a `ProviderError`, or any exception) when the provider is unhealthy."""


@dataclass(frozen=True, slots=True)
class PoolBinding:
    """What a node gives its pool actors (see `ProviderPool.bind`)."""

    limits: Mapping[str, PoolLimits] = field(default_factory=dict)  # by pool id
    default: PoolLimits = DEFAULT_LIMITS
    health_checks: Mapping[str, HealthCheck] = field(default_factory=dict)  # by pool id
    clock: Callable[[], float] = time.time  # wall clock: slot expiries travel to other nodes


@dataclass(slots=True)
class _Slot:
    call_id: str
    granted_at: float
    expires_at: float
    hold: float
    permit: Permit | None


@dataclass(slots=True)
class _Counts:
    granted: int = 0
    renewed: int = 0
    reclaimed: int = 0
    successes: int = 0
    failures: int = 0


class PoolState(msgspec.Struct, kw_only=True):
    """Nothing is persisted (see the module docstring); the struct keeps VirtualHost happy."""

    v: int = 1


class ProviderPool(VirtualActor):
    kind = POOL_KIND
    accepts = AcquireSlot | RenewSlot | ReleaseSlot | ReportOutcome | GetPoolStatus
    State = PoolState
    state: PoolState

    binding: ClassVar[PoolBinding] = PoolBinding()

    @classmethod
    def bind(cls, limits: Mapping[str, PoolLimits] | None = None, *,
             default: PoolLimits = DEFAULT_LIMITS,
             health_checks: Mapping[str, HealthCheck] | None = None,
             clock: Callable[[], float] = time.time) -> type[ProviderPool]:
        """The class a node registers with its `VirtualHost`, bound to its pool settings."""
        binding = PoolBinding(dict(limits or {}), default, dict(health_checks or {}), clock)
        return type(cls.__name__, (cls,), {"binding": binding, "__module__": cls.__module__})

    async def on_started(self) -> None:
        pool = self.context.ref.id
        clock = self.binding.clock
        self.limits = self.binding.limits.get(pool, self.binding.default)
        self.breaker = CircuitBreaker(self.limits.breaker, clock=clock)
        self.bucket = TokenBucket(self.limits.rate_per_second, self.limits.burst, clock=clock)
        self.slots: dict[str, _Slot] = {}
        self.provider_kind = ""
        self.provider = ""
        self.counts = _Counts()
        self.refused: dict[str, int] = {}
        self.latency_ms = 0.0
        self.hold_estimate = 1.0  # seconds a slot is typically held: the at_capacity hint
        self._gauges()
        self.tasks = TaskOwner(lambda name, exc: log.error("pool %s task %s failed: %r",
                                                           pool, name, exc))
        check = self.binding.health_checks.get(pool)
        if check is not None:
            self.tasks.spawn(self._health_loop(check), name=f"health:{pool}")

    async def on_stopping(self) -> None:
        await self.tasks.close(timeout=1.0)
        SLOTS_IN_USE.labels(self.context.ref.id).set(0)

    async def receive(self, message: Any) -> Any:
        self._reclaim_expired()
        if isinstance(message, AcquireSlot):
            result: Any = self._acquire(message)
        elif isinstance(message, RenewSlot):
            result = self._renew(message)
        elif isinstance(message, ReportOutcome):
            self._outcome(message)
            result = None
        elif isinstance(message, ReleaseSlot):
            self._release(message.slot_id)
            result = None
        else:
            result = self.statistics()
        self._gauges()
        return result

    # -- slots ------------------------------------------------------------------------------

    def _refuse(self, code: str, message: str, retry_after: float) -> Refusal:
        self.refused[code] = self.refused.get(code, 0) + 1
        SLOTS_REFUSED.labels(self.context.ref.id, code).inc()
        return Refusal(code, message, retryable=True,
                       retry_after=round(max(retry_after, _MIN_RETRY_AFTER), 3))

    def _acquire(self, request: AcquireSlot) -> SlotGranted:
        pool = self.context.ref.id
        self.provider_kind, self.provider = request.kind, request.provider
        now = self.binding.clock()
        if request.deadline and now > request.deadline:
            raise self._refuse(DEADLINE_PASSED, f"the slot request reached {pool} after its "
                               "deadline; nobody waits for it, so nothing was granted", 0.0)
        if not self.breaker.allows():
            raise self._refuse(CIRCUIT_OPEN, f"{pool} is failing and its circuit is open; "
                               "use the next provider of the failover order",
                               self.breaker.retry_after())
        if len(self.slots) >= self.limits.max_concurrent:
            raise self._refuse(AT_CAPACITY, f"{pool} has all {self.limits.max_concurrent} "
                               "slots in use; use the next provider or raise max_concurrent",
                               self._capacity_retry_after(now))
        wait = self.bucket.take()
        if wait > 0:
            raise self._refuse(RATE_LIMITED, f"{pool} is at its rate limit of "
                               f"{self.limits.rate_per_second:g}/s; use the next provider", wait)
        permit = self.breaker.acquire()
        hold = request.hold_seconds if request.hold_seconds > 0 else self.limits.slot_seconds
        slot_id = uuid.uuid4().hex
        self.slots[slot_id] = _Slot(request.call_id, now, now + hold, hold, permit)
        self.counts.granted += 1
        return SlotGranted(slot_id=slot_id, expires_at=now + hold, hold_seconds=hold,
                           probe=permit is not None and permit.probe)

    def _capacity_retry_after(self, now: float) -> float:
        earliest = min(slot.expires_at for slot in self.slots.values()) - now
        return min(self.hold_estimate, earliest)

    def _renew(self, request: RenewSlot) -> SlotGranted:
        now = self.binding.clock()
        slot = self.slots.get(request.slot_id)
        if slot is None:
            # Reality wins over the limit: the stream runs, so it counts (see the docstring).
            slot = _Slot(request.call_id, now, now, self.limits.slot_seconds, None)
            self.slots[request.slot_id] = slot
        slot.expires_at = now + slot.hold
        self.counts.renewed += 1
        return SlotGranted(slot_id=request.slot_id, expires_at=slot.expires_at,
                           hold_seconds=slot.hold)

    def _release(self, slot_id: str) -> _Slot | None:
        slot = self.slots.pop(slot_id, None)
        if slot is not None:
            self.breaker.release(slot.permit)
            held = self.binding.clock() - slot.granted_at
            self.hold_estimate += _LATENCY_ALPHA * (held - self.hold_estimate)
        return slot

    def _outcome(self, report: ReportOutcome) -> None:
        slot = self.slots.get(report.slot_id)
        permit = slot.permit if slot is not None else None
        if report.ok:
            self.counts.successes += 1
            if report.latency_ms > 0:  # 0: no latency measured (a final nobody waited for)
                self.latency_ms += _LATENCY_ALPHA * (report.latency_ms - self.latency_ms)
        else:
            self.counts.failures += 1
        if report.ok or report.error_code not in NEUTRAL_CODES:
            self.breaker.record(permit, report.ok)
        elif slot is not None:
            self.breaker.release(permit)
        if slot is not None:
            slot.permit = None  # decided (or given back): a long stream's later reports count
        if report.release:     # as plain evidence, never as a probe again
            self._release(report.slot_id)

    def _reclaim_expired(self) -> None:
        now = self.binding.clock()
        expired = [sid for sid, slot in self.slots.items() if slot.expires_at <= now]
        for slot_id in expired:
            slot = self.slots.pop(slot_id)
            self.breaker.release(slot.permit)
            self.counts.reclaimed += 1
            SLOTS_RECLAIMED.labels(self.context.ref.id).inc()
        if expired:
            log.info("pool %s reclaimed %d expired slot(s)", self.context.ref.id, len(expired))

    # -- health and statistics ----------------------------------------------------------------

    async def _health_loop(self, check: HealthCheck) -> None:
        limits = self.limits
        while True:
            # While open, check again as soon as the cool-down ends: the check is the probe.
            wait = limits.health_interval_seconds
            if self.breaker.state == OPEN:
                wait = min(wait, self.breaker.retry_after())
            await asyncio.sleep(wait)
            permit = self.breaker.acquire()
            if permit is None:
                continue  # open, or half-open with every probe out: real streams decide
            try:
                async with asyncio.timeout(limits.health_timeout_seconds):
                    await check()
            except asyncio.CancelledError:
                self.breaker.release(permit)
                raise
            except Exception as exc:  # noqa: BLE001 - any failure is the verdict
                log.warning("health check of %s failed (%s)", self.context.ref.id,
                            type(exc).__name__)
                self.breaker.record(permit, False)
            else:
                self.breaker.record(permit, True)
            self._gauges()

    def _gauges(self) -> None:
        pool = self.context.ref.id
        SLOTS_IN_USE.labels(pool).set(len(self.slots))
        CIRCUIT.labels(pool).set(_CIRCUIT_VALUE[self.breaker.state])

    def statistics(self) -> PoolStatus:
        return PoolStatus(
            pool_id=self.context.ref.id, kind=self.provider_kind, provider=self.provider,
            circuit=self.breaker.state, retry_after=round(self.breaker.retry_after(), 3),
            in_use=len(self.slots), max_concurrent=self.limits.max_concurrent,
            rate_per_second=self.limits.rate_per_second,
            tokens=round(self.bucket.tokens, 3) if self.bucket.limited else 0.0,
            granted=self.counts.granted, renewed=self.counts.renewed,
            reclaimed=self.counts.reclaimed, refused=dict(self.refused),
            successes=self.counts.successes, failures=self.counts.failures,
            latency_ms=round(self.latency_ms, 1),
        )
