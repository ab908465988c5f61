"""Which sources may talk to the SIP port, and how fast: allow-lists and per-IP flood limits.

A carrier trunk is known by its addresses, so a deployment that only serves trunks lists their
networks (CIDRs) and everything else gets 403 Forbidden or silence (`on_denied`); silence is
better against scanners, 403 is kinder to a misconfigured friend. Every source IP also has a
token bucket (`FloodLimit`): past its burst, requests get 503 with Retry-After (RFC 3261
§21.5.4), and once even those replies exceed their own small budget the rest is dropped, so a
flood can never make us amplify it. Trunk networks are `exempt` from the buckets: a carrier at
50 calls per second sends 150 messages per second from one address, legitimately. The policy
runs before parsing and costs one dict lookup.
Buckets are bounded (least recently seen sources evicted), so a spoofed-source flood cannot
grow memory.
"""

from __future__ import annotations

import enum
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = ["FloodLimit", "SourcePolicy", "Verdict", "parse_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Iterable[str]) -> list[Network]:
    """`["192.0.2.0/24", "2001:db8::1"]` as networks; raises ValueError naming the bad entry."""
    out: list[Network] = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP network (CIDR): {cidr!r}") from None
    return out


class Verdict(enum.Enum):
    ALLOW = "allow"
    DENY_REPLY = "deny_reply"  # answer requests 403
    DENY_DROP = "deny_drop"
    FLOOD_REPLY = "flood_reply"  # answer requests 503 + Retry-After
    FLOOD_DROP = "flood_drop"


@dataclass(frozen=True, slots=True)
class FloodLimit:
    """Per source IP: `rate` messages per second on average, bursts of `burst`.

    Past that, `action="reject"` answers with 503 and `retry_after` for up to `reply_rate`
    per second (then drops); `action="drop"` drops at once.
    """

    rate: float = 100.0
    burst: float = 200.0
    action: Literal["reject", "drop"] = "reject"
    retry_after: int = 5
    reply_rate: float = 10.0


class _Bucket:
    __slots__ = ("last", "replies", "tokens")

    def __init__(self, now: float, burst: float, reply_burst: float) -> None:
        self.tokens = burst
        self.replies = reply_burst
        self.last = now


class SourcePolicy:
    """Decides per datagram or stream message; see the module docstring."""

    def __init__(
        self,
        *,
        allow: Iterable[str] | None = None,
        exempt: Iterable[str] = (),
        on_denied: Literal["reject", "drop"] = "drop",
        flood: FloodLimit | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_sources: int = 65_536,
    ) -> None:
        self.networks = parse_networks(allow) if allow is not None else None
        self.exempt = parse_networks(exempt)  # trunks: known peers, busy by design
        self.on_denied = on_denied
        self.flood = flood
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._max_sources = max_sources
        self._cache: OrderedDict[str, tuple[bool, bool]] = OrderedDict()

    def _classify(self, ip: str) -> tuple[bool, bool]:
        """(allowed, exempt from flood limits) for `ip`, cached for the busy sources."""
        found = self._cache.get(ip)
        if found is None:
            try:
                address = ipaddress.ip_address(ip.split("%")[0])
            except ValueError:
                found = (self.networks is None, False)
            else:
                allowed = self.networks is None or any(address in n for n in self.networks)
                found = (allowed, any(address in n for n in self.exempt))
            self._cache[ip] = found
            if len(self._cache) > self._max_sources:
                self._cache.popitem(last=False)
        return found

    def allowed(self, ip: str) -> bool:
        """True when `ip` is in one of the allowed networks (or no allow-list is set)."""
        return self.networks is None or self._classify(ip)[0]

    def check(self, ip: str) -> Verdict:
        """The verdict for one message from `ip` (consumes a token when allowed)."""
        allowed, exempt = self._classify(ip)
        if not allowed:
            return Verdict.DENY_REPLY if self.on_denied == "reject" else Verdict.DENY_DROP
        flood = self.flood
        if flood is None or exempt:
            return Verdict.ALLOW
        now = self._clock()
        bucket = self._buckets.get(ip)
        if bucket is None:
            bucket = self._buckets[ip] = _Bucket(now, flood.burst, flood.reply_rate)
            if len(self._buckets) > self._max_sources:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(ip)
            elapsed = now - bucket.last
            bucket.tokens = min(flood.burst, bucket.tokens + elapsed * flood.rate)
            bucket.replies = min(flood.reply_rate, bucket.replies + elapsed * flood.reply_rate)
            bucket.last = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return Verdict.ALLOW
        if flood.action == "reject" and bucket.replies >= 1.0:
            bucket.replies -= 1.0
            return Verdict.FLOOD_REPLY
        return Verdict.FLOOD_DROP
