"""A web call through the whole gateway, with an aiortc peer as the browser: the token is
checked, the tenant admits the call, a call actor with the echo agent answers, the greeting
reaches the caller, the caller's words come back, and the page's hang-up ends the call, frees
the tenant's slot and records `call.ended` (caller_hangup). Only the page that set up a
call can restart or hang it up.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from switchboard.gateways.webrtc.tokens import mint_token_for
from switchboard.protocols.call import GetUsage, Usage
from switchboard.protocols.events import CallEnded, CallEvent, CallStarted

from tests.support.harness import wait_until
from tests.support.web import AiortcCaller, dominant_hz, post, tone, web_directory, web_node

pytestmark = pytest.mark.integration


async def test_a_web_call_from_token_to_hang_up() -> None:
    directory = web_directory()
    token = mint_token_for(directory, "acme", "support", subject="user-17")
    rate = 48000
    speech = np.concatenate([np.zeros(rate, np.int16), tone(0.6, rate, 700),
                             np.zeros(3 * rate, np.int16)])
    caller = AiortcCaller(pcm=speech)
    async with web_node(directory) as node:
        started = time.monotonic()
        status, _, body = await post(f"{node.url}/api/calls",
                                     {"sdp": await caller.offer(), "type": "offer"}, token=token)
        assert status == 201, body
        assert body["call_id"].startswith("web-") and body["codec"] == "opus/48000"
        await caller.accept(body["sdp"])
        call_id, secret = body["call_id"], body["call_secret"]

        await wait_until(lambda: "greeting" in caller.states(), timeout=5, what="greeting")
        await asyncio.sleep(0.6)
        greeting = caller.heard_since(started)
        assert np.abs(greeting).max() > 1000, "the greeting's audio reached the caller"

        # The tone at 1.0 s interrupts the greeting (barge-in); the echo plays it back.
        await wait_until(lambda: abs(dominant_hz(caller.heard_since(started + 1.9), rate)
                                     - 700) < 20 if len(caller.heard_since(started + 1.9))
                         > rate // 4 else False, timeout=6, what="the echo of the caller")

        wrong = await post(f"{node.url}/api/calls/{call_id}/hangup", {"call_secret": "guess"})
        assert wrong[0] == 403
        restart = await post(f"{node.url}/api/calls/{call_id}/ice-restart",
                             {"sdp": "v=0", "call_secret": "guess"})
        assert restart[0] == 403

        hangup = await post(f"{node.url}/api/calls/{call_id}/hangup", {"call_secret": secret})
        assert hangup[0] == 204
        await wait_until(lambda: node.system.cell(node.system.ref("call", call_id)) is None,
                         timeout=5, what="the call actor ended")
        usage = await node.system.ref("tenant", "acme").ask(GetUsage(), reply_type=Usage)
        assert usage.active_calls == 0
        await wait_until(lambda: node.gateway.active_calls == 0, timeout=3,
                         what="the gateway forgot the call")
        assert len(node.legs) == 0
        events = node.events.decoded(CallEvent)
    await caller.close()
    started_event = next(e for e in events if isinstance(e, CallStarted))
    ended = next(e for e in events if isinstance(e, CallEnded))
    assert started_event.tenant_id == "acme" and started_event.agent_id == "support"
    assert started_event.pii is not None and started_event.pii.caller == "user-17"
    assert ended.reason == "caller_hangup" and ended.answered


async def test_a_closing_gateway_ends_its_calls_as_shutdown() -> None:
    directory = web_directory()
    token = mint_token_for(directory, "acme", "support")
    caller = AiortcCaller()
    async with web_node(directory) as node:
        status, _, body = await post(f"{node.url}/api/calls", {"sdp": await caller.offer()},
                                     token=token)
        assert status == 201
        await caller.accept(body["sdp"])
        await wait_until(lambda: "greeting" in caller.states(), timeout=5, what="answered")
        await node.gateway.close()
        await wait_until(lambda: node.system.cell(node.system.ref("call", body["call_id"]))
                         is None, timeout=5, what="the call actor ended")
        events = node.events.decoded(CallEvent)
    await caller.close()
    ended = next(e for e in events if isinstance(e, CallEnded))
    assert ended.reason == "shutdown"
    assert caller.states()[-1] == "ended"
