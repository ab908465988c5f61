"""Tenant and agent configuration, shared by the gateways, the tenant actor and the call actor.

A tenant owns numbers (DIDs, E.164), limits and agents; each number routes to a default agent.
Until the tenant API exists the configuration comes from a file (`configs/tenants.example.yaml`,
loaded by `storage.tenants_file`); every node loads the same file into a `TenantDirectory`, so
a number resolves to its tenant on any node without a network hop. A store-backed directory
(the tenant API's KV bucket) will implement the same interface.

Schema evolution follows msgspec's rules: new fields get defaults, field types never change.
Unknown fields are refused, so a typo in the file is an error that names its line, not a
setting silently ignored.

`Secret` wraps values that must never be printed: its repr is redacted, so a tenant config can
be logged whole. Decode with `dec_hook`, encode with `enc_hook` (msgspec has no secret type).
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any, Literal, Protocol

import msgspec
from switchboard.protocols.pools import FailoverOrder

Id = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_\-]{1,64}$",
                                 description="letters, digits, _ and -; used in NATS subjects")]
E164 = Annotated[str, msgspec.Meta(pattern=r"^\+[1-9][0-9]{1,14}$",
                                   description="E.164: + then country code and number")]
Seconds = Annotated[float, msgspec.Meta(gt=0)]
Brain = Literal["echo", "flow", "llm"]
BuiltinTool = Literal["hang_up", "transfer", "send_dtmf"]
ToolName = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,63}$",
                                       description="lower case letters, digits and _")]
WebhookUrl = Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s]+$",
                                         description="an http:// or https:// URL")]


class Secret:
    """A secret string: `reveal()` gives it; repr, str and format never do."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**redacted**')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        # Constant time: a secret compared with a token must not leak it through timing.
        return isinstance(other, Secret) and hmac.compare_digest(self._value.encode(),
                                                                 other._value.encode())

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))


def dec_hook(type_: type, obj: Any) -> Any:
    """msgspec decode hook for the custom types of this module (`Secret`)."""
    if type_ is Secret:
        if not isinstance(obj, str) or not obj:
            raise TypeError("a secret must be a non-empty string")
        return Secret(obj)
    raise NotImplementedError(f"no decoder for {type_.__name__}")


def enc_hook(obj: Any) -> Any:
    """msgspec encode hook: a `Secret` is written as its value (only into trusted stores)."""
    if isinstance(obj, Secret):
        return obj.reveal()
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


class Limits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Admission limits; a refused call gets a SIP 486/503 or an HTTP 429 with Retry-After."""

    max_concurrent_calls: Annotated[int, msgspec.Meta(ge=0)] = 10
    calls_per_minute: Annotated[int, msgspec.Meta(ge=0)] = 60
    # Retry-After for a call refused over the concurrent quota: when a call ends is unknown.
    retry_after_seconds: Seconds = 10.0
    v: int = 1


class VadSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Voice activity and end of turn (providers.vad.endpoint.Endpointer's knobs)."""

    threshold: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.5
    min_speech_ms: Annotated[float, msgspec.Meta(ge=0)] = 90.0   # shorter blips are not speech
    min_silence_ms: Annotated[float, msgspec.Meta(gt=0)] = 300.0  # quiet this long ends a turn
    v: int = 1


class TurnSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Turn-taking, barge-in and dead air of the conversation brains (actors/conversation.py).

    End of turn: a caller utterance whose transcript reads as complete (terminal punctuation,
    no dangling "and", "for", "um"...) ends the turn after `fast_end_ms` of quiet when the
    transcript is already there (a streaming STT), else at the VAD's `min_silence_ms`; one
    that ends mid-phrase waits until `incomplete_hold_ms` of silence for the caller to go on.
    Barge-in: caller speech over the agent interrupts it once it has lasted `barge_in_min_ms`;
    shorter blips and backchannels ("uh-huh") do not. Dead air: when an answer is owed and the
    caller has heard nothing for `dead_air_ms`, the agent says `filler`, then retries on the
    next provider, then says `apology`. Keys (DTMF): a key over the agent interrupts it like
    speech; keys make one entry, a caller turn when `#` is pressed or after `dtmf_timeout_ms`
    without another key.
    """

    barge_in_min_ms: Annotated[float, msgspec.Meta(ge=0)] = 250.0
    smart_end_of_turn: bool = True
    fast_end_ms: Annotated[float, msgspec.Meta(gt=0)] = 150.0
    incomplete_hold_ms: Annotated[float, msgspec.Meta(gt=0)] = 800.0
    dead_air_ms: Annotated[float, msgspec.Meta(gt=0)] = 1200.0
    # When the answer is waiting on TTS at dead_air_ms, wait this much more before the filler
    # (a filler just before the answer delays it by its own length).
    dead_air_grace_ms: Annotated[float, msgspec.Meta(ge=0)] = 400.0
    filler: str = "One moment."
    apology: str = "Sorry, I'm having trouble right now. Could you say that again?"
    resume: str = "Sorry about that. Where were we?"  # said by a restarted call actor
    max_tool_rounds: Annotated[int, msgspec.Meta(ge=1, le=10)] = 4
    dtmf_timeout_ms: Annotated[float, msgspec.Meta(gt=0)] = 2000.0  # inter-digit timeout
    v: int = 1


class WebhookTool(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A tenant tool the agent may call: an HTTP POST of the arguments, JSON back to the brain.

    The body is `{"tool", "arguments", "call": {"id", "tenant_id", "agent_id", "caller",
    "callee"}}`; `token`, if set, goes in `Authorization: Bearer`. No answer within
    `timeout_seconds` gives the brain `{"ok": false, "error": "timeout"}`.
    """

    name: ToolName
    description: str
    url: WebhookUrl
    parameters: dict[str, Any] = msgspec.field(
        default_factory=lambda: {"type": "object", "properties": {}})
    timeout_seconds: Seconds = 4.0
    token: Secret | None = None
    v: int = 1


class AgentConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: Id
    name: str = ""
    brain: Brain = "echo"
    greeting: str = ""          # text, spoken by TTS brains (flow: default the script's)
    greeting_audio: str = ""    # a WAV (PCM16 mono) the echo brain plays; absolute once loaded
    language: str = "en"
    vad: VadSettings = VadSettings()
    flow: str = ""              # brain flow: the script (YAML); absolute once loaded
    prompt: str = ""            # brain llm: the system prompt
    providers: FailoverOrder = FailoverOrder()  # empty kinds: the node's defaults
    turn: TurnSettings = TurnSettings()
    tools: list[WebhookTool] = []
    builtin_tools: list[BuiltinTool] = msgspec.field(
        default_factory=lambda: ["hang_up", "transfer", "send_dtmf"])
    transfer_targets: list[str] = []  # where `transfer` may send calls (flow: + the script's)
    max_call_seconds: Seconds = 3600.0
    rtp_inactivity_seconds: Seconds = 30.0
    v: int = 1


class NumberRoute(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A DID of the tenant and the agent that answers it."""

    number: E164
    agent: Id
    v: int = 1


class TenantConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: Id
    name: str = ""
    numbers: list[NumberRoute] = []
    limits: Limits = Limits()
    web_token_secret: Secret | None = None  # signs the web page's call tokens
    agents: list[AgentConfig] = []
    trunk: Id = "default"  # the outbound trunk `originate` places calls through
    v: int = 1

    def agent(self, agent_id: str) -> AgentConfig | None:
        for agent in self.agents:
            if agent.id == agent_id:
                return agent
        return None

    def owns_number(self, number: str) -> bool:
        return any(route.number == number for route in self.numbers)


class Route(msgspec.Struct, frozen=True, kw_only=True):
    """Where a dialled number goes: a tenant and its default agent for that number."""

    tenant_id: str
    agent_id: str
    v: int = 1


class TenantDirectory(Protocol):
    """Node-local, read-only view of every tenant's configuration (no I/O: lookups are cheap
    enough to run per call setup and per admission)."""

    def tenant(self, tenant_id: str) -> TenantConfig | None: ...

    def route(self, number: str) -> Route | None:
        """The tenant and agent for a dialled number (E.164, with or without `+`)."""
        ...


def normalize_number(number: str) -> str:
    """E.164 form of a dialled number: separators dropped, `+` added; `tel:`/`sip:` stripped."""
    raw = number.strip()
    for scheme in ("tel:", "sip:", "sips:"):
        if raw.lower().startswith(scheme):
            raw = raw[len(scheme):]
    raw = raw.split("@", 1)[0].split(";", 1)[0]
    digits = "".join(ch for ch in raw if ch.isdigit())
    return "+" + digits if digits else ""
