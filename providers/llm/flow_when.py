"""Time and date slots of the flow agent: "half past seven", "tomorrow", "next Friday".

Same conventions as flow_slots.py: words in, a `Found` value with the span it used out;
`asked` allows bare answers ("seven") that an unprompted mention must not be read as.
Times are HH:MM on a 24-hour clock, spoken as "7:30 PM"; dates are YYYY-MM-DD counted from
`today`, spoken as "Friday, November 27".
"""

from __future__ import annotations

import calendar
import datetime as dt

from switchboard.protocols.flow import Slot
from switchboard.providers.llm.flow_match import similar
from switchboard.providers.llm.flow_slots import (
    PEOPLE,
    TENS,
    Found,
    Number,
    SlotValue,
    Words,
    numbers,
)

# -- times ------------------------------------------------------------------------------------

_PM_HINTS = {"pm", "evening", "tonight", "afternoon"}
_AM_HINTS = {"am", "morning"}


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def _spoken_time(hour: int, minute: int) -> str:
    if hour == 0 and minute == 0:
        return "midnight"
    if hour == 12 and minute == 0:
        return "noon"
    suffix = "AM" if hour < 12 else "PM"
    twelve = hour % 12 or 12
    return f"{twelve}:{minute:02d} {suffix}" if minute else f"{twelve} {suffix}"


def _resolve(slot: Slot, hour: int, minute: int, marker: str | None) -> SlotValue | None:
    """24-hour value of a spoken hour: am/pm if said, else the reading inside the slot's
    window (evening first), else as said. Times outside the window are refused."""
    if marker == "pm" and hour < 12:
        readings = [hour + 12]
    elif marker == "am":
        readings = [0 if hour == 12 else hour]
    elif 1 <= hour <= 11:
        readings = [hour + 12, hour]
    else:
        readings = [hour]
    low = _minutes(slot.earliest) if slot.earliest else None
    high = _minutes(slot.latest) if slot.latest else None
    for reading in readings:
        at = reading * 60 + minute
        if (low is None or at >= low) and (high is None or at <= high):
            if low is None and high is None and marker is None:
                reading = readings[-1]  # no window, no am/pm: take it as said
            return SlotValue(f"{reading:02d}:{minute:02d}", _spoken_time(reading, minute))
    return None


def extract_time(slot: Slot, words: Words, *, asked: bool) -> Found | None:
    """A time of day: "7:30 pm", "seven thirty", "half past seven", "quarter to 8",
    "at 7", "8 o'clock", "noon"; a bare "seven" only when asked."""
    present = {w for w in words if w is not None}
    hint = "pm" if present & _PM_HINTS else "am" if present & _AM_HINTS else None
    for i, word in enumerate(words):
        if word in ("noon", "midday"):
            return Found(SlotValue("12:00", "noon"), i, i + 1)
        if word == "midnight":
            return Found(SlotValue("00:00", "midnight"), i, i + 1)
    said = [n for n in numbers(words) if not n.homophone]
    # Said as a time ("at 7", "7 pm", "seven thirty", "half past 7") before a bare number.
    for bare_ok in (False, True) if asked else (False,):
        for k in range(len(said)):
            found = _time_at(slot, words, said, k, hint, bare_ok)
            if found is not None:
                return found
    for i, word in enumerate(words):  # "7:30", normalised as one word
        if word is not None and ":" in word:
            hours, minutes = (int(part) for part in word.split(":"))
            if hours <= 23 and minutes <= 59:
                marker, end = _marker(words, i + 1, hint)
                value = _resolve(slot, hours, minutes, marker)
                if value is not None:
                    return Found(value, i, end)
    return None


def _marker(words: Words, i: int, hint: str | None) -> tuple[str | None, int]:
    word = words[i] if i < len(words) else None
    if word in ("am", "pm"):
        return word, i + 1
    if word == "oclock":
        return hint, i + 1
    return hint, i


def _time_at(slot: Slot, words: Words, said: list[Number], k: int, hint: str | None,
             bare_ok: bool) -> Found | None:
    number = said[k]
    before = words[number.start - 1] if number.start > 0 else None
    before2 = words[number.start - 2] if number.start > 1 else None
    after = words[number.end] if number.end < len(words) else None
    if before == "past" or before == "to":  # "half past 7", "quarter to 8", "10 past 7"
        offset = 30 if before2 == "half" else 15 if before2 == "quarter" else None
        first = said[k - 1] if k > 0 and said[k - 1].end == number.start - 1 else None
        if offset is None and first is not None and first.value in (5, 10, 20, 25):
            offset = first.value
        if offset is None or not 1 <= number.value <= 23:
            return None
        hour, minute = (number.value, offset) if before == "past" else (
            (number.value - 1) % 24, 60 - offset)
        marker, end = _marker(words, number.end, hint)
        value = _resolve(slot, hour, minute, marker)
        start = number.start - 2 if first is None else first.start
        return None if value is None else Found(value, start, end)
    if not 0 <= number.value <= 23:
        return None
    follower = said[k + 1] if k + 1 < len(said) else None
    minute = 0
    end = number.end
    if follower is not None and follower.start == number.end and 10 <= follower.value <= 59:
        minute, end = follower.value, follower.end  # "seven thirty"
    elif after == "oh" and follower is not None and follower.start == number.end + 1 \
            and follower.value < 10:
        minute, end = follower.value, follower.end  # "seven oh five"
    marker, end_marked = _marker(words, end, hint)
    said_as_time = end_marked > end or minute or before == "at" or (
        words[end] in ("am", "pm") if end < len(words) else False)
    if not (said_as_time or bare_ok) or (after in PEOPLE and not minute):
        return None
    value = _resolve(slot, number.value, minute, marker)
    start = number.start - 1 if before == "at" else number.start
    return None if value is None else Found(value, start, end_marked)


# -- dates ------------------------------------------------------------------------------------

_WEEKDAYS = [d.lower() for d in calendar.day_name]
_MONTHS = [m.lower() for m in calendar.month_name][1:]
_ORDINAL_WORDS = {w: n for n, w in enumerate(
    ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth", "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth", "eighteenth", "nineteenth", "twentieth"], start=1)}
_TODAY = {"today", "tonight"}


def _spoken_date(day: dt.date) -> str:
    return f"{calendar.day_name[day.weekday()]}, {calendar.month_name[day.month]} {day.day}"


def _ordinal(words: Words, i: int) -> tuple[int, int] | None:
    """(day of month, end) for "14th", "fourteenth", "twenty first", "thirtieth"."""
    word = words[i]
    if word is None:
        return None
    if word[:-2].isdigit() and word[-2:] in ("st", "nd", "rd", "th"):
        return int(word[:-2]), i + 1
    if word in _ORDINAL_WORDS:
        return _ORDINAL_WORDS[word], i + 1
    if word in ("twenty", "thirty") and i + 1 < len(words):
        nxt = words[i + 1]
        if nxt in _ORDINAL_WORDS and _ORDINAL_WORDS[str(nxt)] < 10:
            return TENS[word] + _ORDINAL_WORDS[str(nxt)], i + 2
    if word == "thirtieth":
        return 30, i + 1
    return None


def _month_day(year: int, month: int, day: int, today: dt.date) -> dt.date | None:
    for y in (year, year + 1):
        try:
            candidate = dt.date(y, month, day)
        except ValueError:
            continue
        if candidate >= today:
            return candidate
    return None


def extract_date(slot: Slot, words: Words, *, asked: bool, today: dt.date) -> Found | None:
    """A day: "today", "tonight", "tomorrow", "the day after tomorrow", "Friday",
    "next Friday" (never today), "the 14th", "March 14th", "14th of March"."""
    joined = [w for w in words]
    for i, word in enumerate(joined):
        if word is None:
            continue
        nxt = joined[i + 1] if i + 1 < len(joined) else None
        if word == "to" and nxt in ("morrow", "morrows"):
            word, span = "tomorrow", 2
        else:
            span = 1
        if word in _TODAY or (word == "this" and nxt in ("evening", "afternoon", "morning")):
            return Found(_date(today), i, i + (2 if word == "this" else 1))
        if similar(word, ["tomorrow"]) == "tomorrow":
            start = i - 3 if i >= 3 and joined[i - 3:i] == ["the", "day", "after"] else (
                i - 2 if i >= 2 and joined[i - 2:i] == ["day", "after"] else i)
            days = 2 if start < i else 1
            return Found(_date(today + dt.timedelta(days=days)), start, i + span)
        weekday = similar(word, _WEEKDAYS)
        if weekday is not None:
            ahead = (_WEEKDAYS.index(weekday) - today.weekday()) % 7
            prev = joined[i - 1] if i > 0 else None
            if prev == "next" and ahead == 0:
                ahead = 7
            start = i - 1 if prev in ("next", "this", "on") else i
            return Found(_date(today + dt.timedelta(days=ahead)), start, i + 1)
        found = _calendar_day(words, i, today)
        if found is not None:
            return found
    return None


def _date(day: dt.date) -> SlotValue:
    return SlotValue(day.isoformat(), _spoken_date(day))


def _calendar_day(words: Words, i: int, today: dt.date) -> Found | None:
    word = words[i]
    month_name = similar(word, _MONTHS) if word is not None else None
    if month_name is not None:  # "march 14th", "march 14", "march the 14th"
        j = i + 2 if i + 1 < len(words) and words[i + 1] == "the" else i + 1
        day = _ordinal(words, j) if j < len(words) else None
        if day is None and j < len(words) and (words[j] or "").isdigit():
            day = (int(str(words[j])), j + 1)
        if day is not None:
            when = _month_day(today.year, _MONTHS.index(month_name) + 1, day[0], today)
            return None if when is None else Found(_date(when), i, day[1])
        return None
    day = _ordinal(words, i)
    if day is None:
        return None
    start = i - 1 if i > 0 and words[i - 1] == "the" else i
    end = day[1]
    month = today.month
    rest = words[end:end + 2]
    if rest and rest[0] == "of" and len(rest) > 1 and rest[1] is not None:
        named = similar(rest[1], _MONTHS)
        if named is not None:
            month, end = _MONTHS.index(named) + 1, end + 2
    elif rest and rest[0] is not None and similar(rest[0], _MONTHS) is not None:
        month, end = _MONTHS.index(str(similar(rest[0], _MONTHS))) + 1, end + 1
    if end > day[1]:  # a month was named
        when = _month_day(today.year, month, day[0], today)
    else:  # "the 3rd" said on the 20th is next month's
        when = _next_day_of_month(day[0], today)
    return None if when is None else Found(_date(when), start, end)


def _next_day_of_month(day: int, today: dt.date) -> dt.date | None:
    year, month = today.year, today.month
    for _ in range(3):  # the 31st may skip a month or two
        try:
            candidate = dt.date(year, month, day)
        except ValueError:
            candidate = None
        if candidate is not None and candidate >= today:
            return candidate
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return None
