"""Turn-taking decisions, frame by frame: barge-in, blips, and when the caller's turn is over.

Everything here is plain and synchronous (no I/O, no clock but the audio stream's), so it runs
inline on the media path (`Agent.on_audio`) and is tested frame by frame.

- `VadProbe` wraps the call's VAD to remember the latest frame's probability, so the call
  actor can tell a voiced frame from one in the silence hangover (`VoiceActivity.voiced`).
- `TurnTaker` follows the caller's speech segments. While the agent is busy (speaking, or
  thinking about an answer), caller speech that has been voiced for `barge_in_min_ms` is a
  **barge-in**, decided on the frame that crosses the threshold; a segment over the agent that
  ends sooner is a **blip** (a cough, "uh-huh"), and a transcript of blips only is dropped.
- `utterance_complete(text)` is the smart end-of-utterance signal: a transcript ending with a
  comma, an ellipsis or a word that needs a continuation ("and", "for", "the", "um") ends
  mid-phrase; anything else reads as complete. `end_of_turn_after` turns it into the quiet
  needed before the turn is committed (see `protocols.tenants.TurnSettings`).
- `KeypadEntry` collects the keys the caller types into one entry, due when `#` is pressed or
  `dtmf_timeout_ms` after the last key, counted on the same stream clock (caller frames keep
  coming during silence), so no timer task is needed.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

from switchboard.actors.agent import VoiceActivity
from switchboard.protocols.audio import AudioChunk, SpeechStarted, Transcript
from switchboard.protocols.tenants import TurnSettings
from switchboard.providers.base import Vad

# Decisions of `TurnTaker.on_frame`.
STARTED = "started"      # the VAD found speech (a new segment)
RESUMED = "resumed"      # voiced again after a pause within the same segment
BARGE_IN = "barge_in"    # the caller talks over the busy agent: interrupt now
ENDED = "ended"          # the VAD found the end of the segment (after its hangover)

CONTINUATION_WORDS = frozenset((
    "a", "an", "the", "and", "or", "but", "so", "because", "if", "than", "then", "that",
    "which", "who", "whose", "where", "when", "while", "what", "as", "at", "by", "for",
    "from", "in", "into", "of", "on", "to", "with", "about", "is", "are", "was", "were",
    "my", "your", "our", "their", "his", "her", "its", "i'm", "um", "uh", "er", "erm", "hmm",
    "like",
))
_TRAILING = re.compile(r"[\s\"')\]]+$")
_WORD = re.compile(r"[A-Za-z']+")


def utterance_complete(text: str) -> bool:
    """Whether a final transcript reads as a finished utterance (see the module docstring)."""
    body = _TRAILING.sub("", text)
    if not body:
        return False
    if body.endswith(("...", "\u2026", ",", "-", "\u2014", ";")):
        return False
    if body.endswith("?"):
        return True
    words = _WORD.findall(body)
    return not words or words[-1].lower() not in CONTINUATION_WORDS


def end_of_turn_after(text: str, settings: TurnSettings, min_silence_s: float) -> float:
    """Seconds of caller quiet after which `text` ends the turn."""
    if not settings.smart_end_of_turn:
        return min_silence_s
    if utterance_complete(text):
        return min(settings.fast_end_ms / 1000, min_silence_s)
    return max(settings.incomplete_hold_ms / 1000, min_silence_s)


class VadProbe:
    """A `Vad` that remembers the probability of the latest audio it was given."""

    __slots__ = ("_vad", "last")

    def __init__(self, vad: Vad) -> None:
        self._vad = vad
        self.last = 0.0

    @property
    def sample_rate(self) -> int:
        return self._vad.sample_rate

    def speech_probability(self, pcm: bytes) -> float:
        self.last = self._vad.speech_probability(pcm)
        return self.last

    def reset(self) -> None:
        self._vad.reset()
        self.last = 0.0


@dataclass(slots=True)
class Segment:
    """One caller speech segment on the stream clock (`end` None while it lasts)."""

    start: float
    end: float | None = None
    over_agent: bool = False  # voiced while the agent was busy
    barged: bool = False      # it interrupted the agent

    @property
    def blip(self) -> bool:
        return self.over_agent and not self.barged


class TurnTaker:
    def __init__(self, settings: TurnSettings) -> None:
        self.barge_in_min = settings.barge_in_min_ms / 1000
        self.in_speech = False
        self.voiced = False            # the latest frame was voiced
        self.voiced_s = 0.0            # voiced seconds in the current segment
        self.last_voiced_end = 0.0     # stream time just after the last voiced audio
        self.now = 0.0                 # stream time just after the latest frame
        self.segment: Segment | None = None
        self.segments: deque[Segment] = deque(maxlen=32)

    def on_frame(self, frame: AudioChunk, vad: VoiceActivity, busy: bool) -> str | None:
        """Follow one caller frame; `busy`: the agent is speaking or preparing an answer."""
        self.now = frame.end
        event = vad.event
        decision: str | None = None
        if event is not None:
            if isinstance(event, SpeechStarted):
                self.segment = Segment(start=event.at)
                self.segments.append(self.segment)
                self.in_speech, self.voiced = True, True
                self.voiced_s = frame.end - event.at
                self.last_voiced_end = frame.end
                decision = STARTED
            else:
                if self.segment is not None:
                    self.segment.end = event.at
                self.in_speech, self.voiced = False, False
                self.last_voiced_end = event.at
                return ENDED
        elif not vad.speaking:
            self.voiced = False
            return None
        elif vad.voiced:
            decision = RESUMED if not self.voiced else None
            self.voiced = True
            self.voiced_s += frame.duration
            self.last_voiced_end = frame.end
        else:
            self.voiced = False
            return None
        segment = self.segment
        if segment is not None and busy:
            segment.over_agent = True
            if not segment.barged and self.voiced_s >= self.barge_in_min:
                segment.barged = True
                return BARGE_IN
        return decision

    def quiet_for(self) -> float:
        """Seconds since the caller's last voiced audio (0 while voiced)."""
        return 0.0 if self.voiced else max(self.now - self.last_voiced_end, 0.0)

    def only_blips(self, transcript: Transcript) -> bool:
        """True if every segment the transcript overlaps is a blip over the agent (a
        backchannel to drop); False when it overlaps none (the VAD missed it: keep it)."""
        found = False
        for segment in self.segments:
            end = segment.end if segment.end is not None else self.now
            if end <= transcript.start or segment.start >= transcript.end:
                continue
            if not segment.blip:
                return False
            found = True
        return found


TERMINATOR = "#"  # the caller's Enter key: it ends an entry at once


class KeypadEntry:
    """Keys typed since the last entry was taken (see the module docstring)."""

    __slots__ = ("complete", "keys", "last_at", "timeout")

    def __init__(self, settings: TurnSettings) -> None:
        self.timeout = settings.dtmf_timeout_ms / 1000
        self.keys = ""
        self.last_at = 0.0      # stream time of the latest key
        self.complete = False   # ended by the terminator

    def press(self, digit: str, now: float) -> None:
        self.keys += digit
        self.last_at = now
        self.complete = digit == TERMINATOR

    def due(self, now: float) -> bool:
        """The entry is over: submit it."""
        return bool(self.keys) and (self.complete or now - self.last_at >= self.timeout)

    def take(self) -> str:
        keys, self.keys, self.complete = self.keys, "", False
        return keys
