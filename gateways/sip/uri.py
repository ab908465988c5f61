"""SIP URIs and name-addr values (RFC 3261 §19.1 and §20.10, grammar in §25.1).

`SipUri` is what the Request-URI, Contact, From and To point at; `NameAddr` is the
`"Display" <uri>;tag=...` form those headers carry. Both are immutable and serialize back to
their wire text, so a parse/serialize round trip yields an equal object. `tel:` URIs (RFC 3966)
are accepted too, because carriers put them in From and in the Request-URI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from switchboard.gateways.sip.errors import SipError

__all__ = ["NameAddr", "SipUri", "UriError", "format_params", "parse_params"]

# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?")
_IPV6_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_SCHEMES = ("sip", "sips", "tel")


class UriError(SipError):
    """A URI or name-addr does not follow RFC 3261 §25.1; `unsupported_scheme` means 416."""

    def __init__(self, message: str, *, unsupported_scheme: bool = False) -> None:
        super().__init__(message)
        self.unsupported_scheme = unsupported_scheme


def parse_params(text: str) -> dict[str, str | None]:
    """Parse `;name=value;flag` (leading `;` optional); names are case-insensitive (§19.1.4)."""
    params: dict[str, str | None] = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        if not TOKEN_RE.fullmatch(name):
            raise UriError("bad parameter name")
        params[name] = value.strip() if eq else None
    return params


def format_params(params: dict[str, str | None]) -> str:
    """Serialize parameters as `;name=value;flag`."""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def _parse_hostport(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[: end + 1], text[end + 1 :]
        if end < 0 or not _IPV6_RE.fullmatch(host):
            raise UriError("bad IPv6 reference")
    else:
        colon = text.find(":")
        host, rest = (text, "") if colon < 0 else (text[:colon], text[colon:])
        if not _HOSTNAME_RE.fullmatch(host):
            raise UriError("bad host")
    if not rest:
        return host, None
    digits = rest[1:]
    if not rest.startswith(":") or not digits.isascii() or not digits.isdigit() or len(digits) > 5:
        raise UriError("bad port")
    port = int(digits)
    if port > 65535:
        raise UriError("port out of range")
    return host, port


@dataclass(frozen=True, slots=True)
class SipUri:
    """`sip:user:password@host:port;params?headers` (RFC 3261 §19.1.1), or `tel:number;params`."""

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict, hash=False)
    headers: str | None = None  # kept verbatim: only used to build requests from a Refer-To

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parse a URI; raises `UriError` (with `unsupported_scheme` for e.g. `http:`)."""
        scheme, colon, rest = text.strip().partition(":")
        scheme = scheme.lower()
        if not colon or not TOKEN_RE.fullmatch(scheme):
            raise UriError("URI has no scheme")
        if scheme not in _SCHEMES:
            raise UriError("unsupported URI scheme", unsupported_scheme=True)
        if any(c in rest for c in ' \t\r\n<>"') or not rest:
            raise UriError("bad character in URI")
        if scheme == "tel":
            number, _, param_text = rest.partition(";")
            if not number:
                raise UriError("empty tel number")
            return cls(scheme=scheme, user=number, params=parse_params(param_text))
        user = password = None
        at = rest.rfind("@")  # '@' cannot appear unescaped after the userinfo (§25.1)
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1 :]
            user, colon, pw = userinfo.partition(":")
            password = pw if colon else None
            if not user:
                raise UriError("empty user part")
        rest, qmark, headers = rest.partition("?")
        hostport, _, param_text = rest.partition(";")
        host, port = _parse_hostport(hostport)
        return cls(
            scheme=scheme,
            user=user,
            password=password,
            host=host.lower(),  # §19.1.4: host comparison is case-insensitive
            port=port,
            params=parse_params(param_text),
            headers=headers if qmark else None,
        )

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{self.user}{format_params(self.params)}"
        userinfo = ""
        if self.user is not None:
            userinfo = self.user + (f":{self.password}" if self.password is not None else "") + "@"
        port = f":{self.port}" if self.port is not None else ""
        headers = f"?{self.headers}" if self.headers is not None else ""
        return f"{self.scheme}:{userinfo}{self.host}{port}{format_params(self.params)}{headers}"

    @property
    def transport(self) -> str:
        """The `transport` URI parameter, lowercase, defaulting to UDP (§19.1.1)."""
        value = self.params.get("transport")
        return value.lower() if value else ("tls" if self.scheme == "sips" else "udp")


def _parse_quoted(text: str, start: int) -> tuple[str, int]:
    """Read a quoted-string starting at `text[start] == '"'`; return (unescaped, end index)."""
    out: list[str] = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise UriError("unterminated quoted string")


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From/To/Contact/Route value: optional display name, URI, header parameters."""

    uri: SipUri
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict, hash=False)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        """Parse `name-addr` or bare `addr-spec` plus header parameters (§20.10, §25.1)."""
        text = text.strip()
        display: str | None = None
        i = 0
        if text.startswith('"'):
            display, i = _parse_quoted(text, 0)
            text_rest = text[i:].lstrip()
        else:
            text_rest = text
        lt = text_rest.find("<")
        if lt >= 0:
            if display is None:
                display = text_rest[:lt].strip() or None
            elif text_rest[:lt].strip():
                raise UriError("text between display name and URI")
            gt = text_rest.find(">", lt)
            if gt < 0:
                raise UriError("unterminated <URI>")
            uri = SipUri.parse(text_rest[lt + 1 : gt])
            tail = text_rest[gt + 1 :].strip()
            if tail and not tail.startswith(";"):
                raise UriError("junk after <URI>")
            return cls(uri=uri, display_name=display, params=parse_params(tail))
        if display is not None:
            raise UriError("display name without <URI>")
        # §20.10: without angle brackets, every ';' parameter belongs to the header, not the URI.
        uri_text, _, param_text = text_rest.partition(";")
        return cls(uri=SipUri.parse(uri_text), params=parse_params(param_text))

    def __str__(self) -> str:
        name = ""
        if self.display_name is not None:
            escaped = self.display_name.replace("\\", "\\\\").replace('"', '\\"')
            name = f'"{escaped}" '
        return f"{name}<{self.uri}>{format_params(self.params)}"

    @property
    def tag(self) -> str | None:
        """The dialog `tag` parameter (§19.3), None when absent."""
        return self.params.get("tag")

    def with_tag(self, tag: str) -> NameAddr:
        """A copy carrying `tag`, as a UAS adds it to To (§8.2.6.2)."""
        return NameAddr(
            uri=self.uri, display_name=self.display_name, params={**self.params, "tag": tag}
        )
