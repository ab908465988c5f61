"""Errors of the web gateway, each carrying the HTTP answer it becomes.

    WebError(status, code, message, retry_after)     every error the HTTP API answers with
    ├── BadRequest          400 bad_request      malformed JSON, SDP without audio, no codec
    ├── Unauthorized        401 unauthorized     no token, or an expired / forged / foreign one
    ├── Forbidden           403 forbidden        a valid token used for another agent or call
    ├── NotFound            404 not_found        unknown tenant, agent or call
    ├── TooManyCalls        429 quota_exceeded / rate_limited (with retry_after)
    └── Unavailable         503 unavailable      the tenant or the node cannot take the call now

On the wire (CONVENTIONS.md): `{"error": {"code": ..., "message": ..., "retry_after": ...}}`,
plus a `Retry-After` header (whole seconds, rounded up) when `retry_after` is set. Messages
name the cause and the fix and never carry personal data or secrets (token contents, SDP).
`refusal_to_error` maps the tenant actor's refusal codes (protocols/call.py) the same way the
SIP gateway maps them to 404 / 486 / 503.
"""

from __future__ import annotations

import math

from switchboard.actors.errors import ActorError, RemoteError


class WebError(Exception):
    status = 500
    default_code = "internal"

    def __init__(self, message: str, *, code: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code or self.default_code
        self.message = message
        self.retry_after = retry_after

    def body(self) -> dict[str, object]:
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.retry_after is not None:
            error["retry_after"] = round(self.retry_after, 3)
        return {"error": error}

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class BadRequest(WebError):
    status = 400
    default_code = "bad_request"


class Unauthorized(WebError):
    status = 401
    default_code = "unauthorized"


class Forbidden(WebError):
    status = 403
    default_code = "forbidden"


class NotFound(WebError):
    status = 404
    default_code = "not_found"


class TooManyCalls(WebError):
    status = 429
    default_code = "quota_exceeded"


class Unavailable(WebError):
    status = 503
    default_code = "unavailable"


_BY_REFUSAL: dict[str, type[WebError]] = {
    "not_found": NotFound,
    "quota_exceeded": TooManyCalls,
    "rate_limited": TooManyCalls,
    "forbidden": Forbidden,
    "bad_request": BadRequest,
    "unavailable": Unavailable,
}


def refusal_to_error(exc: ActorError) -> WebError:
    """The HTTP error for a failed ask to the tenant actor or the calls supervisor.

    A refusal keeps its code, message and retry_after; anything else (timeout, no node can
    host the tenant, the actor crashed) is 503: the caller may try again shortly.
    """
    if isinstance(exc, RemoteError) and exc.code in _BY_REFUSAL:
        cls = _BY_REFUSAL[exc.code]
        return cls(str(exc), code=exc.code, retry_after=exc.retry_after)
    return Unavailable(f"the call could not be set up right now ({exc.code}); try again in a "
                       "few seconds", retry_after=2.0)
