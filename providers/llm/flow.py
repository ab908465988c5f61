"""The flow agent: the demo agent's default brain. It follows a script; it is not a language model.

The only instruction-tuned model that installs offline (SmolLM2-135M, see docs/providers.md)
cannot hold a conversation, so an agent that must answer sensibly with no account and no
network follows its tenant's script (protocols/flow.py): greeting, intents recognised from
example phrases with fuzzy matching, answers, slots, confirmation, hand-off and hang-up.

`FlowAgent` implements `providers.base.LanguageModel`, so the call actor drives it exactly
like an LLM: it streams the reply word by word as `LlmText`, then any `LlmToolCall`
(`transfer`, `hang_up`, or the intent's own tool), then `LlmFinish`. Replies are ready in
well under a millisecond; streaming word by word lets the call actor's sentence cutter and
barge-in treat it like any model.

It keeps no conversation state of its own: each `stream` replays the conversation's user and
tool messages through the script's state machine (flow_engine.py), so a call actor restarted
from its persisted messages resumes the same conversation, and one agent can serve many calls.
A memo of the last conversation makes the usual next turn cost one step, not a replay.
System and assistant messages are ignored: the script, not a prompt, says what to say.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from switchboard.protocols.flow import FlowScript
from switchboard.protocols.llm import (
    ChatMessage,
    LlmEvent,
    LlmFinish,
    LlmText,
    LlmToolCall,
    ToolSpec,
)
from switchboard.providers.errors import ProviderRejected
from switchboard.providers.llm.flow_engine import FlowEngine, FlowState, Reply, check_script

PROVIDER = "flow"


class FlowAgent:
    """Implements `LanguageModel` by following a `FlowScript`; no model, no network.

    `today` gives the date that "tomorrow" and "Friday" count from (injectable for tests).
    """

    def __init__(self, script: FlowScript, *, today: Callable[[], dt.date] = dt.date.today
                 ) -> None:
        problems = check_script(script)
        if problems:
            path, message = problems[0]
            raise ProviderRejected(f"the flow script is invalid at {path}: {message}"
                                   f"{f' (and {len(problems) - 1} more)' if problems[1:] else ''}",
                                   provider=PROVIDER)
        self._engine = FlowEngine(script)
        self._today = today
        self._memo: tuple[tuple[ChatMessage, ...], FlowState, Reply] | None = None

    @classmethod
    def from_file(cls, path: str | Path, **options: Callable[[], dt.date]) -> FlowAgent:
        """Load a YAML script (providers.llm.flow_file; errors name the line)."""
        from switchboard.providers.llm.flow_file import load_flow

        return cls(load_flow(path), **options)

    @property
    def script(self) -> FlowScript:
        return self._engine.script

    def __repr__(self) -> str:
        return f"FlowAgent(intents={len(self.script.intents)})"

    async def stream(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[LlmEvent]:
        reply = self.reply(messages)
        offered = {tool.name for tool in tools}
        for call in reply.calls:
            if call.name not in offered:
                raise ProviderRejected(
                    f"the flow script calls tool `{call.name}`, which the call did not offer; "
                    "offer it to the agent, or rename it in the script's `tools` / the "
                    "intent's `tool`",
                    provider=PROVIDER,
                )
        words = _words(reply.text)
        for word in words:
            yield LlmText(text=word)
        for call in reply.calls:
            yield LlmToolCall(call=call)
        last = next((m for m in reversed(messages) if m.role == "user"), None)
        yield LlmFinish(
            reason="tool_calls" if reply.calls else "stop",
            input_tokens=len(last.content.split()) if last is not None else 0,
            output_tokens=len(words) + len(reply.calls),
        )

    def reply(self, messages: Sequence[ChatMessage]) -> Reply:
        """What the script says after this conversation (the greeting if the caller has said
        nothing yet; nothing if the last message is already the agent's)."""
        if messages and messages[-1].role == "assistant":
            return Reply()
        inputs = tuple(m for m in messages if m.role in ("user", "tool"))
        state, reply, done = self._resume(inputs)
        today = self._today()
        for message in inputs[done:]:
            if message.role == "user":
                state, reply = self._engine.hear(state, message.content, today)
            else:
                state, reply = self._engine.tool_result(state, message.tool_call_id,
                                                        message.content)
        self._memo = (inputs, state, reply)
        return reply

    def _resume(self, inputs: tuple[ChatMessage, ...]) -> tuple[FlowState, Reply, int]:
        if self._memo is not None:
            seen, state, reply = self._memo
            if len(seen) <= len(inputs) and inputs[: len(seen)] == seen:
                return state, reply, len(seen)
        state, reply = self._engine.greet()
        return state, reply, 0


def _words(text: str) -> list[str]:
    """Word pieces that join back to `text`, each after the first with its leading space."""
    return [word if i == 0 else " " + word for i, word in enumerate(text.split())]
