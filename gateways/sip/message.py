"""RFC 3261 messages: parse and serialize requests and responses, build responses.

This is the wire edge of the SIP gateway: bytes from a UDP datagram (`parse_message`) or a TCP
stream (`StreamFramer`) become a `SipRequest` or `SipResponse`, or a `SipParseError` that says
what to answer (400, 413, 416, 505, 513) and whether an answer is possible at all. Nothing
else is ever raised on hostile input, so the transport can count and drop without guessing.
Transactions and dialogs (later modules) only see typed, validated messages.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

from switchboard.gateways.sip.errors import SipParseError
from switchboard.gateways.sip.headers import (
    LIST_HEADERS,
    CSeq,
    Headers,
    Via,
    canonical_name,
    split_list,
)
from switchboard.gateways.sip.uri import TOKEN_RE, NameAddr, SipUri, UriError

__all__ = [
    "MAX_HEADERS",
    "MAX_MESSAGE_SIZE",
    "REASONS",
    "SipMessage",
    "SipRequest",
    "SipResponse",
    "StreamFramer",
    "build_response",
    "error_response",
    "new_branch",
    "new_call_id",
    "new_tag",
    "parse_message",
]

MAX_MESSAGE_SIZE = 65_535  # the largest UDP payload; TCP peers get the same bound
MAX_HEADERS = 128
SIP_VERSION = "SIP/2.0"
BRANCH_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7

REASONS: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    407: "Proxy Authentication Required", 408: "Request Timeout",
    413: "Request Entity Too Large", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    491: "Request Pending", 500: "Server Internal Error", 501: "Not Implemented",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 603: "Decline",
}  # fmt: skip

_REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")  # RFC 3261 §8.1.1
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE_SPLIT = re.compile(r"\r?\n")
_BAD_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_DIGITS = re.compile(r"[0-9]{1,10}")
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([0-9]{1,10})[ \t]*\r?$",
                             re.IGNORECASE | re.MULTILINE)  # fmt: skip


class _Fields:
    """Typed views of the headers every message carries; each parses on access."""

    __slots__ = ()
    headers: Headers

    @property
    def vias(self) -> list[Via]:
        return [Via.parse(v) for v in self.headers.get_all("Via")]

    @property
    def from_addr(self) -> NameAddr:
        return NameAddr.parse(self.headers.get("From") or "")

    @property
    def to_addr(self) -> NameAddr:
        return NameAddr.parse(self.headers.get("To") or "")

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> CSeq:
        return CSeq.parse(self.headers.get("CSeq") or "")

    @property
    def contacts(self) -> list[NameAddr]:
        return [NameAddr.parse(v) for v in self.headers.get_all("Contact") if v != "*"]


@dataclass(slots=True)
class SipRequest(_Fields):
    """A request line, its headers and the raw body (SDP stays bytes until sdp.py reads it)."""

    method: str
    uri: SipUri
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def encode(self) -> bytes:
        return _encode(f"{self.method} {self.uri} {SIP_VERSION}", self.headers, self.body)


@dataclass(slots=True)
class SipResponse(_Fields):
    """A status line, its headers and the raw body."""

    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def encode(self) -> bytes:
        return _encode(f"{SIP_VERSION} {self.status} {self.reason}", self.headers, self.body)


SipMessage = SipRequest | SipResponse


def _encode(start_line: str, headers: Headers, body: bytes) -> bytes:
    # RFC 3261 §20.14: always send Content-Length; it frames messages on stream transports.
    lines = [start_line]
    lines += [f"{n}: {v}" for n, v in headers if n != "Content-Length"]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse_message(
    data: bytes,
    *,
    max_size: int = MAX_MESSAGE_SIZE,
    max_headers: int = MAX_HEADERS,
    stream: bool = False,
) -> SipMessage:
    """Parse one whole message (one UDP datagram, or one frame cut by `StreamFramer`).

    Raises only `SipParseError`. With `stream=True` Content-Length is mandatory (§18.3).
    """
    data = data.lstrip(b"\r\n")  # §7.5: ignore CRLFs before the start line
    if not data:
        raise SipParseError("Bad Request", detail="empty message")
    too_large = len(data) > max_size
    match = _HEAD_END.search(data, 0, min(len(data), max_size + 4))
    if match is None:
        reason = "Message Too Large" if too_large else "Bad Request"
        raise SipParseError(reason, status=513 if too_large else 400, detail="no end of headers")
    head = _Head(data[: match.start()])
    body = data[match.end() :]
    if too_large:
        raise head.error("Message Too Large", 513, f"over {max_size} bytes")
    if len(head.lines) - 1 > max_headers:
        raise head.error("Message Too Large", 513, f"over {max_headers} header lines")
    message = head.validate()
    length_text = message.headers.get("Content-Length")
    if length_text is None:
        if stream:
            raise head.error("Bad Request", detail="missing Content-Length on a stream transport")
        length = len(body)
    elif not _DIGITS.fullmatch(length_text):
        raise head.error("Bad Request", detail="bad Content-Length")
    else:
        length = int(length_text)
    # §18.3: bytes past Content-Length are discarded; fewer than announced is an error.
    if length > len(body):
        raise head.error("Bad Request", detail="body shorter than Content-Length")
    message.body = body[:length]
    return message


class _Head:
    """The start line and header section, read leniently first so that every later error
    knows whether it can be answered."""

    def __init__(self, raw: bytes) -> None:
        # UTF-8 per §7.3.1; a broken peer's Latin-1 display name is replaced, not fatal.
        self.lines = _unfold(_LINE_SPLIT.split(raw.decode("utf-8", errors="replace")))
        self.start = _parse_start_line(self.lines[0])
        self.headers = _parse_headers(self.lines[1:])
        self.respondable = not isinstance(self.start, SipResponse) and _can_respond(self.headers)

    def error(self, reason: str, status: int = 400, detail: str = "") -> SipParseError:
        start = self.start
        ok = self.respondable and (not isinstance(start, SipParseError) or start.status != 400)
        return SipParseError(
            reason,
            status=status,
            detail=detail,
            respondable=ok,
            method=start.method if isinstance(start, SipRequest) else None,
            headers=self.headers if ok else None,
        )

    def validate(self) -> SipMessage:
        start = self.start
        if isinstance(start, SipParseError):
            # 416 and 505 can be answered when the headers are sound; a garbled line cannot.
            raise self.error(start.reason, start.status, start.detail)
        for line in self.lines[1:]:
            if ":" not in line or not TOKEN_RE.fullmatch(line.partition(":")[0].rstrip(" \t")):
                raise self.error("Bad Request", detail="malformed header line")
            if _BAD_CHARS.search(line):
                raise self.error("Bad Request", detail="control character in header")
        for name in _REQUIRED:
            if name not in self.headers:
                raise self.error("Bad Request", detail=f"missing {name}")
        start.headers = self.headers
        try:
            # Validate once at the edge, so later layers can use the typed views freely.
            _ = (start.vias, start.from_addr, start.to_addr, start.contacts)
            cseq = start.cseq
        except UriError as exc:
            raise self.error("Bad Request", detail=str(exc)) from None
        if isinstance(start, SipRequest) and cseq.method != start.method:
            # §8.1.1.5: the CSeq method MUST match the request method.
            raise self.error("Bad Request", detail="CSeq method differs from request method")
        max_forwards = self.headers.get("Max-Forwards")
        if max_forwards is not None and not _DIGITS.fullmatch(max_forwards):
            raise self.error("Bad Request", detail="bad Max-Forwards")
        return start


def _unfold(lines: list[str]) -> list[str]:
    """Join continuation lines (leading SP/HT) onto the previous line (§7.3.1)."""
    out: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t") and len(out) > 1:
            out[-1] += " " + line.strip()
        else:
            out.append(line)
    return out


def _parse_start_line(line: str) -> SipRequest | SipResponse | SipParseError:
    """Parse Request-Line / Status-Line (§7.1, §7.2); errors are returned, not raised, so the
    caller can first learn whether it is able to respond."""
    if line.upper().startswith("SIP/"):
        version, _, rest = line.partition(" ")
        code, _, reason = rest.partition(" ")
        if version.upper() != SIP_VERSION or not re.fullmatch(r"[1-6][0-9][0-9]", code):
            return SipParseError("Bad Request", detail="bad status line")
        return SipResponse(status=int(code), reason=reason.strip())
    parts = line.split(" ")
    if len(parts) != 3 or not TOKEN_RE.fullmatch(parts[0]):
        return SipParseError("Bad Request", detail="bad request line")
    method, uri_text, version = parts
    if version.upper() != SIP_VERSION:
        if re.fullmatch(r"SIP/[0-9]+\.[0-9]+", version, re.IGNORECASE):
            return SipParseError("Version Not Supported", status=505)
        return SipParseError("Bad Request", detail="bad SIP version")
    try:
        return SipRequest(method=method, uri=SipUri.parse(uri_text))
    except UriError as exc:
        if exc.unsupported_scheme:
            return SipParseError("Unsupported URI Scheme", status=416)
        return SipParseError("Bad Request", detail="bad Request-URI")


def _parse_headers(lines: list[str]) -> Headers:
    """Collect headers leniently; `parse_message` validates the lines it needs afterwards."""
    items: list[tuple[str, str]] = []
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            continue
        key = canonical_name(name.strip())
        value = value.strip()
        if key in LIST_HEADERS and not (key == "Contact" and value == "*"):
            items += [(key, element) for element in split_list(value)]
        else:
            items.append((key, value))
    return Headers(items)


def _can_respond(headers: Headers) -> bool:
    """§8.2.6.2: a response copies Via, From, To, Call-ID and CSeq; it is routed by Via."""
    if any(headers.get(name) is None for name in _REQUIRED):
        return False
    try:
        Via.parse(headers.get("Via") or "")
    except UriError:
        return False
    return True


def build_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Headers | None = None,
    body: bytes = b"",
) -> SipResponse:
    """A response to `request` with the copied headers §8.2.6.2 requires.

    A To-tag is added when the request had none and the status is above 100; pass the
    dialog's tag so every response of a dialog carries the same one.
    """
    return _response_from(request.headers, status, reason, to_tag, headers, body)


def error_response(error: SipParseError, *, to_tag: str | None = None) -> SipResponse | None:
    """The answer to a malformed request, or None when it must be dropped silently."""
    if not error.respondable or error.headers is None:
        return None
    return _response_from(error.headers, error.status, error.reason, to_tag, None, b"")


def _response_from(
    src: Headers,
    status: int,
    reason: str | None,
    to_tag: str | None,
    extra: Headers | None,
    body: bytes,
) -> SipResponse:
    out = Headers([("Via", v) for v in src.get_all("Via")])
    out.add("From", src.get("From") or "")
    to = src.get("To") or ""
    if status > 100 and ";tag=" not in to.replace(" ", "").lower():
        to = f"{to};tag={to_tag or new_tag()}"
    out.add("To", to)
    out.add("Call-ID", src.get("Call-ID") or "")
    out.add("CSeq", src.get("CSeq") or "")
    timestamp = src.get("Timestamp")
    if status == 100 and timestamp is not None:
        out.add("Timestamp", timestamp)  # §8.2.6.1
    for name, value in extra or ():
        out.add(name, value)
    return SipResponse(status=status, reason=reason or REASONS.get(status, "Unknown"),
                       headers=out, body=body)  # fmt: skip


def new_tag() -> str:
    """A From/To tag with the 32 random bits §19.3 asks for (we use 64)."""
    return secrets.token_hex(8)


def new_branch() -> str:
    """A transaction branch, unique in space and time, with the §8.1.1.7 magic cookie."""
    return BRANCH_COOKIE + secrets.token_hex(10)


def new_call_id(host: str) -> str:
    """A globally unique Call-ID (§8.1.1.4)."""
    return f"{secrets.token_hex(12)}@{host}"


class StreamFramer:
    """Cuts a TCP/TLS byte stream into messages using Content-Length (§18.3).

    After a `SipParseError` the stream cannot be resynchronised: the transport answers (if
    `respondable`) and closes the connection.
    """

    def __init__(self, *, max_size: int = MAX_MESSAGE_SIZE, max_headers: int = MAX_HEADERS):
        self._buffer = bytearray()
        self._max_size = max_size
        self._max_headers = max_headers
        self.keepalives = 0  # RFC 5626 §3.5.1 CRLFCRLF pings seen; the transport answers CRLF
        self._crlf_run = 0  # CRLF bytes seen between messages since the last ping

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buffer += data

    def next_message(self) -> SipMessage | None:
        """The next complete message, None when more bytes are needed."""
        stripped = self._buffer.lstrip(b"\r\n")
        if len(stripped) != len(self._buffer):
            # A ping is a double CRLF, possibly split over segments; a lone CRLF is a pong,
            # which must not be answered (else two peers would ping-pong for ever).
            self._crlf_run += len(self._buffer) - len(stripped)
            if self._crlf_run >= 4:
                self.keepalives += 1
                self._crlf_run = 0
            self._buffer = bytearray(stripped)
        if self._buffer:
            self._crlf_run = 0
        match = _HEAD_END.search(self._buffer)
        if match is None:
            if len(self._buffer) > self._max_size:
                raise SipParseError("Message Too Large", status=513, detail="headers never end")
            return None
        head = bytes(self._buffer[: match.start()])
        found = _CONTENT_LENGTH.search(head)
        if found is None:
            self._buffer.clear()  # let parse_message build the respondable error
            return parse_message(head + b"\r\n\r\n", stream=True, max_size=self._max_size,
                                 max_headers=self._max_headers)  # fmt: skip
        end = match.end() + int(found.group(1))
        if end > self._max_size:
            raise _Head(head).error("Request Entity Too Large", 413, "body too large")
        if len(self._buffer) < end:
            return None
        frame = bytes(self._buffer[:end])
        del self._buffer[:end]
        return parse_message(frame, stream=True, max_size=self._max_size,
                             max_headers=self._max_headers)  # fmt: skip
