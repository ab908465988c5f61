"""`CallsSupervisor`: the node's supervisor of call actors, which starts one per `StartCall`.

A gateway that admitted a call and registered its media leg asks this supervisor (node-local:
`system.ref(CALLS_KIND, CALLS_ID)`, not exposed on NATS) to start the call actor here, next to
the media. It has a kind of its own ("calls"): the runtime keeps one accepted-message set per
kind, and plain supervisors do not take `StartCall`.

Call actors are temporary children: a crash ends the call (the actor hangs up and releases the
quota on its way out) and is not restarted; temporary children never count towards the
restart intensity, so no number of failed calls makes the supervisor give up. Starting is
quick (the actor answers the leg from its own task), so one supervisor serves every call
setup of the node without queueing them behind each other.
"""

from __future__ import annotations

from typing import Any

from switchboard.actors.call import CallActor, CallServices
from switchboard.actors.errors import Refusal
from switchboard.protocols.call import CALL_KIND, CALLS_ID, CALLS_KIND, CallSpawned, StartCall
from switchboard.protocols.subjects import check_token
from switchboard.protocols.supervision import WhichChildren
from switchboard.supervisor.spec import ChildSpec, Restart
from switchboard.supervisor.supervisor import Supervisor, SupervisorParent


class CallsSupervisor(Supervisor):
    kind = CALLS_KIND
    accepts = StartCall | WhichChildren

    def __init__(self, services: CallServices) -> None:
        super().__init__(dynamic_restart=Restart.TEMPORARY)
        self.services = services

    @classmethod
    def spec(cls, services: CallServices) -> ChildSpec:
        """The child spec the node adds to its root supervisor."""
        return ChildSpec(id=CALLS_ID, actor=cls, expose=False,
                         factory=lambda: cls(services))

    async def receive(self, message: Any) -> Any:
        if isinstance(message, StartCall):
            return await self._start_call(message)
        return await super().receive(message)

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
