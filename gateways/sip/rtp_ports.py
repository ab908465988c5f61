"""RTP ports for calls, from a configured range (firewalls open exactly that range).

Ports are handed out round robin, even numbers only (RFC 3550 §11: RTP on even ports, RTCP
on the odd one above), so a port freed by one call is not reused at once by the next, and
stray packets of the old call do not reach the new one. A port that turns out to be taken
(another process, a call still closing) is skipped.
"""

from __future__ import annotations

import errno

from switchboard.gateways.sip.errors import SipError
from switchboard.gateways.sip.rtp_session import RtpSession

__all__ = ["NoRtpPort", "RtpPortRange"]


class NoRtpPort(SipError):
    """Every port of the RTP range is in use: the call is refused with 503."""


class RtpPortRange:
    """Opens `RtpSession`s on ports from `[first, last]` on `host`."""

    def __init__(self, first: int = 20000, last: int = 30000, *, host: str = "0.0.0.0") -> None:
        if not 1024 <= first <= last <= 65535:
            raise ValueError("RTP port range must be within 1024-65535, first <= last")
        self.host = host
        self._ports = list(range(first + (first % 2), last + 1, 2))
        if not self._ports:
            raise ValueError("RTP port range holds no even port")
        self._next = 0

    @property
    def size(self) -> int:
        return len(self._ports)

    async def open(self, session: RtpSession) -> int:
        """Bind `session` to the next free port of the range and return the port."""
        for _ in range(len(self._ports)):
            port = self._ports[self._next]
            self._next = (self._next + 1) % len(self._ports)
            try:
                await session.open(self.host, port)
            except OSError as exc:
                # uvloop wraps the bind error ("could not bind to local_addr") without an errno;
                # the cause carries it.
                cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else None
                if {exc.errno, cause.errno if cause else None} & {errno.EADDRINUSE,
                                                                  errno.EACCES}:
                    continue
                raise
            return port
        raise NoRtpPort(f"all {len(self._ports)} RTP ports are in use")
