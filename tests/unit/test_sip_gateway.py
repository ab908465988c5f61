"""`SipGateway.admit` and `call_ended` with in-process actors (LocalBus): routing, admission by
the tenant actor, the call actor started with the caller id and dialled number, refusals
over quota, and every way a set-up can fail giving the tenant's slot back at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from switchboard.actors.call import CallServices
from switchboard.actors.echo_agent import EchoBrain
from switchboard.actors.media_registry import MediaLegRegistry
from switchboard.actors.system import ActorSystem
from switchboard.actors.tenant import TenantActor
from switchboard.gateways.sip.gateway import GatewayServices, SipGateway
from switchboard.gateways.sip.handler import Accept, CallEnd, Refuse
from switchboard.gateways.sip.leg import SipLeg
from switchboard.protocols.call import CALLS_ID, GetUsage, Usage
from switchboard.protocols.events import CallStarted
from switchboard.protocols.sip_config import SipConfig
from switchboard.protocols.tenants import AgentConfig, Limits, NumberRoute, TenantConfig
from switchboard.providers.fakes import FakeVad
from switchboard.storage.events import MemoryEvents
from switchboard.storage.kv_memory import MemoryKeyValue
from switchboard.storage.tenants_file import StaticTenantDirectory
from switchboard.supervisor.calls import CallsSupervisor

from tests.support.harness import actor_system, host_virtual, wait_until

pytestmark = pytest.mark.unit

DIRECTORY = StaticTenantDirectory([
    TenantConfig(id="acme", numbers=[NumberRoute(number="+15550100", agent="desk")],
                 limits=Limits(max_concurrent_calls=1, retry_after_seconds=12),
                 agents=[AgentConfig(id="desk", rtp_inactivity_seconds=20,
                                     max_call_seconds=600)]),
])


class FakeCall:
    """What the gateway reads of a new inbound `SipCall`."""

    def __init__(self, number: str, call_id: str = "sip-c1") -> None:
        self.id = call_id
        self.caller = "+15550111"
        self.callee = number.removeprefix("+")  # as a carrier may send it: no +
        self.end: CallEnd | None = None
        self.rtp = None

    async def hangup(self, reason: str, *, status: int = 480) -> None:
        self.end = CallEnd(reason, "local", status)


@dataclass
class Env:
    system: ActorSystem
    gateway: SipGateway
    legs: MediaLegRegistry
    events: MemoryEvents

    async def usage(self) -> Usage:
        result: Usage = await self.system.ref("tenant", "acme").ask(GetUsage(),
                                                                    reply_type=Usage)
        return result

    def call_running(self, call_id: str) -> bool:
        return self.system.cell(self.system.ref("call", call_id)) is not None


@asynccontextmanager
async def gateway_env() -> AsyncIterator[Env]:
    legs, events = MediaLegRegistry(), MemoryEvents()
    services = CallServices(legs=legs, directory=DIRECTORY, events=events,
                            brains={"echo": EchoBrain()}, vad=lambda rate: FakeVad(rate))
    async with actor_system() as system:
        await host_virtual(system, TenantActor.bind(DIRECTORY), leases=MemoryKeyValue(),
                           states=MemoryKeyValue())
        await system.spawn(CallsSupervisor, CALLS_ID, factory=lambda: CallsSupervisor(services),
                           expose=False)
        gateway = SipGateway(GatewayServices(system=system, legs=legs, directory=DIRECTORY),
                             SipConfig(pcm_rate=8000))
        yield Env(system, gateway, legs, events)
        await gateway.close(1.0)


async def admit(env: Env, call: FakeCall) -> Any:
    return await env.gateway.admit(call)  # type: ignore[arg-type]


async def test_an_admitted_call_reaches_a_call_actor_with_who_called_whom() -> None:
    async with gateway_env() as env:
        call = FakeCall("+15550100")
        accepted = await admit(env, call)
        assert isinstance(accepted, Accept)
        media = accepted.media
        assert (media.pcm_rate, media.inactivity_timeout, media.max_duration) == (8000, 20, 605)
        leg = env.legs.get("sip-c1")
        assert isinstance(leg, SipLeg) and leg.callee == "+15550100"  # E.164, as it routed
        assert env.call_running("sip-c1") and (await env.usage()).active_calls == 1
        await wait_until(lambda: bool(env.events.decoded(CallStarted)), what="call.started")
        started = env.events.decoded(CallStarted)[0]
        assert started.pii.caller == "+15550111" and started.pii.callee == "+15550100"
        # The caller hangs up: the leg ends, the call actor ends and frees the slot.
        env.gateway.call_ended(call, CallEnd("remote_hangup", "remote"))  # type: ignore[arg-type]
        await wait_until(lambda: not env.call_running("sip-c1"), timeout=3,
                         what="the call actor ended")
        assert (await env.usage()).active_calls == 0 and len(env.legs) == 0


async def test_unknown_numbers_and_full_tenants_are_refused() -> None:
    async with gateway_env() as env:
        assert await admit(env, FakeCall("+15559999")) == Refuse(404)
        assert isinstance(await admit(env, FakeCall("+15550100", "sip-a")), Accept)
        assert await admit(env, FakeCall("+15550100", "sip-b")) == Refuse(486, retry_after=12)
        assert env.gateway.refusals == {404: 1, 486: 1}
        assert env.legs.get("sip-b") is None and not env.call_running("sip-b")


async def test_a_caller_who_left_during_admission_gets_no_call_actor() -> None:
    async with gateway_env() as env:
        call = FakeCall("+15550100")
        real_admit = env.gateway.starter.admit

        async def admit_then_cancel(*args: Any) -> Any:
            admitted = await real_admit(*args)
            call.end = CallEnd("cancelled", "remote", 487)  # the CANCEL crossed the answer
            return admitted

        env.gateway.starter = _Patched(env.gateway.starter,  # type: ignore[assignment]
                                       admit=admit_then_cancel)
        assert await admit(env, call) == Refuse(487)
        assert not env.call_running("sip-c1") and len(env.legs) == 0
        await wait_until(lambda: _no_calls(env), timeout=2, what="the slot was released")


async def test_an_admission_cut_short_gives_the_slot_back() -> None:
    async with gateway_env() as env:
        call = FakeCall("+15550100")
        entered = asyncio.Event()

        async def slow_start(*args: Any, **kwargs: Any) -> None:
            entered.set()
            await asyncio.sleep(10)  # the user agent's admit_timeout cancels us first

        env.gateway.starter = _Patched(env.gateway.starter,  # type: ignore[assignment]
                                       start=slow_start)
        task = asyncio.ensure_future(admit(env, call))
        await entered.wait()
        assert (await env.usage()).active_calls == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_until(lambda: _no_calls(env), timeout=2, what="the slot was released")
        assert env.gateway.active_calls == 0


class _Patched:
    """The gateway's `CallStarter` with some methods replaced."""

    def __init__(self, inner: Any, **methods: Any) -> None:
        self._inner = inner
        self.__dict__.update(methods)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def _no_calls(env: Env) -> bool:
    return (await env.usage()).active_calls == 0
