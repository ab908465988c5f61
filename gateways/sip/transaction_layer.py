"""The transaction layer: matches messages to transactions, absorbs retransmissions, caps load.

RFC 3261 §17.2.3: a request matches a server transaction by the top Via's branch (with the
`z9hG4bK` cookie), its sent-by, and the method, ACK counting as INVITE; CANCEL has its own
transaction with the INVITE's branch, which is how `find_invite` finds what it cancels.
Requests without the cookie (RFC 2543 peers) fall back to Call-ID, From tag, CSeq, Via and
Request-URI. §17.1.3: a response matches a client transaction by branch and CSeq method.

What the layer hands up to the transaction user (`TransactionUser`): each new server
transaction; each ACK that matched none (the ACK for a 2xx, which is end to end, §13.2.2.4);
each 2xx for an INVITE whose client transaction is gone (a late retransmission the dialog
must ACK again). A request over the `max_transactions` cap gets a stateless 503 with
Retry-After, so overload never grows memory.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

from switchboard.gateways.sip.errors import TooManyTransactions, TransportError
from switchboard.gateways.sip.headers import Headers
from switchboard.gateways.sip.message import (
    BRANCH_COOKIE,
    SipMessage,
    SipRequest,
    SipResponse,
    build_response,
)
from switchboard.gateways.sip.transaction import (
    ClientTransaction,
    Flow,
    Scheduler,
    ServerTransaction,
    State,
    Timers,
    Transaction,
)

__all__ = [
    "TransactionLayer",
    "TransactionStatistics",
    "TransactionUser",
    "client_key",
    "server_key",
]

log = logging.getLogger(__name__)
Key = tuple[str, ...]


class TransactionUser(Protocol):
    """The user agent above the layer (RFC 3261 calls it the TU)."""

    def request_received(self, transaction: ServerTransaction) -> None: ...

    def ack_received(self, ack: SipRequest, flow: Flow) -> None: ...

    def stray_2xx(self, response: SipResponse, flow: Flow) -> None: ...


@dataclass(frozen=True, slots=True)
class TransactionStatistics:
    server: int
    client: int
    retransmissions_absorbed: int
    overload_rejected: int
    stray_responses: int


def server_key(request: SipRequest) -> Key:
    """§17.2.3 matching key of a request's server transaction."""
    via = request.vias[0]
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch or ""
    if branch.startswith(BRANCH_COOKIE):
        return (branch, via.host, str(via.port or ""), method)
    return ("2543", request.call_id, request.from_addr.tag or "", str(request.cseq.seq),
            via.host, str(via.port or ""), branch, str(request.uri), method)  # fmt: skip


def client_key(message: SipMessage) -> Key:
    """§17.1.3: a response matches the client transaction of its top Via branch and CSeq."""
    return (message.vias[0].branch or "", message.cseq.method)


class TransactionLayer:
    def __init__(
        self,
        user: TransactionUser,
        *,
        timers: Timers | None = None,
        scheduler: Scheduler | None = None,
        max_transactions: int = 10_000,
    ) -> None:
        self.user = user
        self.timers = timers or Timers()
        self._scheduler: Scheduler = scheduler or asyncio.get_running_loop()
        self.max_transactions = max_transactions
        self._server: dict[Key, ServerTransaction] = {}
        self._client: dict[Key, ClientTransaction] = {}
        self._counts = {"absorbed": 0, "overload": 0, "stray": 0}

    # -- incoming ------------------------------------------------------------------------

    def receive(self, message: SipMessage, flow: Flow) -> None:
        """Route one parsed message from the transport (requests already Via-stamped)."""
        if isinstance(message, SipRequest):
            self.receive_request(message, flow)
        else:
            self.receive_response(message, flow)

    def receive_request(self, request: SipRequest, flow: Flow) -> None:
        key = server_key(request)
        existing = self._server.get(key)
        if request.method == "ACK":
            if existing is not None and existing.state in (State.COMPLETED, State.CONFIRMED):
                existing.receive_ack()  # the ACK for our non-2xx final: absorbed
                self._counts["absorbed"] += 1
            else:
                self.user.ack_received(request, flow)  # ACK for a 2xx: the dialog's business
            return
        if existing is not None:
            existing.receive_retransmission()
            self._counts["absorbed"] += 1
            return
        if len(self._server) >= self.max_transactions:
            self._counts["overload"] += 1
            busy = build_response(request, 503, headers=Headers([("Retry-After", "5")]))
            try:
                flow.send(busy.encode())
            except TransportError:
                log.debug("could not send 503 at the transaction cap: the peer is gone")
            return
        transaction = ServerTransaction(request, flow, self.timers, self._scheduler,
                                        self._forget, key)  # fmt: skip
        if transaction.state is State.TERMINATED:
            return  # its 100 Trying could not even be sent
        self._server[key] = transaction
        self.user.request_received(transaction)

    def receive_response(self, response: SipResponse, flow: Flow) -> None:
        transaction = self._client.get(client_key(response))
        if transaction is not None:
            transaction.receive(response)
        elif response.cseq.method == "INVITE" and 200 <= response.status < 300:
            self.user.stray_2xx(response, flow)
        else:
            self._counts["stray"] += 1

    def find_invite(self, cancel: SipRequest) -> ServerTransaction | None:
        """§9.2: the INVITE server transaction a CANCEL targets (same key, method INVITE)."""
        key = server_key(cancel)
        return self._server.get(key[:-1] + ("INVITE",))

    # -- outgoing ------------------------------------------------------------------------

    def send_request(self, request: SipRequest, flow: Flow) -> ClientTransaction:
        """Start a client transaction for `request` (not ACK: ACK has no transaction).

        Raises `TooManyTransactions` at the cap; a send failure shows in `wait_final()`.
        """
        if request.method == "ACK":
            raise ValueError("ACK is sent without a transaction (§17.1.1.3, §13.2.2.4)")
        if len(self._client) >= self.max_transactions:
            raise TooManyTransactions(f"{len(self._client)} client transactions live")
        key = client_key(request)
        transaction = ClientTransaction(request, flow, self.timers, self._scheduler,
                                        self._forget, key)  # fmt: skip
        self._client[key] = transaction
        transaction.start()
        return transaction

    # -- bookkeeping ---------------------------------------------------------------------

    def _forget(self, transaction: Transaction) -> None:
        server, client = self._server, self._client
        if isinstance(transaction, ServerTransaction) and server.get(transaction.key) is transaction:
            del server[transaction.key]
        elif isinstance(transaction, ClientTransaction) and client.get(transaction.key) is transaction:
            del client[transaction.key]

    def close(self) -> None:
        """Abandon every transaction (the user agent is stopping)."""
        for client in list(self._client.values()):
            client.abandon()
        for server in list(self._server.values()):
            server.terminate()

    def statistics(self) -> TransactionStatistics:
        return TransactionStatistics(
            server=len(self._server),
            client=len(self._client),
            retransmissions_absorbed=self._counts["absorbed"],
            overload_rejected=self._counts["overload"],
            stray_responses=self._counts["stray"],
        )
