"""The SIP gateway's node settings: where it listens, its trunks, limits and media.

A node that terminates SIP carries one `SipConfig` (from the `--sip-*` flags and, for trunks
and everything else, a YAML file: `configs/sip.example.yaml`, loaded by `storage.sip_file`).
It is node configuration, not tenant configuration: trunks are the carriers and SBCs this
node talks to; a tenant names the trunk its outbound calls use (`TenantConfig.trunk`), and the
trunk actor (`trunk/<name>`) runs on a node whose `SipConfig` declares that trunk.

Passwords are `Secret`s (protocols.tenants): a config can be logged whole. Decode with
`protocols.tenants.dec_hook`. Schema evolution follows msgspec's rules (new fields have
defaults, types never change); unknown keys are refused so a typo is an error, not a default.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from switchboard.protocols.tenants import Id, Seconds, Secret

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
CodecName = Literal["G722", "PCMU", "PCMA"]


class SipTrunkConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A carrier or SBC: how its calls are recognised inbound and how we dial through it.

    Inbound, `networks` (CIDRs) attribute a request to the trunk, exempt it from the per-IP
    flood limit and, with `SipConfig.only_trunks`, are the allow-list. With `inbound_users`
    its INVITEs must answer a digest challenge (RFC 3261 §22). Outbound, INVITEs go to `proxy`
    with `username`/`password` answering its challenges; a trunk without `proxy` dials SIP
    URIs directly (numbers need a proxy, or a `domain` to put them in).
    """

    name: Id
    networks: list[str] = []
    inbound_users: dict[str, Secret] = {}
    realm: str = "switchboard"
    digest_algorithms: list[Literal["SHA-256", "MD5"]] = msgspec.field(
        default_factory=lambda: ["SHA-256", "MD5"])  # RFC 8760 §2.4: preferred first
    proxy: str = ""                  # host name or address; empty: no outbound proxy
    proxy_port: Port = 5060
    transport: Literal["udp", "tcp", "tls"] = "udp"
    domain: str = ""                 # host of the Request-URI for numbers; default the proxy
    username: str = ""               # outbound digest credentials
    password: Secret | None = None
    v: int = 1


class FloodSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per source IP (trunks exempt): `rate` messages/s on average, bursts of `burst`; past
    that, `reject` answers 503 with Retry-After (rate-limited itself), `drop` stays silent."""

    enabled: bool = True
    rate: Annotated[float, msgspec.Meta(gt=0)] = 100.0
    burst: Annotated[float, msgspec.Meta(gt=0)] = 200.0
    action: Literal["reject", "drop"] = "reject"
    retry_after: Annotated[int, msgspec.Meta(ge=0)] = 5
    v: int = 1


class SipConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything a node's SIP gateway needs; the defaults suit one box behind no NAT."""

    host: str = "0.0.0.0"             # where UDP and TCP listen
    port: Port = 5060                 # 0: a free port
    any_port_if_busy: bool = False    # `switchboard up`: take a free port when `port` is taken
    udp: bool = True
    tcp: bool = True
    tls_port: Port = 5061             # TLS listens only with both cert and key
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""                  # CA bundle to verify TLS peers we connect to
    advertised_host: str = ""         # in Via/Contact/SDP: a NAT's public address
    media_host: str = ""              # the address in our SDP, if not the advertised one
    rtp_host: str = "0.0.0.0"
    rtp_port_min: Port = 20000
    rtp_port_max: Port = 30000
    trunks: list[SipTrunkConfig] = []
    only_trunks: bool = False         # refuse requests from outside every trunk's networks
    on_denied: Literal["reject", "drop"] = "drop"
    flood: FloodSettings = FloodSettings()
    symmetric_udp: bool = False       # in-dialog requests go where the INVITE came from (NAT)
    codecs: list[CodecName] = msgspec.field(  # our preference order
        default_factory=lambda: ["G722", "PCMU", "PCMA"])
    pcm_rate: Literal[8000, 16000] = 16000  # the PCM rate call actors get (VAD and STT)
    admit_timeout: Seconds = 8.0      # route + tenant admission + call actor start, or 503
    answer_timeout: Seconds = 60.0    # admitted but the agent never answered: 480
    ring_timeout: Seconds = 45.0      # outbound: no answer within this: the call fails (408)
    max_calls: Annotated[int, msgspec.Meta(ge=1)] = 2000
    user_agent: str = "Switchboard"
    v: int = 1
