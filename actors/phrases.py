"""`PhraseBook`: the fixed phrases of a node's agents (greetings, fillers, apologies), synthesized
once and kept, so they play at once: a filler must fill dead air even when the TTS is the
stage that stalled, and the greeting must not wait for a synthesis on every call.

Keyed by (text, sample rate, voice): the voice is the TTS failover order that made it. At
most `max_entries` phrases are kept (least recently used goes first). A call that needs a
phrase not kept yet synthesizes it itself (`synthesize`), under a deadline; a failure leaves
nothing kept, and the next call tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict

from switchboard.protocols.audio import SynthesisChunk
from switchboard.providers.base import TextToSpeech
from switchboard.providers.errors import ProviderError

Key = tuple[str, int, str]


class PhraseBook:
    def __init__(self, *, max_entries: int = 256, max_seconds: float = 30.0) -> None:
        self.max_entries = max_entries
        self.max_seconds = max_seconds  # longer phrases are spoken but not kept
        self._phrases: OrderedDict[Key, tuple[SynthesisChunk, ...]] = OrderedDict()

    def get(self, text: str, rate: int, voice: str) -> tuple[SynthesisChunk, ...] | None:
        key = (text, rate, voice)
        chunks = self._phrases.get(key)
        if chunks is not None:
            self._phrases.move_to_end(key)
        return chunks

    def keep(self, text: str, rate: int, voice: str, chunks: tuple[SynthesisChunk, ...]) -> None:
        if not chunks or sum(c.duration for c in chunks) > self.max_seconds:
            return
        self._phrases[(text, rate, voice)] = chunks
        while len(self._phrases) > self.max_entries:
            self._phrases.popitem(last=False)

    async def synthesize(self, text: str, rate: int, voice: str, tts: TextToSpeech, *,
                         timeout: float = 5.0) -> tuple[SynthesisChunk, ...] | None:
        """The phrase, synthesized now if not kept yet; None if the TTS failed."""
        chunks = self.get(text, rate, voice)
        if chunks is not None or not text:
            return chunks
        try:
            async with asyncio.timeout(timeout):
                stream = tts.synthesize(text)
                async with contextlib.aclosing(stream):  # type: ignore[type-var]
                    made = tuple([chunk async for chunk in stream])
        except (ProviderError, TimeoutError):
            return None
        self.keep(text, rate, voice, made)
        return made
