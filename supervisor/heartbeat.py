"""The node's membership heartbeat: its `NodeInfo` rewritten into the nodes bucket.

The bucket's TTL (a few heartbeat intervals) is what removes a node that dies: nobody has to
notice and clean up after it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import msgspec
from switchboard.protocols import NodeInfo
from switchboard.storage.kv import KeyValue, StorageError

log = logging.getLogger("switchboard.node")


class Heartbeat:
    def __init__(self, nodes: KeyValue, info: Callable[[], NodeInfo], *,
                 interval: float = 0.5) -> None:
        self._kv = nodes
        self._info = info
        self.interval = interval
        self._enc = msgspec.msgpack.Encoder()

    async def beat(self) -> None:
        info = msgspec.structs.replace(self._info(), heartbeat_at=time.time())
        await self._kv.put(info.node_id, self._enc.encode(info))

    async def run(self) -> None:
        while True:
            try:
                await self.beat()
            except StorageError as exc:
                log.warning("heartbeat failed (%s); retrying", exc)
            await asyncio.sleep(self.interval)

    async def withdraw(self, node_id: str) -> None:
        """Leave the membership at once (graceful stop), rather than waiting for the TTL."""
        try:
            await self._kv.delete(node_id)
        except StorageError as exc:
            log.warning("could not withdraw heartbeat (%s); it expires by TTL", exc)
