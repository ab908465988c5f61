"""JetStream KV and object store behind the `KeyValue` / `ObjectStore` interfaces.

Buckets are created if absent with the given TTL (`max_age`), so a bucket's TTL is what expires
leases, heartbeats and call snapshots whose owner stopped renewing them (an existing bucket is
bound as it is: its TTL is changed with `nats stream edit`). In a cluster, pass `replicas=3`.

Every failure to reach JetStream, KV or object store (a timeout, no stream leader while a server
of the cluster is down, a connection closed or reconnecting) is raised as `StorageError`: the
runtime's loops (heartbeat, membership, lease renewal, call state) retry on it instead of dying
with the node.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, ObjectStoreConfig, StorageType
from nats.js.errors import (
    BadRequestError,
    BucketNotFoundError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
    NotFoundError,
    ObjectNotFoundError,
)
from switchboard.storage.kv import KeyExists, KvEntry, RevisionMismatch, StorageError

_KEYS_TIMEOUT = 5.0
_OBJECT_TIMEOUT = 10.0
_OPEN_ATTEMPTS = 3


class JetStreamKV:
    def __init__(self, kv: Any) -> None:
        self._kv = kv

    async def get(self, key: str) -> KvEntry | None:
        try:
            entry = await self._kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        except NatsError as exc:
            raise _unreachable("get", key, exc) from exc
        if entry.value is None:
            return None
        return KvEntry(key, entry.value, entry.revision or 0)

    async def create(self, key: str, value: bytes) -> int:
        try:
            return int(await self._kv.create(key, value))
        except KeyWrongLastSequenceError as exc:
            raise KeyExists(key) from exc
        except NatsError as exc:
            raise _unreachable("create", key, exc) from exc

    async def update(self, key: str, value: bytes, revision: int) -> int:
        try:
            return int(await self._kv.update(key, value, last=revision))
        except (KeyWrongLastSequenceError, BadRequestError) as exc:
            raise RevisionMismatch(key) from exc
        except NatsError as exc:
            raise _unreachable("update", key, exc) from exc

    async def put(self, key: str, value: bytes) -> int:
        try:
            return int(await self._kv.put(key, value))
        except NatsError as exc:
            raise _unreachable("put", key, exc) from exc

    async def delete(self, key: str, revision: int | None = None) -> None:
        try:
            await self._kv.delete(key, last=revision)
        except (KeyWrongLastSequenceError, BadRequestError) as exc:
            raise RevisionMismatch(key) from exc
        except NatsError as exc:
            raise _unreachable("delete", key, exc) from exc

    async def entries(self) -> list[KvEntry]:
        try:
            # nats-py waits for the key watcher without a deadline: bound it here, or a watcher
            # stalled by a server failover would hang the caller's loop (membership) forever.
            async with asyncio.timeout(_KEYS_TIMEOUT):
                keys = await self._kv.keys()
        except (NoKeysError, NotFoundError):  # an empty bucket
            return []
        except (NatsError, TimeoutError) as exc:
            raise _unreachable("keys", "*", exc) from exc
        out = []
        for key in keys:
            entry = await self.get(key)
            if entry is not None:
                out.append(entry)
        return out


def _unreachable(op: str, key: str, exc: BaseException, *, store: str = "KV") -> StorageError:
    return StorageError(f"{store} {op} {key} failed ({type(exc).__name__}): JetStream "
                        "unreachable or its stream has no leader yet; retry")


class JetStreamObjects:
    def __init__(self, store: Any) -> None:
        self._store = store

    async def put(self, name: str, data: bytes) -> None:
        try:
            await self._store.put(name, data)
        except NatsError as exc:
            raise _unreachable("put", name, exc, store="object store") from exc

    async def get(self, name: str) -> bytes | None:
        try:
            # nats-py reads the chunks without a deadline, and waits for ever for chunks purged
            # under it (the object replaced or deleted meanwhile): bound it, the caller retries.
            async with asyncio.timeout(_OBJECT_TIMEOUT):
                result = await self._store.get(name)
        except ObjectNotFoundError:
            return None
        except (NatsError, TimeoutError) as exc:
            raise _unreachable("get", name, exc, store="object store") from exc
        return bytes(result.data) if result.data is not None else None

    async def delete(self, name: str) -> None:
        try:
            await self._store.delete(name)
        except ObjectNotFoundError:
            pass  # already gone: deleting is idempotent
        except NatsError as exc:
            raise _unreachable("delete", name, exc, store="object store") from exc


async def open_kv(js: JetStreamContext, bucket: str, *, ttl: float | None = None,
                  replicas: int = 1, history: int = 1) -> JetStreamKV:
    """Bind to `bucket`, creating it (file storage, given TTL and replicas) if absent.

    In a fresh cluster, asking about a bucket that another node is creating at that moment
    times out until its stream has a leader: nodes started together retry rather than fail.
    """
    for attempt in range(1, _OPEN_ATTEMPTS + 1):
        try:
            try:
                kv = await js.key_value(bucket)
            except BucketNotFoundError:
                kv = await js.create_key_value(KeyValueConfig(
                    bucket=bucket, ttl=ttl, history=history, replicas=replicas,
                    storage=StorageType.FILE))
            return JetStreamKV(kv)
        except NatsTimeout:
            if attempt == _OPEN_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


async def open_objects(js: JetStreamContext, bucket: str, *, ttl: float | None = None,
                       replicas: int = 1) -> JetStreamObjects:
    """Bind to object store `bucket`, creating it (file storage, TTL, replicas) if absent."""
    for attempt in range(1, _OPEN_ATTEMPTS + 1):  # retried as in `open_kv`
        try:
            try:
                store = await js.object_store(bucket)
            except (BucketNotFoundError, NotFoundError):
                store = await js.create_object_store(bucket, ObjectStoreConfig(
                    ttl=ttl, replicas=replicas, storage=StorageType.FILE))
            return JetStreamObjects(store)
        except NatsTimeout:
            if attempt == _OPEN_ATTEMPTS:
                raise
    raise AssertionError("unreachable")
