"""`SentenceCutter`: cuts an LLM's token stream into pieces of speech for the TTS, as it comes.

The first piece should reach the TTS as early as possible, the later ones should be whole
sentences (they sound better, and the audio of the first covers their synthesis). So:

- a sentence ends at `.`, `!`, `?` (or a line break) followed by white space: the space
  confirms it (`3.5` and `e.g.` are not ends; a few abbreviations never end one);
- the first piece of a reply may also end at a clause (`,` `;` `:` or a dash, then a space)
  once it has `first_clause_words` words: "Sure, | let me check that for you.";
- a later sentence running past `max_words` words is cut at its next clause, so a long
  sentence does not hold the audio back;
- `flush()` gives what is left when the stream ends.

Pieces without a letter or digit are never emitted on their own (they join the next one).
`drop_pending(tail)` serves the failover's `on_diverge`: text received but not emitted yet
may be dropped when a replacement provider says something else.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?:[.!?]+[\"')\]]*|\n)(?=\s)")
_CLAUSE_END = re.compile(r"(?:[,;:]|\s[-\u2013\u2014])[\"')\]]*(?=\s)")
_ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "st.", "jr.", "sr.", "e.g.", "i.e.",
                            "vs.", "approx.", "no.", "prof.", "a.m.", "p.m."})
_SPACE = re.compile(r"\s+")


class SentenceCutter:
    def __init__(self, *, first_clause_words: int = 4, max_words: int = 24) -> None:
        self.first_clause_words = first_clause_words
        self.max_words = max_words
        self._buffer = ""
        self._emitted = 0

    @property
    def pending(self) -> str:
        """Text received and not emitted yet."""
        return self._buffer

    def feed(self, text: str) -> list[str]:
        """Add the next piece of the stream; return the pieces now ready to speak."""
        self._buffer += text
        out: list[str] = []
        while True:
            cut = self._next_cut()
            if cut is None:
                return out
            piece, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:]
            if any(ch.isalnum() for ch in piece):
                out.append(piece)
                self._emitted += 1
            elif piece:
                self._buffer = piece + self._buffer  # punctuation alone: keep it for the next

    def flush(self) -> list[str]:
        """The rest, once the stream has ended."""
        piece, self._buffer = self._buffer.strip(), ""
        if any(ch.isalnum() for ch in piece):
            self._emitted += 1
            return [piece]
        return []

    def drop_pending(self, tail: str) -> bool:
        """Drop the unemitted text if it is `tail` (the failover's `on_diverge`)."""
        if self._buffer.strip() and _norm(self._buffer) == _norm(tail):
            self._buffer = ""
            return True
        return False

    def _next_cut(self) -> int | None:
        buffer = self._buffer
        for match in _SENTENCE_END.finditer(buffer):
            if not self._abbreviation(buffer, match.start(), match.end()):
                return match.end()
        words = len(buffer.split())
        limit = self.first_clause_words if self._emitted == 0 else self.max_words
        if words >= limit:
            for match in _CLAUSE_END.finditer(buffer):
                if len(buffer[:match.end()].split()) >= min(limit, self.first_clause_words):
                    return match.end()
        return None

    @staticmethod
    def _abbreviation(buffer: str, start: int, end: int) -> bool:
        if buffer[start] != ".":
            return False
        word_start = max(buffer.rfind(" ", 0, start), buffer.rfind("\n", 0, start)) + 1
        return buffer[word_start:end].lower() in _ABBREVIATIONS


def _norm(text: str) -> str:
    return _SPACE.sub(" ", text).strip()
