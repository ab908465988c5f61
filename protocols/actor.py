"""Messages of the actor runtime itself: errors, dead letters, activation, membership.

Schema evolution follows msgspec's rules: new fields get defaults, tags are never renamed or
reused, field types never change. `v` is the schema version of each struct.
"""

from __future__ import annotations

import msgspec


class ErrorReply(msgspec.Struct, frozen=True, kw_only=True, tag="sb.error"):
    """The typed error an `ask` gets back instead of its reply.

    `code` is stable and machine readable (mailbox_full, bad_message, actor_crashed,
    actor_dead, refused, ...); `message` is for people and names the fix; it never carries
    personal data.
    """

    code: str
    message: str
    retryable: bool = False
    retry_after: float | None = None
    v: int = 1


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True, tag="sb.dead_letter"):
    """A message no actor took, published on `sb.deadletter.<kind>` with the reason."""

    kind: str
    actor_id: str
    reason: str
    detail: str = ""
    node_id: str = ""
    payload: bytes = b""
    at: float = 0.0
    v: int = 1


class Activate(msgspec.Struct, frozen=True, kw_only=True, tag="sb.activate"):
    """Ask a node to host a virtual actor (it takes the lease first)."""

    kind: str
    actor_id: str
    v: int = 1


class Activated(msgspec.Struct, frozen=True, kw_only=True, tag="sb.activated"):
    """Where the actor lives now; `node_id` may be another node that already held the lease."""

    kind: str
    actor_id: str
    node_id: str
    v: int = 1


class Ping(msgspec.Struct, frozen=True, kw_only=True, tag="sb.ping"):
    v: int = 1


class Pong(msgspec.Struct, frozen=True, kw_only=True, tag="sb.pong"):
    node_id: str
    v: int = 1


class NodeInfo(msgspec.Struct, frozen=True, kw_only=True, tag="sb.node_info"):
    """A node's heartbeat in the membership bucket (which expires it by TTL)."""

    node_id: str
    region: str
    capacity: int
    load: int = 0
    actors: int = 0
    started_at: float = 0.0
    heartbeat_at: float = 0.0
    draining: bool = False
    version: str = ""
    kinds: list[str] = []
    v: int = 1


class LeaseRecord(msgspec.Struct, frozen=True, kw_only=True, tag="sb.lease"):
    """Value of a lease key: which node holds the single activation of an actor."""

    node_id: str
    acquired_at: float
    renewed_at: float
    v: int = 1


class StateRecord(msgspec.Struct, frozen=True, kw_only=True, tag="sb.state"):
    """A persisted actor state: inline bytes, or the name of an object-store object if large."""

    node_id: str
    saved_at: float
    data: bytes = b""
    object_name: str = ""
    v: int = 1
