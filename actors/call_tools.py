"""`ToolBox`: the tools a conversation brain may call, offered as `ToolSpec`s and run here.

Built in (`AgentConfig.builtin_tools`): `hang_up` (after the goodbye has played), `transfer`
(blind, SIP REFER through `leg.transfer`, after the words before it have played; only to a
target the tenant allowed: `AgentConfig.transfer_targets`, plus the flow script's own), and
`send_dtmf` (keys to the far end). Tenant tools (`AgentConfig.tools`) are webhooks
(actors/webhook.py). Every run has a deadline and every outcome is a JSON text for the brain:
`{"ok": true, ...}` or `{"ok": false, "error": "<code>"}`; nothing raises but cancellation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Collection
from typing import Any

from switchboard.actors.agent import CallControl, CallInfo
from switchboard.actors.dialogue import tool_error
from switchboard.actors.speaker import Speaker
from switchboard.actors.webhook import WebhookClient
from switchboard.protocols.llm import ToolCall, ToolSpec
from switchboard.protocols.media import MediaError, TransferNotSupported
from switchboard.protocols.tenants import AgentConfig, WebhookTool

log = logging.getLogger("switchboard.tools")

DRAIN_TIMEOUT = 30.0     # longest goodbye we wait for before hanging up or transferring
TRANSFER_TIMEOUT = 10.0  # the peer accepts the REFER within this
_DIGITS = re.compile(r"^[0-9*#A-Da-d]{1,32}$")
_OK = json.dumps({"ok": True})

BUILTIN: dict[str, ToolSpec] = {
    "hang_up": ToolSpec(
        name="hang_up", description="End the call, once you have said goodbye."),
    "transfer": ToolSpec(
        name="transfer",
        description="Hand the caller to a person: a blind transfer to a SIP URI or phone "
                    "number. Say that you are transferring first.",
        parameters={"type": "object", "required": ["target"], "properties": {
            "target": {"type": "string", "description": "SIP URI or E.164 number"}}}),
    "send_dtmf": ToolSpec(
        name="send_dtmf", description="Press telephone keys (e.g. to work a phone menu).",
        parameters={"type": "object", "required": ["digits"], "properties": {
            "digits": {"type": "string", "pattern": "^[0-9*#A-D]{1,32}$"}}}),
}


class ToolBox:
    def __init__(self, agent: AgentConfig, call: CallInfo, control: CallControl,
                 speaker: Speaker, webhooks: WebhookClient, *,
                 transfer_targets: Collection[str] = ()) -> None:
        self._call = call
        self._control = control
        self._speaker = speaker
        self._webhooks = webhooks
        self._builtin = {name: BUILTIN[name] for name in agent.builtin_tools}
        self._hooks: dict[str, WebhookTool] = {tool.name: tool for tool in agent.tools}
        self._targets = frozenset([*agent.transfer_targets, *transfer_targets])
        self.specs: list[ToolSpec] = [*self._builtin.values(), *(
            ToolSpec(name=t.name, description=t.description, parameters=t.parameters)
            for t in agent.tools)]
        self.ending = False  # hang_up or transfer went through: the call is ending

    async def run(self, call: ToolCall) -> str:
        """Run one tool call; its JSON answer."""
        try:
            arguments = json.loads(call.arguments or "{}")
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            return tool_error("bad_arguments")
        if call.name in self._hooks:
            return await self._webhooks.call(self._hooks[call.name], self._body(call, arguments))
        if call.name not in self._builtin:
            log.warning("call %s: the brain called tool %s, which is not offered",
                        self._call.call_id, call.name)
            return tool_error("unknown_tool")
        if call.name == "hang_up":
            await self._drained()
            self.ending = True
            self._control.hangup()
            return _OK
        if call.name == "transfer":
            return await self._transfer(arguments)
        return self._send_dtmf(arguments)

    async def _drained(self) -> None:
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT):
                await self._speaker.drained()
        except TimeoutError:
            pass  # the leg is not playing out; act anyway

    async def _transfer(self, arguments: dict[str, Any]) -> str:
        target = arguments.get("target")
        if not isinstance(target, str) or target not in self._targets:
            log.warning("call %s: transfer to a target the tenant did not allow was refused",
                        self._call.call_id)
            return tool_error("target_not_allowed")
        await self._drained()
        try:
            async with asyncio.timeout(TRANSFER_TIMEOUT):
                await self._control.transfer(target)
        except TimeoutError:
            return tool_error("timeout")
        except TransferNotSupported:
            return tool_error("not_supported")
        except MediaError:
            return tool_error("transfer_failed")
        self.ending = True
        return _OK

    def _send_dtmf(self, arguments: dict[str, Any]) -> str:
        digits = arguments.get("digits")
        if not isinstance(digits, str) or not _DIGITS.fullmatch(digits):
            return tool_error("bad_arguments")
        try:
            self._control.send_dtmf(digits.upper())
        except MediaError:
            return tool_error("dtmf_failed")
        return _OK

    def _body(self, call: ToolCall, arguments: dict[str, Any]) -> dict[str, Any]:
        info = self._call
        return {"tool": call.name, "arguments": arguments,
                "call": {"id": info.call_id, "tenant_id": info.tenant_id,
                         "agent_id": info.agent.id, "caller": info.caller,
                         "callee": info.callee}}
