"""`PoolClient`: how a call's node takes, renews and gives back slots of provider pools.

One per node, shared by its calls. Taking a slot is an `ask` (a turn cannot start a stream the
pool did not allow); everything after is a `tell` sent without awaiting (`tell_nowait`), so it
can run in a `finally` while the task is being cancelled: the release happens on every path.

A refusal with a `retry_after` (`circuit_open`, `rate_limited`) is remembered on this node
until then, so the next turns skip that pool at once, without a round trip. `at_capacity` is
not remembered: any release frees a slot.

A pool that does not answer within `acquire_timeout` (its node died and it is being
re-activated, NATS is cut off, no node hosts pools) **fails open** by default: the stream
runs without a slot (`Slot.pooled` is False; nothing is reported for it), counted in
`switchboard_pool_fail_open_total`. A pool that cannot answer cannot protect its provider,
and refusing would silence the call, apology included; the provider's own limits still
apply (a 429 is a retryable error, so the stream fails over). `fail_open=False` makes it a
refusal with code `pool_unavailable` instead.

Slots are renewed on activity: each item a stream yields (each audio chunk, for STT) checks
whether a third of the hold has passed and, if so, tells the pool `RenewSlot`. A stream that
makes no progress gets no renewal, and its progress deadline ends it long before its slot
would expire.

Embedded providers (`node_scoped`) get one pool per node rather than per region: their
capacity is this node's CPU, so their pool id uses the node id as its region.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from prometheus_client import Counter
from switchboard.actors.errors import ActorError, RemoteError
from switchboard.actors.ref import ActorRef
from switchboard.actors.system import ActorSystem
from switchboard.protocols.pools import (
    CIRCUIT_OPEN,
    POOL_KIND,
    RATE_LIMITED,
    AcquireSlot,
    ProviderKind,
    ReleaseSlot,
    RenewSlot,
    ReportOutcome,
    SlotGranted,
    pool_id,
)

log = logging.getLogger("switchboard.pool")

POOL_UNAVAILABLE = "pool_unavailable"
FAIL_OPEN = Counter("switchboard_pool_fail_open_total",
                    "Streams run without a slot because their pool did not answer",
                    ["kind", "provider"])
_REMEMBERED = frozenset({CIRCUIT_OPEN, RATE_LIMITED})


class SlotRefused(Exception):
    """The pool did not grant a slot: `code` says why (protocols/pools.py), `retry_after`
    when to ask again; `cached` when this node remembered an earlier refusal."""

    def __init__(self, pool: str, code: str, retry_after: float | None = None, *,
                 cached: bool = False) -> None:
        super().__init__(f"pool {pool} refused a slot ({code})")
        self.pool = pool
        self.code = code
        self.retry_after = retry_after
        self.cached = cached


@dataclass(slots=True)
class Slot:
    """A granted slot, held by one stream on this node."""

    pool: ActorRef
    slot_id: str
    kind: ProviderKind
    provider: str
    call_id: str
    hold_seconds: float
    probe: bool
    acquired_at: float  # monotonic
    renew_at: float     # monotonic
    ended: bool = field(default=False)

    @property
    def pooled(self) -> bool:
        """False for a stream run without a slot (its pool did not answer: fail open)."""
        return bool(self.slot_id)


class PoolClient:
    def __init__(self, system: ActorSystem, *, region: str | None = None,
                 node_scoped: Collection[str] = (), acquire_timeout: float = 0.5,
                 fail_open: bool = True,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.system = system
        self.region = region if region is not None else system.region
        self.node_scoped = frozenset(node_scoped)
        self.acquire_timeout = acquire_timeout
        self.fail_open = fail_open
        self._clock = clock
        self._monotonic = monotonic
        self._skips: dict[str, tuple[float, str]] = {}  # pool id -> (until, code)

    def pool_ref(self, kind: ProviderKind, provider: str) -> ActorRef:
        region = self.system.node_id if provider in self.node_scoped else self.region
        return self.system.ref(POOL_KIND, pool_id(kind, provider, region))

    def skipped(self, kind: ProviderKind, provider: str) -> tuple[str, float] | None:
        """(code, seconds left) while this node remembers a refusal from that pool."""
        ref = self.pool_ref(kind, provider)
        remembered = self._skips.get(ref.id)
        if remembered is None:
            return None
        left = remembered[0] - self._monotonic()
        if left <= 0:
            del self._skips[ref.id]
            return None
        return remembered[1], left

    async def acquire(self, kind: ProviderKind, provider: str, call_id: str) -> Slot:
        """A slot of `provider`'s pool, or `SlotRefused` at once (never queues)."""
        ref = self.pool_ref(kind, provider)
        skipped = self.skipped(kind, provider)
        if skipped is not None:
            raise SlotRefused(ref.id, skipped[0], skipped[1], cached=True)
        request = AcquireSlot(kind=kind, provider=provider, call_id=call_id,
                              deadline=self._clock() + self.acquire_timeout)
        try:
            granted: SlotGranted = await ref.ask(request, timeout=self.acquire_timeout,
                                                 reply_type=SlotGranted)
        except RemoteError as exc:
            if exc.code in _REMEMBERED and exc.retry_after:
                self._skips[ref.id] = (self._monotonic() + exc.retry_after, exc.code)
            raise SlotRefused(ref.id, exc.code, exc.retry_after) from None
        except ActorError as exc:  # timeout, the pool's node died, no node hosts pools
            if not self.fail_open:
                log.warning("pool %s did not answer (%s); trying the next provider", ref.id,
                            exc.code)
                raise SlotRefused(ref.id, POOL_UNAVAILABLE) from None
            log.warning("pool %s did not answer (%s); running %s without a slot", ref.id,
                        exc.code, provider)
            FAIL_OPEN.labels(kind, provider).inc()
            now = self._monotonic()
            return Slot(ref, "", kind, provider, call_id, 0.0, False, now, now, ended=True)
        now = self._monotonic()
        return Slot(ref, granted.slot_id, kind, provider, call_id, granted.hold_seconds,
                    granted.probe, now, now + granted.hold_seconds / 3)

    def renew_if_due(self, slot: Slot) -> None:
        """Tell the pool the stream still runs, once a third of the hold has passed."""
        now = self._monotonic()
        if now >= slot.renew_at and not slot.ended:
            slot.renew_at = now + slot.hold_seconds / 3
            self._send(slot, RenewSlot(slot_id=slot.slot_id, call_id=slot.call_id))

    def report(self, slot: Slot, *, ok: bool, latency_ms: float = 0.0, error_code: str = "",
               release: bool = False) -> None:
        """Tell the pool an outcome (and release the slot with it, if `release`)."""
        if slot.ended:
            return
        slot.ended = release
        self._send(slot, ReportOutcome(slot_id=slot.slot_id, ok=ok,
                                       latency_ms=round(latency_ms, 1),
                                       error_code=error_code, release=release))

    def release(self, slot: Slot) -> None:
        """Give the slot back without an outcome. Idempotent; safe while being cancelled."""
        if not slot.ended:
            slot.ended = True
            self._send(slot, ReleaseSlot(slot_id=slot.slot_id))

    def _send(self, slot: Slot, message: ReleaseSlot | RenewSlot | ReportOutcome) -> None:
        try:
            slot.pool.tell_nowait(message)
        except ActorError as exc:
            # A full local mailbox: the slot's expiry reclaims it; nothing leaks for good.
            log.warning("could not tell pool %s %s (%s); the slot expires on its own",
                        slot.pool.id, type(message).__name__, exc.code)
