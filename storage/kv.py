"""The key-value interface the runtime needs (leases, membership, actor state), and its errors.

Two implementations: JetStream KV (`storage.jetstream`) in every real deployment, and an
in-memory one (`storage.kv_memory`) for unit tests. Revisions make compare-and-set possible:
single activation and fencing of a stale owner both rest on `create` and `update(revision)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class StorageError(Exception):
    """The store could not be reached or refused the operation."""


class KeyExists(StorageError):
    """`create` found the key already there."""


class RevisionMismatch(StorageError):
    """`update` found a newer revision (or no key): someone else wrote first."""


@dataclass(frozen=True, slots=True)
class KvEntry:
    key: str
    value: bytes
    revision: int


class KeyValue(Protocol):
    async def get(self, key: str) -> KvEntry | None: ...

    async def create(self, key: str, value: bytes) -> int: ...

    async def update(self, key: str, value: bytes, revision: int) -> int: ...

    async def put(self, key: str, value: bytes) -> int: ...

    async def delete(self, key: str, revision: int | None = None) -> None: ...

    async def entries(self) -> list[KvEntry]: ...


class ObjectStore(Protocol):
    async def put(self, name: str, data: bytes) -> None: ...

    async def get(self, name: str) -> bytes | None: ...

    async def delete(self, name: str) -> None: ...
