"""Messages a supervisor answers (node-local; supervisors are not exposed on NATS)."""

from __future__ import annotations

import msgspec


class WhichChildren(msgspec.Struct, frozen=True, kw_only=True, tag="sb.which_children"):
    v: int = 1


class ChildInfo(msgspec.Struct, frozen=True, kw_only=True, tag="sb.child_info"):
    id: str
    kind: str
    state: str
    restarts: int
    v: int = 1


class Children(msgspec.Struct, frozen=True, kw_only=True, tag="sb.children"):
    children: list[ChildInfo]
    v: int = 1
