"""Prometheus metrics of the actor runtime (one registry: prometheus_client's default)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

DEAD_LETTERS = Counter("switchboard_dead_letters_total",
                       "Messages no actor took, by actor kind and reason", ["kind", "reason"])
ACTOR_RESTARTS = Counter("switchboard_actor_restarts_total",
                         "Actor restarts ordered by a supervisor", ["kind"])
ACTIVE_ACTORS = Gauge("switchboard_active_actors", "Actors active on this node", ["kind"])
ACTIVATIONS = Counter("switchboard_virtual_activations_total",
                      "Virtual actor activations on this node", ["kind"])
