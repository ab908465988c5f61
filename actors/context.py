"""What an actor instance may use of the runtime: its own ref, the system, and its cell."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from switchboard.actors.cell import ActorCell
    from switchboard.actors.ref import ActorRef
    from switchboard.actors.system import ActorSystem


@dataclass(slots=True)
class ActorContext:
    ref: ActorRef
    system: ActorSystem
    cell: ActorCell

    def flush_mailbox(self) -> int:
        """Drop queued data messages except must-deliver ones (an interruption); return count."""
        return self.cell.flush_data()
