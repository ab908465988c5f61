"""The actor system of one node: local actors, their subjects, and the wire protocol of asks.

Wire format (kept minimal, because an `ask` must cost little more than a raw NATS request):
a message is its msgspec/msgpack encoding, published on the actor's subject with a reply
subject; a reply is the encoded result, or, with the `Sb-Error` header, an `ErrorReply`.
Reply subjects live under this system's inbox, `_SB.<system>.a.<n>` for asks and
`_SB.<system>.t.<n>` for tells: a tell carries a reply subject too, so that NATS answers
"no responders" (status 503) when the actor is not active anywhere — a virtual actor is then
activated and the tell re-sent; anything else is dead-lettered, never silently lost — and so
that a receiver can say "mailbox full" back to the sender.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
import typing
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
from switchboard.actors.actor import Actor
from switchboard.actors.cell import ActorCell, Parent
from switchboard.actors.errors import (
    ActorDeadError,
    ActorError,
    ActorNotFound,
    AskTimeout,
    BadMessage,
    MailboxFull,
    error_to_reply,
    reply_to_error,
)
from switchboard.actors.mailbox import Envelope, Mailbox
from switchboard.actors.metrics import ACTIVE_ACTORS, DEAD_LETTERS
from switchboard.actors.ref import ActorRef
from switchboard.actors.tasks import TaskOwner
from switchboard.actors.transport import (
    Inbound,
    NoResponders,
    Subscription,
    Transport,
    TransportError,
)
from switchboard.protocols import DeadLetter, ErrorReply, dead_letter_subject

log = logging.getLogger("switchboard.actors")

ERROR_HEADER = "Sb-Error"
_ERR_HEADERS = {ERROR_HEADER: "1"}
_TELL_WINDOW = 2.0  # seconds a sent tell is remembered, to re-send it on "no responders"


class Activator(Protocol):
    """Brings virtual actors to life somewhere (actors/virtual.py implements it)."""

    def is_virtual(self, kind: str) -> bool: ...

    async def activate(self, ref: ActorRef, deadline: float) -> None: ...

    async def lapsed(self, ref: ActorRef) -> bool:
        """True when the actor's lease is gone or its holder is dead: pending asks fail."""
        ...


@dataclass(slots=True)
class _KindInfo:
    cls: type[Actor]
    types: tuple[type, ...]
    decoder: msgspec.msgpack.Decoder[Any]


@dataclass(slots=True)
class _PendingAsk:
    fut: asyncio.Future[Inbound]
    ref: ActorRef
    sent_at: float


def _accepted_types(cls: type[Actor]) -> tuple[type, ...]:
    if cls.accepts is None:
        raise TypeError(f"{cls.__name__}.accepts must name the message types it takes")
    args = typing.get_args(cls.accepts)
    return tuple(args) if args else (cls.accepts,)


class ActorSystem:
    def __init__(self, transport: Transport, *, node_id: str, region: str = "local",
                 lease_check_interval: float = 0.25,
                 on_error: Callable[[str, BaseException], None] | None = None) -> None:
        self.transport = transport
        self.node_id = node_id
        self.region = region
        self.activator: Activator | None = None
        self.tasks = TaskOwner(on_error)
        self.dead_letters: deque[DeadLetter] = deque(maxlen=200)
        self.on_cell_closed: list[Callable[[ActorCell], None]] = []
        self._cells: dict[tuple[str, str], ActorCell] = {}
        self._subs: dict[tuple[str, str], Subscription] = {}
        self._kinds: dict[str, _KindInfo] = {}
        self._enc = msgspec.msgpack.Encoder()
        self._reply_decoders: dict[Any, msgspec.msgpack.Decoder[Any]] = {}
        self._err_decoder = msgspec.msgpack.Decoder(ErrorReply)
        self._id = secrets.token_hex(6)
        self._ask_prefix = f"_SB.{self._id}.a."
        self._tell_prefix = f"_SB.{self._id}.t."
        self._seq = itertools.count(1)
        self._pending: dict[str, _PendingAsk] = {}
        self._tells: dict[str, tuple[ActorRef, bytes, float]] = {}
        self._tells_purged = 0.0
        self._inbox_sub: Subscription | None = None
        self._lease_check_interval = lease_check_interval
        self._closed = False

    async def start(self) -> None:
        self._inbox_sub = await self.transport.subscribe(f"_SB.{self._id}.>", self._on_reply)
        self.tasks.spawn(self._watch_slow_asks(), name="slow-ask-watchdog")

    # -- kinds and spawning -------------------------------------------------------------------

    def register_kind(self, cls: type[Actor]) -> None:
        existing = self._kinds.get(cls.kind)
        if existing is not None and existing.cls is cls:
            return
        types = _accepted_types(cls)
        self._kinds[cls.kind] = _KindInfo(cls, types, msgspec.msgpack.Decoder(cls.accepts))

    def ref(self, kind: str, actor_id: str) -> ActorRef:
        return ActorRef(self, kind, actor_id)

    async def spawn(self, cls: type[Actor], actor_id: str, *,
                    factory: Callable[[], Actor] | None = None,
                    parent: Parent | None = None, wait_started: bool = True,
                    expose: bool = True) -> ActorRef:
        """Start an actor here and subscribe to its subject; return once it has started.

        `expose=False` keeps it off NATS (node-local actors such as supervisors, which several
        nodes run under the same name): it is then reachable only through this system.
        """
        if not cls.kind:
            raise TypeError(f"{cls.__name__}.kind is empty: name the kind of actor")
        self.register_kind(cls)
        ref = ActorRef(self, cls.kind, actor_id)
        old = self._cells.get(ref.key)
        if old is not None and not old.closed:
            raise ValueError(f"actor {ref} is already running on this node")
        mailbox = Mailbox(cls.mailbox_capacity, cls.overflow,
                          on_drop=lambda env, why: self.dead_letter_local(ref, env, why))
        cell = ActorCell(self, ref, factory or cls, parent, mailbox)
        self._cells[ref.key] = cell
        info = self._kinds[cls.kind]

        async def on_message(msg: Inbound) -> None:
            self._on_inbound(cell, info, msg)

        if expose:
            self._subs[ref.key] = await self.transport.subscribe(ref.subject, on_message)
        ACTIVE_ACTORS.labels(cls.kind).inc()
        cell.start()
        if wait_started:
            await cell.wait_started()
        return ref

    def cell(self, ref: ActorRef) -> ActorCell | None:
        return self._cells.get(ref.key)

    def local_actors(self) -> list[ActorRef]:
        return [c.ref for c in self._cells.values() if not c.closed]

    async def stop(self, ref: ActorRef, timeout: float = 5.0) -> None:
        cell = self._cells.get(ref.key)
        if cell is not None:
            await cell.stop(timeout)

    def cell_closed(self, cell: ActorCell) -> None:
        if self._cells.get(cell.ref.key) is cell:
            del self._cells[cell.ref.key]
            ACTIVE_ACTORS.labels(cell.ref.kind).dec()
            sub = self._subs.pop(cell.ref.key, None)
            if sub is not None and not self._closed:
                self.tasks.spawn(sub.unsubscribe(), name=f"unsubscribe:{cell.ref}")
        for listener in self.on_cell_closed:
            listener(cell)

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Stop every local actor (in reverse start order), then the system's own tasks."""
        for cell in reversed(list(self._cells.values())):
            if cell.parent is None:
                await cell.stop(timeout)
        for cell in reversed(list(self._cells.values())):
            await cell.stop(timeout)
        self._closed = True
        for sub in list(self._subs.values()):
            await sub.unsubscribe()
        if self._inbox_sub is not None:
            await self._inbox_sub.unsubscribe()
        for pending in self._pending.values():
            if not pending.fut.done():
                pending.fut.set_exception(ActorDeadError("the actor system is shutting down"))
        await self.tasks.close(timeout)

    # -- inbound ------------------------------------------------------------------------------

    def _on_inbound(self, cell: ActorCell, info: _KindInfo, msg: Inbound) -> None:
        reply = msg.reply
        # Tells from a Switchboard system carry `_SB.<12 hex>.t.<n>`; any other reply subject
        # (another system's ask, or a plain NATS request from a tool) wants an answer.
        is_ask = bool(reply) and not (reply.startswith("_SB.") and reply[16:19] == ".t.")
        try:
            message = info.decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.dead_letter(cell.ref.kind, cell.ref.id, "bad_message", str(exc)[:200],
                             msg.data)
            if reply:
                self._respond_error(reply, BadMessage(
                    f"{cell.ref.kind} does not accept this message ({str(exc)[:120]}); "
                    "send one of the types in its `accepts`"))
            return
        env = Envelope(message, self._remote_replier(reply) if is_ask else None)
        try:
            cell.mailbox.put_nowait(env)
        except MailboxFull as exc:
            # A closed mailbox is an actor that just stopped (its subject is being
            # unsubscribed): say so, rather than "full", so the sender does not back off.
            stopped = cell.mailbox.closed
            self.dead_letter(cell.ref.kind, cell.ref.id,
                             "actor_stopped" if stopped else "mailbox_full", "", msg.data)
            if reply:
                self._respond_error(reply, ActorDeadError(f"actor {cell.ref} has stopped")
                                    if stopped else exc)

    def _remote_replier(self, reply: str) -> Callable[[Any, BaseException | None], Any]:
        def send(result: Any, error: BaseException | None) -> Any:
            if error is None:
                try:
                    data = self._enc.encode(result)
                except (TypeError, msgspec.EncodeError) as exc:
                    error = exc
                else:
                    return self._publish_quietly(reply, data)
            return self._publish_quietly(reply, self._enc.encode(error_to_reply(error)),
                                         _ERR_HEADERS)
        return send

    async def _publish_quietly(self, subject: str, data: bytes,
                               headers: dict[str, str] | None = None) -> None:
        """Replies and dead letters are best effort: a lost connection must not kill the actor
        or the node (the asker's deadline, or the lease watchdog, settles the ask)."""
        try:
            await self.transport.publish(subject, data, headers=headers)
        except TransportError as exc:
            log.warning("could not publish a reply or dead letter: %s", exc)

    def _respond_error(self, reply: str, error: BaseException) -> None:
        data = self._enc.encode(error_to_reply(error))
        self.tasks.spawn(self._publish_quietly(reply, data, dict(_ERR_HEADERS)),
                         name="error-reply")

    # -- dead letters -------------------------------------------------------------------------

    def dead_letter(self, kind: str, actor_id: str, reason: str, detail: str = "",
                    payload: bytes = b"") -> None:
        """Count and publish a message nobody took. `detail` must carry no personal data."""
        DEAD_LETTERS.labels(kind, reason).inc()
        letter = DeadLetter(kind=kind, actor_id=actor_id, reason=reason, detail=detail,
                            node_id=self.node_id, payload=payload, at=time.time())
        self.dead_letters.append(letter)
        log.info("dead letter for %s/%s: %s", kind, actor_id, reason)
        if not self._closed:
            self.tasks.spawn(self._publish_quietly(dead_letter_subject(kind),
                                                   self._enc.encode(letter)),
                             name="dead-letter")

    def dead_letter_local(self, ref: ActorRef, env: Envelope, reason: str) -> None:
        try:
            payload = self._enc.encode(env.message)
        except (TypeError, msgspec.EncodeError):
            payload = b""
        if env.reply is not None:
            sent = env.reply(None, MailboxFull(f"message to {ref} dropped ({reason})"))
            if sent is not None:
                self.tasks.spawn(sent, name=f"dropped-reply:{ref}")
        self.dead_letter(ref.kind, ref.id, reason, "", payload)

    # -- outbound -----------------------------------------------------------------------------

    def _check_local(self, cell: ActorCell, message: Any) -> None:
        info = self._kinds[cell.ref.kind]
        if not isinstance(message, info.types):
            self.dead_letter(cell.ref.kind, cell.ref.id, "bad_message",
                             f"unexpected type {type(message).__name__}")
            raise BadMessage(f"{cell.ref.kind} does not accept {type(message).__name__}; "
                             "send one of the types in its `accepts`")

    def tell_nowait(self, ref: ActorRef, message: Any, *, must_deliver: bool = False,
                    system: bool = False) -> None:
        cell = self._cells.get(ref.key)
        if cell is not None and not cell.closed:
            if not system:
                self._check_local(cell, message)
            cell.mailbox.put_nowait(Envelope(message, None, must_deliver, system))
            return
        self.tasks.spawn(self.tell(ref, message, must_deliver=must_deliver),
                         name=f"tell:{ref}")

    async def tell(self, ref: ActorRef, message: Any, *, must_deliver: bool = False) -> None:
        cell = self._cells.get(ref.key)
        if cell is not None and not cell.closed:
            self._check_local(cell, message)
            cell.mailbox.put_nowait(Envelope(message, None, must_deliver))
            return
        await self._send_tell(ref, self._enc.encode(message))

    async def _send_tell(self, ref: ActorRef, data: bytes) -> None:
        now = time.monotonic()
        tells = self._tells
        if now - self._tells_purged > 0.25:  # amortised: forget tells older than the window
            self._tells_purged = now
            old = []
            for token, (_, _, sent) in tells.items():
                if now - sent < _TELL_WINDOW:
                    break
                old.append(token)
            for token in old:
                del tells[token]
        token = str(next(self._seq))
        tells[token] = (ref, data, now)
        await self.transport.publish(ref.subject, data, reply=self._tell_prefix + token)

    async def ask(self, ref: ActorRef, message: Any, *, timeout: float = 5.0,
                  reply_type: Any = None) -> Any:
        loop = asyncio.get_running_loop()
        cell = self._cells.get(ref.key)
        if cell is not None and not cell.closed:
            return await self._ask_local(cell, message, timeout)
        data = self._enc.encode(message)
        deadline = loop.time() + timeout
        while True:
            token = str(next(self._seq))
            fut: asyncio.Future[Inbound] = loop.create_future()
            self._pending[token] = _PendingAsk(fut, ref, loop.time())
            try:
                await self.transport.publish(ref.subject, data, reply=self._ask_prefix + token)
                async with asyncio.timeout_at(deadline):
                    rep = await fut
            except TimeoutError:
                raise AskTimeout(f"no reply from {ref} within {timeout:.3f}s") from None
            except NoResponders:
                if self.activator is None or not self.activator.is_virtual(ref.kind):
                    raise ActorNotFound(f"actor {ref} is not running anywhere") from None
                await self.activator.activate(ref, deadline)
                continue
            finally:
                self._pending.pop(token, None)
            break
        if rep.headers and ERROR_HEADER in rep.headers:
            raise reply_to_error(self._err_decoder.decode(rep.data))
        try:
            return self._reply_decoder(reply_type).decode(rep.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise BadMessage(f"the reply from {ref} is not a {reply_type!r} ({exc}); "
                             "check the reply_type the actor answers with") from None

    def _reply_decoder(self, reply_type: Any) -> msgspec.msgpack.Decoder[Any]:
        dec = self._reply_decoders.get(reply_type)
        if dec is None:
            dec = msgspec.msgpack.Decoder(Any if reply_type is None else reply_type)
            self._reply_decoders[reply_type] = dec
        return dec

    async def _ask_local(self, cell: ActorCell, message: Any, timeout: float) -> Any:
        self._check_local(cell, message)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def done(result: Any, error: BaseException | None) -> None:
            if fut.done():
                return
            if error is None:
                fut.set_result(result)
            elif isinstance(error, ActorError):
                fut.set_exception(error)
            else:
                fut.set_exception(reply_to_error(error_to_reply(error)))

        cell.mailbox.put_nowait(Envelope(message, done))
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise AskTimeout(f"no reply from {cell.ref} within {timeout:.3f}s") from None

    # -- replies, no-responders and the slow-ask watchdog ---------------------------------

    async def _on_reply(self, msg: Inbound) -> None:
        subject = msg.subject
        token = subject[subject.rfind(".") + 1:]
        if subject.startswith(self._ask_prefix):
            pending = self._pending.get(token)
            if pending is None or pending.fut.done():
                return  # the asker gave up (deadline) before the reply came
            if msg.status == 503:
                pending.fut.set_exception(NoResponders(pending.ref.subject))
            else:
                pending.fut.set_result(msg)
            return
        sent = self._tells.pop(token, None)
        if sent is None:
            return
        ref, data, _ = sent
        if msg.status == 503:
            if self.activator is not None and self.activator.is_virtual(ref.kind):
                self.tasks.spawn(self._activate_and_resend(ref, data), name=f"resend:{ref}")
            else:
                self.dead_letter(ref.kind, ref.id, "no_responders", "", data)
        else:
            reason = self._err_decoder.decode(msg.data).code if msg.data else "rejected"
            self.dead_letter(ref.kind, ref.id, f"remote_{reason}", "", data)

    async def _activate_and_resend(self, ref: ActorRef, data: bytes) -> None:
        assert self.activator is not None
        loop = asyncio.get_running_loop()
        try:
            await self.activator.activate(ref, loop.time() + 5.0)
        except (ActorError, TimeoutError) as exc:
            self.dead_letter(ref.kind, ref.id, "activation_failed", type(exc).__name__, data)
            return
        await self._send_tell(ref, data)

    async def _watch_slow_asks(self) -> None:
        """Fail asks whose actor's lease lapsed (its node died), without waiting for deadlines."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._lease_check_interval)
            if self.activator is None or not self._pending:
                continue
            cutoff = loop.time() - self._lease_check_interval
            slow: dict[ActorRef, list[_PendingAsk]] = {}
            for pending in list(self._pending.values()):
                if pending.sent_at < cutoff and self.activator.is_virtual(pending.ref.kind):
                    slow.setdefault(pending.ref, []).append(pending)
            for ref, asks in slow.items():
                if await self.activator.lapsed(ref):
                    for pending in asks:
                        if not pending.fut.done():
                            pending.fut.set_exception(ActorDeadError(
                                f"actor {ref}'s node is gone (its lease lapsed); "
                                "retry the ask to reach its new activation"))
