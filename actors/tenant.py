"""`TenantActor`: one tenant's admission control (a virtual actor, id = tenant id).

It admits or refuses calls against the tenant's limits, releases them when they finish, and
starts outbound calls (`Originate`). Its configuration is not in its state: it reads the
node-local `TenantDirectory` on every admission, so the file (later the tenant API) is the one
source of truth and a changed limit applies to the next call. Every node has the directory,
so the tenant can be activated on any node. `VirtualHost` builds actors with no arguments,
hence `TenantActor.bind(directory)`: a subclass carrying the node's directory.

Refusals (`Refusal` codes): `not_found` (unknown tenant or agent), `quota_exceeded` (at
`max_concurrent_calls`; `retry_after` = the tenant's `retry_after_seconds`), `rate_limited`
(at `calls_per_minute` within the last 60 s; `retry_after` = when the oldest admission of the
window ages out), `forbidden` (an originate caller id the tenant does not own),
`unavailable` (the outbound trunk could not be reached).

Quota reconciliation, or why a dead node cannot leak quota forever: every admitted call is a
**lease**. It expires `lease_seconds` (30 s) after admission unless its call actor renews it
(`RenewCall`, every lease/3); `CallFinished` releases it at once. Expired leases are swept
lazily, before each admission and usage report, which is the only time the count matters. A
node that dies stops renewing, so its calls stop counting within one lease. A live call whose
lease was swept (its renewals were lost) is counted again by its next renewal: reality wins
over the quota, so a tenant can briefly exceed its limit, never stay under it for nothing.
Admitted calls are persisted (a tenant re-activated elsewhere keeps counting them); lease
renewals are not (they would cost a KV write per call every 10 s): on activation every loaded
lease gets one full lease of grace to be renewed. Recently finished call ids are remembered in
memory so that a late renewal does not resurrect a finished call.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec
from switchboard.actors.errors import ActorError, Refusal
from switchboard.actors.virtual import VirtualActor
from switchboard.protocols.call import (
    TENANT_KIND,
    TRUNK_KIND,
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
from switchboard.protocols.media import Direction
from switchboard.protocols.subjects import check_token
from switchboard.protocols.tenants import TenantConfig, TenantDirectory, normalize_number

log = logging.getLogger("switchboard.tenant")

RATE_WINDOW = 60.0
_REMEMBER_ENDED = 1000


@dataclass(frozen=True, slots=True)
class TenantBinding:
    """What a node gives its tenant actors (see `TenantActor.bind`)."""

    directory: TenantDirectory
    clock: Callable[[], float] = time.time  # wall clock: expiries outlive a move to another node
    lease_seconds: float = 30.0
    originate_timeout: float = 5.0


class AdmittedCall(msgspec.Struct, kw_only=True):
    agent_id: str
    direction: Direction
    node_id: str
    admitted_at: float
    expires_at: float
    v: int = 1


class TenantState(msgspec.Struct, kw_only=True):
    calls: dict[str, AdmittedCall] = {}
    admissions: list[float] = []  # admission times within the rate window, oldest first
    v: int = 1


class TenantActor(VirtualActor):
    kind = TENANT_KIND
    accepts = AdmitCall | RenewCall | CallFinished | Originate | GetUsage
    State = TenantState
    state: TenantState

    binding: ClassVar[TenantBinding]

    @classmethod
    def bind(cls, directory: TenantDirectory, *, clock: Callable[[], float] = time.time,
             lease_seconds: float = 30.0, originate_timeout: float = 5.0) -> type[TenantActor]:
        """The class a node registers with its `VirtualHost`, bound to its directory."""
        binding = TenantBinding(directory, clock, lease_seconds, originate_timeout)
        return type(cls.__name__, (cls,), {"binding": binding, "__module__": cls.__module__})

    @property
    def directory(self) -> TenantDirectory:
        return self.binding.directory

    @property
    def lease_seconds(self) -> float:
        return self.binding.lease_seconds

    def clock(self) -> float:
        return self.binding.clock()

    async def on_started(self) -> None:
        now = self.clock()
        for call in self.state.calls.values():
            call.expires_at = max(call.expires_at, now + self.lease_seconds)
        self._ended: deque[str] = deque(maxlen=_REMEMBER_ENDED)
        self._ended_set: set[str] = set()

    async def receive(self, message: Any) -> Any:
        if isinstance(message, AdmitCall):
            return await self._admit(message.call_id, message.agent_id, message.direction,
                                     message.node_id)
        if isinstance(message, RenewCall):
            await self._renew(message)
            return None
        if isinstance(message, CallFinished):
            if self._end(message.call_id):
                await self.persist()
            return None
        if isinstance(message, Originate):
            return await self._originate(message)
        if isinstance(message, GetUsage):
            return self._usage()
        return None

    # -- admission --------------------------------------------------------------------------

    def _config(self) -> TenantConfig:
        config = self.directory.tenant(self.context.ref.id)
        if config is None:
            raise Refusal("not_found", f"tenant {self.context.ref.id} is not configured; add it "
                          "to the tenants file")
        return config

    async def _admit(self, call_id: str, agent_id: str, direction: Direction,
                     node_id: str) -> Admitted:
        config = self._config()
        if config.agent(agent_id) is None:
            raise Refusal("not_found", f"tenant {config.id} has no agent {agent_id}")
        admitted = Admitted(call_id=call_id, tenant_id=config.id, agent_id=agent_id,
                            lease_seconds=self.lease_seconds)
        if call_id in self.state.calls:
            return admitted  # a retried ask: same answer, no second slot
        now = self.clock()
        self._expire(now)
        limits = config.limits
        if len(self.state.calls) >= limits.max_concurrent_calls:
            raise Refusal("quota_exceeded", f"tenant {config.id} is at its limit of "
                          f"{limits.max_concurrent_calls} concurrent calls; retry later",
                          retryable=True, retry_after=limits.retry_after_seconds)
        window = [t for t in self.state.admissions if t > now - RATE_WINDOW]
        if len(window) >= limits.calls_per_minute:
            self.state.admissions = window
            raise Refusal("rate_limited", f"tenant {config.id} admitted "
                          f"{limits.calls_per_minute} calls in the last minute; retry later",
                          retryable=True,
                          # calls_per_minute: 0 refuses every call; nothing to wait for then
                          retry_after=max(window[0] + RATE_WINDOW - now, 0.01) if window
                          else limits.retry_after_seconds)
        window.append(now)
        self.state.admissions = window
        self.state.calls[call_id] = AdmittedCall(agent_id=agent_id, direction=direction,
                                                 node_id=node_id, admitted_at=now,
                                                 expires_at=now + self.lease_seconds)
        await self.persist()
        return admitted

    async def _renew(self, message: RenewCall) -> None:
        now = self.clock()
        call = self.state.calls.get(message.call_id)
        if call is not None:
            call.expires_at = now + self.lease_seconds  # soft state: not persisted
            return
        if message.call_id in self._ended_set:
            return  # a renewal that crossed the call's CallFinished
        # A live call whose lease lapsed (lost renewals, or a tenant restored from old
        # state): it is still using a slot, so count it again, above the limit if need be.
        log.warning("tenant %s: call %s renewed after its lease lapsed; counting it again",
                    self.context.ref.id, message.call_id)
        self.state.calls[message.call_id] = AdmittedCall(
            agent_id=message.agent_id, direction=message.direction, node_id=message.node_id,
            admitted_at=now, expires_at=now + self.lease_seconds)
        await self.persist()

    def _end(self, call_id: str) -> bool:
        """Forget a call (idempotent); True if it was counted."""
        if call_id not in self._ended_set:
            if len(self._ended) == self._ended.maxlen:
                self._ended_set.discard(self._ended[0])
            self._ended.append(call_id)
            self._ended_set.add(call_id)
        return self.state.calls.pop(call_id, None) is not None

    def _expire(self, now: float) -> None:
        lapsed = [cid for cid, call in self.state.calls.items() if call.expires_at <= now]
        for call_id in lapsed:
            del self.state.calls[call_id]  # not "ended": a renewal may still show it is alive
        if lapsed:
            log.warning("tenant %s: %d calls stopped renewing their lease (their node is "
                        "probably gone); their slots are free again", self.context.ref.id,
                        len(lapsed))

    def _usage(self) -> Usage:
        config = self._config()
        now = self.clock()
        self._expire(now)
        return Usage(tenant_id=config.id, active_calls=len(self.state.calls),
                     calls_last_minute=sum(1 for t in self.state.admissions
                                           if t > now - RATE_WINDOW),
                     max_concurrent_calls=config.limits.max_concurrent_calls,
                     calls_per_minute=config.limits.calls_per_minute)

    # -- outbound ---------------------------------------------------------------------------

    async def _originate(self, message: Originate) -> Originated:
        config = self._config()
        if config.agent(message.agent_id) is None:
            raise Refusal("not_found", f"tenant {config.id} has no agent {message.agent_id}")
        if message.caller_id:
            caller_id = normalize_number(message.caller_id)
            if not config.owns_number(caller_id):
                raise Refusal("forbidden", f"the caller id is not one of tenant {config.id}'s "
                              "numbers")
        elif config.numbers:
            caller_id = config.numbers[0].number
        else:
            raise Refusal("forbidden", f"tenant {config.id} has no number to call from; add "
                          "one to its `numbers`")
        call_id = message.call_id or uuid.uuid4().hex
        try:
            check_token(call_id, "call id")
        except ValueError as exc:
            raise Refusal("bad_request", str(exc)) from None
        await self._admit(call_id, message.agent_id, "outbound", "")
        trunk = self.context.system.ref(TRUNK_KIND, config.trunk)
        place = PlaceCall(call_id=call_id, tenant_id=config.id, agent_id=message.agent_id,
                          target=message.target, caller_id=caller_id,
                          lease_seconds=self.lease_seconds)
        try:
            placing = await trunk.ask(place, timeout=self.binding.originate_timeout,
                                      reply_type=Placing)
        except ActorError as exc:
            if self._end(call_id):
                await self.persist()
            raise Refusal("unavailable", f"trunk {config.trunk} could not place the call "
                          f"({exc.code}); retry later", retryable=True) from None
        return Originated(call_id=call_id, node_id=placing.node_id)
