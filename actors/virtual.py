"""Virtual actors: activated on first message, on exactly one node, state persisted in KV.

Single activation is a lease in the leases bucket, keyed `<kind>.<id>`:
- **take**: `create` if absent. A lease held by another node is taken over (an `update` at the
  revision read, so two contenders cannot both win) only when that node is gone: it no longer
  answers its ping subject (NATS says "no responders" at once when its connection closed) or
  its heartbeat left the membership bucket. This is what brings actors back within a second of
  a SIGKILL instead of after a full lease TTL.
- **renew**: an `update` at the last revision, every `lease_ttl / 3`; a mismatch means another
  node took the actor: this activation stops at once (`LeaseLost`).
- **expire**: the bucket's TTL removes a lease that stopped being renewed.

Fencing: on activation the new owner rewrites the state key, so a stale owner that still runs
somewhere (e.g. cut off from NATS) fails its next `persist()` on the revision check and stops.
State too large for a KV value goes to the object store; the KV record then names the object.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, ClassVar

import msgspec
from switchboard.actors.actor import Actor
from switchboard.actors.cell import ActorCell, Parent
from switchboard.actors.errors import ActorNotFound, AskTimeout, LeaseLost, RemoteError
from switchboard.actors.membership import Membership
from switchboard.actors.metrics import ACTIVATIONS
from switchboard.actors.placement import choose_node
from switchboard.actors.ref import ActorRef
from switchboard.actors.system import ActorSystem
from switchboard.actors.transport import Inbound, NoResponders, TransportError
from switchboard.protocols import (
    Activate,
    Activated,
    ErrorReply,
    LeaseRecord,
    Ping,
    Pong,
    StateRecord,
    lease_key,
    node_subject,
)
from switchboard.protocols.subjects import LEASE_TTL
from switchboard.storage.kv import (
    KeyExists,
    KeyValue,
    ObjectStore,
    RevisionMismatch,
    StorageError,
)

log = logging.getLogger("switchboard.actors")

INLINE_STATE_LIMIT = 256 * 1024


class VirtualActor(Actor):
    """An actor addressable by id anywhere, with a `state` Struct restored on re-activation."""

    State: ClassVar[type[msgspec.Struct]]
    state: Any

    def initial_state(self) -> Any:
        return self.State()

    async def persist(self) -> None:
        """Save `self.state` (fenced: raises LeaseLost if another node took this actor)."""
        host: VirtualHost = self.context.system.activator  # type: ignore[assignment]
        await host.save_state(self.context.ref, self.state)


class VirtualHost:
    def __init__(self, system: ActorSystem, *, leases: KeyValue, states: KeyValue,
                 objects: ObjectStore | None = None, membership: Membership | None = None,
                 lease_ttl: float = LEASE_TTL, supervisor: Parent | None = None) -> None:
        self.system = system
        self.leases = leases
        self.states = states
        self.objects = objects
        self.membership = membership
        self.lease_ttl = lease_ttl
        self.supervisor = supervisor
        self.draining = False
        self._kinds: dict[str, type[VirtualActor]] = {}
        self._lease_revs: dict[tuple[str, str], int] = {}
        self._state_revs: dict[tuple[str, str], int] = {}
        # The last persisted state, encoded: a restart after a crash decodes a fresh copy, so
        # what the crashed instance changed without persisting does not leak into the next.
        self._last_state: dict[tuple[str, str], bytes] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._enc = msgspec.msgpack.Encoder()
        self._lease_dec = msgspec.msgpack.Decoder(LeaseRecord)
        self._state_dec = msgspec.msgpack.Decoder(StateRecord)
        self._activate_dec = msgspec.msgpack.Decoder(Activate | Ping)
        self._reply_dec = msgspec.msgpack.Decoder(Activated | ErrorReply)
        system.activator = self
        system.on_cell_closed.append(self._on_cell_closed)

    def register(self, cls: type[VirtualActor]) -> None:
        self.system.register_kind(cls)
        self._kinds[cls.kind] = cls

    def hosted_kinds(self) -> list[str]:
        return sorted(self._kinds)

    async def start(self) -> None:
        nid = self.system.node_id
        await self.system.transport.subscribe(node_subject(nid, "activate"), self._on_control)
        await self.system.transport.subscribe(node_subject(nid, "ping"), self._on_control)
        self.system.tasks.spawn(self._renew_leases(), name="lease-renewal")

    # -- Activator: the client side ---------------------------------------------------------

    def is_virtual(self, kind: str) -> bool:
        return kind in self._kinds or (self.membership is not None
                                       and kind in self.membership.kinds())

    async def activate(self, ref: ActorRef, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        tried: set[str] = set()
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AskTimeout(f"could not activate {ref} before the deadline")
            target = self._place(ref, tried)
            if target is None:
                if tried:  # every candidate failed: wait for membership to catch up
                    tried.clear()
                    await asyncio.sleep(min(0.05, remaining))
                    continue
                raise ActorNotFound(f"no live node hosts actors of kind {ref.kind!r}; "
                                    "start a node that registers it")
            if target == self.system.node_id:
                await self.activate_here(ref.kind, ref.id)
                return
            data = self._enc.encode(Activate(kind=ref.kind, actor_id=ref.id))
            try:
                rep = await self.system.transport.request(node_subject(target, "activate"), data,
                                                          timeout=min(remaining, 2.0))
            except (NoResponders, TransportError):
                tried.add(target)
                if self.membership is not None:
                    self.membership.forget(target)
                continue
            answer = self._reply_dec.decode(rep.data)
            if isinstance(answer, ErrorReply):
                if answer.code == "draining":
                    tried.add(target)
                    continue
                if answer.retryable:  # lease contended or storage electing a leader: again
                    await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))
                    continue
                if answer.code == "activation_failed":
                    raise RemoteError(answer.code, answer.message)
                raise ActorNotFound(answer.message)
            return

    def _place(self, ref: ActorRef, tried: set[str]) -> str | None:
        if self.membership is None:
            return None if ref.kind not in self._kinds or self.system.node_id in tried \
                else self.system.node_id
        nodes = [n for n in self.membership.nodes() if n.node_id not in tried]
        chosen = choose_node(ref.subject, nodes, region=self.system.region, kind=ref.kind)
        return None if chosen is None else chosen.node_id

    async def lapsed(self, ref: ActorRef) -> bool:
        try:
            entry = await self.leases.get(lease_key(ref.kind, ref.id))
        except StorageError:
            return False  # cannot tell now: the ask's deadline settles it
        if entry is None:
            return True
        holder = self._lease_dec.decode(entry.value).node_id
        return not await self._node_alive(holder)

    async def _node_alive(self, node_id: str) -> bool:
        if node_id == self.system.node_id:
            return True
        try:
            await self.system.transport.request(node_subject(node_id, "ping"),
                                                self._enc.encode(Ping()), timeout=0.5)
        except NoResponders:
            if self.membership is not None:
                self.membership.forget(node_id)
            return False
        except TransportError:
            return True  # slow is not dead: the lease TTL settles it
        return True

    # -- the hosting side ---------------------------------------------------------------------

    async def _on_control(self, msg: Inbound) -> None:
        try:
            request = self._activate_dec.decode(msg.data)
        except msgspec.DecodeError:
            self.system.dead_letter("node", self.system.node_id, "bad_message")
            return
        if isinstance(request, Ping):
            answer: Any = Pong(node_id=self.system.node_id)
        elif self.draining:
            answer = ErrorReply(code="draining", message="this node is draining", retryable=True)
        elif request.kind not in self._kinds:
            answer = ErrorReply(code="not_found", message=f"kind {request.kind!r} not hosted here")
        else:
            try:
                node = await self.activate_here(request.kind, request.actor_id)
                answer = Activated(kind=request.kind, actor_id=request.actor_id, node_id=node)
            except (LeaseLost, RevisionMismatch, KeyExists, StorageError) as exc:
                answer = ErrorReply(code="retry", message=str(exc), retryable=True)
            except Exception as exc:  # noqa: BLE001 - the actor's start hook may raise anything
                answer = ErrorReply(code="activation_failed",
                                    message=f"{request.kind} failed to start here "
                                            f"({type(exc).__name__}); see the node's log")
        if msg.reply:
            try:
                await self.system.transport.publish(msg.reply, self._enc.encode(answer))
            except TransportError as exc:
                log.warning("could not answer an activation request: %s", exc)

    async def activate_here(self, kind: str, actor_id: str) -> str:
        """Host the actor here unless another live node holds its lease; return the host."""
        key = (kind, actor_id)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cell = self.system.cell(ActorRef(self.system, kind, actor_id))
            if cell is not None and not cell.closed:
                return self.system.node_id
            holder = await self._take_lease(kind, actor_id)
            if holder != self.system.node_id:
                return holder
            try:
                state = await self._load_and_claim_state(kind, actor_id)
                self._last_state[key] = loaded = self._enc.encode(state)
                cls = self._kinds[kind]

                def factory() -> Actor:
                    instance = cls()
                    instance.state = msgspec.msgpack.decode(self._last_state.get(key, loaded),
                                                            type=cls.State)
                    return instance

                await self.system.spawn(cls, actor_id, factory=factory, parent=self.supervisor)
            except BaseException:
                await self._release_lease(key)
                raise
            ACTIVATIONS.labels(kind).inc()
            return self.system.node_id

    async def _take_lease(self, kind: str, actor_id: str) -> str:
        key = lease_key(kind, actor_id)
        me = self.system.node_id
        now = time.time()
        record = self._enc.encode(LeaseRecord(node_id=me, acquired_at=now, renewed_at=now))
        for _ in range(5):
            entry = await self.leases.get(key)
            try:
                if entry is None:
                    rev = await self.leases.create(key, record)
                else:
                    holder = self._lease_dec.decode(entry.value).node_id
                    if holder != me and await self._node_alive(holder):
                        return holder
                    rev = await self.leases.update(key, record, entry.revision)
            except (KeyExists, RevisionMismatch):
                continue  # somebody moved first: read again
            self._lease_revs[(kind, actor_id)] = rev
            return me
        raise LeaseLost(f"lease for {kind}/{actor_id} is contended; retry")

    async def _load_and_claim_state(self, kind: str, actor_id: str) -> Any:
        key = lease_key(kind, actor_id)
        cls = self._kinds[kind]
        entry = await self.states.get(key)
        if entry is None:
            self._state_revs.pop((kind, actor_id), None)
            return cls().initial_state()
        record = self._state_dec.decode(entry.value)
        data = record.data
        if record.object_name and self.objects is not None:
            data = await self.objects.get(record.object_name) or b""
        state = msgspec.msgpack.decode(data, type=cls.State)
        claimed = msgspec.structs.replace(record, node_id=self.system.node_id)
        self._state_revs[(kind, actor_id)] = await self.states.update(
            key, self._enc.encode(claimed), entry.revision)
        return state

    async def save_state(self, ref: ActorRef, state: Any) -> None:
        key = lease_key(ref.kind, ref.id)
        data = self._enc.encode(state)
        if len(data) > INLINE_STATE_LIMIT and self.objects is not None:
            await self.objects.put(key, data)
            record = StateRecord(node_id=self.system.node_id, saved_at=time.time(),
                                 object_name=key)
        else:
            record = StateRecord(node_id=self.system.node_id, saved_at=time.time(), data=data)
        encoded = self._enc.encode(record)
        rev = self._state_revs.get(ref.key)
        try:
            if rev is None:
                rev = await self.states.create(key, encoded)
            else:
                rev = await self.states.update(key, encoded, rev)
        except (KeyExists, RevisionMismatch):
            self._lost(ref)
            raise LeaseLost(f"{ref} was taken over by another node; this activation stops") \
                from None
        self._state_revs[ref.key] = rev
        self._last_state[ref.key] = data

    def _lost(self, ref: ActorRef) -> None:
        self._lease_revs.pop(ref.key, None)
        cell = self.system.cell(ref)
        if cell is not None and not cell.closed:
            self.system.tasks.spawn(cell.stop(), name=f"lease-lost:{ref}")

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            now = time.time()
            for key, rev in list(self._lease_revs.items()):
                kind, actor_id = key
                record = LeaseRecord(node_id=self.system.node_id, acquired_at=now,
                                     renewed_at=now)
                try:
                    renewed = await self.leases.update(
                        lease_key(kind, actor_id), self._enc.encode(record), rev)
                except RevisionMismatch:
                    if self._lease_revs.get(key) != rev:
                        continue  # released (and maybe taken again) while this was in flight
                    log.warning("lease of %s/%s lost; stopping this activation", kind, actor_id)
                    self._lost(ActorRef(self.system, kind, actor_id))
                    continue
                except StorageError as exc:
                    # NATS unreachable for a moment (a server of the cluster died): try again
                    # next round; if the lease expired meanwhile, that update says so.
                    log.warning("could not renew lease of %s/%s (%s)", kind, actor_id, exc)
                    continue
                if self._lease_revs.get(key) == rev:
                    self._lease_revs[key] = renewed
                else:
                    # Released while in flight: its delete missed the revision written here,
                    # so give the lease back now rather than hold it with no actor behind it.
                    with contextlib.suppress(StorageError):  # else it expires by TTL
                        await self.leases.delete(lease_key(kind, actor_id), revision=renewed)

    def _on_cell_closed(self, cell: ActorCell) -> None:
        key = cell.ref.key
        if cell.ref.kind in self._kinds and key in self._lease_revs:
            self.system.tasks.spawn(self._release_lease(key), name=f"release:{cell.ref}")
        self._last_state.pop(key, None)
        self._state_revs.pop(key, None)

    async def _release_lease(self, key: tuple[str, str]) -> None:
        rev = self._lease_revs.pop(key, None)
        if rev is None:
            return
        try:
            await self.leases.delete(lease_key(*key), revision=rev)
        except RevisionMismatch:
            pass  # someone else holds it now: nothing of ours to release

    async def drain(self, timeout: float = 10.0) -> int:
        """Stop taking activations and hand every local virtual actor back (state persisted
        by its own `on_stopping`, leases released so the next message activates it elsewhere)."""
        self.draining = True
        refs = [ActorRef(self.system, k, i) for (k, i) in list(self._lease_revs)]
        for ref in refs:
            await self.system.stop(ref, timeout)
        for key in list(self._lease_revs):
            await self._release_lease(key)
        return len(refs)
