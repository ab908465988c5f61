"""The NATS subject naming scheme and the JetStream bucket names.

Every subject Switchboard uses is built here, so a reader can see the whole namespace at once
and a tenant's traffic can be confined by subject permissions later:

    sb.actor.<kind>.<id>          requests and tells to one actor (location transparent)
    sb.node.<node_id>.<verb>      control messages to one node (activate, ping, drain)
    sb.deadletter.<kind>          messages no actor could take, with a reason
    sb.events.<area>.…            events kept in JetStream streams (protocols/events.py)

Kinds and ids are single subject tokens: letters, digits, `_`, `-`, `=` and `:` only, so an id
can never smuggle a wildcard (`*`, `>`) or a token separator (`.`) into a subject.
"""

from __future__ import annotations

import re

PREFIX = "sb"
NODES_BUCKET = "sb_nodes"
LEASES_BUCKET = "sb_leases"
STATE_BUCKET = "sb_state"
STATE_OBJECTS = "sb_state_objects"
# Call snapshots (actors/call_state.py) live apart from virtual actors' state: their buckets
# have a max_age, so the conversation of a call nobody ended (its node died) expires on its own.
CALLS_BUCKET = "sb_calls"
CALLS_OBJECTS = "sb_calls_objects"  # snapshots too large for a KV value
EVENTS_PREFIX = f"{PREFIX}.events"

# Bucket TTLs. Longer than a JetStream leader election (4-9 s measured with a server of three
# killed), so an election never expires every lease or heartbeat at once; dead nodes are still
# noticed at once (their subscriptions vanish and their ping subject has no responders).
NODE_TTL = 10.0
LEASE_TTL = 20.0
# The age at which a call snapshot expires if no save refreshed it. Every save rewrites the
# key, so it only has to outlast the longest quiet stretch of a live call, at most the agent's
# `max_call_seconds` (3600 s by default): 24 h leaves room for agents configured longer.
CALL_STATE_TTL = 24 * 3600.0

_TOKEN = re.compile(r"^[A-Za-z0-9_\-=:]{1,200}$")


def check_token(value: str, what: str) -> str:
    """Return `value` if it is a safe subject token, else raise ValueError naming the fix."""
    if not _TOKEN.fullmatch(value):
        raise ValueError(
            f"invalid {what} {value!r}: use 1-200 characters from A-Z a-z 0-9 _ - = : "
            "(no dots, spaces or wildcards)"
        )
    return value


def actor_subject(kind: str, actor_id: str) -> str:
    return f"{PREFIX}.actor.{kind}.{actor_id}"


def node_subject(node_id: str, verb: str) -> str:
    return f"{PREFIX}.node.{node_id}.{verb}"


def dead_letter_subject(kind: str) -> str:
    return f"{PREFIX}.deadletter.{kind}"


def lease_key(kind: str, actor_id: str) -> str:
    """KV key of an actor's activation lease (and of its persisted state)."""
    return f"{kind}.{actor_id}"
