"""Messages of a call's life between gateways, the tenant actor, the calls supervisor and the
call actor.

Inbound, as the SIP or web gateway sees it:

    gateway --AdmitCall--> tenant/<tenant_id>          Admitted, or a refusal (below)
    gateway registers the MediaLeg in the node's MediaLegRegistry
    gateway --StartCall--> calls/calls (this node)     CallSpawned
    call/<call_id> --RenewCall--> tenant               every lease_seconds / 3
    call/<call_id> --CallFinished--> tenant            on every ending path (idempotent)

Outbound: `Originate` to the tenant actor; the tenant admits the call and sends `PlaceCall` to
the trunk actor (`trunk/<trunk id>`, run by the node that owns the SIP trunk), which dials and,
once answered, starts the call actor like an inbound call with the call already admitted. If
dialling fails (busy, no answer) the trunk sends `CallFinished` itself.

Refusals (`actors.errors.RemoteError.code`) and what a gateway answers:
`quota_exceeded` (486 / 503 + Retry-After = `retry_after`), `rate_limited` (503 + Retry-After),
`not_found` (404: unknown tenant, agent or number), `forbidden` (403), `unavailable` (503).

Caller and callee are personal data: they travel in messages but never in logs or error texts.
All structs are tagged, frozen and kw_only; `v` is the schema version (msgspec evolution rules).
"""

from __future__ import annotations

import msgspec
from switchboard.protocols.media import Direction

CALLS_KIND = "calls"  # the node-local supervisor of call actors: ref (CALLS_KIND, CALLS_ID)
CALLS_ID = "calls"
CALL_KIND = "call"
TENANT_KIND = "tenant"
TRUNK_KIND = "trunk"

# Why a call ended (`CallFinished.reason`, `CallEnded.reason`); new reasons may be added.
CALLER_HANGUP = "caller_hangup"
AGENT_HANGUP = "agent_hangup"
API_HANGUP = "api_hangup"
MAX_DURATION = "max_duration"
RTP_TIMEOUT = "rtp_timeout"
TRANSFERRED = "transferred"
NO_AGENT = "agent_unavailable"  # the agent's brain is not available on this node
ERROR = "error"                 # the call actor crashed or could not start
SHUTDOWN = "shutdown"           # the node stopped the call (drain)
# An outbound call that was never answered (the trunk's CallFinished and call.ended):
BUSY = "busy"                   # SIP 486 / 600
NO_ANSWER = "no_answer"         # ringing until the trunk's ring timeout, or 408 / 480 / 487
REJECTED = "rejected"           # 403 / 603: the callee (or the carrier) declined
UNREACHABLE = "unreachable"     # 404 / 484 / 604, a 5xx, or the trunk could not be reached


class AdmitCall(msgspec.Struct, frozen=True, kw_only=True, tag="call.admit"):
    """Ask the tenant for a slot. Idempotent per `call_id` (a retried ask gets the same
    answer)."""

    call_id: str
    agent_id: str
    direction: Direction = "inbound"
    node_id: str = ""  # the media node, for operators reading the tenant's state
    v: int = 1


class Admitted(msgspec.Struct, frozen=True, kw_only=True, tag="call.admitted"):
    """The call holds one of the tenant's slots until `CallFinished`, or until its lease
    (`lease_seconds`, renewed by `RenewCall`) lapses because its node died."""

    call_id: str
    tenant_id: str
    agent_id: str
    lease_seconds: float
    v: int = 1


class RenewCall(msgspec.Struct, frozen=True, kw_only=True, tag="call.renew"):
    """The call is alive: extend its lease. Re-admits a call the tenant had expired."""

    call_id: str
    agent_id: str = ""
    direction: Direction = "inbound"
    node_id: str = ""
    v: int = 1


class CallFinished(msgspec.Struct, frozen=True, kw_only=True, tag="call.finished"):
    """Release the call's slot. Idempotent: a second one for the same call does nothing."""

    call_id: str
    reason: str
    duration: float = 0.0
    v: int = 1


class StartCall(msgspec.Struct, frozen=True, kw_only=True, tag="call.start"):
    """Start the call actor for an admitted call whose leg is registered on `media_node`."""

    call_id: str
    tenant_id: str
    agent_id: str
    caller: str          # personal data
    callee: str          # personal data
    direction: Direction = "inbound"
    media_node: str = ""
    lease_seconds: float = 30.0
    v: int = 1


class CallSpawned(msgspec.Struct, frozen=True, kw_only=True, tag="call.spawned"):
    call_id: str
    node_id: str
    v: int = 1


class HangUp(msgspec.Struct, frozen=True, kw_only=True, tag="call.hang_up"):
    """End the call from outside (the tenant API, an operator)."""

    reason: str = API_HANGUP
    v: int = 1


class SendDtmf(msgspec.Struct, frozen=True, kw_only=True, tag="call.send_dtmf"):
    """Send DTMF keys to the far end (e.g. to navigate a remote IVR). Digits: personal data."""

    digits: str
    v: int = 1


class Transfer(msgspec.Struct, frozen=True, kw_only=True, tag="call.transfer"):
    """Blind-transfer the caller to `target` (a SIP URI or E.164 number)."""

    target: str
    v: int = 1


class Originate(msgspec.Struct, frozen=True, kw_only=True, tag="call.originate"):
    """Place an outbound call from the tenant's `agent_id` to `target` (SIP URI or E.164).

    `caller_id` must be one of the tenant's numbers (empty: its first number). `call_id` may
    be given for idempotent retries; empty, the tenant makes one.
    """

    agent_id: str
    target: str
    caller_id: str = ""
    call_id: str = ""
    v: int = 1


class Originated(msgspec.Struct, frozen=True, kw_only=True, tag="call.originated"):
    """The trunk took the call and is dialling; lifecycle events follow on the event stream."""

    call_id: str
    node_id: str
    v: int = 1


class PlaceCall(msgspec.Struct, frozen=True, kw_only=True, tag="call.place"):
    """To the trunk actor: dial `target` for an admitted outbound call."""

    call_id: str
    tenant_id: str
    agent_id: str
    target: str          # personal data
    caller_id: str       # personal data
    lease_seconds: float = 30.0
    v: int = 1


class Placing(msgspec.Struct, frozen=True, kw_only=True, tag="call.placing"):
    """The trunk's answer to `PlaceCall`: dialling has begun on `node_id`."""

    call_id: str
    node_id: str
    v: int = 1


class GetUsage(msgspec.Struct, frozen=True, kw_only=True, tag="tenant.get_usage"):
    v: int = 1


class Usage(msgspec.Struct, frozen=True, kw_only=True, tag="tenant.usage"):
    """A tenant's live counters against its limits."""

    tenant_id: str
    active_calls: int
    calls_last_minute: int
    max_concurrent_calls: int
    calls_per_minute: int
    v: int = 1
