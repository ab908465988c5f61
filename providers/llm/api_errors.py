"""HTTP API failures of the cloud LLM adapters, mapped to `ProviderError(retryable=...)`.

The pool fails over on retryable errors within the turn and reports the others, so the line
is drawn the way the vendors document it: 429 (rate limit), 408, 409, 5xx and 529
(overloaded) may work on another try or another provider; other 4xx (bad request, bad key,
unknown model) will not, and need a fix in the tenant's configuration.

Vendor error texts may echo the prompt (CONVENTIONS.md, personal data), so messages carry
only the HTTP status, the vendor's error *type* when it is a plain identifier
("rate_limit_error"), the request id and Retry-After, and errors are raised `from None` so
the vendor exception does not ride along in a logged traceback. API keys never appear: the
SDK holds them, and nothing here formats a request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from switchboard.providers.errors import (
    ProviderError,
    ProviderRejected,
    ProviderStalled,
    ProviderUnavailable,
)

_IDENTIFIER = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_RETRYABLE_TYPES = {"overloaded_error", "api_error", "rate_limit_error", "timeout_error",
                    "server_error", "rate_limit_exceeded", "internal_error",
                    "service_unavailable"}


def identifier(value: object) -> str | None:
    """`value` if it is a short plain identifier (safe to log), else None."""
    return value if isinstance(value, str) and _IDENTIFIER.match(value) else None


def error_type(body: object) -> str | None:
    """The vendor's error type or code from an error body (OpenAI `{"error": {"type"...}}`,
    Anthropic `{"type": "error", "error": {"type": ...}}`, or the inner object itself)."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            for key in ("type", "code"):
                found = identifier(inner.get(key))
                if found is not None:
                    return found
    return None


def _details(error_kind: str | None, request_id: str | None, retry_after: str | None) -> str:
    parts = []
    if error_kind:
        parts.append(f"type {error_kind}")
    if request_id and identifier(request_id):
        parts.append(f"request id {request_id}")
    if retry_after and re.fullmatch(r"\d{1,5}(\.\d+)?", retry_after):
        parts.append(f"retry after {retry_after} s")
    return f" ({', '.join(parts)})" if parts else ""


def status_error(provider: str, status: int, *, error_kind: str | None = None,
                 request_id: str | None = None, retry_after: str | None = None
                 ) -> ProviderError:
    """The error for an HTTP error status before the stream started."""
    details = _details(error_kind, request_id, retry_after)
    if status == 429:
        return ProviderUnavailable(
            f"{provider} rate-limited the request (HTTP 429){details}; fail over to the next "
            "provider, or raise the account's limits",
            provider=provider)
    if status in (408, 409) or status >= 500:
        return ProviderUnavailable(
            f"{provider} failed on its side (HTTP {status}){details}; fail over or retry",
            provider=provider)
    if status in (401, 403):
        return ProviderRejected(
            f"{provider} refused the credentials (HTTP {status}){details}; check the API key "
            "configured for this provider (it is not shown here) and its permissions",
            provider=provider)
    if status == 404:
        return ProviderRejected(
            f"{provider} has no such model or endpoint (HTTP 404){details}; check the model "
            "name and the base URL in the provider settings", provider=provider)
    return ProviderRejected(
        f"{provider} refused the request (HTTP {status}){details}; the request or the "
        "provider settings (model, max tokens, tools) need a fix; retrying will not help",
        provider=provider)


def stream_error(provider: str, error_kind: str | None, request_id: str | None = None
                 ) -> ProviderError:
    """The error for an `error` event in a stream that had started (HTTP 200)."""
    details = _details(error_kind, request_id, None)
    retryable = error_kind is None or error_kind in _RETRYABLE_TYPES
    if retryable:
        return ProviderUnavailable(
            f"{provider} reported an error mid-stream{details}; the reply is incomplete: fail "
            "over or retry", provider=provider)
    return ProviderRejected(
        f"{provider} reported an error mid-stream{details}; the request needs a fix",
        provider=provider)


def timeout_error(provider: str, seconds: float | None) -> ProviderError:
    waited = f" within {seconds:.1f} s" if seconds else ""
    return ProviderStalled(
        f"{provider} did not answer{waited} (network timeout); fail over or retry",
        provider=provider, waited_ms=(seconds or 0.0) * 1000)


def connection_error(provider: str) -> ProviderError:
    return ProviderUnavailable(
        f"could not reach {provider}, or the connection broke; check the base URL and the "
        "network, then fail over or retry", provider=provider)


def truncated_error(provider: str) -> ProviderError:
    return ProviderUnavailable(
        f"{provider}'s stream ended before the reply was finished; fail over or retry",
        provider=provider)


def bad_tool_call_error(provider: str) -> ProviderError:
    return ProviderError(
        f"{provider} streamed a tool call whose arguments are not a JSON object; another try "
        "may do better (a model that often does this needs a better prompt or model)",
        provider=provider, retryable=True)


def redact_url(url: str | None) -> str | None:
    """The URL without user:password or query (which may hold a key), for reprs and logs."""
    if url is None:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
