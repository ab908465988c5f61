"""SIP header fields: the ordered multi-map, compact names, list splitting, Via and CSeq.

RFC 3261 §7.3: header names are case-insensitive and have compact forms (§7.3.3); a header
whose grammar is a comma-separated list may be split over several lines or combined on one
(§7.3.1), so `Headers` stores one entry per element, in order, under its canonical long name.
Via (§20.42, RFC 3581 rport) and CSeq (§20.16) get typed views because transactions and
response routing depend on them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from switchboard.gateways.sip.uri import TOKEN_RE, UriError, format_params, parse_params

__all__ = ["COMPACT_FORMS", "CSeq", "Headers", "Via", "canonical_name", "split_list"]

# RFC 3261 §7.3.3 and the RFCs that define the other single-letter forms.
COMPACT_FORMS: dict[str, str] = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
    "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported", "t": "To", "v": "Via",
    "o": "Event", "r": "Refer-To", "b": "Referred-By", "u": "Allow-Events",
    "x": "Session-Expires", "a": "Accept-Contact", "j": "Reject-Contact",
    "d": "Request-Disposition", "y": "Identity",
}  # fmt: skip

_SPECIAL_CASE = {
    n.lower(): n
    for n in ("Call-ID", "CSeq", "WWW-Authenticate", "MIME-Version", "RAck", "RSeq",
              "P-Asserted-Identity", "P-Preferred-Identity", "SIP-ETag", "SIP-If-Match")
}  # fmt: skip

# §7.3.1: headers whose grammar is `#element`, split into one entry per element. Authorization
# and WWW-Authenticate contain commas but are not lists, so they are never split.
LIST_HEADERS = frozenset(
    ("Via", "Contact", "Route", "Record-Route", "Allow", "Supported", "Require",
     "Proxy-Require", "Unsupported", "Accept", "Accept-Encoding", "Accept-Language",
     "Content-Encoding", "Content-Language", "Allow-Events", "Path", "Service-Route",
     "Alert-Info", "Call-Info", "Error-Info", "In-Reply-To", "P-Asserted-Identity")
)  # fmt: skip

_canonical_cache: dict[str, str] = {}


def canonical_name(name: str) -> str:
    """Long, conventionally capitalized form of a header name (`v` and `VIA` give `Via`)."""
    cached = _canonical_cache.get(name)
    if cached is not None:
        return cached
    lower = name.lower()
    result = COMPACT_FORMS.get(lower) or _SPECIAL_CASE.get(lower)
    if result is None:
        result = "-".join(part.capitalize() for part in lower.split("-"))
    if len(_canonical_cache) < 4096:  # bounded: hostile peers can invent endless names
        _canonical_cache[name] = result
    return result


def split_list(value: str) -> list[str]:
    """Split a `#element` value on commas outside quotes and <...> (§7.3.1, §25.1)."""
    if "," not in value:
        stripped = value.strip()
        return [stripped] if stripped else []
    items: list[str] = []
    start = 0
    quoted = escaped = False
    angle = 0
    for i, c in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if c == "\\":
                escaped = True
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "<":
            angle += 1
        elif c == ">" and angle:
            angle -= 1
        elif c == "," and not angle:
            items.append(value[start:i].strip())
            start = i + 1
    items.append(value[start:].strip())
    return [item for item in items if item]


class Headers:
    """Ordered header entries keyed by canonical name; one entry per list element."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(canonical_name(n), v) for n, v in items]

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of `name`, or `default`."""
        key = canonical_name(name)
        for n, v in self._items:
            if n == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of `name`, in message order."""
        key = canonical_name(name)
        return [v for n, v in self._items if n == key]

    def add(self, name: str, value: str) -> None:
        """Append an entry after the existing ones."""
        self._items.append((canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every entry of `name` with one, keeping the position of the first."""
        key = canonical_name(name)
        for i, (n, _) in enumerate(self._items):
            if n == key:
                self._items[i] = (key, value)
                self._items[i + 1 :] = [e for e in self._items[i + 1 :] if e[0] != key]
                return
        self._items.append((key, value))

    def replace_first(self, name: str, value: str) -> None:
        """Replace only the first entry of `name` (a transport stamping the top Via, §18.2.1);
        append when there is none."""
        key = canonical_name(name)
        for i, (n, _) in enumerate(self._items):
            if n == key:
                self._items[i] = (key, value)
                return
        self._items.append((key, value))

    def remove(self, name: str) -> None:
        """Drop every entry of `name`."""
        key = canonical_name(name)
        self._items = [e for e in self._items if e[0] != key]

    def items(self) -> list[tuple[str, str]]:
        """A copy of the (name, value) entries."""
        return list(self._items)

    def copy(self) -> Headers:
        """An independent copy (entries are immutable strings)."""
        new = Headers()
        new._items = list(self._items)
        return new

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


_VIA_RE = re.compile(
    r"\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+([^\s;]+)\s*((?:;.*)?)$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Via:
    """One Via element: how the request came and where its responses go (§18.2.2, §20.42)."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict, hash=False)

    @classmethod
    def parse(cls, text: str) -> Via:
        """Parse `SIP/2.0/UDP host:port;branch=...`; raises `UriError`."""
        m = _VIA_RE.match(text)
        if m is None:
            raise UriError("bad Via")
        transport, sent_by, param_text = m.groups()
        host, port = _split_sent_by(sent_by)
        params = parse_params(param_text)
        rport = params.get("rport")
        if rport is not None and not _is_port(rport):
            raise UriError("bad Via rport")
        return cls(transport=transport.upper(), host=host.lower(), port=port, params=params)

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{format_params(self.params)}"

    @property
    def branch(self) -> str | None:
        """Transaction id; RFC 3261 branches start with the magic cookie `z9hG4bK` (§8.1.1.7)."""
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        """The filled-in rport value (RFC 3581 §4), None when absent or still empty."""
        value = self.params.get("rport")
        return int(value) if value else None

    @property
    def wants_rport(self) -> bool:
        """RFC 3581 §3: the client asked for the response to go back to its source port."""
        return "rport" in self.params

    def stamped(self, source_host: str, source_port: int) -> Via:
        """The Via a server transport records on receipt (§18.2.1, RFC 3581 §4)."""
        params = dict(self.params)
        if self.host != source_host or self.wants_rport:
            params["received"] = source_host
        if self.wants_rport:
            params["rport"] = str(source_port)
        return Via(transport=self.transport, host=self.host, port=self.port, params=params)

    def response_address(self, default_port: int = 5060) -> tuple[str, int]:
        """Where an unreliable-transport response goes (§18.2.2, RFC 3581 §4): received/rport."""
        host = self.received or self.params.get("maddr") or self.host
        port = self.rport or self.port or default_port
        return host.strip("[]"), port


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 5 and int(text) <= 65535


def _split_sent_by(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise UriError("bad Via host")
        host, rest = text[: end + 1], text[end + 1 :]
    else:
        host, colon, port_text = text.partition(":")
        rest = colon + port_text
    if not host or not all(c.isalnum() or c in "-.:[]" for c in host) or not host.isascii():
        raise UriError("bad Via host")
    if not rest:
        return host, None
    if not rest.startswith(":") or not _is_port(rest[1:]):
        raise UriError("bad Via port")
    return host, int(rest[1:])


@dataclass(frozen=True, slots=True)
class CSeq:
    """`CSeq: 314159 INVITE` orders requests in a dialog and names the transaction's method."""

    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        """Raises `UriError` unless a 31-bit number and a method token (§8.1.1.5)."""
        parts = text.split()
        if len(parts) != 2 or not parts[0].isascii() or not parts[0].isdigit():
            raise UriError("bad CSeq")
        if len(parts[0]) > 10 or int(parts[0]) >= 2**31 or not TOKEN_RE.fullmatch(parts[1]):
            raise UriError("bad CSeq")
        return cls(seq=int(parts[0]), method=parts[1])

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"
