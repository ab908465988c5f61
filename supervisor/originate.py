"""`switchboard call`: ask a tenant to place an outbound call, and follow it to its end.

    $ switchboard call --tenant demo --agent demo --target sip:alice@127.0.0.1:5070
    switchboard call: tenant demo calls sip:alice@127.0.0.1:5070 with agent demo
    call 3f2a... dialling (trunk on node host-1234-ab12)
    +   0.0 s  started (dialling)
    +   1.2 s  answered
    +  14.9 s  ended: caller_hangup after 14.9 s (talked 13.7 s)

The tenant actor admits the call (its quotas apply to outbound calls too) and hands it to the
trunk actor of its `trunk`, on a node running the SIP gateway; this command subscribes to
the call's lifecycle events (protocols/events.py) before asking, so it misses none. The call
id is made here, so a retried command never dials twice. Exit status: 0 answered, 1 not
answered (busy, no answer...) or still up at `--timeout`, 2 refused or unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import msgspec
from switchboard.actors.errors import ActorError, ActorNotFound, RemoteError
from switchboard.actors.transport import Inbound, TransportError
from switchboard.protocols.call import TENANT_KIND, Originate, Originated
from switchboard.protocols.events import (
    CallAnswered,
    CallDtmf,
    CallEnded,
    CallEvent,
    CallStarted,
    call_event_subject,
)
from switchboard.supervisor.client import connect_client

__all__ = ["originate_command"]

CONNECT_TIMEOUT = 5.0
ORIGINATE_TIMEOUT = 10.0  # activation of the tenant, then of the trunk on a SIP node


async def originate_command(nats_urls: list[str], tenant: str, agent: str, target: str, *,
                            caller_id: str = "", follow: bool = True,
                            timeout: float = 3600.0) -> int:
    """Place the call, print its id and, with `follow`, its progress until it ends."""
    call_id = uuid.uuid4().hex
    events: asyncio.Queue[CallEvent] = asyncio.Queue()
    decoder = msgspec.msgpack.Decoder(CallEvent)

    async def on_event(message: Inbound) -> None:
        try:
            events.put_nowait(decoder.decode(message.data))
        except msgspec.DecodeError:
            pass  # an event of a newer schema: its lifecycle still ends with `ended`

    async with contextlib.AsyncExitStack() as stack:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                client = await stack.enter_async_context(connect_client(nats_urls))
        except (TimeoutError, OSError, TransportError) as exc:
            print(f"switchboard call: cannot reach NATS at {','.join(nats_urls)} "
                  f"({exc or 'timeout'}); start `switchboard up`, or pass --nats URL")
            return 2
        subject = call_event_subject(tenant, call_id, "*")
        subscription = await client.transport.subscribe(subject, on_event)
        stack.push_async_callback(subscription.unsubscribe)
        print(f"switchboard call: tenant {tenant} calls {target} with agent {agent}", flush=True)
        try:
            originated: Originated = await client.ref(TENANT_KIND, tenant).ask(
                Originate(agent_id=agent, target=target, caller_id=caller_id, call_id=call_id),
                timeout=ORIGINATE_TIMEOUT, reply_type=Originated)
        except RemoteError as exc:
            print(f"switchboard call: refused ({exc.code}): {exc}")
            return 2
        except ActorNotFound as exc:  # an unknown tenant or agent, or no node for tenants
            print(f"switchboard call: {exc}")
            return 2
        except (ActorError, TransportError) as exc:
            print(f"switchboard call: {exc} ({getattr(exc, 'code', 'transport')}); is a node "
                  "running (`switchboard status`), with this tenant in its tenants file and "
                  "a SIP gateway for its trunk?")
            return 2
        print(f"call {call_id} dialling (trunk on node {originated.node_id})", flush=True)
        return await _follow(events, timeout) if follow else 0


async def _follow(events: asyncio.Queue[CallEvent], timeout: float) -> int:
    loop = asyncio.get_running_loop()
    began = loop.time()
    answered = False
    try:
        async with asyncio.timeout(timeout):
            while True:
                event = await events.get()
                at = f"+{loop.time() - began:6.1f} s"
                if isinstance(event, CallStarted):
                    print(f"{at}  started (dialling)", flush=True)
                elif isinstance(event, CallAnswered):
                    answered = True
                    print(f"{at}  answered", flush=True)
                elif isinstance(event, CallDtmf):
                    print(f"{at}  key pressed (#{event.seq})", flush=True)
                elif isinstance(event, CallEnded):
                    talk = f" (talked {event.talk_seconds:.1f} s)" if event.answered else ""
                    print(f"{at}  ended: {event.reason} after {event.duration:.1f} s{talk}",
                          flush=True)
                    return 0 if answered or event.answered else 1
    except TimeoutError:
        print(f"switchboard call: still up after {timeout:g} s; stopped following it")
        return 1

