"""Every message that crosses an actor or the wire, and the subject naming scheme. Pure data."""

from switchboard.protocols.actor import (
    Activate,
    Activated,
    DeadLetter,
    ErrorReply,
    LeaseRecord,
    NodeInfo,
    Ping,
    Pong,
    StateRecord,
)
from switchboard.protocols.subjects import (
    actor_subject,
    check_token,
    dead_letter_subject,
    lease_key,
    node_subject,
)

__all__ = [
    "Activate",
    "Activated",
    "DeadLetter",
    "ErrorReply",
    "LeaseRecord",
    "NodeInfo",
    "Ping",
    "Pong",
    "StateRecord",
    "actor_subject",
    "check_token",
    "dead_letter_subject",
    "lease_key",
    "node_subject",
]
