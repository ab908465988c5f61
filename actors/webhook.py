"""`WebhookClient`: calls a tenant's tool webhook (HTTP POST, JSON both ways) under a deadline.

The HTTP client is `httpx2` (the HTTP library the `openai` and `anthropic` SDKs already
install), one connection pool per node. A tool call must never hang a turn: the whole request
(connect, send, wait, read) has the tool's `timeout_seconds`; past it the brain gets
`{"ok": false, "error": "timeout"}`. Every failure becomes such a JSON answer for the brain
(`unreachable`, `http_<status>`, `too_large`), never an exception, so the model can say
something sensible. Arguments and answers are personal data: a failure is logged with the
tool's name and the error code only, never the URL's query, the body or the answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx2
from switchboard.actors.dialogue import tool_error
from switchboard.protocols.tenants import WebhookTool

log = logging.getLogger("switchboard.tools")

MAX_ANSWER_BYTES = 16 * 1024


class WebhookClient:
    def __init__(self, client: httpx2.AsyncClient | None = None) -> None:
        self._client = client or httpx2.AsyncClient(follow_redirects=False)

    async def call(self, tool: WebhookTool, body: dict[str, Any]) -> str:
        """POST `body` to the tool's URL; the answer (JSON text) for the brain."""
        headers = {"content-type": "application/json", "accept": "application/json"}
        if tool.token is not None:
            headers["authorization"] = f"Bearer {tool.token.reveal()}"
        try:
            async with asyncio.timeout(tool.timeout_seconds):
                response = await self._client.post(tool.url, content=json.dumps(body),
                                                   headers=headers,
                                                   timeout=tool.timeout_seconds)
        except TimeoutError:
            return self._failed(tool, "timeout")
        except httpx2.HTTPError:
            return self._failed(tool, "unreachable")
        if response.status_code >= 400:
            return self._failed(tool, f"http_{response.status_code}")
        data = response.content
        if len(data) > MAX_ANSWER_BYTES:
            return self._failed(tool, "too_large")
        text = data.decode("utf-8", errors="replace").strip()
        try:
            json.loads(text)
        except ValueError:
            return json.dumps({"ok": True, "result": text})
        return text or json.dumps({"ok": True})

    @staticmethod
    def _failed(tool: WebhookTool, code: str) -> str:
        log.warning("tool webhook %s failed (%s)", tool.name, code)
        return tool_error(code)

    async def aclose(self) -> None:
        await self._client.aclose()
