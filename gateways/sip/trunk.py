"""SIP trunks: the carriers and SBCs we take calls from and place calls through.

A trunk is known inbound by the networks its requests come from (an allow-list entry, and
how a request is attributed to the trunk) and, if it has `inbound_users`, by digest
credentials it must present (RFC 3261 §22: we challenge its INVITEs with 401). Outbound, a
trunk is an outbound proxy (host, port, transport) with the `Credentials` we answer its
challenges with, and the `domain` that goes into the Request-URI of the numbers we dial.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from switchboard.gateways.sip.auth import Credentials, DigestServer
from switchboard.gateways.sip.source_policy import Network, SourcePolicy, parse_networks

__all__ = ["Trunk", "TrunkTable"]


@dataclass(frozen=True, slots=True)
class Trunk:
    name: str
    networks: Sequence[str] = ()  # CIDRs the trunk's requests come from
    inbound_users: Mapping[str, str] | None = field(default=None, repr=False)  # user → password
    realm: str = "switchboard"
    digest_algorithms: Sequence[str] = ("SHA-256", "MD5")  # RFC 8760 §2.4: preferred first
    proxy_host: str | None = None  # outbound proxy; None: this trunk takes no outbound calls
    proxy_port: int = 5060
    transport: Literal["UDP", "TCP", "TLS"] = "UDP"
    domain: str | None = None  # host of outbound Request-URIs and From; default proxy_host
    credentials: Credentials | None = None  # answers the proxy's challenges


class TrunkTable:
    """Trunks by name and by source address; builds the transport's allow-list."""

    def __init__(self, trunks: Iterable[Trunk]) -> None:
        self._by_name: dict[str, Trunk] = {}
        self._networks: list[tuple[Network, Trunk]] = []
        self._digest: dict[str, DigestServer] = {}
        for trunk in trunks:
            if trunk.name in self._by_name:
                raise ValueError(f"two trunks are named {trunk.name!r}")
            self._by_name[trunk.name] = trunk
            self._networks += [(net, trunk) for net in parse_networks(trunk.networks)]
            if trunk.inbound_users:
                self._digest[trunk.name] = DigestServer(
                    trunk.realm, trunk.inbound_users, algorithms=trunk.digest_algorithms
                )
        # Most specific network first, so a /32 for one SBC beats its carrier's /16.
        self._networks.sort(key=lambda item: item[0].prefixlen, reverse=True)
        self._matcher = SourcePolicy(allow=[str(n) for n, _ in self._networks])

    def get(self, name: str) -> Trunk | None:
        return self._by_name.get(name)

    def match(self, ip: str) -> Trunk | None:
        """The trunk whose networks contain `ip`, most specific first; None if none does."""
        if not self._networks or not self._matcher.allowed(ip):
            return None
        address = ipaddress.ip_address(ip.split("%")[0])
        return next((trunk for net, trunk in self._networks if address in net), None)

    def digest(self, trunk: Trunk) -> DigestServer | None:
        """The challenger for a trunk with inbound credentials."""
        return self._digest.get(trunk.name)

    @property
    def networks(self) -> list[str]:
        return [str(net) for net, _ in self._networks]
