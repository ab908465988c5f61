"""`CallsSupervisor`: the node's supervisor of call actors, which starts one per `StartCall`.

A gateway that admitted a call and registered its media leg asks this supervisor (node-local:
`system.ref(CALLS_KIND, CALLS_ID)`, not exposed on NATS) to start the call actor here, next to
the media. It has a kind of its own ("calls"): the runtime keeps one accepted-message set per
kind, and plain supervisors do not take `StartCall`.

Call actors are transient children with a restart intensity of their own: a call actor that
crashed is restarted when it says it can resume (`CallActor.resumable`: it kept the call up,
its state is saved, it has crashed fewer than `MAX_CALL_RESTARTS` times), and the new
incarnation resumes the conversation on the same media leg; otherwise (and after a normal
exit) it is not restarted: it already ended the call, hung up and released the quota on its
way out. Calls never count towards this supervisor's own intensity, so no number of failing
calls makes it give up and take the node's other calls down with it. Starting is quick (the
actor answers the leg from its own task), so one supervisor serves every call setup of the
node without queueing them behind each other.
"""

from __future__ import annotations

from typing import Any

from switchboard.actors.call import CallActor, CallServices
from switchboard.actors.cell import Decision, Directive
from switchboard.actors.errors import Refusal
from switchboard.actors.metrics import ACTOR_RESTARTS
from switchboard.protocols.call import CALL_KIND, CALLS_ID, CALLS_KIND, CallSpawned, StartCall
from switchboard.protocols.subjects import check_token
from switchboard.protocols.supervision import WhichChildren
from switchboard.supervisor.spec import ChildSpec, Restart
from switchboard.supervisor.supervisor import Supervisor, SupervisorParent, _ChildExited


class CallsSupervisor(Supervisor):
    kind = CALLS_KIND
    accepts = StartCall | WhichChildren

    def __init__(self, services: CallServices) -> None:
        super().__init__(dynamic_restart=Restart.TRANSIENT)
        self.services = services

    @classmethod
    def spec(cls, services: CallServices) -> ChildSpec:
        """The child spec the node adds to its root supervisor."""
        return ChildSpec(id=CALLS_ID, actor=cls, expose=False,
                         factory=lambda: cls(services))

    async def receive(self, message: Any) -> Any:
        if isinstance(message, StartCall):
            return await self._start_call(message)
        if isinstance(message, _ChildExited) and message.cell.ref.kind == CALL_KIND:
            self._call_exited(message)
            return None
        return await super().receive(message)

    def _call_exited(self, exited: _ChildExited) -> None:
        instance = exited.cell.instance
        resume = (exited.reason is not None and isinstance(instance, CallActor)
                  and instance.resumable)
        if resume:
            ACTOR_RESTARTS.labels(CALL_KIND).inc()
            decision = Decision(Directive.RESTART, self.backoff.delay(exited.cell.restarts + 1))
        else:
            for child in self.children:
                if child.cell is exited.cell:
                    self.children.remove(child)
                    break
            decision = Decision(Directive.STOP)
        if not exited.decision.done():
            exited.decision.set_result(decision)

    async def _start_call(self, start: StartCall) -> CallSpawned:
        system = self.context.system
        try:
            check_token(start.call_id, "call id")
        except ValueError as exc:
            raise Refusal("bad_request", str(exc)) from None
        existing = system.cell(system.ref(CALL_KIND, start.call_id))
        if existing is None or existing.closed:
            try:
                ref = await system.spawn(CallActor, start.call_id,
                                         factory=lambda: CallActor(start, self.services),
                                         parent=SupervisorParent(self.context.cell))
            except Exception as exc:  # noqa: BLE001 - one bad call must not crash the others
                # The actor already ended the call (hung up, released its slot) on its way out.
                raise Refusal("unavailable", f"call {start.call_id} could not start "
                              f"({type(exc).__name__})", retryable=True) from None
            cell = system.cell(ref)
            if cell is not None and not cell.closed:
                self.adopt(cell)
        # else: a retried StartCall for a running call; same answer, no second actor
        return CallSpawned(call_id=start.call_id, node_id=system.node_id)
