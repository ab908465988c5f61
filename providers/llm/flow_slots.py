"""Slot extractors of the flow agent: numbers, yes/no and free text (times and dates: flow_when).

Each extractor reads the normalised words of one utterance (flow_match.normalize) and returns
the value it found with the span of words it used, so that several slots can be read from one
utterance ("a table for four at seven tomorrow") without two slots claiming the same words.
Consumed words are None.

`asked` says whether the agent has just asked for this slot. A direct answer may be bare
("seven", "for" misheard for "four"); an unprompted mention must look like one ("for four
people", "at seven"), or "book a table for tomorrow" would book four people.
Values have a machine form (for tools: "4", "19:30", "2026-11-27", "yes") and a spoken form
(for the agent's replies: "4", "7:30 PM", "Friday, November 27", "yes").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from switchboard.protocols.flow import Slot

Words = Sequence[str | None]

_UNITS = {w: n for n, w in enumerate((
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen"))}
TENS = {w: 10 * n for n, w in enumerate(
    ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"), start=2)}
# STT writes these for spoken numbers; trusted only where a number is clearly meant.
_HOMOPHONES = {"for": 4, "fore": 4, "to": 2, "too": 2, "won": 1, "ate": 8, "tree": 3}
PEOPLE = {"people", "persons", "person", "guests", "adults", "of", "us", "pax", "seats"}
_PARTY = {"for", "party", "group", "table", "of"}
_POLITE = {"please", "thanks", "thank", "you", "um", "uh", "er", "erm", "hmm", "well", "oh",
           "just", "its", "it", "is", "will", "be", "there", "we", "are", "ok", "okay", "so"}


@dataclass(frozen=True, slots=True)
class SlotValue:
    """A slot's value: `value` for tools, `spoken` for replies."""

    value: str
    spoken: str


@dataclass(frozen=True, slots=True)
class Found:
    value: SlotValue
    start: int
    end: int  # exclusive


# -- numbers ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Number:
    value: int
    start: int
    end: int
    homophone: bool = False


def numbers(words: Words) -> list[Number]:
    """Numbers said as digits or words ("twenty two", "one hundred and five")."""
    found: list[Number] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word is None:
            i += 1
        elif word.isdigit() and len(word) <= 6:
            found.append(Number(int(word), i, i + 1))
            i += 1
        elif word in _UNITS or word in TENS:
            value, j = _spelled(words, i)
            found.append(Number(value, i, j))
            i = j
        elif word in _HOMOPHONES:
            found.append(Number(_HOMOPHONES[word], i, i + 1, homophone=True))
            i += 1
        else:
            i += 1
    return found


def _spelled(words: Words, i: int) -> tuple[int, int]:
    total, j = 0, i
    if words[j] in TENS:
        total = TENS[str(words[j])]
        j += 1
        if j < len(words) and words[j] in _UNITS and 0 < _UNITS[str(words[j])] < 10:
            total += _UNITS[str(words[j])]
            j += 1
    else:
        total = _UNITS[str(words[j])]
        j += 1
    if j < len(words) and words[j] == "hundred":
        j += 1
        rest = j + 1 if j < len(words) and words[j] == "and" else j
        if rest < len(words) and (words[rest] in _UNITS or words[rest] in TENS):
            tail, j = _spelled(words, rest)
            return total * 100 + tail, j
        return total * 100, j
    return total, j


def _bare(words: Words) -> list[str]:
    return [w for w in words if w is not None and w not in _POLITE and w not in PEOPLE]


def extract_number(slot: Slot, words: Words, *, asked: bool) -> Found | None:
    """A count: "four", "4 people", "party of six", "just me"; within `slot.min`/`slot.max`."""
    present = [w for w in words if w is not None]
    candidates = numbers(words)
    if asked and {"me", "myself"} & set(present) and not [c for c in candidates
                                                          if not c.homophone]:
        i = next(k for k, w in enumerate(words) if w in ("me", "myself"))
        candidates = [Number(1, i, i + 1)]
    if asked and "couple" in present and not candidates:
        i = present.index("couple")
        candidates = [Number(2, i, i + 1)]
    bare = _bare(words)
    for number in candidates:
        after = words[number.end] if number.end < len(words) else None
        before = words[number.start - 1] if number.start > 0 else None
        looks_like_count = after in PEOPLE or before in _PARTY
        if number.homophone:
            said_alone = asked and len(bare) == 1
            if not (said_alone or (after in PEOPLE and after != "of")):
                continue
        elif not asked and not looks_like_count:
            continue
        if slot.min is not None and number.value < slot.min:
            continue
        if slot.max is not None and number.value > slot.max:
            continue
        text = str(number.value)
        return Found(SlotValue(text, text), number.start, number.end)
    return None


# -- yes / no and text -----------------------------------------------------------------------

_YES = {"yes", "yeah", "yea", "yep", "yup", "ya", "yah", "yess", "sure", "correct", "right",
        "ok", "okay", "absolutely", "definitely", "perfect", "great", "fine", "affirmative",
        "exactly", "certainly", "indeed", "alright", "good"}
_YES_PHRASES = ("go ahead", "sounds good", "of course", "please do", "thats it", "no problem",
                "no worries")
_NO = {"no", "nope", "nah", "not", "wrong", "incorrect", "negative", "dont", "never", "cancel",
       "nothing", "neither", "none"}
_FILLERS = {"um", "uh", "er", "erm", "hmm", "mm", "uhm", "ah"}


def extract_yes_no(words: Words) -> Found | None:
    """"yes" or "no"; a negation wins ("not right" is no), except in "no problem"."""
    present = [w for w in words if w is not None]
    text = f" {' '.join(present)} "
    for phrase in _YES_PHRASES:
        text = text.replace(f" {phrase} ", " yes ")
    said = text.split()
    if not said:
        return None
    if any(w in _NO for w in said):
        return Found(SlotValue("no", "no"), 0, len(words))
    if any(w in _YES for w in said):
        return Found(SlotValue("yes", "yes"), 0, len(words))
    return None


_LEAD_INS = ("my name is ", "the name is ", "name is ", "it's ", "its ", "this is ", "i'm ",
             "i am ")


def extract_text(raw: str) -> Found | None:
    """Whatever was said, trimmed ("my name is" and the like dropped); hesitations alone
    ("um") are not an answer."""
    text = raw.strip().strip(".!?,;: ")
    for lead_in in _LEAD_INS:
        if text.lower().startswith(lead_in) and len(text) > len(lead_in):
            text = text[len(lead_in):].strip()
            break
    spoken = [w for w in text.lower().replace(",", " ").split() if w not in _FILLERS]
    if not spoken:
        return None
    return Found(SlotValue(text, text), 0, 0)
