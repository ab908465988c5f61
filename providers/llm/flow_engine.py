"""The flow agent's state machine: from a state and what the caller said, the next state and reply.

Pure and deterministic (no I/O, no clock but the `today` it is given), so the agent can rebuild
a conversation's state by replaying its transcript: a restarted call actor resumes the same
conversation from its persisted messages, and one script serves any number of calls.

Modes:

    intent          listening for an intent (after the greeting, an answer, or a re-prompt)
    anything_else   like intent, after "anything else?": a plain "no" ends the call
    slot            asked for slot `slot` of intent `intent`
    confirm         asked the intent's `confirm` question (yes / no)
    waiting         a tool call is out (the intent's tool, or a transfer); its result decides
    ended           hang_up was called; anything more gets the goodbye again

In slot and confirm modes a hand-off or goodbye intent still wins ("just put me through to
someone"), a question with a plain answer (opening hours) is answered and the slot asked again,
and another task intent switches to it. Misses in a row are counted in every mode; at
`fallback.max_misses` the fallback's `then` happens.

Keys the caller typed arrive as a user message (`protocols.conversation.keypad_message`) and
are never fuzzy-matched: asked for a number or text slot, digits answer it (a party size, a
reference); otherwise the intent whose `dtmf` they are is taken, as a matched phrase would be;
anything else is a miss.
"""

from __future__ import annotations

import datetime as dt
import json
import string
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from switchboard.protocols.conversation import keypad_keys
from switchboard.protocols.flow import FlowScript, Intent, Slot, Then
from switchboard.protocols.llm import ToolCall
from switchboard.providers.llm.flow_match import IntentMatcher, normalize
from switchboard.providers.llm.flow_slots import (
    Found,
    SlotValue,
    Words,
    extract_number,
    extract_text,
    extract_yes_no,
)
from switchboard.providers.llm.flow_when import extract_date, extract_time

Mode = Literal["intent", "anything_else", "slot", "confirm", "waiting", "ended"]
_PREFILL_ORDER = ("time", "date", "number")  # a time's "at 7" must not become 7 people


@dataclass(frozen=True, slots=True)
class FlowState:
    mode: Mode = "intent"
    intent: str = ""
    slot: str = ""
    values: tuple[tuple[str, SlotValue], ...] = ()
    misses: int = 0
    turn: int = 0
    # Tool calls out: (call id, "transfer" | "intent_tool", intent name).
    pending: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Reply:
    texts: tuple[str, ...] = ()
    calls: tuple[ToolCall, ...] = field(default_factory=tuple)

    def __add__(self, other: Reply) -> Reply:
        return Reply(self.texts + other.texts, self.calls + other.calls)

    @property
    def text(self) -> str:
        return " ".join(t.strip() for t in self.texts if t.strip())


def _say(*texts: str) -> Reply:
    return Reply(tuple(t for t in texts if t))


def check_script(script: FlowScript) -> list[tuple[str, str]]:
    """Problems a schema cannot catch, as (msgspec-style path, message) pairs."""
    problems: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    keys: dict[str, int] = {}
    for i, intent in enumerate(script.intents):
        here = f"$.intents[{i}]"
        if intent.name in seen:
            first = seen[intent.name]
            problems.append((f"{here}.name", f"intent `{intent.name}` is already intents[{first}]"))
        seen[intent.name] = i
        if intent.dtmf:
            entry = entered(intent.dtmf)
            if entry in keys:
                taken = f"these keys already select intents[{keys[entry]}]; give each its own"
                problems.append((f"{here}.dtmf", taken))
            keys.setdefault(entry, i)
        names = [slot.name for slot in intent.slots]
        for j, slot in enumerate(intent.slots):
            if names.index(slot.name) != j:
                problems.append((f"{here}.slots[{j}].name", f"slot `{slot.name}` repeats"))
            problems += _check_slot(slot, f"{here}.slots[{j}]")
        for key in ("say", "confirm", "done"):
            problems += _check_template(getattr(intent, key), names, f"{here}.{key}")
        if intent.confirm and not intent.slots:
            problems.append((f"{here}.confirm", "`confirm` needs slots to confirm"))
        if intent.then == "transfer" and not (intent.transfer_to or script.transfer_to):
            needs = "`then: transfer` needs `transfer_to` here or at the top of the script"
            problems.append((f"{here}.then", needs))
        if not any(normalize(p) for p in intent.phrases):
            empty = "every phrase is empty once punctuation is removed; give words"
            problems.append((f"{here}.phrases", empty))
    if script.fallback.then == "transfer" and not script.transfer_to:
        needs = ("`then: transfer` needs `transfer_to` at the top of the script (or set "
                 "`then: hang_up` or `listen`)")
        problems.append(("$.fallback.then", needs))
    for key in ("greeting", "anything_else", "goodbye", "denied", "transfer_failed",
                "tool_failed", "what_else"):
        problems += _check_template(getattr(script, key), [], f"$.{key}")
    return problems


def _check_slot(slot: Slot, here: str) -> list[tuple[str, str]]:
    problems = []
    if slot.kind != "number" and (slot.min is not None or slot.max is not None):
        problems.append((f"{here}.kind", "`min` and `max` apply to number slots only"))
    if slot.kind != "time" and (slot.earliest or slot.latest):
        problems.append((f"{here}.kind", "`earliest` and `latest` apply to time slots only"))
    if slot.min is not None and slot.max is not None and slot.min > slot.max:
        problems.append((f"{here}.min", "`min` is above `max`"))
    return problems


def _check_template(text: str, names: Sequence[str], here: str) -> list[tuple[str, str]]:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError:
        return [(here, "unbalanced `{` or `}`; write `{{` or `}}` for a literal brace")]
    problems = []
    for name in fields:
        if name not in names:
            known = ", ".join(names) or "none here"
            unknown = f"placeholder `{{{name}}}` is not a slot of this intent (slots: {known})"
            problems.append((here, unknown))
    return problems


class FlowEngine:
    """The script's state machine; `greet`, `hear` and `tool_result` return (state, reply)."""

    def __init__(self, script: FlowScript) -> None:
        self.script = script
        self._intents = {intent.name: intent for intent in script.intents}
        self._matcher = IntentMatcher(((i.name, i.phrases) for i in script.intents),
                                      threshold=script.match_threshold)
        self._escapes = [i.name for i in script.intents if i.then != "listen"]
        self._by_keys = {entered(i.dtmf): i.name for i in script.intents if i.dtmf}

    def greet(self) -> tuple[FlowState, Reply]:
        return FlowState(), _say(self.script.greeting)

    def hear(self, state: FlowState, raw: str, today: dt.date) -> tuple[FlowState, Reply]:
        state = replace(state, turn=state.turn + 1)
        if state.mode == "ended":
            return self._hang_up(state, self.script.goodbye)
        keys = keypad_keys(raw)
        if keys is not None:
            return self._hear_keys(state, entered(keys), today)
        words = normalize(raw)
        answer = extract_yes_no(words) if state.mode in ("confirm", "anything_else") else None
        if state.mode == "confirm" and answer is not None and len(words) <= 3:
            return self._confirmed(state, answer.value.value == "yes")
        if state.mode in ("slot", "confirm"):  # "put me through to someone" wins anywhere
            escape = self._matcher.best(words, among=self._escapes)
            if escape is not None:
                return self._start(state, self._intents[escape.intent], words, raw, today)
        if state.mode == "slot":
            return self._hear_slot(state, words, raw, today)
        if state.mode == "confirm" and answer is not None:
            return self._confirmed(state, answer.value.value == "yes")
        match = self._matcher.best(words)
        if match is not None and state.mode == "confirm":
            again = _say(self._fill(self._intents[state.intent].confirm, state))
            return self._aside(state, self._intents[match.intent], words, raw, today, again)
        if match is not None:
            return self._start(state, self._intents[match.intent], words, raw, today)
        if state.mode == "anything_else" and answer is not None:
            if answer.value.value == "no":
                return self._hang_up(state, self.script.goodbye)
            return replace(state, mode="intent", misses=0), _say(self.script.what_else)
        return self._miss(state)

    def _confirmed(self, state: FlowState, yes: bool) -> tuple[FlowState, Reply]:
        if yes:
            return self._complete(replace(state, misses=0))
        intent = self._intents[state.intent]
        return self._advance(replace(state, values=(), misses=0), intent,
                             _say(self.script.denied))

    def tool_result(self, state: FlowState, call_id: str, content: str
                    ) -> tuple[FlowState, Reply]:
        """A tool message came back: a failed transfer is apologised for; a finished intent
        tool lets the intent say `done` and go on."""
        out = next((p for p in state.pending if p[0] == call_id), None)
        if out is None:
            return state, Reply()
        state = replace(state, pending=tuple(p for p in state.pending if p[0] != call_id))
        _, kind, name = out
        if kind == "transfer" and _failed(content):
            return self._listen(replace(state, misses=0), _say(self.script.transfer_failed))
        if kind == "intent_tool" and state.mode == "waiting" and state.intent == name:
            intent = self._intents[name]
            if _failed(content):
                return self._listen(state, _say(self.script.tool_failed))
            return self._then(state, intent.then, intent.transfer_to,
                              _say(self._fill(intent.done, state)))
        return state, Reply()

    # -- steps ---------------------------------------------------------------------------------

    def _start(self, state: FlowState, intent: Intent, words: list[str], raw: str,
               today: dt.date) -> tuple[FlowState, Reply]:
        state = replace(state, mode="intent", intent=intent.name, slot="", values=(), misses=0)
        state = replace(state, values=self._prefill(intent, words, today))
        return self._advance(state, intent, _say(self._fill(intent.say, state)))

    def _prefill(self, intent: Intent, words: list[str], today: dt.date
                 ) -> tuple[tuple[str, SlotValue], ...]:
        remaining: list[str | None] = list(words)
        found: dict[str, SlotValue] = {}
        for kind in _PREFILL_ORDER:
            for slot in intent.slots:
                if slot.kind != kind or slot.name in found:
                    continue
                hit = extract(slot, remaining, "", asked=False, today=today)
                if hit is not None:
                    found[slot.name] = hit.value
                    remaining[hit.start:hit.end] = [None] * (hit.end - hit.start)
        return tuple((s.name, found[s.name]) for s in intent.slots if s.name in found)

    def _advance(self, state: FlowState, intent: Intent, said: Reply) -> tuple[FlowState, Reply]:
        filled = dict(state.values)
        for slot in intent.slots:
            if slot.name not in filled:
                return replace(state, mode="slot", slot=slot.name), said + _say(slot.prompt)
        if intent.confirm:
            return (replace(state, mode="confirm", slot=""),
                    said + _say(self._fill(intent.confirm, state)))
        return self._complete(state, said)

    def _complete(self, state: FlowState, said: Reply = Reply()) -> tuple[FlowState, Reply]:
        intent = self._intents[state.intent]
        if intent.tool:
            arguments = {"intent": intent.name, **{k: v.value for k, v in state.values}}
            call = self._call(state, intent.tool, arguments)
            state = replace(state, mode="waiting",
                            pending=state.pending + ((call.id, "intent_tool", intent.name),))
            return state, said + Reply(calls=(call,))
        return self._then(state, intent.then, intent.transfer_to,
                          said + _say(self._fill(intent.done, state)))

    def _then(self, state: FlowState, then: Then, target: str, said: Reply
              ) -> tuple[FlowState, Reply]:
        if then == "transfer":
            call = self._call(state, self.script.tools.transfer,
                              {"target": target or self.script.transfer_to})
            state = replace(state, mode="waiting",
                            pending=state.pending + ((call.id, "transfer", state.intent),))
            return state, said + Reply(calls=(call,))
        if then == "hang_up":
            return self._hang_up(state, "" if said.texts else self.script.goodbye, said)
        return self._listen(state, said)

    def _listen(self, state: FlowState, said: Reply) -> tuple[FlowState, Reply]:
        mode: Mode = "anything_else" if self.script.anything_else else "intent"
        return (replace(state, mode=mode, slot="", values=()),
                said + _say(self.script.anything_else))

    def _hang_up(self, state: FlowState, text: str, said: Reply = Reply()
                 ) -> tuple[FlowState, Reply]:
        call = self._call(state, self.script.tools.hang_up, {})
        return replace(state, mode="ended"), said + _say(text) + Reply(calls=(call,))

    def _hear_slot(self, state: FlowState, words: list[str], raw: str, today: dt.date
                   ) -> tuple[FlowState, Reply]:
        intent = self._intents[state.intent]
        slot = next(s for s in intent.slots if s.name == state.slot)
        # Free text takes anything, so a question ("is there parking?") must be heard first.
        other = self._matcher.best(words) if slot.kind == "text" else None
        hit = None if other is not None else extract(slot, words, raw, asked=True, today=today)
        if hit is not None:
            state = replace(state, values=state.values + ((slot.name, hit.value),), misses=0)
            return self._advance(state, intent, Reply())
        other = other or self._matcher.best(words)
        if other is not None and other.intent != intent.name:
            return self._aside(state, self._intents[other.intent], words, raw, today,
                               _say(slot.prompt))
        return self._miss(state, _reprompt(slot))

    def _hear_keys(self, state: FlowState, keys: str, today: dt.date
                   ) -> tuple[FlowState, Reply]:
        """A keypad entry (see the module docstring)."""
        slot = None
        if state.mode == "slot":
            slot = next(s for s in self._intents[state.intent].slots if s.name == state.slot)
            if slot.kind in ("number", "text") and keys.isdigit():
                hit = extract(slot, [keys], keys, asked=True, today=today)
                if hit is not None:
                    state = replace(state, values=state.values + ((slot.name, hit.value),),
                                    misses=0)
                    return self._advance(state, self._intents[state.intent], Reply())
        name = self._by_keys.get(keys)
        if name is None:
            return self._miss(state, _reprompt(slot) if slot is not None else "")
        if slot is not None:
            return self._aside(state, self._intents[name], [], "", today, _say(slot.prompt))
        if state.mode == "confirm":
            again = _say(self._fill(self._intents[state.intent].confirm, state))
            return self._aside(state, self._intents[name], [], "", today, again)
        return self._start(state, self._intents[name], [], "", today)

    def _aside(self, state: FlowState, other: Intent, words: list[str], raw: str,
               today: dt.date, again: Reply) -> tuple[FlowState, Reply]:
        """Mid-task, a plain question is answered and the task's question asked again;
        any other intent takes over."""
        if not other.slots and not other.tool and other.then == "listen":
            said = _say(self._fill(other.say, FlowState()), other.done)
            return replace(state, misses=0), said + again
        return self._start(state, other, words, raw, today)

    def _miss(self, state: FlowState, reprompt: str = "") -> tuple[FlowState, Reply]:
        fallback = self.script.fallback
        misses = state.misses + 1
        state = replace(state, misses=misses)
        if misses >= fallback.max_misses:
            state = replace(state, misses=0)
            if fallback.then == "listen":
                return self._listen(state, _say(fallback.say))
            return self._then(state, fallback.then, "", _say(fallback.say))
        if state.mode == "confirm":
            intent = self._intents[state.intent]
            reprompt = f"Sorry, please answer yes or no. {self._fill(intent.confirm, state)}"
        text = reprompt or fallback.reprompts[(misses - 1) % len(fallback.reprompts)]
        return state, _say(text)

    def _call(self, state: FlowState, name: str, arguments: dict[str, str]) -> ToolCall:
        # Ids follow from the turn, so replaying a transcript gives the same ids back.
        return ToolCall(id=f"flow_{state.turn}_{name}", name=name,
                        arguments=json.dumps(arguments, separators=(",", ":")))

    def _fill(self, template: str, state: FlowState) -> str:
        spoken = {name: value.spoken for name, value in state.values}
        return string.Formatter().vformat(template, (), _Missing(spoken)) if template else ""


class _Missing(dict[str, str]):
    """Placeholders of slots not filled yet read as empty, never as an error."""

    def __missing__(self, key: str) -> str:
        return ""


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _reprompt(slot: Slot) -> str:
    return slot.reprompt or f"Sorry, {_lower_first(slot.prompt)}"


def entered(keys: str) -> str:
    """The keys of an entry as intents name them: a trailing `#` (Enter) dropped."""
    return keys[:-1] if len(keys) > 1 and keys.endswith("#") else keys


def _failed(content: str) -> bool:
    """A tool result reports failure as a JSON object with `"ok": false` or an `"error"`."""
    try:
        result = json.loads(content)
    except ValueError:
        return content.strip().lower().startswith("error")
    return isinstance(result, dict) and (result.get("ok") is False or "error" in result)


def extract(slot: Slot, words: Words, raw: str, *, asked: bool, today: dt.date) -> Found | None:
    """The value of `slot` in an utterance (its normalised `words` and `raw` text)."""
    match slot.kind:
        case "number":
            return extract_number(slot, words, asked=asked)
        case "time":
            return extract_time(slot, words, asked=asked)
        case "date":
            return extract_date(slot, words, asked=asked, today=today)
        case "yes_no":
            return extract_yes_no(words) if asked else None
        case _:
            return extract_text(raw) if asked else None
