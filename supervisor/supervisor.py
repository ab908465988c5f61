"""`Supervisor`: an actor that starts, watches and restarts other actors (OTP semantics).

Children start in order and stop in reverse order. When a child exits, its cell asks the
supervisor for a decision through the supervisor's system lane, so supervision signals overtake
ordinary messages. A supervisor that exceeds its restart intensity stops all its children and
raises `SupervisorGaveUp`: it crashes, and its own parent decides — escalation up the tree, to
the node's root supervisor, whose parent ends the process with a non-zero exit.

Children started outside the spec list (`adopt`, e.g. virtual actors, calls) are dynamic: they
follow `dynamic_restart` under one_for_one, like OTP's simple_one_for_one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from switchboard.actors import Actor, ActorCell, ActorDeadError, ActorRef, Decision, Directive
from switchboard.actors.mailbox import Envelope
from switchboard.actors.metrics import ACTOR_RESTARTS
from switchboard.protocols.supervision import ChildInfo, Children, WhichChildren
from switchboard.supervisor.spec import Backoff, ChildSpec, Restart, RestartIntensity, Strategy

log = logging.getLogger("switchboard.supervisor")


class SupervisorGaveUp(Exception):
    """Restart intensity exceeded: the failure escalates to the supervisor's parent."""


@dataclass(slots=True)
class _ChildExited:
    cell: ActorCell
    reason: BaseException | None
    decision: asyncio.Future[Decision]


@dataclass(slots=True)
class _Child:
    spec: ChildSpec
    cell: ActorCell


class Supervisor(Actor):
    kind = "supervisor"
    accepts = WhichChildren

    def __init__(self, children: list[ChildSpec] | None = None, *,
                 strategy: Strategy = Strategy.ONE_FOR_ONE,
                 intensity: RestartIntensity | None = None, backoff: Backoff | None = None,
                 dynamic_restart: Restart = Restart.TRANSIENT) -> None:
        self.specs = list(children or [])
        self.strategy = strategy
        self.intensity = intensity or RestartIntensity()
        self.backoff = backoff or Backoff()
        self.dynamic_restart = dynamic_restart
        self.children: list[_Child] = []
        self._restarts: deque[float] = deque()

    # -- lifecycle ------------------------------------------------------------------------

    async def on_started(self) -> None:
        try:
            for spec in self.specs:
                await self._start_child(spec)
        except BaseException:
            await self._stop_children()
            raise

    async def on_restarted(self, reason: BaseException | None) -> None:
        self.children = []
        self._restarts.clear()
        await self.on_started()

    async def on_stopping(self) -> None:
        await self._stop_children()

    async def _start_child(self, spec: ChildSpec) -> ActorRef:
        system = self.context.system
        ref = await system.spawn(spec.actor, spec.name, factory=spec.factory, parent=self,
                                 expose=spec.expose)
        cell = system.cell(ref)
        assert cell is not None
        self.children.append(_Child(spec, cell))
        return ref

    async def start_child(self, spec: ChildSpec) -> ActorRef:
        """Add and start a child at run time (it joins the end of the start order)."""
        return await self._start_child(spec)

    def adopt(self, cell: ActorCell) -> None:
        """Supervise an actor already spawned with this supervisor as its parent."""
        spec = ChildSpec(id=cell.ref.id, actor=type(cell.instance) if cell.instance else Actor,
                         restart=self.dynamic_restart)
        self.children.append(_Child(spec, cell))

    async def _stop_children(self) -> None:
        for child in reversed(self.children):
            await child.cell.stop(child.spec.shutdown)
        self.children = []

    # -- Parent: called from a child's cell ----------------------------------------------------

    async def child_exited(self, child: ActorCell, reason: BaseException | None) -> Decision:
        fut: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        mailbox = self.context.cell.mailbox
        if mailbox.closed:
            raise ActorDeadError("supervisor stopped")
        mailbox.put_nowait(Envelope(_ChildExited(child, reason, fut), system=True))
        return await fut

    # -- messages -----------------------------------------------------------------------------

    async def receive(self, message: Any) -> Any:
        if isinstance(message, _ChildExited):
            await self._on_child_exited(message)
            return None
        if isinstance(message, WhichChildren):
            return Children(children=[
                ChildInfo(id=c.spec.id, kind=c.cell.ref.kind, state=c.cell.state.value,
                          restarts=c.cell.restarts) for c in self.children])
        return None

    def _find(self, cell: ActorCell) -> _Child | None:
        for child in self.children:
            if child.cell is cell:
                return child
        return None

    def _decide(self, msg: _ChildExited, decision: Decision) -> None:
        if not msg.decision.done():
            msg.decision.set_result(decision)

    async def _on_child_exited(self, msg: _ChildExited) -> None:
        child = self._find(msg.cell)
        if child is None:  # adopted on the fly (dynamic children announce themselves here)
            self.adopt(msg.cell)
            child = self._find(msg.cell)
            assert child is not None
        crashed = msg.reason is not None
        restart = child.spec.restart
        if restart is Restart.TEMPORARY or (restart is Restart.TRANSIENT and not crashed):
            self.children.remove(child)
            self._decide(msg, Decision(Directive.STOP))
            return
        now = time.monotonic()
        self._restarts.append(now)
        while self._restarts and now - self._restarts[0] > self.intensity.within:
            self._restarts.popleft()
        if len(self._restarts) > self.intensity.max_restarts:
            log.error("supervisor %s: %d restarts within %.1fs; giving up and escalating",
                      self.context.ref, len(self._restarts), self.intensity.within)
            self._decide(msg, Decision(Directive.STOP))
            self.children.remove(child)
            await self._stop_children()
            raise SupervisorGaveUp(
                f"supervisor {self.context.ref}: more than {self.intensity.max_restarts} "
                f"restarts within {self.intensity.within}s")
        delay = self.backoff.delay(len(self._restarts))
        ACTOR_RESTARTS.labels(msg.cell.ref.kind).inc()
        if self.strategy is Strategy.ONE_FOR_ONE or child.spec not in self.specs:
            self._decide(msg, Decision(Directive.RESTART, delay))
            return
        index = self.children.index(child)
        group = (self.children if self.strategy is Strategy.ONE_FOR_ALL
                 else self.children[index:])
        # Stop the group in reverse start order (the failed child is parked, not stopped),
        # then start it again in order.
        for other in reversed(group):
            if other is child:
                await msg.cell.suspend()
            else:
                await other.cell.suspend()
        self._decide(msg, Decision(Directive.STOP))  # no-op: suspend() already decided
        if delay:
            await asyncio.sleep(delay)
        for other in group:
            other.cell.restarts += other is not child
            other.cell.resume()
            await other.cell.wait_resumed()  # in order: each starts after the one before


class SupervisorParent:
    """A stable `Parent` for children of a supervisor cell whose instance may be replaced
    (a restarted supervisor is a new instance; its children must still reach it)."""

    def __init__(self, cell: ActorCell) -> None:
        self._cell = cell

    async def child_exited(self, child: ActorCell, reason: BaseException | None) -> Decision:
        instance = self._cell.instance
        if self._cell.closed or not isinstance(instance, Supervisor):
            raise ActorDeadError(f"supervisor {self._cell.ref} is gone")
        return await instance.child_exited(child, reason)
