"""The SIP user agent: transport + transactions + dialogs + calls, behind one object.

    async with UserAgent(config, handler) as ua:       # listens on UDP/TCP (and TLS)
        ...                                             # inbound calls reach handler.admit()
        call = await ua.place_call("+15550100", media=MediaOptions(...), trunk="carrier")

The user agent is the transaction user of RFC 3261 (§8, §12-§15): it routes each new server
transaction (`request_received`) to the UAS half (`uas.Uas`), each ACK for a 2xx to its
dialog, each late 2xx to the UAC half (`uac.Uac`), which ACKs it again. Out of dialog it
answers OPTIONS itself (200 with Allow/Accept/Supported, §11.2), unknown methods with 501,
known ones it does not serve with 405 and Allow (§8.2.1), requests in an unknown dialog with
481, and a Require it does not support with 420 (§8.2.2.3).

Tasks it starts (one per inbound call setup, BYEs, refreshes) are owned here, logged if they
fail, and cancelled by `aclose()`, which first hangs up every call (reason `shutdown`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self

from switchboard.gateways.sip.call import SipCall
from switchboard.gateways.sip.dialog import DialogId
from switchboard.gateways.sip.errors import CallFailed
from switchboard.gateways.sip.handler import SHUTDOWN, CallEnd, CallHandler, MediaOptions
from switchboard.gateways.sip.headers import Headers
from switchboard.gateways.sip.message import (
    SipMessage,
    SipRequest,
    SipResponse,
    build_response,
    new_branch,
)
from switchboard.gateways.sip.rtp_ports import RtpPortRange
from switchboard.gateways.sip.session_timer import SessionTimerConfig
from switchboard.gateways.sip.source_policy import FloodLimit, SourcePolicy
from switchboard.gateways.sip.transaction import Flow, Scheduler, ServerTransaction, Timers
from switchboard.gateways.sip.transaction_layer import TransactionLayer, TransactionStatistics
from switchboard.gateways.sip.transport import (
    SipTransport,
    StreamFlow,
    TransportConfig,
    TransportStatistics,
    UdpFlow,
)
from switchboard.gateways.sip.trunk import Trunk, TrunkTable
from switchboard.gateways.sip.uac import Uac
from switchboard.gateways.sip.uas import ALLOW, SUPPORTED, Uas

__all__ = ["UserAgent", "UserAgentConfig", "UserAgentStatistics"]

log = logging.getLogger(__name__)
_IN_DIALOG_ONLY = frozenset(("BYE", "INFO", "UPDATE", "NOTIFY", "PRACK"))
_KNOWN = frozenset(("REFER", "REGISTER", "SUBSCRIBE", "MESSAGE", "PUBLISH"))


@dataclass(frozen=True, slots=True)
class UserAgentConfig:
    """Everything the user agent needs; the defaults suit one box behind no NAT."""

    transport: TransportConfig = field(default_factory=TransportConfig)
    trunks: Sequence[Trunk] = ()
    only_trunks: bool = False  # True: requests from outside every trunk's networks are refused
    on_denied: Literal["reject", "drop"] = "drop"  # refused sources: 403, or silence
    flood: FloodLimit | None = field(default_factory=FloodLimit)  # per IP; trunks are exempt
    timers: Timers = field(default_factory=Timers)
    rtp_ports: tuple[int, int] = (20000, 30000)
    rtp_host: str = "0.0.0.0"  # where RTP sockets bind
    media_host: str | None = None  # the address in our SDP; default: the advertised SIP host
    admit_timeout: float = 5.0  # CallHandler.admit slower than this: 503
    answer_timeout: float = 60.0  # accepted but never answered: 480
    max_calls: int = 2000
    max_transactions: int = 10_000
    session_timer: SessionTimerConfig = field(default_factory=SessionTimerConfig)
    user_agent: str = "Switchboard"
    contact_user: str = "switchboard"
    symmetric_udp: bool = False  # in-dialog requests to where the INVITE came from (NAT)


@dataclass(frozen=True, slots=True)
class UserAgentStatistics:
    calls: int
    transport: TransportStatistics
    transactions: TransactionStatistics
    task_failures: int


class UserAgent:
    """See the module docstring. Use as an async context manager, or start()/aclose()."""

    def __init__(self, config: UserAgentConfig, handler: CallHandler, *,
                 scheduler: Scheduler | None = None) -> None:  # fmt: skip
        self.config = config
        self.handler = handler
        self.timers = config.timers
        self._scheduler = scheduler
        self.trunks = TrunkTable(config.trunks)
        allow = self.trunks.networks if config.only_trunks else None
        self.policy = SourcePolicy(allow=allow, exempt=self.trunks.networks,
                                   on_denied=config.on_denied, flood=config.flood)  # fmt: skip
        self.transport = SipTransport(config.transport, self._on_message, self.policy)
        self.rtp_ports = RtpPortRange(*config.rtp_ports, host=config.rtp_host)
        self._layer: TransactionLayer | None = None
        self._dialogs: dict[DialogId, SipCall] = {}
        self._invites: dict[tuple[str, ...], SipCall] = {}
        self._calls: set[SipCall] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures = 0
        self.uas = Uas(self)
        self.uac = Uac(self)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._scheduler is None:
            self._scheduler = loop
        self._layer = TransactionLayer(self, timers=self.timers, scheduler=self._scheduler,
                                       max_transactions=self.config.max_transactions)  # fmt: skip
        await self.transport.start()

    async def aclose(self) -> None:
        """Hang up every call (BYE, or 503 to unanswered INVITEs), then stop listening."""
        for call in list(self._calls):
            if call.state == "active":
                self.spawn(call.end_with_bye(SHUTDOWN), "sip-shutdown-bye")
            else:
                call.refuse_invite(503, headers=Headers([("Retry-After", "5")]))
                call.finish(CallEnd(SHUTDOWN, "local", 503))
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self.timers.t1 * 4)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._layer is not None:
            self._layer.close()
        await self.transport.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def scheduler(self) -> Scheduler:
        if self._scheduler is None:
            raise RuntimeError("UserAgent is not started")
        return self._scheduler

    @property
    def layer(self) -> TransactionLayer:
        if self._layer is None:
            raise RuntimeError("UserAgent is not started")
        return self._layer

    @property
    def calls(self) -> list[SipCall]:
        return list(self._calls)

    @property
    def media_host(self) -> str:
        return self.config.media_host or self.transport.advertised_host

    def statistics(self) -> UserAgentStatistics:
        return UserAgentStatistics(calls=len(self._calls),
                                   transport=self.transport.statistics(),
                                   transactions=self.layer.statistics(),
                                   task_failures=self._failures)  # fmt: skip

    async def place_call(self, target: str, *, media: MediaOptions, trunk: str | None = None,
                         caller_id: str = "anonymous", caller_name: str | None = None,
                         timeout: float = 60.0,
                         on_progress: Callable[[int], None] | None = None) -> SipCall:  # fmt: skip
        """Dial `target` (a number, through `trunk`; or a SIP URI) and return the answered call.

        Early media is ignored; `on_progress(status)` sees each provisional status (100, 180,
        183) as it arrives. Raises `CallFailed` with the final status (486 busy, 408 no
        answer within `timeout`...), `TransportError` if the trunk cannot be reached.
        Cancelling the awaiting task sends CANCEL.
        """
        return await self.uac.place_call(target, media=media, trunk=trunk, caller_id=caller_id,
                                         caller_name=caller_name, timeout=timeout,
                                         on_progress=on_progress)  # fmt: skip

    # -- tasks and registry (the CallAgent interface of SipCall) --------------------------

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            self._failures += 1
            log.error("SIP task %s failed", task.get_name(), exc_info=error)

    def register_call(self, call: SipCall, invite_key: tuple[str, ...] | None = None) -> None:
        self._calls.add(call)
        if call.dialog is not None:
            self._dialogs[call.dialog.id] = call
        if invite_key is not None:
            self._invites[invite_key] = call

    def forget_call(self, call: SipCall) -> None:
        self._calls.discard(call)
        if call.dialog is not None and self._dialogs.get(call.dialog.id) is call:
            del self._dialogs[call.dialog.id]
        if call.invite_tx is not None and self._invites.get(call.invite_tx.key) is call:
            del self._invites[call.invite_tx.key]

    def call_for_invite(self, transaction: ServerTransaction) -> SipCall | None:
        return self._invites.get(transaction.key)

    def call_for_dialog(self, dialog_id: DialogId) -> SipCall | None:
        return self._dialogs.get(dialog_id)

    async def request_in_dialog(self, call: SipCall, method: str, *, headers: Headers | None = None,
                                body: bytes = b"", content_type: str | None = None
                                ) -> SipResponse:  # fmt: skip
        return await self.uac.request_in_dialog(call, method, headers=headers, body=body,
                                                content_type=content_type)  # fmt: skip

    async def send_ack(self, call: SipCall, invite_seq: int, body: bytes = b"") -> None:
        await self.uac.send_ack(call, invite_seq, body)

    # -- addresses -----------------------------------------------------------------------

    def via(self, flow: UdpFlow | StreamFlow) -> str:
        """Our Via for a request on `flow`: sent-by, a fresh branch, rport (RFC 3581 §3)."""
        host, port = self.transport.local_address(flow.transport_name)
        return f"SIP/2.0/{flow.transport_name} {_host(host)}:{port};branch={new_branch()};rport"

    def contact(self, transport_name: str) -> str:
        host, port = self.transport.local_address(transport_name)
        suffix = "" if transport_name == "UDP" else f";transport={transport_name.lower()}"
        return f"<sip:{self.config.contact_user}@{_host(host)}:{port}{suffix}>"

    async def dialog_flow(self, call: SipCall) -> UdpFlow | StreamFlow:
        """Where in-dialog requests go: the call's connection while it lives (§18.1.1 reuse),
        the trunk's outbound proxy, or the dialog's next hop (§12.2.1.1, §8.1.2)."""
        dialog = call.dialog
        if dialog is None:
            raise CallFailed(481, "Call/Transaction Does Not Exist")
        flow = dialog.flow
        if isinstance(flow, StreamFlow) and not flow.closed:
            return flow
        if call.outbound_proxy is not None:
            return await self.transport.connect(*call.outbound_proxy)
        if self.config.symmetric_udp and isinstance(flow, UdpFlow):
            return flow
        hop = dialog.next_hop()
        name = hop.transport.upper()
        default_port = 5061 if name == "TLS" else 5060
        return await self.transport.connect(name, hop.host, hop.port or default_port)

    # -- the transaction user -------------------------------------------------------------

    def _on_message(self, message: SipMessage, flow: UdpFlow | StreamFlow) -> None:
        self.layer.receive(message, flow)

    def reply(self, transaction: ServerTransaction, status: int, *, reason: str | None = None,
              headers: Headers | None = None, to_tag: str | None = None) -> None:  # fmt: skip
        response = build_response(transaction.request, status, reason, to_tag=to_tag,
                                  headers=headers)  # fmt: skip
        response.headers.add("Server", self.config.user_agent)
        transaction.respond(response)

    def capabilities(self) -> Headers:
        return Headers([("Allow", ALLOW), ("Accept", "application/sdp"),
                        ("Supported", ", ".join(sorted(SUPPORTED)))])  # fmt: skip

    def request_received(self, transaction: ServerTransaction) -> None:
        request = transaction.request
        method = request.method
        if method == "CANCEL":
            self.uas.cancel(transaction)
            return
        to_tag = request.to_addr.tag
        if to_tag is not None:
            call = self._dialogs.get((request.call_id, to_tag, request.from_addr.tag or ""))
            if call is None:
                self.reply(transaction, 481)  # §12.2.2
            else:
                self.uas.in_dialog(transaction, call)
            return
        unsupported = [t for t in request.headers.get_all("Require") if t not in SUPPORTED]
        if unsupported:
            self.reply(transaction, 420, headers=Headers([("Unsupported", t) for t in unsupported]))
        elif method == "INVITE":
            self.uas.invite(transaction)
        elif method == "OPTIONS":
            self.reply(transaction, 200, headers=self.capabilities())
        elif method in _IN_DIALOG_ONLY:
            self.reply(transaction, 481)
        elif method in _KNOWN:
            self.reply(transaction, 405, headers=Headers([("Allow", ALLOW)]))
        else:
            self.reply(transaction, 501)

    def ack_received(self, ack: SipRequest, flow: Flow) -> None:
        call = self._dialogs.get((ack.call_id, ack.to_addr.tag or "", ack.from_addr.tag or ""))
        if call is not None:
            self.uas.ack(call, ack)

    def stray_2xx(self, response: SipResponse, flow: Flow) -> None:
        dialog_id = (response.call_id, response.from_addr.tag or "", response.to_addr.tag or "")
        call = self._dialogs.get(dialog_id)
        if call is not None and call.ack_sent is not None:
            self.uac.resend_ack(call)  # §13.2.2.4: ACK every retransmitted 2xx
        else:
            self.uac.reject_stray_2xx(response, flow)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
