"""JetStream KV and object store behind the `KeyValue` / `ObjectStore` interfaces.

Buckets are created if absent with the given TTL (`max_age`), so a bucket's TTL is what expires
leases and heartbeats whose owner stopped renewing them. In a cluster, pass `replicas=3`.
"""

from __future__ import annotations

from typing import Any

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


class JetStreamKV:
    def __init__(self, kv: Any) -> None:
        self._kv = kv

    async def get(self, key: str) -> KvEntry | None:
        try:
            entry = await self._kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        except NatsTimeout as exc:
            raise StorageError(f"KV get {key} timed out: is JetStream reachable?") from exc
        if entry.value is None:
            return None
        return KvEntry(key, entry.value, entry.revision or 0)

    async def create(self, key: str, value: bytes) -> int:
        try:
            return int(await self._kv.create(key, value))
        except KeyWrongLastSequenceError as exc:
            raise KeyExists(key) from exc
        except NatsTimeout as exc:
            raise StorageError(f"KV create {key} timed out") from exc

    async def update(self, key: str, value: bytes, revision: int) -> int:
        try:
            return int(await self._kv.update(key, value, last=revision))
        except (KeyWrongLastSequenceError, BadRequestError) as exc:
            raise RevisionMismatch(key) from exc
        except NatsTimeout as exc:
            raise StorageError(f"KV update {key} timed out") from exc

    async def put(self, key: str, value: bytes) -> int:
        try:
            return int(await self._kv.put(key, value))
        except NatsTimeout as exc:
            raise StorageError(f"KV put {key} timed out") from exc

    async def delete(self, key: str, revision: int | None = None) -> None:
        try:
            await self._kv.delete(key, last=revision)
        except (KeyWrongLastSequenceError, BadRequestError) as exc:
            raise RevisionMismatch(key) from exc
        except NatsTimeout as exc:
            raise StorageError(f"KV delete {key} timed out") from exc

    async def entries(self) -> list[KvEntry]:
        try:
            keys = await self._kv.keys()
        except (NoKeysError, NotFoundError):  # an empty bucket
            return []
        out = []
        for key in keys:
            entry = await self.get(key)
            if entry is not None:
                out.append(entry)
        return out


class JetStreamObjects:
    def __init__(self, store: Any) -> None:
        self._store = store

    async def put(self, name: str, data: bytes) -> None:
        await self._store.put(name, data)

    async def get(self, name: str) -> bytes | None:
        try:
            result = await self._store.get(name)
        except ObjectNotFoundError:
            return None
        return bytes(result.data) if result.data is not None else None

    async def delete(self, name: str) -> None:
        try:
            await self._store.delete(name)
        except ObjectNotFoundError:
            pass  # already gone: deleting is idempotent


async def open_kv(js: JetStreamContext, bucket: str, *, ttl: float | None = None,
                  replicas: int = 1, history: int = 1) -> JetStreamKV:
    """Bind to `bucket`, creating it (file storage, given TTL and replicas) if absent."""
    try:
        kv = await js.key_value(bucket)
    except BucketNotFoundError:
        kv = await js.create_key_value(KeyValueConfig(
            bucket=bucket, ttl=ttl, history=history, replicas=replicas,
            storage=StorageType.FILE))
    return JetStreamKV(kv)


async def open_objects(js: JetStreamContext, bucket: str, *, replicas: int = 1) -> JetStreamObjects:
    try:
        store = await js.object_store(bucket)
    except (BucketNotFoundError, NotFoundError):
        store = await js.create_object_store(bucket, ObjectStoreConfig(
            replicas=replicas, storage=StorageType.FILE))
    return JetStreamObjects(store)
