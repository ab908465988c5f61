"""Call persistence: one call's `CallSnapshot`, written off the media path, expiring on its own.

The call actor saves its snapshot (and, inside it, the agent's conversation state) after each
turn; a call actor restarted by the calls supervisor loads it and resumes the conversation.
Key: `call.<call_id>`, `call_hex.<hex>` for the ids JetStream keys cannot hold. The key is
deleted when the call ends.

Where (`CallBucket`, which the node hands to call actors as `CallServices.states`): the
`sb_calls` KV bucket, not `sb_state`. A snapshot is personal data, and when a node dies nobody
ends its calls, so their keys must expire by themselves. `sb_calls` has a `max_age`
(`NodeConfig.call_state_ttl`, 24 h by default) and each save rewrites the key, which restarts
its age: a live call keeps its snapshot (the TTL only has to outlast the longest gap between two
saves, at most the agent's `max_call_seconds`), an orphan is gone one TTL after its last save.
A bucket of its own because a max_age on `sb_state` would expire virtual actors' state too;
per-message TTLs (nats-server 2.11+) would need revision-checked writes (nats-py's `put` takes
no TTL) and have no counterpart in the object store.

Large snapshots: a KV value is one NATS message, at most the server's `max_payload` (1 MiB by
default). A record that would not fit goes to the `sb_calls_objects` object store (same max_age)
under the key's name, with a small pointer in the KV, as virtual actors' large state does. Not
trimming the oldest turns instead: the conversation state is the brain's own encoding (opaque
bytes here), and a trimmed conversation would resume with an agent that forgot what the caller
said. Values in `sb_calls` are `StateRecord`s (inline `data`, or an `object_name`) naming the
node that wrote them; a plain `KeyValue` (unit tests) holds the bare snapshot.

`save` returns at once: a task owned by the call actor (`run`) writes, latest first wins: a
save made while a write is in flight replaces any save still waiting, so a slow store never
queues more than one snapshot. A failed write is retried with back-off (a JetStream leader
election takes seconds); the snapshot is personal data and never logged. Before a restart
the crashed incarnation `flush`es, so the next one reads the latest state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import msgspec
from switchboard.protocols import StateRecord
from switchboard.protocols.conversation import CallSnapshot
from switchboard.protocols.subjects import lease_key
from switchboard.storage.kv import KeyValue, KvEntry, ObjectStore, StorageError

log = logging.getLogger("switchboard.call")

CALL_STATE_KIND = "call"


def snapshot_key(call_id: str) -> str:
    """`call.<call_id>`; ids with a `:` (a valid token, not a valid KV key) go hex-encoded."""
    if ":" in call_id:
        return f"{CALL_STATE_KIND}_hex.{call_id.encode().hex()}"
    return lease_key(CALL_STATE_KIND, call_id)


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(CallSnapshot)
_RECORD_DECODER = msgspec.msgpack.Decoder(StateRecord)


class CallBucket:
    """The `KeyValue` of call snapshots: `StateRecord`s in `kv`, a value whose record would
    exceed `max_value` bytes in `objects` behind a pointer record.

    Give both buckets the same max_age, so an object expires with its pointer. Objects are
    named after their key; the ones this process wrote are deleted when their key is, or when
    a save that fits inline replaces them (one missed by either expires on its own).
    """

    def __init__(self, kv: KeyValue, objects: ObjectStore, *, max_value: int,
                 node_id: str) -> None:
        self._kv = kv
        self._objects = objects
        self._max_value = max_value
        self._node_id = node_id
        self._in_objects: set[str] = set()
        self.objects_written = 0

    async def get(self, key: str) -> KvEntry | None:
        entry = await self._kv.get(key)
        return None if entry is None else await self._resolve(entry)

    async def create(self, key: str, value: bytes) -> int:
        return await self._write(key, value, lambda record: self._kv.create(key, record))

    async def update(self, key: str, value: bytes, revision: int) -> int:
        return await self._write(key, value,
                                 lambda record: self._kv.update(key, record, revision))

    async def put(self, key: str, value: bytes) -> int:
        return await self._write(key, value, lambda record: self._kv.put(key, record))

    async def delete(self, key: str, revision: int | None = None) -> None:
        await self._kv.delete(key, revision)
        if key in self._in_objects:
            await self._delete_object(key)

    async def entries(self) -> list[KvEntry]:
        resolved = [await self._resolve(entry) for entry in await self._kv.entries()]
        return [entry for entry in resolved if entry is not None]

    async def _resolve(self, entry: KvEntry) -> KvEntry | None:
        try:
            record = _RECORD_DECODER.decode(entry.value)
        except msgspec.DecodeError:
            log.error("call state record %s cannot be decoded; it is ignored", entry.key)
            return None
        if not record.object_name:
            return KvEntry(entry.key, record.data, entry.revision)
        # An object replaced, deleted or expired (its chunks first) while read fails the read
        # with StorageError at the store's deadline.
        data = await self._objects.get(record.object_name)
        return None if data is None else KvEntry(entry.key, data, entry.revision)

    async def _write(self, key: str, value: bytes,
                     write: Callable[[bytes], Awaitable[int]]) -> int:
        now = time.time()
        record = _ENCODER.encode(StateRecord(node_id=self._node_id, saved_at=now, data=value))
        if len(record) <= self._max_value:
            revision = await write(record)
            if key in self._in_objects:  # the previous value was large: its object is stale
                await self._delete_object(key)
            return revision
        await self._objects.put(key, value)  # first: a pointer never names a missing object
        self._in_objects.add(key)
        self.objects_written += 1
        return await write(_ENCODER.encode(
            StateRecord(node_id=self._node_id, saved_at=now, object_name=key)))

    async def _delete_object(self, key: str) -> None:
        """Best effort: the object store's max_age removes what is left behind."""
        try:
            await self._objects.delete(key)
        except StorageError as exc:
            log.warning("call state object %s not deleted (%s); it expires with its bucket",
                        key, type(exc).__name__)
            return
        self._in_objects.discard(key)


class CallStateStore:
    """Persistence of one call; `kv=None` persists nothing (and a crash then ends the call)."""

    def __init__(self, kv: KeyValue | None, call_id: str, *, retry_initial: float = 0.05,
                 retry_max: float = 1.0) -> None:
        self._kv = kv
        self._key = snapshot_key(call_id)
        self._call_id = call_id
        self._waiting: bytes | None = None
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self.writes = 0

    @property
    def enabled(self) -> bool:
        return self._kv is not None

    async def load(self, timeout: float) -> CallSnapshot | None:
        """The last snapshot saved, or None (none saved, the store is off or unreachable)."""
        if self._kv is None:
            return None
        try:
            async with asyncio.timeout(timeout):
                entry = await self._kv.get(self._key)
        except (StorageError, TimeoutError) as exc:
            log.error("call %s: could not load its saved state (%s)", self._call_id,
                      type(exc).__name__)
            return None
        if entry is None:
            return None
        try:
            return _DECODER.decode(entry.value)
        except msgspec.DecodeError:
            log.error("call %s: its saved state cannot be decoded; it is ignored", self._call_id)
            return None

    def save(self, snapshot: CallSnapshot) -> None:
        if self._kv is None:
            return
        self._waiting = _ENCODER.encode(snapshot)
        self._idle.clear()
        self._wakeup.set()

    async def run(self) -> None:
        """Write saved snapshots until cancelled (a task owned by the call actor)."""
        delay = self._retry_initial
        while True:
            if self._waiting is None:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            data, self._waiting = self._waiting, None
            try:
                assert self._kv is not None
                await self._kv.put(self._key, data)
            except StorageError as exc:
                if self._waiting is None:  # nothing newer: this one is still the latest
                    self._waiting = data
                log.warning("call %s: state not saved yet (%s); retrying in %.2fs",
                            self._call_id, type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
                continue
            self.writes += 1
            delay = self._retry_initial

    async def flush(self, timeout: float) -> bool:
        """Wait until the latest snapshot is written; False if `timeout` came first."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            log.error("call %s: its latest state was not saved within %.1fs", self._call_id,
                      timeout)
            return False
        return True

    async def delete(self, timeout: float) -> None:
        """Forget the call's state (it ended); best effort: a stale key holds no slot."""
        self._waiting = None
        if self._kv is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._kv.delete(self._key)
        except (StorageError, TimeoutError) as exc:
            log.warning("call %s: its saved state was not deleted (%s)", self._call_id,
                        type(exc).__name__)
