"""The live nodes of the cluster, read from the membership bucket (heartbeats with a TTL).

Nodes write their `NodeInfo` (supervisor/heartbeat.py); the bucket's TTL removes a node that
stops. This view refreshes on an interval, and at once when the runtime learns that a node is
gone (`forget`), so placement never waits a full interval to stop choosing a dead node.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
from switchboard.protocols import NodeInfo
from switchboard.storage.kv import KeyValue, StorageError

log = logging.getLogger("switchboard.actors")


class Membership:
    def __init__(self, nodes: KeyValue, *, refresh_interval: float = 0.5) -> None:
        self._kv = nodes
        self._interval = refresh_interval
        self._nodes: dict[str, NodeInfo] = {}
        self._decoder = msgspec.msgpack.Decoder(NodeInfo)

    async def refresh(self) -> dict[str, NodeInfo]:
        nodes = {}
        for entry in await self._kv.entries():
            try:
                info = self._decoder.decode(entry.value)
            except msgspec.DecodeError:
                log.warning("ignoring undecodable membership entry %s", entry.key)
                continue
            nodes[info.node_id] = info
        self._nodes = nodes
        return nodes

    async def run(self) -> None:
        """Refresh forever (owned by the node's task owner)."""
        while True:
            try:
                await self.refresh()
            except StorageError as exc:
                log.warning("membership refresh failed: %s", exc)
            await asyncio.sleep(self._interval)

    def nodes(self) -> list[NodeInfo]:
        return list(self._nodes.values())

    def get(self, node_id: str) -> NodeInfo | None:
        return self._nodes.get(node_id)

    def forget(self, node_id: str) -> None:
        self._nodes.pop(node_id, None)

    def kinds(self) -> set[str]:
        return {k for n in self._nodes.values() for k in n.kinds}
