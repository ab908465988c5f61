"""`Recovery`: what a conversation does when the caller is owed an answer and hears nothing.

The dead-air watchdog (actors/dead_air.py) says when; this module says what, per stage the
answer was waiting on, one rung further each time the silence comes back:

    stage          rung 0        rung 1                       rung 2
    llm, tts       filler        retry on the next provider   apology
    stt, tool      filler        apology
    turn_lost      retry         apology
    end_of_turn    commit the held caller turn now

- **filler**: a short phrase ("One moment."), synthesized when the call starts and kept per
  node (actors/phrases.py), so it plays at once even when the TTS is what stalled;
- **retry**: the failing kind's order is rotated (the provider that stalled goes last) and
  the answer runs again; words the caller already heard are not said twice (the new reply
  is matched against them, actors/resume.py `TextResume`);
- **apology**: pre-synthesized too; the answer is abandoned (tool calls answered
  `timeout`), the apology asks the caller to say it again.

A turn lost after an interruption (the caller's barge-in turned out to be noise) is
continued at once (`continue_reply`), without waiting for the watchdog.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from switchboard.actors.dead_air import (
    APOLOGY,
    COMMIT,
    DEAD_AIR,
    END_OF_TURN,
    FILLER,
    LLM,
    NONE,
    RETRY,
    STT,
    TOOL,
    TTS,
    TURN_LOST,
)
from switchboard.actors.turn_timing import TurnTiming
from switchboard.protocols.audio import SynthesisChunk
from switchboard.protocols.media import MediaError

if TYPE_CHECKING:
    from switchboard.actors.conversation import ConversationAgent

LADDERS: dict[str, tuple[str, ...]] = {
    LLM: (FILLER, RETRY, APOLOGY),
    TTS: (FILLER, RETRY, APOLOGY),
    STT: (FILLER, APOLOGY),
    TOOL: (FILLER, APOLOGY),
    TURN_LOST: (RETRY, APOLOGY),
    END_OF_TURN: (COMMIT, APOLOGY),
}
_RETRIED_KIND = {LLM: "llm", TTS: "tts"}


class Recovery:
    def __init__(self, agent: ConversationAgent) -> None:
        self.agent = agent
        self.phrases: dict[str, tuple[SynthesisChunk, ...]] = {}
        self.greeting_done = asyncio.Event()

    async def prepare(self) -> None:
        """Synthesize the call's fixed phrases once the greeting is out of the TTS's way."""
        agent = self.agent
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3.0):
                await self.greeting_done.wait()
        settings, rate = agent.settings, agent.call.sample_rate
        tts = agent.make_tts()
        for text in (settings.filler, settings.apology, settings.resume):
            chunks = await agent.services.phrases.synthesize(text, rate, agent.voice, tts)
            if chunks:
                self.phrases[text] = chunks

    # -- the watchdog's callbacks --------------------------------------------------------------

    def stage(self) -> str:
        agent = self.agent
        if agent.turn is not None:
            return agent.turn.stage
        if agent.failed_stage:
            return agent.failed_stage
        if agent.pending:
            return END_OF_TURN
        if agent.conversation.owes_answer():
            return TURN_LOST
        return STT

    def recover(self, stage: str, rung: int) -> str:
        ladder = LADDERS.get(stage, (FILLER, APOLOGY))
        action = ladder[min(rung, len(ladder) - 1)]
        self.agent.dead_air += 1
        if action == FILLER:
            return FILLER if self.say(self.agent.settings.filler) else NONE
        if action == COMMIT:
            self.agent.commit()
            return COMMIT
        if action == RETRY:
            kind = _RETRIED_KIND.get(stage)
            if kind is not None:
                order = self.agent.orders[kind]  # type: ignore[index]
                if len(order) > 1:
                    order.append(order.pop(0))
            self.continue_reply()
            return RETRY
        return self.apologise()

    # -- recoveries ----------------------------------------------------------------------------

    def lost_turn(self) -> None:
        """The caller's interruption was noise: go on with the reply they cut."""
        DEAD_AIR.labels(TURN_LOST, RETRY).inc()
        self.continue_reply()

    def continue_reply(self) -> None:
        """Answer again: continue the last assistant message (what was heard is not said
        again) or, if the caller's words are the last, answer them."""
        agent = self.agent
        agent.interrupted = agent.reopen = False
        agent.cancel_turn()
        conversation = agent.conversation
        conversation.drop_empty()
        messages = conversation.messages
        last = messages[-1] if messages else None
        resume: tuple[int, str] | None = None
        if last is not None and last.role == "assistant" and not last.tool_calls:
            resume = (len(messages) - 1, last.content)
        elif not conversation.owes_answer():
            agent.watchdog.settle()
            return
        now = time.monotonic()
        if agent.timing is None:
            agent.timing = TurnTiming(conversation.turn, now)
        agent.watchdog.owe(now)
        agent.start_turn(resume)

    def apologise(self) -> str:
        agent = self.agent
        agent.cancel_turn()
        agent.pending, agent.failed_stage = "", None
        agent.interrupted = agent.reopen = False
        conversation = agent.conversation
        conversation.drop_empty()
        conversation.close_pending("timeout")
        text = agent.settings.apology
        said = self.say(text)
        if said:
            index = conversation.open_assistant(text)
            if agent.reply_since is None:
                agent.reply_since = index
        agent.close_reply(interrupted=False)
        agent.watchdog.settle()
        agent.save()
        return APOLOGY if said else NONE

    def say(self, text: str) -> bool:
        """Play a prepared phrase now; False if there is none (no TTS worked yet)."""
        agent = self.agent
        chunks = self.phrases.get(text) or agent.services.phrases.get(
            text, agent.call.sample_rate, agent.voice)
        if not chunks:
            return False
        try:
            for chunk in chunks:
                agent.speaker.play(chunk.pcm)
        except MediaError:
            return False
        return True

    async def phrase_audio(self, text: str) -> AsyncIterator[bytes]:
        """A phrase as a greeting (a resumed call's "where were we")."""
        agent = self.agent
        chunks = await agent.services.phrases.synthesize(text, agent.call.sample_rate,
                                                         agent.voice, agent.make_tts())
        for chunk in chunks or ():
            agent.speaker.record(chunk.duration, in_leg=False)
            yield chunk.pcm
