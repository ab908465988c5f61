"""Where a virtual actor should live: weighted rendezvous hashing with region preference.

Rendezvous (highest random weight) hashing gives every (actor, node) pair a score; the actor
goes to the best-scoring node. When a node joins or leaves, only the actors whose best node
changed move, and every client computes the same answer without coordination. Weights are the
nodes' capacities (the logarithmic method of Schindelhauer and Schomaker, so a node with twice
the capacity gets twice the actors). Nodes that are draining or full are skipped, and nodes of
the caller's region are preferred while any of them has room.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence

from switchboard.protocols import NodeInfo


def _unit_hash(key: str, node_id: str) -> float:
    digest = hashlib.blake2b(f"{key}\x00{node_id}".encode(), digest_size=8).digest()
    # Map to (0, 1): never exactly 0, whose log is -inf.
    return (int.from_bytes(digest, "big") + 1) / (2**64 + 1)


def score(key: str, node: NodeInfo) -> float:
    return -max(node.capacity, 1) / math.log(_unit_hash(key, node.node_id))


def eligible(nodes: Iterable[NodeInfo], kind: str | None = None) -> list[NodeInfo]:
    return [n for n in nodes
            if not n.draining and n.load < n.capacity and (kind is None or kind in n.kinds)]


def choose_node(key: str, nodes: Sequence[NodeInfo], *, region: str | None = None,
                kind: str | None = None) -> NodeInfo | None:
    """The node for `key`, or None when no live node can host it."""
    candidates = eligible(nodes, kind)
    if region is not None:
        local = [n for n in candidates if n.region == region]
        candidates = local or candidates
    if not candidates:
        return None
    return max(candidates, key=lambda n: score(key, n))
