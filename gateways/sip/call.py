"""`SipCall`: one call (one INVITE dialog) as the gateway glue sees it.

It carries who called whom (personal data: never logged), the `RtpSession` with the audio,
and the few things a gateway does to a call: `answer()`, `hangup()`, `transfer()` (blind,
RFC 3515 REFER), `send_dtmf()` (RFC 4733) and `wait_ended()`. Everything else, the SIP
exchanges behind these and those the peer starts (BYE, re-INVITE, INFO, NOTIFY), is driven by
the user agent (`useragent`, `uas`, `uac`) through the underscore methods.

Lifecycle (`state`): inbound `admitting` → `ringing` (after `Accept`) → `active` (200 OK sent)
→ `ended`; outbound calls are returned `active` by `UserAgent.place_call`. `call_ended` of
the `CallHandler` and `wait_ended()` report the end exactly once, with a `CallEnd`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Coroutine
from typing import Any, Literal, Protocol

from switchboard.gateways.sip.dialog import AnswerRetransmitter, Dialog
from switchboard.gateways.sip.errors import CallFailed, SipError, TransferFailed
from switchboard.gateways.sip.handler import (
    ERROR,
    LOCAL_HANGUP,
    MAX_DURATION,
    RTP_TIMEOUT,
    SESSION_EXPIRED,
    TRANSFERRED,
    CallEnd,
    CallHandler,
    MediaOptions,
)
from switchboard.gateways.sip.headers import Headers
from switchboard.gateways.sip.message import SipResponse, build_response, new_tag
from switchboard.gateways.sip.rtp_session import RtpSession
from switchboard.gateways.sip.sdp import SessionDescription, accept_answer
from switchboard.gateways.sip.session_timer import (
    SessionTimer,
    SessionTimerTerms,
    terms_from_response,
)
from switchboard.gateways.sip.transaction import (
    Cancellable,
    Flow,
    Scheduler,
    ServerTransaction,
    Timers,
)
from switchboard.gateways.sip.uri import SipUri, UriError

__all__ = ["CallGone", "CallState", "SipCall"]

log = logging.getLogger(__name__)
CallState = Literal["admitting", "ringing", "active", "ended"]
Address = tuple[str, int]


class CallGone(SipError):
    """The call has ended (or the caller left before it was answered): nothing to do."""


class CallAgent(Protocol):
    """What a call needs from its user agent (implemented by `useragent.UserAgent`)."""

    timers: Timers
    handler: CallHandler

    @property
    def scheduler(self) -> Scheduler: ...

    async def request_in_dialog(self, call: SipCall, method: str, *, headers: Headers | None = None,
                                body: bytes = b"", content_type: str | None = None
                                ) -> SipResponse: ...  # fmt: skip

    async def send_ack(self, call: SipCall, invite_seq: int, body: bytes = b"") -> None: ...

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None: ...

    def forget_call(self, call: SipCall) -> None: ...


class SipCall:
    """One call; see the module docstring. Created by the user agent, never by the glue."""

    def __init__(self, agent: CallAgent, *, direction: Literal["inbound", "outbound"],
                 sip_call_id: str, caller: str, caller_name: str | None, callee: str,
                 trunk: str | None, remote: Address) -> None:  # fmt: skip
        loop = asyncio.get_running_loop()
        self._agent = agent
        self.id = f"sip-{secrets.token_hex(10)}"  # ours: safe in NATS subjects, unlike Call-ID
        self.sip_call_id = sip_call_id
        self.direction = direction
        self.caller = caller  # From user part (number or name); personal data
        self.caller_name = caller_name  # From display name; personal data
        self.callee = callee  # Request-URI (else To) user part, the dialled number; personal data
        self.trunk = trunk  # the trunk it came from or went through, if any
        self.remote_address = remote  # signalling peer
        self.state: CallState = "admitting" if direction == "inbound" else "ringing"
        self.accepted = False  # admitted (inbound) or answered (outbound): call_ended is due
        self.dialog: Dialog | None = None
        self.rtp: RtpSession | None = None
        self.media: MediaOptions | None = None
        self.end: CallEnd | None = None
        self.peer_allows_update = False
        self.local_sdp: SessionDescription | None = None  # our latest offer or answer
        self.pending_offer: SessionDescription | None = None  # our offer awaiting an answer
        self.sdp_session_id = secrets.randbelow(2**31)
        self.sdp_version = 1
        self.session_timer: SessionTimer | None = None
        self.retransmitter: AnswerRetransmitter | None = None
        self.ack_sent: tuple[bytes, Flow] | None = None  # UAC: the ACK, resent on every 2xx
        self.reinvite_in_progress = False
        self.invite_tx: ServerTransaction | None = None  # inbound: the INVITE we answer
        self.outbound_proxy: tuple[str, str, int] | None = None  # (transport, host, port)
        self.local_tag = new_tag()
        self._ended: asyncio.Future[CallEnd] = loop.create_future()
        self.answer_request: asyncio.Future[None] = loop.create_future()
        self.answered: asyncio.Future[None] = loop.create_future()
        self._transfer: asyncio.Future[int] | None = None
        self._limit: Cancellable | None = None

    def __repr__(self) -> str:  # no numbers: caller and callee are personal data
        return f"SipCall({self.id} {self.direction} {self.state})"

    # -- the glue's API ------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        """Rate of the PCM both ways (`MediaOptions.pcm_rate`)."""
        return self.media.pcm_rate if self.media is not None else 8000

    @property
    def on_hold(self) -> bool:
        """The peer put us on hold (re-INVITE with sendonly/inactive): our audio is not sent."""
        return self.rtp is not None and not self.rtp.media.may_send

    @property
    def ended(self) -> bool:
        return self.end is not None

    async def answer(self) -> None:
        """Send 200 OK with the SDP answer (inbound, once the agent is ready to greet).

        Returns when the 200 is sent; idempotent; a no-op on outbound calls. Raises `CallGone`
        if the caller already left. Must not be awaited inside `CallHandler.admit`.
        """
        if self.direction == "outbound":
            return
        if self.end is not None:
            raise CallGone("the caller already left")
        if not self.answer_request.done():
            self.answer_request.set_result(None)
        await asyncio.shield(self.answered)

    async def hangup(self, reason: str = LOCAL_HANGUP, *, status: int = 480) -> None:
        """End the call: BYE once answered, else a final `status` to the INVITE. Idempotent."""
        if self.end is not None:
            return
        if self.state in ("admitting", "ringing"):
            self.refuse_invite(status)
            self.finish(CallEnd(reason, "local", status))
            return
        await self.end_with_bye(reason)

    async def transfer(self, target: str, *, timeout: float = 32.0) -> None:
        """Blind transfer (RFC 3515): REFER the peer to `target` (a SIP/tel URI or a number).

        Returns when the peer accepted (202). The call then ends with reason `transferred`
        once the peer's NOTIFY reports the new call answered (or after `timeout` without
        news); a NOTIFY with a failure keeps the call up. Raises `TransferFailed` if the
        REFER is refused, `CallGone` if the call is not active, ValueError for a bad target.
        """
        if self.state != "active" or self.dialog is None:
            raise CallGone("only an answered call can be transferred")
        if not target.lower().startswith(("sip:", "sips:", "tel:")):
            target = f"sip:{target}@{self.dialog.remote_target.host}"
        try:
            SipUri.parse(target)
        except UriError:
            raise ValueError("transfer target is not a SIP URI, tel URI or number") from None
        self._transfer = asyncio.get_running_loop().create_future()
        headers = Headers([("Refer-To", f"<{target}>"),
                           ("Referred-By", f"<{self.dialog.local.uri}>")])  # fmt: skip
        try:
            response = await self._agent.request_in_dialog(self, "REFER", headers=headers)
        except CallFailed as exc:
            self._transfer = None
            raise TransferFailed(exc.status, exc.reason) from None
        if response.status >= 300:
            self._transfer = None
            raise TransferFailed(response.status, response.reason)
        self._agent.spawn(self._await_transfer(timeout), "sip-transfer")

    def send_dtmf(self, digits: str, duration_ms: int = 100) -> None:
        """Queue RFC 4733 digits on the RTP stream; ValueError if not negotiated."""
        if self.rtp is None or self.end is not None:
            raise CallGone("the call has no media")
        self.rtp.send_dtmf_nowait(digits, duration_ms)

    async def wait_ended(self) -> CallEnd:
        return await asyncio.shield(self._ended)

    # -- driven by the user agent ---------------------------------------------------------

    def refuse_invite(self, status: int, *, reason: str | None = None,
                      headers: Headers | None = None) -> None:  # fmt: skip
        """Answer our pending inbound INVITE with a final failure, if it is still pending."""
        tx = self.invite_tx
        if tx is None or tx.final:
            return
        tx.respond(build_response(tx.request, status, reason, to_tag=self.local_tag,
                                  headers=headers))  # fmt: skip

    def finish(self, end: CallEnd) -> None:
        """The call is over: stop every timer, release media, tell the handler (once)."""
        if self.end is not None:
            return
        self.end = end
        self.state = "ended"
        if self.retransmitter is not None:
            self.retransmitter.stop()
        if self.session_timer is not None:
            self.session_timer.stop()
        if self._limit is not None:
            self._limit.cancel()
        if self.dialog is not None:
            self.dialog.terminate()
        self._agent.forget_call(self)
        gone = CallGone("the call ended")
        for future in (self.answer_request, self.answered):
            if not future.done():
                future.set_exception(gone)
                future.exception()  # nobody may be waiting: not an unretrieved error
        if self._transfer is not None and not self._transfer.done():
            self._transfer.set_result(0)  # no news will come: the call is over
        if not self._ended.done():
            self._ended.set_result(end)
        if self.rtp is not None:
            self._agent.spawn(self._close_media(self.rtp), "sip-close-media")
        if self.accepted:
            try:
                self._agent.handler.call_ended(self, end)
            except Exception:
                log.exception("CallHandler.call_ended failed")

    async def _close_media(self, rtp: RtpSession) -> None:
        try:
            await rtp.aclose()
        # A media callback of the gateway raised earlier; the call is over, report it.
        except Exception:
            log.exception("a media callback failed during the call")

    async def end_with_bye(self, reason: str) -> None:
        """Finish the call now, then send BYE (§15.1.1) and wait briefly for its answer."""
        if self.end is not None or self.dialog is None:
            return
        self.finish(CallEnd(reason, "local"))
        try:
            async with asyncio.timeout(self._agent.timers.t1 * 8):
                await self._agent.request_in_dialog(self, "BYE")
        except (TimeoutError, CallFailed):
            log.debug("BYE got no final answer; the transaction keeps retransmitting")

    def start_media_watch(self) -> None:
        """Arm the max-duration limit and watch the RTP session for a failed callback."""
        if self.media is not None and self.media.max_duration is not None:
            self._limit = self._agent.scheduler.call_later(
                self.media.max_duration, lambda: self._spawn_bye(MAX_DURATION)
            )
        if self.rtp is not None:
            self._agent.spawn(self._watch_media(self.rtp), "sip-media-watch")

    async def _watch_media(self, rtp: RtpSession) -> None:
        try:
            await rtp.wait_closed()
        except Exception:
            log.exception("a media callback failed: ending the call")
            await self.end_with_bye(ERROR)

    def _spawn_bye(self, reason: str) -> None:
        if self.end is None:
            self._agent.spawn(self.end_with_bye(reason), "sip-bye")

    def rtp_inactive(self) -> None:
        """RtpSession saw no media: the glue decides, or we hang up (RTP_TIMEOUT)."""
        if self.state != "active":
            return  # ringing: no media is expected yet
        if self.media is not None and self.media.on_inactive is not None:
            self.media.on_inactive()
        else:
            self._spawn_bye(RTP_TIMEOUT)

    def session_expired(self) -> None:
        self._spawn_bye(SESSION_EXPIRED)

    def refresh_session(self) -> None:
        if self.end is None:
            self._agent.spawn(self._refresh(), "sip-session-refresh")

    async def _refresh(self) -> None:
        """RFC 4028 §7.4/§9: refresh with UPDATE when the peer allows it, else re-INVITE."""
        timer = self.session_timer
        if timer is None:
            return
        # In a refresh we send we are the UAC of that transaction (RFC 4028 §7.4).
        interval = timer.terms.interval
        expires = Headers([("Session-Expires", f"{interval};refresher=uac")])
        response: SipResponse | None = None
        try:
            if self.peer_allows_update or self.local_sdp is None:
                response = await self._agent.request_in_dialog(self, "UPDATE", headers=expires)
            else:
                response = await self.reinvite(self.local_sdp, headers=expires)
            status = response.status
        except CallFailed as exc:
            status = exc.status
        if status in (408, 481):  # RFC 4028 §10: the session is gone
            await self.end_with_bye(SESSION_EXPIRED)
            return
        if self.end is None:
            terms = terms_from_response(response) if response is not None else None
            timer.start(terms or SessionTimerTerms(interval, "uac"), "uac")

    async def reinvite(self, offer: SessionDescription, *, headers: Headers | None = None
                       ) -> SipResponse:  # fmt: skip
        """Send a re-INVITE with `offer`, ACK its 2xx, apply the answer to the RTP session."""
        self.reinvite_in_progress = True
        try:
            response = await self._agent.request_in_dialog(
                self, "INVITE", headers=headers, body=offer.encode(),
                content_type="application/sdp")  # fmt: skip
            if 200 <= response.status < 300:
                await self._agent.send_ack(self, response.cseq.seq)
                if response.body and self.rtp is not None:
                    await self.rtp.update(accept_answer(offer, SessionDescription.parse(
                        response.body)))  # fmt: skip
            return response
        finally:
            self.reinvite_in_progress = False

    def transfer_progress(self, status: int) -> None:
        """A NOTIFY sipfrag (RFC 3515 §2.4.5) reported the transferred call's `status`."""
        if self._transfer is not None and not self._transfer.done() and status >= 200:
            self._transfer.set_result(status)

    async def _await_transfer(self, timeout: float) -> None:
        transfer = self._transfer
        if transfer is None:
            return
        try:
            async with asyncio.timeout(timeout):
                status: int | None = await asyncio.shield(transfer)
        except TimeoutError:
            status = None
        self._transfer = None
        if self.end is not None:
            return  # the call ended meanwhile (the peer hung up after the transfer)
        if status is None or status < 300:
            await self.end_with_bye(TRANSFERRED)
        else:
            log.info("the peer could not complete the transfer; the call goes on")
