"""Supervision trees, the node (root supervisor, membership heartbeat, drain) and the CLI."""

from switchboard.supervisor.spec import Backoff, ChildSpec, Restart, RestartIntensity, Strategy
from switchboard.supervisor.supervisor import Supervisor, SupervisorGaveUp

__all__ = [
    "Backoff",
    "ChildSpec",
    "Restart",
    "RestartIntensity",
    "Strategy",
    "Supervisor",
    "SupervisorGaveUp",
]
