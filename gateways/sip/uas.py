"""The UAS half of the user agent: inbound calls and the requests a peer sends in a dialog.

New INVITE (RFC 3261 §13.3): 100 Trying goes at once (the server transaction sends it);
digest is checked for trunks with credentials (§22, 401 challenge); the SDP offer is checked
(415, 400, 488) and the session timer negotiated (RFC 4028, 422) before the `CallHandler` is
asked; an `Accept` is answered with 180 Ringing, and 200 OK with the SDP answer follows when
the gateway calls `SipCall.answer()`; the RTP session opens then, on a port from the range.
A `Refuse` is answered with its status and Retry-After. An INVITE without SDP gets our offer
in the 200, and the answer is read from the ACK (§13.2.1).

CANCEL (§9.2): 200 to the CANCEL and 487 to the INVITE if it is still unanswered. In a
dialog: BYE (§15.1.2), re-INVITE and UPDATE (hold, codec change, session refresh; RFC 3264
§8, RFC 3311), INFO with DTMF (application/dtmf-relay), NOTIFY for our REFER (RFC 3515
§2.4.4), OPTIONS; REFER from the peer is answered 501 (we do not transfer on request).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING

from switchboard.gateways.sip.auth import AuthOutcome
from switchboard.gateways.sip.call import CallGone, SipCall
from switchboard.gateways.sip.dialog import AnswerRetransmitter, Dialog, DialogState
from switchboard.gateways.sip.dtmf import DtmfDigit
from switchboard.gateways.sip.errors import SdpError
from switchboard.gateways.sip.handler import (
    ACK_TIMEOUT,
    CANCELLED,
    ERROR,
    REFUSED,
    REMOTE_HANGUP,
    Accept,
    CallEnd,
)
from switchboard.gateways.sip.headers import Headers
from switchboard.gateways.sip.message import SipRequest, SipResponse, build_response
from switchboard.gateways.sip.rtp_ports import NoRtpPort
from switchboard.gateways.sip.rtp_session import RtpSession
from switchboard.gateways.sip.sdp import (
    NegotiatedAudio,
    SessionDescription,
    accept_answer,
    answer_offer,
    create_offer,
)
from switchboard.gateways.sip.session_timer import (
    IntervalTooSmall,
    SessionTimer,
    SessionTimerTerms,
    negotiate_as_uas,
    response_headers,
)
from switchboard.gateways.sip.transaction import ServerTransaction
from switchboard.gateways.sip.transport import StreamFlow, UdpFlow

if TYPE_CHECKING:
    from switchboard.gateways.sip.useragent import UserAgent

__all__ = ["ALLOW", "SUPPORTED", "Uas"]

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY"  # what we serve (§20.5)
SUPPORTED = frozenset(("timer",))  # option tags (§19.2): RFC 4028

log = logging.getLogger(__name__)
_DTMF_RELAY = re.compile(r"signal\s*=\s*([0-9*#A-Da-d!]|1[0-6])", re.IGNORECASE)
_DURATION = re.compile(r"duration\s*=\s*([0-9]{1,6})", re.IGNORECASE)
_SIPFRAG = re.compile(r"^SIP/2\.0\s+([1-6][0-9][0-9])")


class Uas:
    def __init__(self, ua: UserAgent) -> None:
        self.ua = ua

    # -- a new call ----------------------------------------------------------------------

    def invite(self, tx: ServerTransaction) -> None:
        ua, request = self.ua, tx.request
        flow = tx.flow
        assert isinstance(flow, UdpFlow | StreamFlow)
        trunk = ua.trunks.match(flow.remote[0])
        digest = ua.trunks.digest(trunk) if trunk is not None else None
        if digest is not None:
            outcome = digest.verify(request)
            if outcome is not AuthOutcome.OK:
                tx.respond(digest.challenge(request, stale=outcome is AuthOutcome.STALE))
                return
        if len(ua.calls) >= ua.config.max_calls:
            ua.reply(tx, 503, headers=Headers([("Retry-After", "5")]))
            return
        readable, offer = self._read_offer(tx)
        if not readable:
            return
        try:
            terms = negotiate_as_uas(request, ua.config.session_timer)
        except IntervalTooSmall as exc:
            ua.reply(tx, 422, headers=Headers([("Min-SE", str(exc.min_se))]))
            return
        to_user = request.to_addr.uri.user
        call = SipCall(ua, direction="inbound", sip_call_id=request.call_id,
                       caller=request.from_addr.uri.user or "",
                       caller_name=request.from_addr.display_name,
                       callee=request.uri.user or to_user or "",
                       trunk=trunk.name if trunk is not None else None,
                       remote=flow.remote)  # fmt: skip
        call.invite_tx = tx
        call.peer_allows_update = "UPDATE" in (m.strip().upper() for m in
                                               request.headers.get_all("Allow"))  # fmt: skip
        call.dialog = Dialog.as_uas(request, call.local_tag, ua.contact(flow.transport_name))
        call.dialog.flow = flow
        ua.register_call(call, tx.key)
        ua.spawn(self._run(call, tx, offer, terms), "sip-inbound-call")

    def _read_offer(self, tx: ServerTransaction) -> tuple[bool, SessionDescription | None]:
        """(True, the INVITE's SDP offer or None without a body), or (False, None) once the
        INVITE has been answered 415, 400 or 488 (RFC 3264 §6: nothing we can speak)."""
        request = tx.request
        if not request.body:
            return True, None
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/sdp":
            self.ua.reply(tx, 415, headers=Headers([("Accept", "application/sdp")]))
            return False, None
        try:
            offer = SessionDescription.parse(request.body)
            answer_offer(offer, local_host="127.0.0.1", local_port=9, session_id=1)  # usable?
        except SdpError as exc:
            self.ua.reply(tx, exc.status)
            return False, None
        return True, offer

    async def _run(self, call: SipCall, tx: ServerTransaction, offer: SessionDescription | None,
                   terms: SessionTimerTerms | None) -> None:  # fmt: skip
        ua = self.ua
        try:
            async with asyncio.timeout(ua.config.admit_timeout):
                admission = await ua.handler.admit(call)
        except TimeoutError:
            call.refuse_invite(503, headers=Headers([("Retry-After", "5")]))
            call.finish(CallEnd(ERROR, "local", 503))
            return
        except Exception:
            log.exception("CallHandler.admit failed; answering 500")
            call.refuse_invite(500)
            call.finish(CallEnd(ERROR, "local", 500))
            return
        if not isinstance(admission, Accept):
            headers = Headers()
            if admission.retry_after is not None:
                headers.add("Retry-After", str(max(0, round(admission.retry_after))))
            call.refuse_invite(admission.status, reason=admission.reason, headers=headers)
            call.finish(CallEnd(REFUSED, "local", admission.status))
            return
        call.accepted = True
        call.media = admission.media
        if call.end is not None:  # the caller left while we were deciding
            ua.handler.call_ended(call, call.end)
            return
        call.state = "ringing"
        if admission.ring:
            ua.reply(tx, 180, to_tag=call.local_tag, headers=Headers([("Contact",
                     call.dialog.local_contact if call.dialog else "")]))  # fmt: skip
        try:
            async with asyncio.timeout(ua.config.answer_timeout):
                await asyncio.shield(call.answer_request)
        except TimeoutError:
            await call.hangup(ERROR, status=480)
            return
        except CallGone:
            return
        await self._answer(call, tx, offer, terms)

    async def _answer(self, call: SipCall, tx: ServerTransaction, offer: SessionDescription | None,
                      terms: SessionTimerTerms | None) -> None:  # fmt: skip
        try:
            await self._open_media(call, offer)
        except (SdpError, NoRtpPort) as exc:
            status = exc.status if isinstance(exc, SdpError) else 503
            if call.rtp is not None:
                await call.rtp.aclose()
                call.rtp = None
            await call.hangup(ERROR, status=status)
            return
        if call.end is not None or call.local_sdp is None or call.dialog is None:
            return  # finish() closes the media opened meanwhile
        headers = Headers([("Contact", call.dialog.local_contact), ("Allow", ALLOW),
                           ("Supported", "timer"), ("Server", self.ua.config.user_agent)])  # fmt: skip
        if terms is not None:
            headers = Headers(headers.items() + response_headers(terms).items())
        ok = build_response(tx.request, 200, to_tag=call.local_tag, headers=headers,
                            body=call.local_sdp.encode())  # fmt: skip
        ok.headers.add("Content-Type", "application/sdp")
        tx.respond(ok)
        call.dialog.state = DialogState.CONFIRMED
        self._retransmit(call, ok, tx)
        call.state = "active"
        if terms is not None:
            call.session_timer = SessionTimer(self.ua.scheduler, on_refresh=call.refresh_session,
                                              on_expired=call.session_expired)  # fmt: skip
            call.session_timer.start(terms, "uas")
        call.start_media_watch()
        if not call.answered.done():
            call.answered.set_result(None)

    def _retransmit(self, call: SipCall, ok: SipResponse, tx: ServerTransaction) -> None:
        if call.retransmitter is not None:
            call.retransmitter.stop()
        call.retransmitter = AnswerRetransmitter(
            ok, tx.flow, self.ua.timers, self.ua.scheduler,
            on_timeout=lambda: self.ua.spawn(call.end_with_bye(ACK_TIMEOUT), "sip-ack-timeout"),
        )  # fmt: skip
        call.retransmitter.start()

    async def _open_media(self, call: SipCall, offer: SessionDescription | None) -> None:
        """Bind the call's RTP session on the port range and build our SDP (answer or offer)."""
        media, ua = call.media, self.ua
        assert media is not None
        host = ua.media_host
        if offer is not None:
            _, negotiated = answer_offer(offer, local_host=host, local_port=9, session_id=1,
                                         preferences=media.preferences)  # fmt: skip
        else:
            codec = media.preferences[0]
            negotiated = NegotiatedAudio(codec=codec, payload_type=codec.payload_type,
                                         dtmf_payload_type=101, remote_host="0.0.0.0",
                                         remote_port=0, direction="sendrecv")  # fmt: skip
        rtp = RtpSession(negotiated, on_audio=media.on_audio, on_dtmf=media.on_dtmf,
                         on_inactive=call.rtp_inactive, pcm_rate=media.pcm_rate,
                         inactivity_timeout=media.inactivity_timeout)  # fmt: skip
        port = await ua.rtp_ports.open(rtp)
        call.rtp = rtp
        if call.end is not None:
            await rtp.aclose()
            return
        if offer is not None:
            call.local_sdp, _ = answer_offer(offer, local_host=host, local_port=port,
                                             session_id=call.sdp_session_id,
                                             session_version=call.sdp_version,
                                             preferences=media.preferences)  # fmt: skip
        else:
            call.local_sdp = call.pending_offer = create_offer(
                local_host=host, local_port=port, session_id=call.sdp_session_id,
                session_version=call.sdp_version, preferences=media.preferences)  # fmt: skip

    # -- CANCEL and ACK ------------------------------------------------------------------

    def cancel(self, tx: ServerTransaction) -> None:
        """§9.2: answer the CANCEL; end the INVITE with 487 if we had not answered it."""
        invite = self.ua.layer.find_invite(tx.request)
        if invite is None:
            self.ua.reply(tx, 481)
            return
        self.ua.reply(tx, 200)
        if invite.final:
            return  # too late: the call is up, the peer will BYE
        call = self.ua.call_for_invite(invite)
        if call is None:
            invite.respond(build_response(invite.request, 487))
            return
        call.refuse_invite(487)
        call.finish(CallEnd(CANCELLED, "remote", 487))

    def ack(self, call: SipCall, ack: SipRequest) -> None:
        """The ACK for our 2xx: stop retransmitting; read the answer to an offer we made."""
        if call.retransmitter is not None and ack.cseq.seq == call.retransmitter.cseq:
            call.retransmitter.ack()
        offer = call.pending_offer
        if offer is None or not ack.body or call.rtp is None:
            return
        call.pending_offer = None
        try:
            negotiated = accept_answer(offer, SessionDescription.parse(ack.body))
        except SdpError:
            # §13.3.1.4: an unacceptable answer in the ACK ends the session with BYE.
            self.ua.spawn(call.end_with_bye(ERROR), "sip-bad-ack-answer")
            return
        self.ua.spawn(call.rtp.update(negotiated), "sip-rtp-update")

    # -- in-dialog requests --------------------------------------------------------------

    def in_dialog(self, tx: ServerTransaction, call: SipCall) -> None:
        ua, request = self.ua, tx.request
        assert call.dialog is not None
        status = call.dialog.check_request(request)
        if status is not None:
            ua.reply(tx, status, headers=Headers([("Retry-After", "1")]))
            return
        method = request.method
        if method == "BYE":
            ua.reply(tx, 200)
            if call.state in ("admitting", "ringing"):
                call.refuse_invite(487)  # §15.1.2
                call.finish(CallEnd(CANCELLED, "remote", 487))
            else:
                call.finish(CallEnd(REMOTE_HANGUP, "remote"))
        elif method in ("INVITE", "UPDATE"):
            ua.spawn(self._modify(tx, call), "sip-reinvite")
        elif method == "INFO":
            self._info(tx, call)
        elif method == "NOTIFY":
            self._notify(tx, call)
        elif method == "OPTIONS":
            ua.reply(tx, 200, headers=ua.capabilities())
        else:
            ua.reply(tx, 501)  # REFER, PRACK, anything else: not done in a dialog

    async def _modify(self, tx: ServerTransaction, call: SipCall) -> None:
        """re-INVITE or UPDATE: new SDP (hold, codec, address) and/or a session refresh."""
        ua, request = self.ua, tx.request
        if call.state != "active" or call.rtp is None or call.media is None:
            ua.reply(tx, 491 if request.method == "UPDATE" else 500,
                     headers=Headers([("Retry-After", "1")]))  # fmt: skip
            return
        unacked = call.retransmitter is not None and not call.retransmitter.acked
        if request.method == "INVITE" and unacked:
            # §14.2: our 2xx to the previous INVITE is not ACKed yet.
            ua.reply(tx, 500, headers=Headers([("Retry-After", "1")]))
            return
        if request.body and (call.reinvite_in_progress or call.pending_offer is not None):
            ua.reply(tx, 491)  # §14.2 / RFC 3311 §5.2: an offer/answer exchange is pending
            return
        try:
            terms = negotiate_as_uas(request, ua.config.session_timer)
        except IntervalTooSmall as exc:
            ua.reply(tx, 422, headers=Headers([("Min-SE", str(exc.min_se))]))
            return
        body = b""
        if request.body:
            try:
                offer = SessionDescription.parse(request.body)
                answer, negotiated = answer_offer(
                    offer, local_host=ua.media_host, local_port=call.rtp.local_address[1],
                    session_id=call.sdp_session_id, session_version=call.sdp_version + 1,
                    preferences=call.media.preferences)  # fmt: skip
            except SdpError as exc:
                ua.reply(tx, exc.status)  # the old session goes on (RFC 3264 §8)
                return
            call.sdp_version += 1
            call.local_sdp = answer
            await call.rtp.update(negotiated)
            body = answer.encode()
        elif request.method == "INVITE" and call.local_sdp is not None:
            # §14.2: a re-INVITE without SDP gets our offer; the answer comes in the ACK.
            call.pending_offer = call.local_sdp
            body = call.local_sdp.encode()
        headers = Headers([("Contact", call.dialog.local_contact if call.dialog else ""),
                           ("Supported", "timer")])  # fmt: skip
        if terms is not None:
            headers = Headers(headers.items() + response_headers(terms).items())
        if body:
            headers.add("Content-Type", "application/sdp")
        ok = build_response(request, 200, headers=headers, body=body)
        tx.respond(ok)
        if request.method == "INVITE":
            self._retransmit(call, ok, tx)
        if terms is not None and call.end is None:
            if call.session_timer is None:
                call.session_timer = SessionTimer(ua.scheduler, on_refresh=call.refresh_session,
                                                  on_expired=call.session_expired)  # fmt: skip
            call.session_timer.start(terms, "uas")

    def _info(self, tx: ServerTransaction, call: SipCall) -> None:
        """DTMF over SIP INFO (application/dtmf-relay, application/dtmf): what some SBCs send
        instead of RFC 4733. Digits go to the same `on_dtmf` callback."""
        request = tx.request
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        text = request.body.decode("utf-8", errors="replace")
        digit, duration = None, 100
        if content_type == "application/dtmf-relay":
            found = _DTMF_RELAY.search(text)
            digit = found.group(1) if found else None
            if (length := _DURATION.search(text)) is not None:
                duration = int(length.group(1))
        elif content_type == "application/dtmf":
            digit = text.strip()[:2] or None
        elif request.body:
            self.ua.reply(tx, 415, headers=Headers([("Accept", "application/dtmf-relay")]))
            return
        self.ua.reply(tx, 200)
        if digit is not None and digit.isdigit() and int(digit) >= 10:
            digit = "0123456789*#ABCD!"[int(digit)] if int(digit) <= 16 else None
        if digit and call.media is not None and call.media.on_dtmf is not None:
            call.media.on_dtmf(DtmfDigit(digit=digit.upper(), duration_ms=duration, volume=0))

    def _notify(self, tx: ServerTransaction, call: SipCall) -> None:
        """RFC 3515 §2.4.5: the progress of a REFER we sent, as a message/sipfrag."""
        event = (tx.request.headers.get("Event") or "").split(";")[0].strip().lower()
        if event != "refer":
            self.ua.reply(tx, 489, reason="Bad Event")  # RFC 6665 §8.3.2
            return
        self.ua.reply(tx, 200)
        found = _SIPFRAG.match(tx.request.body.decode("utf-8", errors="replace").lstrip())
        if found is not None:
            call.transfer_progress(int(found.group(1)))
