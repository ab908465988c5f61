"""`Listener`: the caller's side of a conversation: one speech-to-text stream for the whole call.

Caller frames go into a `Feed` (actors/audio_tap.py) from the media path (`feed`, no await);
a task owned by the call runs the STT over it and hands every final transcript to
`on_final`. The STT is a `FailoverSpeechToText` over the agent's order: a provider that fails
or owes a final past its deadline (`expect_final()`, called when the VAD hears the caller
stop) is replaced within the turn, with the utterance replayed. If the whole order fails,
a new stream starts after `restart_delay`, doubled while it keeps failing (the utterance in
flight is lost: the dead-air watchdog apologises and asks the caller to repeat) and
`on_failure` is told, so no provider failure leaves the call deaf. The feed outlives the streams: no caller audio is lost
between two of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from prometheus_client import Counter
from switchboard.actors.audio_tap import Feed
from switchboard.actors.failover import FailoverSpeechToText, error_code
from switchboard.protocols.audio import AudioChunk, Transcript
from switchboard.providers.errors import ProviderError

log = logging.getLogger("switchboard.conversation")

STT_RESTARTS = Counter("switchboard_stt_restarts_total",
                       "Speech-to-text streams of a call started again after every provider "
                       "of its order failed", ["code"])


class Listener:
    def __init__(self, make_stt: Callable[[], FailoverSpeechToText], *,
                 on_final: Callable[[Transcript], None], on_failure: Callable[[], None],
                 call_id: str, restart_delay: float = 0.2, max_delay: float = 5.0) -> None:
        self._make_stt = make_stt
        self._stt = make_stt()
        self._on_final = on_final
        self._on_failure = on_failure
        self._call_id = call_id
        self._restart_delay = restart_delay
        self._max_delay = max_delay
        self._feed = Feed(())

    def feed(self, frame: AudioChunk) -> None:
        self._feed.put(frame)

    def expect_final(self) -> None:
        """The caller stopped speaking: a final transcript is owed from now on."""
        self._stt.expect_final()

    def close(self) -> None:
        """No more audio (the call ends): the stream flushes and ends."""
        self._feed.end()

    async def run(self) -> None:
        """Transcribe until the feed ends or the task is cancelled."""
        delay = self._restart_delay
        while True:
            try:
                stream = self._stt.stream(self._feed)
                async with contextlib.aclosing(stream):  # type: ignore[type-var]
                    async for transcript in stream:
                        if transcript.is_final:
                            delay = self._restart_delay
                            self._on_final(transcript)
                return
            except ProviderError as exc:
                code = error_code(exc)
                STT_RESTARTS.labels(code).inc()
                log.warning("call %s: speech-to-text failed on every provider (%s); starting "
                            "it again", self._call_id, code)
                self._on_failure()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_delay)  # a provider that cannot start
            self._stt = self._make_stt()  # nothing owed: the utterance in flight is lost
