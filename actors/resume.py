"""Where a replacement provider's output resumes after a failover, so nothing is said twice.

`TextResume` is the LLM rule (documented in docs/pools.md): the replacement is asked the same
request from the start, and its text is matched against the text `said` already emitted:

1. **It agrees** (whitespace aside, it repeats `said` word for word): everything up to the
   end of `said` is swallowed and the rest streams out. The turn reads as one reply.
2. **It diverges** before reaching the end of `said`: what was emitted cannot be unsaid, so
   the replacement resumes at a sentence boundary: after as many of its own sentences as
   `said` has begun. `said`'s unfinished last sentence (if any) is offered to `on_diverge`;
   a consumer that has not spoken it yet may drop it and return True, and the replacement
   then resumes one sentence earlier, at the sentence that replaces it.
3. A replacement that ends while still matching or skipping adds no text.

Tool calls are matched whole (`ToolCallResume`): a call with the same name and arguments as
one already emitted is swallowed (its id may differ between providers; the first one stands).
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable

import msgspec
from switchboard.protocols.llm import ToolCall

# A sentence ends at . ! ? ; : or a line break, then closing quotes, then white space
# (as providers/tts/segment.py cuts sentences for speech).
_SENTENCE_END = re.compile(r"[.!?;:\n]+[\"')\]]*(?=\s)")
_SAID_END = re.compile(r"[.!?;:\n]+[\"')\]]*(?=\s|$)")
_SPACE = re.compile(r"\s+")


def _normalize(text: str) -> str:
    return _SPACE.sub(" ", text).lstrip()


def _raw_index(raw: str, count: int) -> int:
    """The index in `raw` just after its `count`-th character once normalized."""
    seen, previous_space = 0, True
    for index, ch in enumerate(raw):
        if seen >= count:
            return index
        space = ch.isspace()
        if space and previous_space:
            continue
        previous_space = space
        seen += 1
    return len(raw)


class TextResume:
    """Feed the replacement's text pieces; get back the part to emit (often "")."""

    def __init__(self, said: str, on_diverge: Callable[[str], bool] | None = None) -> None:
        self._said = _normalize(said).rstrip()
        self._raw = ""
        self._passing = not self._said
        self._on_diverge = on_diverge
        self._said_text = said
        self._target: int | None = None  # sentences of the replacement to skip, once diverged
        self.diverged = False

    @property
    def passing(self) -> bool:
        return self._passing

    def feed(self, piece: str) -> str:
        if self._passing:
            return piece
        self._raw += piece
        if self._target is None:
            heard = _normalize(self._raw)
            if self._said.startswith(heard):
                return ""  # still repeating what was said
            if heard.startswith(self._said):
                self._passing = True
                return self._raw[_raw_index(self._raw, len(self._said)):]
            self.diverged = True
            self._target = self._sentences_to_skip()
        return self._skip()

    def _sentences_to_skip(self) -> int:
        ends = list(_SAID_END.finditer(self._said_text))
        complete = len(ends)
        tail = self._said_text[ends[-1].end():] if ends else self._said_text
        if not any(ch.isalnum() for ch in tail):
            return complete
        dropped = self._on_diverge(tail) if self._on_diverge is not None else False
        return complete if dropped else complete + 1

    def _skip(self) -> str:
        assert self._target is not None
        if self._target == 0:
            self._passing = True
            return self._raw
        for number, match in enumerate(_SENTENCE_END.finditer(self._raw), start=1):
            if number == self._target:
                self._passing = True
                return self._raw[match.end():]
        return ""


class ToolCallResume:
    """Swallows a replacement's tool calls that repeat ones already emitted."""

    def __init__(self) -> None:
        self._emitted: collections.Counter[tuple[str, str]] = collections.Counter()
        self._pending: collections.Counter[tuple[str, str]] = collections.Counter()

    def restart(self) -> None:
        """A replacement starts: the calls emitted so far may come again, once each."""
        self._pending = collections.Counter(self._emitted)

    def accept(self, call: ToolCall) -> bool:
        key = (call.name, _canonical(call.arguments))
        if self._pending[key] > 0:
            self._pending[key] -= 1
            return False
        self._emitted[key] += 1
        return True


def _canonical(arguments: str) -> str:
    """JSON arguments in one spelling (key order and spacing differ between vendors)."""
    try:
        value = msgspec.json.decode(arguments)
    except msgspec.DecodeError:
        return arguments
    return msgspec.json.encode(value, order="sorted").decode()
