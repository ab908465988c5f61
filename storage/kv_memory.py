"""In-memory `KeyValue` and `ObjectStore` with TTL, for unit tests of leases and membership."""

from __future__ import annotations

import time

from switchboard.storage.kv import KeyExists, KvEntry, RevisionMismatch


class MemoryKeyValue:
    def __init__(self, ttl: float | None = None) -> None:
        self.ttl = ttl
        self._data: dict[str, tuple[bytes, int, float]] = {}
        self._rev = 0

    def _live(self, key: str) -> tuple[bytes, int, float] | None:
        item = self._data.get(key)
        if item is not None and self.ttl is not None and time.monotonic() - item[2] > self.ttl:
            del self._data[key]
            return None
        return item

    def _write(self, key: str, value: bytes) -> int:
        self._rev += 1
        self._data[key] = (value, self._rev, time.monotonic())
        return self._rev

    async def get(self, key: str) -> KvEntry | None:
        item = self._live(key)
        return None if item is None else KvEntry(key, item[0], item[1])

    async def create(self, key: str, value: bytes) -> int:
        if self._live(key) is not None:
            raise KeyExists(key)
        return self._write(key, value)

    async def update(self, key: str, value: bytes, revision: int) -> int:
        item = self._live(key)
        if item is None or item[1] != revision:
            raise RevisionMismatch(key)
        return self._write(key, value)

    async def put(self, key: str, value: bytes) -> int:
        return self._write(key, value)

    async def delete(self, key: str, revision: int | None = None) -> None:
        item = self._live(key)
        if item is None:
            return
        if revision is not None and item[1] != revision:
            raise RevisionMismatch(key)
        del self._data[key]

    async def entries(self) -> list[KvEntry]:
        out = []
        for key in list(self._data):
            item = self._live(key)
            if item is not None:
                out.append(KvEntry(key, item[0], item[1]))
        return out


class MemoryObjectStore:
    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}

    async def put(self, name: str, data: bytes) -> None:
        self._data[name] = data

    async def get(self, name: str) -> bytes | None:
        return self._data.get(name)

    async def delete(self, name: str) -> None:
        self._data.pop(name, None)
