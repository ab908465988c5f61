"""The UAC half of the user agent: outbound calls, and every request we send in a dialog.

`place_call` (RFC 3261 §13.2): an INVITE with our SDP offer, through the trunk's outbound
proxy; 401/407 challenges are answered with the trunk's credentials (§22.2, RFC 8760);
422 is retried with the peer's Min-SE (RFC 4028 §7.3); provisional responses and early media
are ignored; a 2xx is ACKed (§13.2.2.4) and its SDP answer applied to the RTP session. No
answer within the caller's timeout, or the awaiting task cancelled, sends CANCEL (§9.1); a
2xx that still arrives, or one from a second fork, is ACKed and then ended with BYE.

`request_in_dialog` sends BYE, REFER, re-INVITE, UPDATE through a client transaction on the
dialog's flow, answering one challenge; every failure becomes `CallFailed` (408 timeout, 503
transport), so callers catch one exception.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from switchboard.gateways.sip.auth import DigestClient
from switchboard.gateways.sip.call import SipCall
from switchboard.gateways.sip.dialog import Dialog, DialogState
from switchboard.gateways.sip.errors import (
    CallFailed,
    SdpError,
    SipError,
    TooManyTransactions,
    TransactionTimeout,
    TransportError,
)
from switchboard.gateways.sip.handler import ERROR, MediaOptions
from switchboard.gateways.sip.headers import Headers
from switchboard.gateways.sip.message import SipRequest, SipResponse, new_call_id
from switchboard.gateways.sip.rtp_session import RtpSession
from switchboard.gateways.sip.sdp import (
    NegotiatedAudio,
    SessionDescription,
    accept_answer,
    create_offer,
)
from switchboard.gateways.sip.session_timer import (
    SessionTimer,
    request_headers,
    terms_from_response,
)
from switchboard.gateways.sip.transaction import ClientTransaction, Flow, build_cancel
from switchboard.gateways.sip.transport import StreamFlow, UdpFlow
from switchboard.gateways.sip.trunk import Trunk
from switchboard.gateways.sip.uas import ALLOW
from switchboard.gateways.sip.uri import NameAddr, SipUri, UriError

if TYPE_CHECKING:
    from switchboard.gateways.sip.useragent import UserAgent

__all__ = ["Uac"]

log = logging.getLogger(__name__)


class Uac:
    def __init__(self, ua: UserAgent) -> None:
        self.ua = ua

    # -- outbound calls ------------------------------------------------------------------

    async def place_call(self, target: str, *, media: MediaOptions, trunk: str | None,
                         caller_id: str, caller_name: str | None, timeout: float,
                         on_progress: Callable[[int], None] | None = None) -> SipCall:  # fmt: skip
        ua = self.ua
        trunk_cfg = ua.trunks.get(trunk) if trunk is not None else None
        if trunk is not None and trunk_cfg is None:
            raise ValueError("unknown trunk: configure it in UserAgentConfig.trunks")
        uri = _target_uri(target, trunk_cfg)
        hop: tuple[str, str, int]
        if trunk_cfg is not None and trunk_cfg.proxy_host:
            hop = (trunk_cfg.transport, trunk_cfg.proxy_host, trunk_cfg.proxy_port)
        else:
            name = uri.transport.upper()
            hop = (name, uri.host, uri.port or (5061 if name == "TLS" else 5060))
        flow = await ua.transport.connect(*hop)
        call = SipCall(ua, direction="outbound", sip_call_id=new_call_id(ua.transport.advertised_host),
                       caller=caller_id, caller_name=caller_name, callee=uri.user or "",
                       trunk=trunk, remote=flow.remote)  # fmt: skip
        call.media = media
        call.outbound_proxy = hop if trunk_cfg is not None and trunk_cfg.proxy_host else None
        codec = media.preferences[0]
        placeholder = NegotiatedAudio(codec=codec, payload_type=codec.payload_type,
                                      dtmf_payload_type=101, remote_host="0.0.0.0",
                                      remote_port=0, direction="sendrecv")  # fmt: skip
        rtp = RtpSession(placeholder, on_audio=media.on_audio, on_dtmf=media.on_dtmf,
                         on_inactive=call.rtp_inactive, pcm_rate=media.pcm_rate,
                         inactivity_timeout=media.inactivity_timeout)  # fmt: skip
        port = await ua.rtp_ports.open(rtp)
        call.rtp = rtp
        offer = create_offer(local_host=ua.media_host, local_port=port,
                             session_id=call.sdp_session_id, preferences=media.preferences)
        call.local_sdp = offer
        try:
            invite, response = await self._invite(call, uri, flow, offer, trunk_cfg, timeout,
                                                  on_progress)  # fmt: skip
            if not 200 <= response.status < 300:
                raise CallFailed(response.status, response.reason,
                                 retry_after=_retry_after(response))  # fmt: skip
            await self._answered(call, invite, response, flow, offer)
        except BaseException:
            if call.end is None:
                call.rtp = None
                await rtp.aclose()
            raise
        return call

    async def _invite(self, call: SipCall, uri: SipUri, flow: UdpFlow | StreamFlow,
                      offer: SessionDescription, trunk: Trunk | None, timeout: float,
                      on_progress: Callable[[int], None] | None = None
                      ) -> tuple[SipRequest, SipResponse]:  # fmt: skip
        ua = self.ua
        domain = (trunk.domain or trunk.proxy_host) if trunk is not None else None
        local = NameAddr(uri=SipUri(user=call.caller or "anonymous",
                                    host=domain or ua.transport.advertised_host),
                         display_name=call.caller_name,
                         params={"tag": call.local_tag})  # fmt: skip
        digest = DigestClient(trunk.credentials) if trunk and trunk.credentials else None
        extra = request_headers(ua.config.session_timer) if ua.config.session_timer.enabled \
            else Headers()  # fmt: skip
        auth: tuple[str, str] | None = None
        for seq in range(1, 5):
            headers = Headers([("Via", ua.via(flow)), ("Max-Forwards", "70"),
                               ("From", str(local)), ("To", f"<{uri}>"),
                               ("Call-ID", call.sip_call_id), ("CSeq", f"{seq} INVITE"),
                               ("Contact", ua.contact(flow.transport_name)), ("Allow", ALLOW),
                               ("Supported", "timer"), ("User-Agent", ua.config.user_agent),
                               *extra.items(), *([auth] if auth else []),
                               ("Content-Type", "application/sdp")])  # fmt: skip
            invite = SipRequest(method="INVITE", uri=uri, headers=headers, body=offer.encode())
            tx = self._start(invite, flow)
            tx.on_2xx = lambda response, t=tx, f=flow: self._late_2xx(call, t, response, f)
            if on_progress is not None:
                tx.on_provisional = lambda response: on_progress(response.status)
            response = await self._final(tx, invite, flow, timeout)
            if response.status in (401, 407) and digest is not None and auth is None:
                auth = digest.authorize(response, "INVITE", str(uri))
                if auth is not None:
                    continue
            min_se = response.headers.get("Min-SE")
            if response.status == 422 and min_se and min_se.split(";")[0].strip().isdigit():
                extra = request_headers(ua.config.session_timer, min_se=int(min_se.split(";")[0]))
                continue
            return invite, response
        return invite, response

    def _start(self, request: SipRequest, flow: Flow) -> ClientTransaction:
        try:
            return self.ua.layer.send_request(request, flow)
        except TooManyTransactions:
            raise CallFailed(503, "Service Unavailable") from None

    async def _final(self, tx: ClientTransaction, invite: SipRequest, flow: Flow,
                     timeout: float) -> SipResponse:  # fmt: skip
        try:
            async with asyncio.timeout(timeout):
                return await tx.wait_final()
        except TimeoutError:
            await self._cancel(tx, invite, flow)
            raise CallFailed(408, "Request Timeout") from None
        except TransactionTimeout:
            raise CallFailed(408, "Request Timeout") from None
        except TransportError:
            raise CallFailed(503, "Service Unavailable") from None
        except asyncio.CancelledError:
            self.ua.spawn(self._cancel(tx, invite, flow), "sip-cancel")
            raise

    async def _cancel(self, tx: ClientTransaction, invite: SipRequest, flow: Flow) -> None:
        """§9.1: CANCEL a ringing INVITE; end a 2xx that crossed it with ACK and BYE."""
        if not tx.done:
            if not tx.provisional_seen:
                tx.abandon()  # §9.1: no CANCEL before a provisional response; stop instead
                return
            try:
                cancel_tx = self._start(build_cancel(invite), flow)
                await cancel_tx.wait_final()
            except (CallFailed, SipError):
                log.debug("CANCEL got no answer")
        try:
            async with asyncio.timeout(self.ua.timers.b):
                response = await tx.wait_final()
        except (TimeoutError, SipError):
            tx.abandon()
            return
        if 200 <= response.status < 300:
            self.reject_stray_2xx(response, flow)

    async def _answered(self, call: SipCall, invite: SipRequest, response: SipResponse,
                        flow: UdpFlow | StreamFlow, offer: SessionDescription) -> None:  # fmt: skip
        ua = self.ua
        call.dialog = dialog = Dialog.as_uac(invite, response)
        dialog.flow = flow
        ua.register_call(call)
        await self.send_ack(call, invite.cseq.seq)
        call.peer_allows_update = "UPDATE" in (m.strip().upper() for m in
                                               response.headers.get_all("Allow"))  # fmt: skip
        try:
            negotiated = accept_answer(offer, SessionDescription.parse(response.body))
        except SdpError as exc:
            await call.end_with_bye(ERROR)  # §13.2.1: the answer is unusable
            raise CallFailed(exc.status, "the answer SDP is unusable") from None
        assert call.rtp is not None
        await call.rtp.update(negotiated)
        call.accepted = True
        call.state = "active"
        terms = terms_from_response(response)
        if terms is not None:
            call.session_timer = SessionTimer(ua.scheduler, on_refresh=call.refresh_session,
                                              on_expired=call.session_expired)  # fmt: skip
            call.session_timer.start(terms, "uac")
        call.start_media_watch()

    def _late_2xx(self, call: SipCall, tx: ClientTransaction, response: SipResponse,
                  flow: Flow) -> None:  # fmt: skip
        """A 2xx after the first (RFC 6026 §7.1): a retransmission gets the ACK again (once
        we sent it); another fork's answer gets ACK and BYE (§13.2.2.4: we keep one dialog)."""
        first = tx.final_response
        if first is not None and response.to_addr.tag == first.to_addr.tag:
            self.resend_ack(call)
        else:
            self.reject_stray_2xx(response, flow)

    def resend_ack(self, call: SipCall) -> None:
        if call.ack_sent is None:
            return
        data, flow = call.ack_sent
        try:
            flow.send(data)
        except TransportError:
            log.debug("could not resend an ACK; the peer will give up on its 2xx")

    def reject_stray_2xx(self, response: SipResponse, flow: Flow) -> None:
        """ACK then BYE a 2xx we want no dialog for (a fork, or the answer to a CANCELled
        INVITE, §15: a session that was set up must be torn down with BYE)."""
        contacts = response.contacts
        if not isinstance(flow, UdpFlow | StreamFlow) or not contacts:
            return
        ua = self.ua
        dialog = Dialog(call_id=response.call_id, local=response.from_addr,
                        remote=response.to_addr, local_seq=response.cseq.seq, remote_seq=None,
                        remote_target=contacts[0].uri,
                        route_set=list(reversed(response.headers.get_all("Record-Route"))),
                        local_contact=ua.contact(flow.transport_name), role="uac",
                        state=DialogState.CONFIRMED)  # fmt: skip
        try:
            flow.send(dialog.create_ack(response.cseq.seq, via=ua.via(flow)).encode())
            ua.layer.send_request(dialog.create_request("BYE", via=ua.via(flow)), flow)
        except SipError:
            log.debug("could not end an unwanted 2xx")

    # -- in-dialog requests --------------------------------------------------------------

    async def request_in_dialog(self, call: SipCall, method: str, *, headers: Headers | None,
                                body: bytes, content_type: str | None) -> SipResponse:  # fmt: skip
        dialog = call.dialog
        if dialog is None:
            raise CallFailed(481, "Call/Transaction Does Not Exist")
        try:
            flow = await self.ua.dialog_flow(call)
        except TransportError:
            raise CallFailed(503, "Service Unavailable") from None
        trunk = self.ua.trunks.get(call.trunk) if call.trunk is not None else None
        auth: tuple[str, str] | None = None
        while True:
            extra = Headers((headers.items() if headers else []) + ([auth] if auth else []))
            request = dialog.create_request(method, via=self.ua.via(flow), headers=extra,
                                            body=body, content_type=content_type)  # fmt: skip
            tx = self._start(request, flow)
            if method == "INVITE":  # a re-INVITE's 2xx retransmissions get our ACK again
                tx.on_2xx = lambda _response: self.resend_ack(call)
            try:
                response = await tx.wait_final()
            except TransactionTimeout:
                raise CallFailed(408, "Request Timeout") from None
            except TransportError:
                raise CallFailed(503, "Service Unavailable") from None
            if response.status in (401, 407) and auth is None and trunk and trunk.credentials:
                auth = DigestClient(trunk.credentials).authorize(response, method,
                                                                 str(request.uri))  # fmt: skip
                if auth is not None:
                    continue
            return response

    async def send_ack(self, call: SipCall, invite_seq: int, body: bytes = b"") -> None:
        """§13.2.2.4: the ACK for a 2xx goes straight to the transport, kept for resending."""
        dialog = call.dialog
        if dialog is None:
            return
        flow = await self.ua.dialog_flow(call)
        ack = dialog.create_ack(invite_seq, via=self.ua.via(flow), body=body,
                                content_type="application/sdp" if body else None)  # fmt: skip
        data = ack.encode()
        call.ack_sent = (data, flow)
        try:
            flow.send(data)
        except TransportError:
            log.debug("could not send the ACK; a retransmitted 2xx will get it again")


def _target_uri(target: str, trunk: Trunk | None) -> SipUri:
    """A SIP URI as is; a number (or tel: URI) at the trunk's domain (RFC 3261 §19.1.6)."""
    text = target.strip()
    if text.lower().startswith(("sip:", "sips:")):
        try:
            return SipUri.parse(text)
        except UriError:
            raise ValueError("the call target is not a valid SIP URI") from None
    number = text[4:] if text.lower().startswith("tel:") else text
    domain = (trunk.domain or trunk.proxy_host) if trunk is not None else None
    if domain is None or not number or any(c in number for c in " @<>;\""):
        raise ValueError("dial a SIP URI, or a number through a trunk with a proxy")
    params: dict[str, str | None] = {"user": "phone"} if number.startswith("+") else {}
    return SipUri(user=number, host=domain, params=params)


def _retry_after(response: SipResponse) -> float | None:
    """§20.33: `Retry-After: 120;duration=3600` → 120.0; None when absent or malformed."""
    value = (response.headers.get("Retry-After") or "").split(";")[0].split("(")[0].strip()
    return float(value) if value.isascii() and value.isdigit() and len(value) < 10 else None
