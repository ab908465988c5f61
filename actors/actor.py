"""The `Actor` base class: private state, one message at a time, lifecycle hooks.

Subclass it, name its `kind`, list the message types it `accepts` (a msgspec Struct or a union
of tagged Structs: the wire decoder is built from it once), and implement `receive`. What
`receive` returns is the reply to an `ask` (ignored for a `tell`). Raise `Refusal` to answer with
a typed error and carry on; any other exception crashes the actor, fails the ask with
`actor_crashed`, and hands the decision (restart, stop, escalate) to its supervisor.

    class Counter(Actor):
        kind = "counter"
        accepts = Incr | Get

        async def receive(self, message: Incr | Get) -> Count | None:
            ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from switchboard.actors.mailbox import Overflow

if TYPE_CHECKING:
    from switchboard.actors.context import ActorContext


class StopActor(Exception):
    """Raise in a handler to end the actor normally (a transient child is not restarted)."""


class Actor:
    kind: ClassVar[str] = ""
    accepts: ClassVar[Any] = None
    mailbox_capacity: ClassVar[int] = 1000
    overflow: ClassVar[Overflow] = Overflow.REJECT

    context: ActorContext

    async def on_started(self) -> None:
        """Called before the first message of a fresh start."""

    async def on_restarted(self, reason: BaseException | None) -> None:
        """Called instead of `on_started` when a supervisor restarts the actor."""
        await self.on_started()

    async def on_stopping(self) -> None:
        """Called when the actor stops or is about to be restarted; release resources here."""

    async def receive(self, message: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement receive()")
