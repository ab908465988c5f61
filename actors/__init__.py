"""The actor runtime: actors, refs, mailboxes, the system, transports, virtual actors."""

from switchboard.actors.actor import Actor, StopActor
from switchboard.actors.cell import ActorCell, Decision, Directive, Parent
from switchboard.actors.errors import (
    ActorDeadError,
    ActorError,
    ActorNotFound,
    AskTimeout,
    BadMessage,
    LeaseLost,
    MailboxFull,
    Refusal,
    RemoteError,
)
from switchboard.actors.mailbox import Mailbox, Overflow
from switchboard.actors.ref import ActorRef
from switchboard.actors.system import ActorSystem
from switchboard.actors.transport import NoResponders, Transport

__all__ = [
    "Actor",
    "ActorCell",
    "ActorDeadError",
    "ActorError",
    "ActorNotFound",
    "ActorRef",
    "ActorSystem",
    "AskTimeout",
    "BadMessage",
    "Decision",
    "Directive",
    "LeaseLost",
    "Mailbox",
    "MailboxFull",
    "NoResponders",
    "Overflow",
    "Parent",
    "Refusal",
    "RemoteError",
    "StopActor",
    "Transport",
]
