"""The pieces of turn-taking, frame by frame and token by token: the smart end-of-utterance
signal, barge-in decided on the exact frame, blips classified, the sentence cutter that feeds
the TTS early, and the speaker's account of what the caller heard."""

from __future__ import annotations

import pytest
from switchboard.actors.agent import PAUSING, SILENT, SPEAKING, VoiceActivity
from switchboard.actors.sentences import SentenceCutter
from switchboard.actors.speaker import Speaker
from switchboard.actors.turn_taking import (
    BARGE_IN,
    ENDED,
    RESUMED,
    STARTED,
    TurnTaker,
    end_of_turn_after,
    utterance_complete,
)
from switchboard.protocols.audio import AudioChunk, SpeechEnded, SpeechStarted, Transcript
from switchboard.protocols.tenants import TurnSettings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("text", "complete"), [
    ("What are your opening hours?", True),
    ("I'd like to book a table.", True),
    ("yes", True),
    ("I'd like to book a table for", False),
    ("I'd like to book a table for.", False),  # STTs punctuate fragments too
    ("a table for four and", False),
    ("Well, um", False),
    ("so I was thinking,", False),
    ("I need to...", False),
    ("Is it open on the", False),
    ("", False),
])
def test_an_utterance_reads_as_complete_or_mid_phrase(text: str, complete: bool) -> None:
    assert utterance_complete(text) is complete


def test_complete_utterances_end_the_turn_sooner_and_fragments_later() -> None:
    settings = TurnSettings()
    assert end_of_turn_after("Are you open today?", settings, 0.3) == 0.15
    assert end_of_turn_after("a table for", settings, 0.3) == 0.8
    plain = TurnSettings(smart_end_of_turn=False)
    assert end_of_turn_after("a table for", plain, 0.3) == 0.3


def frame(n: int) -> AudioChunk:
    return AudioChunk(pcm=bytes(320), sample_rate=8000, timestamp=n * 0.02)


def run(taker: TurnTaker, plan: list[tuple[VoiceActivity, bool]], start: int = 0
        ) -> list[str | None]:
    return [taker.on_frame(frame(start + i), vad, busy) for i, (vad, busy) in enumerate(plan)]


def test_barge_in_is_decided_on_the_frame_that_reaches_the_minimum() -> None:
    taker = TurnTaker(TurnSettings(barge_in_min_ms=250))
    # The VAD decides speech on the 5th voiced frame (90 ms minimum), dating it back.
    started = VoiceActivity(speaking=True, event=SpeechStarted(at=0.0))
    decisions = run(taker, [(SILENT, True)] * 4 + [(started, True)] + [(SPEAKING, True)] * 10,
                    start=0)
    assert decisions[4] == STARTED
    # voiced: 0.10 s at the event (frames 0-4), +0.02 per frame: 0.26 s at frame 12
    assert decisions.index(BARGE_IN) == 12
    assert decisions.count(BARGE_IN) == 1  # once per segment


def test_speech_over_an_idle_agent_is_no_barge_in_and_a_short_segment_is_a_blip() -> None:
    taker = TurnTaker(TurnSettings(barge_in_min_ms=250))
    started = VoiceActivity(speaking=True, event=SpeechStarted(at=0.0))
    ended = VoiceActivity(speaking=False, event=SpeechEnded(at=0.2, started_at=0.0),
                          voiced=False)
    assert BARGE_IN not in run(taker, [(started, False)] + [(SPEAKING, False)] * 20)
    assert taker.on_frame(frame(30), ended, False) == ENDED
    assert taker.segments[-1].blip is False  # the agent was silent: a real utterance

    blip = TurnTaker(TurnSettings(barge_in_min_ms=250))
    run(blip, [(VoiceActivity(speaking=True, event=SpeechStarted(at=1.0)), True)]
        + [(SPEAKING, True)] * 3, start=50)
    blip.on_frame(frame(60), VoiceActivity(speaking=False, event=SpeechEnded(
        at=1.16, started_at=1.0), voiced=False), True)
    assert blip.segments[-1].blip
    assert blip.only_blips(Transcript(text="uh-huh", is_final=True, start=1.0, end=1.16))
    assert not blip.only_blips(Transcript(text="hm", is_final=True, start=3.0, end=3.5))


def test_quiet_is_counted_from_the_last_voiced_frame_and_a_resumption_is_seen() -> None:
    taker = TurnTaker(TurnSettings())
    run(taker, [(VoiceActivity(speaking=True, event=SpeechStarted(at=0.0)), False)]
        + [(SPEAKING, False)] * 4)
    assert taker.quiet_for() == 0.0
    run(taker, [(PAUSING, False)] * 8, start=5)
    assert taker.quiet_for() == pytest.approx(0.16)
    assert taker.on_frame(frame(13), SPEAKING, False) == RESUMED


def cut(pieces: list[str]) -> list[list[str]]:
    cutter = SentenceCutter()
    out = [cutter.feed(piece) for piece in pieces]
    out.append(cutter.flush())
    return out


def test_sentences_are_released_as_soon_as_a_space_confirms_their_end() -> None:
    out = cut(["Sure", " thing.", " We", " open", " at", " noon.", " Bye"])
    assert out == [[], [], ["Sure thing."], [], [], [], ["We open at noon."], ["Bye"]]


def test_the_first_clause_goes_early_and_numbers_and_abbreviations_do_not_cut() -> None:
    assert cut(["Well, let me just check, ", "one moment please."]) == [
        ["Well, let me just check,"], [], ["one moment please."]]
    assert cut(["It costs 3.5 dollars, e.g. at 9 a.m. on weekdays. ", "Yes."]) == [
        ["It costs 3.5 dollars, e.g. at 9 a.m. on weekdays."], [], ["Yes."]]


def test_text_not_yet_spoken_can_be_dropped_for_a_diverging_replacement() -> None:
    cutter = SentenceCutter()
    assert cutter.feed("Hello there. We open") == ["Hello there."]
    assert not cutter.drop_pending("something else")
    assert cutter.drop_pending(" We  open")
    assert cutter.flush() == []


class _Control:
    """Plays out instantly unless told what is queued."""

    sample_rate = 8000

    def __init__(self) -> None:
        self.queued = 0.0

    def play(self, pcm: bytes) -> None:
        self.queued += len(pcm) / 2 / self.sample_rate

    def clear_playout(self) -> float:
        dropped, self.queued = self.queued, 0.0
        return dropped

    @property
    def playout_queued(self) -> float:
        return self.queued


def test_the_speaker_knows_which_words_the_caller_heard() -> None:
    control = _Control()
    speaker = Speaker(control)  # type: ignore[arg-type]
    second = bytes(16000)  # one second at 8 kHz
    speaker.play(second, key=3, offset=10)   # "Sentence 1" ends at 10
    speaker.play(second, key=3, offset=21)   # the next one at 21
    speaker.play(second, key=4, offset=5)
    control.queued = 1.5  # the caller heard 1.5 s: the first sentence only
    assert speaker.interrupt() == {3: 10, 4: 0}
    assert control.queued == 0.0
