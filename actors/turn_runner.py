"""`TurnRunner`: one answer of the agent, from the LLM's first token to the last audio frame.

A round streams the LLM (the flow agent, or any model through the failover wrapper) and cuts
its text into sentences (actors/sentences.py) as it comes; a second coroutine synthesizes
each sentence (TTS through the failover wrapper) and hands its audio to the leg (Speaker),
so the first sentence plays while the LLM is still writing the rest. Each sentence's text is
added to the conversation when its first audio is ready, with ledger offsets, so a barge-in
keeps only what was heard. Tool calls the round ends with run after it (actors/call_tools.py;
hang-up and transfer wait for the words before them to play), their answers go to the
conversation, and the next round lets the model go on, up to `max_rounds`.

With `resume=(index, said)` the first round continues assistant message `index` instead:
the model is asked again without it, and what it repeats of `said` is swallowed
(actors/resume.py), so a retried or continued answer never says a heard word twice.

`stage` says what the turn waits on (for the dead-air watchdog): `llm`, `tts` or `tool`.
Cancelling the runner's task (barge-in, retry) stops everything at once: the LLM and TTS
streams are closed (their providers see the cancellation), the producer task is cancelled.
Provider errors propagate to the caller of `run` (the conversation decides what to say).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from switchboard.actors.call_tools import ToolBox
from switchboard.actors.dead_air import LLM, TOOL, TTS
from switchboard.actors.dialogue import Conversation
from switchboard.actors.resume import TextResume
from switchboard.actors.sentences import SentenceCutter
from switchboard.actors.speaker import Speaker
from switchboard.actors.turn_timing import TurnTiming
from switchboard.protocols.llm import ChatMessage, LlmText, LlmToolCall, ToolCall
from switchboard.providers.base import LanguageModel, TextToSpeech

MakeLlm = Callable[[Callable[[str], bool]], LanguageModel]
"""Builds the turn's LLM given the `on_diverge` hook of its sentence cutter."""


class TurnRunner:
    def __init__(self, *, make_llm: MakeLlm, tts: TextToSpeech, speaker: Speaker,
                 conversation: Conversation, tools: ToolBox, timing: TurnTiming,
                 max_rounds: int, on_audio: Callable[[], None],
                 save: Callable[[], None], resume: tuple[int, str] | None = None) -> None:
        self.llm = make_llm(self.on_diverge)
        self.tts = tts
        self.speaker = speaker
        self.conversation = conversation
        self.tools = tools
        self.timing = timing
        self.max_rounds = max_rounds
        self._on_audio = on_audio  # each sentence's first audio is handed to the leg
        self._save = save
        self.stage = LLM
        self.cutter: SentenceCutter | None = None
        # Continue an assistant message (index, text already said) instead of a new one.
        self._resume = resume
        self.first_message = resume[0] if resume else len(conversation.messages)
        self.spoke = False  # some of this turn's audio was handed to the leg

    def on_diverge(self, tail: str) -> bool:
        return self.cutter is not None and self.cutter.drop_pending(tail)

    async def run(self) -> None:
        for _ in range(self.max_rounds):
            calls = await self._round()
            if not calls:
                return
            self.stage = TOOL
            self._save()  # the tool calls are pending: a restarted actor answers them
            for call in calls:
                result = await self.tools.run(call)
                self.conversation.add_tool_result(call, result)
            self._save()
            if self.tools.ending:
                return

    async def _round(self) -> list[ToolCall]:
        said: TextResume | None = None
        if self._resume is not None:
            index, text = self._resume
            self._resume = None
            request = list(self.conversation.messages[:index])
            said = TextResume(text)
        else:
            request = list(self.conversation.messages)  # never this round's draft
            index = self.conversation.open_assistant()
        cutter = self.cutter = SentenceCutter()
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        calls: list[ToolCall] = []
        producer = asyncio.get_running_loop().create_task(
            self._produce(request, cutter, sentences, calls, said), name="turn-llm")
        try:
            await self._consume(sentences, index)
            await producer  # its error, if it failed
        finally:
            if not producer.done():
                producer.cancel()
                await asyncio.wait([producer])
        if calls:
            self.conversation.set_tool_calls(index, calls)
        return calls

    async def _produce(self, request: Sequence[ChatMessage], cutter: SentenceCutter,
                       sentences: asyncio.Queue[str | None], calls: list[ToolCall],
                       said: TextResume | None) -> None:
        try:
            stream = self.llm.stream(request, self.tools.specs)
            async with contextlib.aclosing(stream):  # type: ignore[type-var]
                async for event in stream:
                    if isinstance(event, LlmText):
                        self.timing.mark("llm_first_token")
                        text = event.text if said is None else said.feed(event.text)
                        for sentence in cutter.feed(text):
                            sentences.put_nowait(sentence)
                    elif isinstance(event, LlmToolCall):
                        calls.append(event.call)
            for sentence in cutter.flush():
                sentences.put_nowait(sentence)
        finally:
            sentences.put_nowait(None)

    async def _consume(self, sentences: asyncio.Queue[str | None], index: int) -> None:
        while True:
            if sentences.empty():
                self.stage = LLM
            sentence = await sentences.get()
            if sentence is None:
                return
            self.stage = TTS
            await self._speak(sentence, index)

    async def _speak(self, sentence: str, index: int) -> None:
        start: int | None = None
        stream = self.tts.synthesize(sentence)
        async with contextlib.aclosing(stream):  # type: ignore[type-var]
            async for chunk in stream:
                self.timing.mark("tts_first_audio")
                first = start is None
                if start is None:
                    start = self.conversation.say(index, sentence)
                await self.speaker.room()
                self.speaker.play(chunk.pcm, key=index,
                                  offset=start + min(chunk.text_offset, len(sentence)))
                if first:
                    self.spoke = True
                    self.timing.mark("first_audio")
                    self._on_audio()
