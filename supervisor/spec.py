"""Child specifications and restart policy, after OTP's `supervisor` module.

- `Restart`: PERMANENT children are always restarted; TRANSIENT ones only after a crash (not
  after a normal exit); TEMPORARY ones never.
- `Strategy`: ONE_FOR_ONE restarts the failed child; ONE_FOR_ALL stops every other child (in
  reverse start order) and starts them all again in order; REST_FOR_ONE does that for the
  children started after the failed one.
- `RestartIntensity`: more than `max_restarts` restarts within `within` seconds and the
  supervisor gives up: it stops its children and fails, escalating to its own parent.
- `Backoff`: restarts in a burst wait longer each time (exponential, capped), so a child that
  fails against a dead dependency does not spin.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from switchboard.actors import Actor


class Restart(enum.Enum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class Strategy(enum.Enum):
    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


@dataclass(frozen=True, slots=True)
class RestartIntensity:
    max_restarts: int = 3
    within: float = 5.0


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 0.02
    factor: float = 2.0
    maximum: float = 2.0

    def delay(self, attempt: int) -> float:
        """Delay before restart number `attempt` (1-based) of the current burst."""
        if attempt <= 1 or self.initial <= 0:
            return 0.0 if attempt <= 1 else min(self.maximum, self.initial)
        return min(self.maximum, self.initial * self.factor ** (attempt - 2))


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """`id` names the child within its supervisor and is its actor id unless `actor_id` is set."""

    id: str
    actor: type[Actor]
    factory: Callable[[], Actor] | None = None
    restart: Restart = Restart.PERMANENT
    shutdown: float = 5.0
    actor_id: str | None = None
    expose: bool = True

    @property
    def name(self) -> str:
        return self.actor_id or self.id
