"""Messages and settings of the provider pools: slots, outcomes, limits, failover order.

A provider pool (`actors/pool.py`, kind `pool`) is one virtual actor per provider and region,
id `<kind>-<provider>-<region>` (`pool_id`), e.g. `stt-whisper-local`. It holds no provider
connection and no audio: it hands out **slots** (permission to run one stream), enforces the
provider's limits and keeps its health. The stream itself runs on the call's node
(`actors/failover.py`), so audio never crosses NATS.

    call node --AcquireSlot--> pool/<kind>-<provider>-<region>    SlotGranted, or a refusal:
        at_capacity   every slot is taken          retry_after: an estimate of the next release
        rate_limited  the token bucket is empty    retry_after: when the next token is due
        circuit_open  the breaker is open          retry_after: when it lets a probe through
        deadline_passed  the request arrived after its `deadline` (nobody is waiting for it)
    call node --RenewSlot--> pool        while the stream runs (a tell), every hold/3
    call node --ReportOutcome--> pool    ok / failed + error code + latency (a tell)
    call node --ReleaseSlot--> pool      on every ending path, cancellation included (a tell)
    anyone    --GetPoolStatus--> pool    PoolStatus

A slot whose holder died is reclaimed when it expires (`expires_at`, extended by RenewSlot),
so a dead node never leaks capacity. Outcomes carry an error code and a latency, never a
provider's error text (it may echo what the caller said).

Schema evolution follows msgspec's rules: new fields get defaults, tags are never renamed or
reused, field types never change. `v` is the schema version of each struct.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

POOL_KIND = "pool"

ProviderKind = Literal["stt", "llm", "tts"]
CircuitState = Literal["closed", "open", "half_open"]

# Refusal codes of AcquireSlot (`actors.errors.RemoteError.code`); all retryable.
AT_CAPACITY = "at_capacity"
RATE_LIMITED = "rate_limited"
CIRCUIT_OPEN = "circuit_open"
DEADLINE_PASSED = "deadline_passed"

# Error codes of ReportOutcome (and of the failover metric's `reason`).
STALLED = "stalled"              # no progress within the stream's deadline
UNAVAILABLE = "unavailable"      # could not reach the provider, or it failed mid-stream
REJECTED = "rejected"            # the provider refused this input: not a sign of ill health
NOT_INSTALLED = "not_installed"  # an embedded model or engine is missing on that node
PROVIDER_ERROR = "error"         # any other provider error
# Failures with these codes count in the statistics but not against the provider's health.
NEUTRAL_CODES = frozenset({REJECTED})

Seconds = Annotated[float, msgspec.Meta(gt=0)]
Millis = Annotated[float, msgspec.Meta(gt=0)]


def pool_id(kind: ProviderKind, provider: str, region: str) -> str:
    """The id of the pool of `provider` in `region`: `stt-whisper-local`."""
    return f"{kind}-{provider}-{region}"


# -- settings ----------------------------------------------------------------------------------


class BreakerSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When the circuit opens and how it closes again (actors/circuit.py).

    Opens after `failure_threshold` consecutive failures, or when at least `min_calls`
    outcomes within `window_seconds` fail at `failure_rate` or more. After `cool_down_seconds`
    it lets `probes` streams through; `probe_successes` successes close it, a failure opens it
    again for twice as long (up to `max_cool_down_seconds`).
    """

    failure_threshold: Annotated[int, msgspec.Meta(ge=1)] = 3
    failure_rate: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    window_seconds: Seconds = 30.0
    min_calls: Annotated[int, msgspec.Meta(ge=1)] = 10
    cool_down_seconds: Seconds = 5.0
    max_cool_down_seconds: Seconds = 60.0
    probes: Annotated[int, msgspec.Meta(ge=1)] = 1
    probe_successes: Annotated[int, msgspec.Meta(ge=1)] = 1
    v: int = 1


class PoolLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The limits of one provider pool.

    `max_concurrent` streams at once; `rate_per_second` new slots per second with bursts of
    `burst` (0: no rate limit; burst 0: one second's worth). A slot lasts `slot_seconds`
    unless renewed. `health_interval_seconds` paces the active health check, for providers
    that expose one.
    """

    max_concurrent: Annotated[int, msgspec.Meta(ge=1)] = 32
    rate_per_second: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    burst: Annotated[int, msgspec.Meta(ge=0)] = 0
    slot_seconds: Seconds = 30.0
    breaker: BreakerSettings = BreakerSettings()
    health_interval_seconds: Seconds = 10.0
    health_timeout_seconds: Seconds = 2.0
    v: int = 1


class StreamDeadline(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Progress deadline of a provider stream (providers/deadline.py): the first item (first
    token, first audio, or the final transcript after the caller stopped) within
    `first_item_ms`, every later one within `stall_ms`."""

    first_item_ms: Millis
    stall_ms: Millis
    v: int = 1


class FailoverOrder(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The providers a tenant's agent uses, most preferred first, per kind
    (e.g. `stt: [deepgram, whisper]`). Names are those the node's provider registry knows."""

    stt: list[str] = []
    llm: list[str] = []
    tts: list[str] = []
    v: int = 1

    def of(self, kind: ProviderKind) -> list[str]:
        return self.stt if kind == "stt" else self.llm if kind == "llm" else self.tts


# -- messages ----------------------------------------------------------------------------------


class AcquireSlot(msgspec.Struct, frozen=True, kw_only=True, tag="pool.acquire"):
    """Ask for one slot. `deadline` (wall clock, `time.time()`; 0: none) is when the asker
    stops waiting: a request that arrives later is refused, so no grant holds capacity for
    nobody. `hold_seconds` (0: the pool's `slot_seconds`) is how long the slot lasts unless
    renewed."""

    kind: ProviderKind
    provider: str
    call_id: str
    deadline: float = 0.0
    hold_seconds: float = 0.0
    v: int = 1


class SlotGranted(msgspec.Struct, frozen=True, kw_only=True, tag="pool.granted"):
    """A slot: run one stream, renew before `expires_at` (wall clock), release when done.
    `probe` is set when the breaker is half-open and this stream decides whether it closes."""

    slot_id: str
    expires_at: float
    hold_seconds: float
    probe: bool = False
    v: int = 1


class RenewSlot(msgspec.Struct, frozen=True, kw_only=True, tag="pool.renew"):
    """The stream still runs: extend the slot by its hold. A slot the pool no longer knows
    (it expired, or the pool moved to another node) is adopted again: the stream is real,
    so it counts, even over the limit. The reply (to an ask) is a SlotGranted."""

    slot_id: str
    call_id: str = ""
    v: int = 1


class ReleaseSlot(msgspec.Struct, frozen=True, kw_only=True, tag="pool.release"):
    """The stream ended (or was cancelled) without an outcome to report. Idempotent."""

    slot_id: str
    v: int = 1


class ReportOutcome(msgspec.Struct, frozen=True, kw_only=True, tag="pool.outcome"):
    """How a stream (or one unit of a long stream: an utterance) went.

    `latency_ms` is the time to the first item (LLM token, TTS audio) or, for STT, from the
    end of speech to the final transcript. `error_code` is one of the codes above, never a
    provider's text. `release=True` also releases the slot (one message at the end).
    """

    slot_id: str
    ok: bool
    latency_ms: float = 0.0
    error_code: str = ""
    release: bool = False
    v: int = 1


class GetPoolStatus(msgspec.Struct, frozen=True, kw_only=True, tag="pool.get_status"):
    v: int = 1


class PoolStatus(msgspec.Struct, frozen=True, kw_only=True, tag="pool.status"):
    """A pool's state and counters since it was activated (counters are not persisted)."""

    pool_id: str
    kind: str = ""
    provider: str = ""
    circuit: CircuitState = "closed"
    retry_after: float = 0.0       # while the circuit refuses: seconds until it lets a probe in
    in_use: int = 0
    max_concurrent: int = 0
    rate_per_second: float = 0.0
    tokens: float = 0.0
    granted: int = 0
    renewed: int = 0
    reclaimed: int = 0             # slots that expired with their holder gone
    refused: dict[str, int] = {}   # by refusal code
    successes: int = 0
    failures: int = 0
    latency_ms: float = 0.0        # moving average of reported latencies
    v: int = 1


PoolMessage = AcquireSlot | RenewSlot | ReleaseSlot | ReportOutcome | GetPoolStatus
