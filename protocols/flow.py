"""The flow agent's script: a tenant's scripted conversation, as data that lives in agent config.

A *flow agent* (providers/llm/flow.py) is not a language model: it follows this script. It
greets, recognises the caller's intents from example phrases (fuzzy, so that speech-to-text
slips such as "book a tabel" still match), answers, fills slots by asking for them, confirms,
and hands off (a `transfer` tool call) or hangs up (a `hang_up` tool call). After
`Fallback.max_misses` utterances in a row that it cannot place, it does what `Fallback` says.

Texts may name the intent's slots as `{slot}` placeholders (plain names only); they are
filled with the slot's spoken form ("7:30 PM", "Friday, November 27").

An example: configs/flows/demo.yaml (loaded by providers.llm.flow_file). Schema evolution
follows msgspec's rules: new fields have defaults, tags and names are never reused, types never
change. Unknown fields are refused, so a typo is an error naming its line, not a silent default.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,63}$",
                                   description="lower case letters, digits and _")]
Phrase = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Percent = Annotated[float, msgspec.Meta(ge=0, le=100)]
ClockTime = Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
                                        description="HH:MM, 24-hour clock")]
Keys = Annotated[str, msgspec.Meta(pattern=r"^(?:[0-9*A-D]{1,16}#?|#)$",
                                   description="DTMF keys 0-9 * A-D, or a lone #")]

SlotKind = Literal["number", "time", "date", "yes_no", "text"]
"""What a slot holds and which extractor reads it from an utterance:

- number: a count ("four", "4", "a couple", "just me"); `min` / `max` bound it;
- time: a time of day ("seven thirty", "7:30 pm", "half past 7", "noon"), as HH:MM; a bare
  hour ("at 7") takes the reading that falls between `earliest` and `latest`;
- date: "today", "tomorrow", "Friday", "next Friday", "the 14th", "March 14th", as YYYY-MM-DD;
- yes_no: "yes", "yeah", "sure", "no", "nope", "not really", as "yes" or "no";
- text: whatever the caller says (a name, a note), as said.
"""

Then = Literal["listen", "transfer", "hang_up"]
"""After an intent's reply: keep listening, hand the call to a person, or end the call."""


class Slot(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One value an intent needs, asked for with `prompt` until the caller gives it."""

    name: Name
    prompt: Phrase
    kind: SlotKind = "text"
    reprompt: str = ""          # after a miss; default: "Sorry, " + prompt
    min: int | None = None      # number only
    max: int | None = None      # number only
    earliest: ClockTime | None = None  # time only: the window a bare hour is read in
    latest: ClockTime | None = None
    v: int = 1


class Intent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Something a caller may want: recognised by `phrases`, answered with `say`.

    With `slots`, the agent asks for each missing one (the triggering utterance may already
    hold some: "a table for four at seven"), then asks `confirm` as a yes/no question if set,
    then says `done` and, if `tool` is set, calls that tool with the slot values (a tenant
    webhook that records the booking, say). `then` says what follows.

    `dtmf` selects the intent by keys as well ("press 1 for opening hours"): the caller's
    entry, ended by `#` or a pause, equal to it (a trailing `#` is the caller's Enter key
    and does not count).
    """

    name: Name
    phrases: Annotated[list[Phrase], msgspec.Meta(min_length=1)]
    say: str = ""
    slots: list[Slot] = []
    confirm: str = ""
    done: str = ""
    tool: str = ""
    then: Then = "listen"
    transfer_to: str = ""       # for then: transfer; default FlowScript.transfer_to
    dtmf: Keys = ""             # keys that select this intent, e.g. "1" (quoted in YAML)
    v: int = 1


class Fallback(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What to do when the agent cannot place an utterance: re-prompt, and after
    `max_misses` misses in a row, say `say` and do `then`."""

    reprompts: Annotated[list[Phrase], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: [
            "Sorry, I didn't catch that. Could you say it another way?",
            "Sorry, I still didn't get that.",
        ]
    )
    max_misses: Annotated[int, msgspec.Meta(ge=1, le=10)] = 3
    say: str = "I'm sorry, I'm having trouble understanding. Let me put you through to a colleague."
    then: Then = "transfer"
    v: int = 1


class ToolNames(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The names of the call's tools the flow calls; they must be among the tools offered."""

    transfer: Name = "transfer"   # arguments: {"target": "<transfer_to>"}
    hang_up: Name = "hang_up"     # arguments: {}
    v: int = 1


class FlowScript(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A flow agent's whole script. `match_threshold` (0-100) is how close an utterance must
    come to an intent phrase; lower it for noisy lines, raise it if intents mix up."""

    greeting: Phrase
    intents: Annotated[list[Intent], msgspec.Meta(min_length=1)]
    fallback: Fallback = Fallback()
    anything_else: str = "Is there anything else I can help you with?"
    goodbye: str = "Thank you for calling. Goodbye!"
    denied: str = "No problem, let's go through it again."
    transfer_to: str = ""
    transfer_failed: str = "I'm sorry, I couldn't put you through right now."
    tool_failed: str = "I'm sorry, something went wrong on our side and I couldn't finish that."
    what_else: str = "Sure, what can I help you with?"  # a bare "yes" to `anything_else`
    tools: ToolNames = ToolNames()
    match_threshold: Percent = 80.0
    language: str = "en"
    v: int = 1
