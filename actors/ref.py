"""`ActorRef`: the address of an actor (kind + id), usable from any node.

A ref maps to one NATS subject (`sb.actor.<kind>.<id>`); whoever holds it can `tell` or `ask`
without knowing where the actor lives. Local and remote differ only where they must:
`tell_nowait` on a full local mailbox raises `MailboxFull`; a full remote mailbox answers an ask
with a typed error and dead-letters a tell (counted on both sides).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from switchboard.protocols import actor_subject, check_token

if TYPE_CHECKING:
    from switchboard.actors.system import ActorSystem

R = TypeVar("R")


class ActorRef:
    __slots__ = ("_system", "id", "key", "kind", "subject")

    def __init__(self, system: ActorSystem, kind: str, actor_id: str) -> None:
        self.kind = check_token(kind, "actor kind")
        self.id = check_token(actor_id, "actor id")
        self.subject = actor_subject(kind, actor_id)
        self.key = (kind, actor_id)
        self._system = system

    async def tell(self, message: Any, *, must_deliver: bool = False) -> None:
        """Send without waiting for the actor; raises MailboxFull only for a full local mailbox."""
        await self._system.tell(self, message, must_deliver=must_deliver)

    def tell_nowait(self, message: Any, *, must_deliver: bool = False,
                    system: bool = False) -> None:
        """Queue for a local actor at once (raises MailboxFull); remote sends go out async."""
        self._system.tell_nowait(self, message, must_deliver=must_deliver, system=system)

    async def ask(self, message: Any, *, timeout: float = 5.0,
                  reply_type: type[R] | Any = None) -> Any:
        """Request/reply with a deadline; returns the reply decoded as `reply_type`."""
        return await self._system.ask(self, message, timeout=timeout, reply_type=reply_type)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __str__(self) -> str:
        return f"{self.kind}/{self.id}"

    def __repr__(self) -> str:
        return f"ActorRef({self.kind!r}, {self.id!r})"
