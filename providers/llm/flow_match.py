"""Intent matching for the flow agent: normalise an utterance, score it against example phrases.

Speech-to-text makes slips a keyword search would miss: "book a tabel", "what time do you
clothes", "opera tor", "to morrow". So each phrase is compared, with rapidfuzz's `fuzz.ratio`
(a normalised edit similarity, 0-100), to every run of the utterance's words that is one word
shorter, as long, or one word longer than the phrase: a split or merged word still lines up,
and a long utterance does not dilute the score. An exact occurrence scores 100. A phrase of
one short word (three letters or fewer, like "yes" or "bye") must occur exactly: fuzzy
matching on it would mostly find other words.

Matching runs on the event loop: an utterance against the ~100 phrases of a script is a few
hundred rapidfuzz calls in C, well under a millisecond.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rapidfuzz import fuzz, process

_AM_PM = re.compile(r"\b([ap])\s?\.\s?m\b\.?|\b([ap])m\b")
_DIGIT_SUFFIX = re.compile(r"(\d)(am|pm)\b")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")
_NON_WORD = re.compile(r"[^a-z0-9:]+")
_STRAY_COLON = re.compile(r"(?<!\d):|:(?!\d)")


def normalize(text: str) -> list[str]:
    """Lower-case words without accents or punctuation; "7:30" and "7pm" become "7:30" and
    "7 pm", "p.m." becomes "pm", "don't" becomes "dont", "&" becomes "and"."""
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch)).lower()
    folded = folded.replace("&", " and ").replace("o'clock", "oclock").replace("'", "")
    folded = folded.replace("\u2019", "")
    folded = _AM_PM.sub(lambda m: f" {(m.group(1) or m.group(2))}m ", folded)
    folded = _DIGIT_SUFFIX.sub(r"\1 \2", folded)
    folded = _NON_WORD.sub(" ", folded)
    folded = _STRAY_COLON.sub(" ", folded)
    return folded.split()


@dataclass(frozen=True, slots=True)
class Match:
    """The intent an utterance matched, with its score (0-100) and the phrase that won."""

    intent: str
    score: float
    phrase: str


class IntentMatcher:
    """Scores utterances against each intent's example phrases; built once per script."""

    def __init__(self, intents: Iterable[tuple[str, Sequence[str]]], *, threshold: float) -> None:
        self._threshold = threshold
        self._phrases: list[tuple[str, str, int]] = []  # intent, normalised phrase, word count
        for name, phrases in intents:
            for phrase in phrases:
                words = normalize(phrase)
                if words:
                    self._phrases.append((name, " ".join(words), len(words)))

    def best(self, words: Sequence[str], *, among: Iterable[str] | None = None) -> Match | None:
        """The best-scoring intent at or above the threshold, or None; on a tie the longer
        phrase wins, then the earlier in the script. `among` restricts the intents."""
        if not words:
            return None
        allowed = set(among) if among is not None else None
        padded = f" {' '.join(words)} "
        windows: dict[int, list[str]] = {}
        best: Match | None = None
        for intent, phrase, size in self._phrases:
            if allowed is not None and intent not in allowed:
                continue
            score = self._score(phrase, size, words, padded, windows)
            # On a tie the longer phrase wins: "cancel my booking" over "booking".
            if score >= self._threshold and (
                best is None or (score, len(phrase)) > (best.score, len(best.phrase))
            ):
                best = Match(intent=intent, score=score, phrase=phrase)
        return best

    @staticmethod
    def _score(phrase: str, size: int, words: Sequence[str], padded: str,
               windows: dict[int, list[str]]) -> float:
        if f" {phrase} " in padded:
            return 100.0
        if size == 1 and len(phrase) <= 3:
            return 0.0
        best = 0.0
        for width in (size - 1, size, size + 1):
            if width < 1 or width > len(words):
                continue
            if width not in windows:
                windows[width] = [" ".join(words[i:i + width])
                                  for i in range(len(words) - width + 1)]
            found = process.extractOne(phrase, windows[width], scorer=fuzz.ratio)
            if found is not None and found[1] > best:
                best = float(found[1])
        return best


def similar(word: str, candidates: Iterable[str], *, cutoff: float = 80.0) -> str | None:
    """The candidate a single word most resembles (for weekday and month names misheard by
    STT: "wendsday", "febuary"); words of four letters or fewer must match exactly."""
    pool = list(candidates)
    if word in pool:
        return word
    if len(word) <= 4:
        return None
    found = process.extractOne(word, pool, scorer=fuzz.ratio, score_cutoff=cutoff)
    return None if found is None else str(found[0])
