"""The runtime side of one actor: its mailbox, its processing task, its incarnations.

A cell outlives the actor instances it hosts. When an instance crashes, the cell asks its
parent (a supervisor) for a `Directive`: restart (a new instance from the same factory, after a
back-off, with the mailbox kept, as Akka does) or stop. A parent can also suspend a healthy
child (one_for_all / rest_for_one: siblings are stopped, then started again in order) or stop it.
When a cell closes, every message still queued fails its ask at once with `ActorDeadError`
(pykka's rule: nobody waits for a timeout on a dead actor).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from switchboard.actors.actor import Actor, StopActor
from switchboard.actors.context import ActorContext
from switchboard.actors.errors import ActorDeadError, Refusal
from switchboard.actors.mailbox import Envelope, Mailbox

if TYPE_CHECKING:
    from switchboard.actors.ref import ActorRef
    from switchboard.actors.system import ActorSystem

log = logging.getLogger("switchboard.actors")


class Directive(enum.Enum):
    RESTART = "restart"
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class Decision:
    directive: Directive
    delay: float = 0.0


class Parent(Protocol):
    """Whoever supervises a cell (supervisor/ implements it; actors/ only knows this shape)."""

    async def child_exited(self, child: ActorCell, reason: BaseException | None) -> Decision:
        """`reason` is the exception, or None when the actor ended normally."""
        ...


class _Stop:
    __slots__ = ()


class _Suspend:
    __slots__ = ("done",)

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done


class CellState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    WAITING = "waiting"      # crashed, waiting for the parent's decision
    SUSPENDED = "suspended"  # stopped by its parent, to be started again
    CLOSED = "closed"


class ActorCell:
    def __init__(self, system: ActorSystem, ref: ActorRef, factory: Callable[[], Actor],
                 parent: Parent | None, mailbox: Mailbox) -> None:
        self.system = system
        self.ref = ref
        self.factory = factory
        self.parent = parent
        self.mailbox = mailbox
        self.state = CellState.STARTING
        self.incarnation = 0
        self.restarts = 0
        self.instance: Actor | None = None
        self.task: asyncio.Task[None] | None = None
        self._started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._decision: asyncio.Future[Decision] | None = None
        self._resume: asyncio.Future[bool] | None = None
        self._closed = asyncio.Event()
        self._incarnated = asyncio.Event()  # the current incarnation ran its start hook
        self.exit_reason: BaseException | None = None

    # -- control, used by the system and by supervisors -------------------------------------

    def start(self) -> None:
        self.task = self.system.tasks.spawn(self._run(), name=f"actor:{self.ref}")

    async def wait_started(self) -> None:
        """Return once the first incarnation ran `on_started` (or raise what it raised)."""
        await asyncio.shield(self._started)

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop for good: finish the current message, run `on_stopping`, fail what is queued."""
        if self.state is CellState.CLOSED:
            return
        if self._decision is not None and not self._decision.done():
            self._decision.set_result(Decision(Directive.STOP))
        elif self._resume is not None and not self._resume.done():
            self._resume.set_result(False)
        else:
            self.mailbox.put_nowait(Envelope(_Stop(), system=True))
        try:
            async with asyncio.timeout(timeout):
                await self._closed.wait()
        except TimeoutError:
            # OTP's shutdown timeout: past it, the child is killed.
            log.warning("actor %s did not stop within %.1fs; cancelling it", self.ref, timeout)
            if self.task is not None:
                self.task.cancel()
            await self._closed.wait()

    async def suspend(self) -> None:
        """Stop the current instance but keep the cell and its mailbox, until `resume()`."""
        if self.state in (CellState.CLOSED, CellState.SUSPENDED):
            return
        if self._decision is not None and not self._decision.done():
            # Crashed and waiting: the parent's later resume() restarts it.
            self._resume = asyncio.get_running_loop().create_future()
            self._decision.set_result(Decision(Directive.RESTART, -1.0))
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.mailbox.put_nowait(Envelope(_Suspend(done), system=True))
        await done

    def resume(self) -> None:
        if self._resume is not None and not self._resume.done():
            self._incarnated.clear()
            self._resume.set_result(True)

    async def wait_resumed(self) -> None:
        """Return once the incarnation `resume()` started has run its start hook (or failed
        to, or the cell closed): a supervisor restarts a group one child after the other."""
        await self._incarnated.wait()

    def flush_data(self) -> int:
        dropped = self.mailbox.flush_data()
        for env in dropped:
            self.system.dead_letter_local(self.ref, env, "flushed")
        return len(dropped)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    @property
    def closed(self) -> bool:
        return self.state is CellState.CLOSED

    # -- the processing loop ------------------------------------------------------------------

    async def _run(self) -> None:
        reason: BaseException | None = None
        restarted = False
        try:
            while True:
                outcome, exc = await self._incarnate(restarted, reason)
                if outcome == "stop":
                    return
                if outcome == "suspend":
                    self.state = CellState.SUSPENDED
                    assert self._resume is not None
                    if not await self._resume:
                        return
                    restarted, reason = True, None
                    continue
                # A crash or a normal exit: the parent decides.
                self.exit_reason = exc
                decision = await self._ask_parent(exc)
                if decision.directive is Directive.STOP:
                    return
                if decision.delay < 0:  # suspended while waiting (one_for_all)
                    self.state = CellState.SUSPENDED
                    assert self._resume is not None
                    if not await self._resume:
                        return
                elif decision.delay > 0:
                    await asyncio.sleep(decision.delay)
                self.restarts += 1
                restarted, reason = True, exc
        finally:
            self._close()

    async def _ask_parent(self, exc: BaseException | None) -> Decision:
        if self.parent is None:
            if exc is not None:
                log.error("unsupervised actor %s crashed (%s); it stops", self.ref,
                          type(exc).__name__)
            return Decision(Directive.STOP)
        self.state = CellState.WAITING
        self._decision = asyncio.get_running_loop().create_future()
        waiter = self.system.tasks.spawn(self._forward_to_parent(exc, self._decision),
                                         name=f"decide:{self.ref}")
        try:
            return await self._decision
        finally:
            waiter.cancel()
            self._decision = None

    async def _forward_to_parent(self, exc: BaseException | None,
                                 fut: asyncio.Future[Decision]) -> None:
        assert self.parent is not None
        try:
            decision = await self.parent.child_exited(self, exc)
        except ActorDeadError:
            decision = Decision(Directive.STOP)
        if not fut.done():
            fut.set_result(decision)

    async def _incarnate(self, restarted: bool,
                         reason: BaseException | None) -> tuple[str, BaseException | None]:
        self.incarnation += 1
        try:
            instance = self.factory()
            instance.context = ActorContext(self.ref, self.system, self)
            self.instance = instance
            if restarted:
                await instance.on_restarted(reason)
            else:
                await instance.on_started()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed start is a crash (OTP start error)
            if not self._started.done():
                self._started.set_exception(exc)
                self._started.exception()  # retrieved: the spawner re-raises it
            self._incarnated.set()
            return "crash", exc
        self.state = CellState.RUNNING
        self._incarnated.set()
        if not self._started.done():
            self._started.set_result(None)
        outcome, exc2 = await self._process(instance)
        try:
            await instance.on_stopping()
        except asyncio.CancelledError:
            raise
        except Exception as stop_exc:  # noqa: BLE001 - on_stopping must not block the stop
            log.error("on_stopping of %s failed (%s)", self.ref, type(stop_exc).__name__)
        if outcome == "suspend" and self._suspend_done is not None:
            # The resume future exists before the suspender learns we are suspended.
            self._resume = asyncio.get_running_loop().create_future()
            self._suspend_done.set_result(None)
        return outcome, exc2

    _suspend_done: asyncio.Future[None] | None = None

    async def _process(self, instance: Actor) -> tuple[str, BaseException | None]:
        mailbox = self.mailbox
        receive = instance.receive
        while True:
            env = await mailbox.get()
            msg = env.message
            if env.system:
                if isinstance(msg, _Stop):
                    return "stop", None
                if isinstance(msg, _Suspend):
                    self._suspend_done = msg.done
                    return "suspend", None
            try:
                result: Any = await receive(msg)
            except Refusal as refusal:
                if env.reply is not None:
                    await _complete(env, None, refusal)
                continue
            except StopActor:
                if env.reply is not None:
                    await _complete(env, None, None)
                return "exit", None
            except asyncio.CancelledError:
                if env.reply is not None:
                    sent = env.reply(None, ActorDeadError(f"actor {self.ref} was cancelled"))
                    if sent is not None:  # a remote asker: publish its answer on our owner
                        self.system.tasks.spawn(sent, name=f"dead-reply:{self.ref}")
                raise
            except Exception as exc:  # noqa: BLE001 - the crash boundary: the parent decides
                if env.reply is not None:
                    await _complete(env, None, exc)
                log.warning("actor %s crashed on %s (%s)", self.ref, type(msg).__name__,
                            type(exc).__name__)
                return "crash", exc
            if env.reply is not None:
                sent = env.reply(result, None)
                if sent is not None:
                    await sent

    def _close(self) -> None:
        self.state = CellState.CLOSED
        if not self._started.done():
            self._started.set_exception(ActorDeadError(f"actor {self.ref} stopped"))
            self._started.exception()
        dead = ActorDeadError(f"actor {self.ref} has stopped")
        for env in self.mailbox.close():
            if env.reply is not None:
                sent = env.reply(None, dead)
                if sent is not None:
                    self.system.tasks.spawn(sent, name=f"dead-reply:{self.ref}")
            elif not env.system:
                self.system.dead_letter_local(self.ref, env, "actor_stopped")
        self.system.cell_closed(self)
        self._incarnated.set()
        self._closed.set()


async def _complete(env: Envelope, result: Any, error: BaseException | None) -> None:
    assert env.reply is not None
    sent = env.reply(result, error)
    if sent is not None:
        await sent
