"""RFC 4028 session timers: end calls whose far end vanished without a BYE.

Both sides agree on an interval (Session-Expires, at least Min-SE) and on who refreshes
(`refresher=uac|uas`). The refresher sends a re-INVITE or UPDATE at half the interval
(§10); the other side, if no refresh arrived by `interval - min(32, interval/3)` seconds,
sends BYE (§10). Here:

- `negotiate_as_uas` reads an INVITE and decides the terms (or raises `IntervalTooSmall`,
  answered with 422 and our Min-SE, §9); `response_headers` writes them into the 2xx.
- `request_headers` and `terms_from_response` are the UAC's half (§7).
- `SessionTimer` runs one dialog's timer and calls `on_refresh` or `on_expired`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from switchboard.gateways.sip.errors import SipError
from switchboard.gateways.sip.headers import Headers
from switchboard.gateways.sip.message import SipRequest, SipResponse
from switchboard.gateways.sip.transaction import Cancellable, Scheduler
from switchboard.gateways.sip.uri import parse_params

__all__ = [
    "IntervalTooSmall",
    "SessionTimer",
    "SessionTimerConfig",
    "SessionTimerTerms",
    "negotiate_as_uas",
    "request_headers",
    "response_headers",
    "terms_from_response",
]

Role = Literal["uac", "uas"]


class IntervalTooSmall(SipError):
    """§9: the offered Session-Expires is below our Min-SE; answer 422 with `min_se`."""

    def __init__(self, min_se: int) -> None:
        super().__init__("Session-Expires below Min-SE")
        self.min_se = min_se


@dataclass(frozen=True, slots=True)
class SessionTimerConfig:
    """Our side's wishes; `interval` when we ask for a timer, never below `min_se` (≥ 90)."""

    enabled: bool = True
    interval: int = 1800
    min_se: int = 90
    require_on_inbound: bool = False  # ask for a timer even if the caller did not


@dataclass(frozen=True, slots=True)
class SessionTimerTerms:
    interval: int
    refresher: Role


def _session_expires(message: SipRequest | SipResponse) -> tuple[int, Role | None] | None:
    value = message.headers.get("Session-Expires")
    if value is None:
        return None
    delta, _, params_text = value.partition(";")
    delta = delta.strip()
    if not delta.isascii() or not delta.isdigit() or len(delta) > 9:
        return None
    try:
        refresher = parse_params(params_text).get("refresher")
    except SipError:
        refresher = None
    role: Role | None = refresher if refresher in ("uac", "uas") else None  # type: ignore[assignment]
    return int(delta), role


def _supports_timer(message: SipRequest | SipResponse) -> bool:
    tags = message.headers.get_all("Supported") + message.headers.get_all("Require")
    return any(tag.strip().lower() == "timer" for tag in tags)


def negotiate_as_uas(request: SipRequest, config: SessionTimerConfig) -> SessionTimerTerms | None:
    """§9: the terms for our 2xx to `request`, None for no timer; may raise IntervalTooSmall."""
    if not config.enabled:
        return None
    offered = _session_expires(request)
    supported = _supports_timer(request)
    if offered is None:
        if not config.require_on_inbound:
            return None
        return SessionTimerTerms(config.interval, "uac" if supported else "uas")
    interval, refresher = offered
    if interval < config.min_se:
        raise IntervalTooSmall(config.min_se)
    if not supported:
        return SessionTimerTerms(interval, "uas")  # §9: the UAC cannot refresh
    return SessionTimerTerms(interval, refresher or "uac")


def response_headers(terms: SessionTimerTerms) -> Headers:
    """§9: Session-Expires in our 2xx; Require: timer when the UAC must refresh."""
    headers = Headers([("Session-Expires", f"{terms.interval};refresher={terms.refresher}")])
    if terms.refresher == "uac":
        headers.add("Require", "timer")
    return headers


def request_headers(config: SessionTimerConfig, *, min_se: int | None = None) -> Headers:
    """§7.1: what a UAC asks for in an INVITE (after a 422, with its Min-SE)."""
    floor = max(config.min_se, min_se or 0)
    return Headers([("Session-Expires", str(max(config.interval, floor))),
                    ("Min-SE", str(floor))])  # fmt: skip


def terms_from_response(response: SipResponse) -> SessionTimerTerms | None:
    """§7.2: the terms a 2xx to our INVITE set; refresher defaults to us, the UAC."""
    found = _session_expires(response)
    if found is None:
        return None
    return SessionTimerTerms(found[0], found[1] or "uac")


class SessionTimer:
    """One dialog's timer: refresh at half the interval, or expire without a refresh."""

    def __init__(self, scheduler: Scheduler, *, on_refresh: Callable[[], None],
                 on_expired: Callable[[], None]) -> None:  # fmt: skip
        self._scheduler = scheduler
        self._on_refresh = on_refresh
        self._on_expired = on_expired
        self._handle: Cancellable | None = None
        self.terms = SessionTimerTerms(1800, "uac")
        self.we_refresh = False

    def start(self, terms: SessionTimerTerms, role: Role) -> None:
        """(Re)start after the transaction that set `terms` (`role`: ours in it) succeeded.

        RFC 4028 names the refresher by its role in the last session refresh transaction,
        so the same dialog may say `uac` for us in one refresh and `uas` in the next.
        """
        self.stop()
        self.terms = terms
        self.we_refresh = terms.refresher == role
        interval = terms.interval
        if self.we_refresh:
            self._handle = self._scheduler.call_later(interval / 2, self._on_refresh)
        else:
            wait = interval - min(32.0, interval / 3)  # §10: BYE before the session expires
            self._handle = self._scheduler.call_later(wait, self._on_expired)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
