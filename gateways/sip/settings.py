"""From a node's `SipConfig` (protocols/sip_config.py, plain data) to the user agent's
`UserAgentConfig` and `Trunk`s (the SIP stack's own dataclasses).

Secrets are revealed here and only here, into `Credentials` and digest user tables whose
repr hides them. A config that cannot work (a TLS certificate without its key, an empty RTP
range) raises ValueError naming the setting to fix.
"""

from __future__ import annotations

from switchboard.gateways.sip.auth import Credentials
from switchboard.gateways.sip.codecs import CODECS, Codec
from switchboard.gateways.sip.source_policy import FloodLimit
from switchboard.gateways.sip.transport import TransportConfig
from switchboard.gateways.sip.trunk import Trunk
from switchboard.gateways.sip.useragent import UserAgentConfig
from switchboard.protocols.sip_config import SipConfig, SipTrunkConfig

__all__ = ["codec_preferences", "trunk_from_config", "user_agent_config"]


def trunk_from_config(cfg: SipTrunkConfig) -> Trunk:
    if cfg.password is not None and not cfg.username:
        raise ValueError(f"trunk {cfg.name}: a password needs its `username`")
    users = {user: secret.reveal() for user, secret in cfg.inbound_users.items()} or None
    credentials = Credentials(cfg.username, cfg.password.reveal() if cfg.password else "") \
        if cfg.username else None
    return Trunk(name=cfg.name, networks=tuple(cfg.networks), inbound_users=users,
                 realm=cfg.realm, digest_algorithms=tuple(cfg.digest_algorithms),
                 proxy_host=cfg.proxy or None, proxy_port=cfg.proxy_port,
                 transport="TLS" if cfg.transport == "tls" else
                 "TCP" if cfg.transport == "tcp" else "UDP",
                 domain=cfg.domain or None, credentials=credentials)


def codec_preferences(cfg: SipConfig) -> tuple[Codec, ...]:
    if not cfg.codecs:
        raise ValueError("sip codecs: name at least one of G722, PCMU, PCMA")
    return tuple(CODECS[name] for name in dict.fromkeys(cfg.codecs))


def user_agent_config(cfg: SipConfig, *, port: int | None = None) -> UserAgentConfig:
    """The user agent's settings; `port` overrides `cfg.port` (a fallback to a free one)."""
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        raise ValueError("sip TLS needs both `tls_cert` and `tls_key` (PEM files)")
    if not 0 < cfg.rtp_port_min < cfg.rtp_port_max:
        raise ValueError("sip `rtp_port_min` must be above 0 and below `rtp_port_max`")
    if not (cfg.udp or cfg.tcp or cfg.tls_cert):
        raise ValueError("sip: enable at least one of udp, tcp or TLS (tls_cert + tls_key)")
    transport = TransportConfig(
        host=cfg.host, port=cfg.port if port is None else port, udp=cfg.udp, tcp=cfg.tcp,
        tls_port=cfg.tls_port, tls_cert=cfg.tls_cert or None, tls_key=cfg.tls_key or None,
        tls_ca=cfg.tls_ca or None, advertised_host=cfg.advertised_host or None)
    flood = FloodLimit(rate=cfg.flood.rate, burst=cfg.flood.burst, action=cfg.flood.action,
                       retry_after=cfg.flood.retry_after) if cfg.flood.enabled else None
    return UserAgentConfig(
        transport=transport, trunks=tuple(trunk_from_config(t) for t in cfg.trunks),
        only_trunks=cfg.only_trunks, on_denied=cfg.on_denied, flood=flood,
        rtp_ports=(cfg.rtp_port_min, cfg.rtp_port_max), rtp_host=cfg.rtp_host,
        media_host=cfg.media_host or None, admit_timeout=cfg.admit_timeout,
        answer_timeout=cfg.answer_timeout, max_calls=cfg.max_calls,
        user_agent=cfg.user_agent, symmetric_udp=cfg.symmetric_udp)
