"""`ConversationAgent`: the agent that listens, thinks and speaks (brains `flow` and `llm`).

    caller frames -> VAD (call actor) -> TurnTaker ---- barge-in: leg.clear_playout() now,
         |                                 |           turn task cancelled (LLM/TTS closed)
         +-> Listener (STT, failover) -> finals -> end of turn (smart hold) -> commit
    keys (DTMF) -> barge-in like speech; KeypadEntry -> '#' or a pause -> commit
    commit -> TurnRunner: LLM (flow script or failover order) -> sentences -> TTS -> Speaker
    DeadAirWatchdog: an answer owed and nothing heard for 1.2 s -> filler / retry / apology

All decisions run on the event loop, in the agent's callbacks (`on_audio` inline on the media
path; `_on_final` from the STT task); slow work runs in tasks owned by the call
(`control.spawn`). A provider failure never crashes the call: the failover wrappers replace
the provider within the turn, and what they cannot save the watchdog recovers
(actors/recovery.py). The conversation (actors/dialogue.py) is saved after each turn; a
restarted call actor hands it back and the agent resumes: no second greeting, the owed answer
if the caller was waiting for one, else a short "sorry, where were we?".

`ConversationBrain` is the node's factory: brain `flow` answers with the agent's flow script
(providers/llm/flow.py, loaded once per node by `FlowLibrary`), brain `llm` with the language
models of the agent's failover order; what they share is `ConversationServices`
(actors/conversation_services.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Literal

from prometheus_client import Counter
from switchboard.actors.agent import CallControl, CallInfo, Greeting, VoiceActivity
from switchboard.actors.call_tools import ToolBox
from switchboard.actors.conversation_services import (
    ConversationServices,
    FlowLibrary,
    FlowModel,
)
from switchboard.actors.dead_air import DeadAirWatchdog
from switchboard.actors.dialogue import Conversation, caller_texts
from switchboard.actors.failover import (
    FailoverLanguageModel,
    FailoverSpeechToText,
    FailoverTextToSpeech,
    error_code,
)
from switchboard.actors.listener import Listener
from switchboard.actors.recovery import Recovery
from switchboard.actors.speaker import Speaker
from switchboard.actors.turn_runner import TurnRunner
from switchboard.actors.turn_taking import (
    BARGE_IN,
    ENDED,
    STARTED,
    KeypadEntry,
    TurnTaker,
    end_of_turn_after,
)
from switchboard.actors.turn_timing import TurnTiming
from switchboard.protocols.audio import AudioChunk, SynthesisChunk, Transcript
from switchboard.protocols.conversation import OpenReply
from switchboard.protocols.live import LiveTranscript, TurnLatency
from switchboard.protocols.media import MediaError
from switchboard.protocols.pools import ProviderKind
from switchboard.protocols.tenants import AgentConfig
from switchboard.providers.base import LanguageModel
from switchboard.providers.errors import ProviderError
from switchboard.providers.llm.flow import FlowAgent

log = logging.getLogger("switchboard.conversation")

BARGE_INS = Counter("switchboard_barge_ins_total",
                    "Caller speech over the agent, by outcome (interrupted, or a blip "
                    "that did not)", ["outcome"])


class ConversationAgent:
    def __init__(self, agent: AgentConfig, services: ConversationServices, *,
                 flow: FlowAgent | None = None) -> None:
        self.config = agent
        self.settings = agent.turn
        self.services = services
        self.flow = flow
        self.orders: dict[ProviderKind, list[str]] = {
            kind: list(agent.providers.of(kind) or services.default_order.of(kind))
            for kind in ("stt", "llm", "tts")}
        self.min_silence = agent.vad.min_silence_ms / 1000
        self.turn: TurnRunner | None = None  # the answer being prepared or spoken
        self._task: asyncio.Task[Any] | None = None
        self.timing: TurnTiming | None = None
        self.reply_since: int | None = None  # first message of the reply not yet closed
        self.reply_skip = 0                  # of which this much was closed already
        self.pending = ""                    # caller words heard, turn not committed yet
        self.reopen = False                  # the last caller turn got no audible answer
        self.interrupted = False             # the last reply was cut by the caller
        self.failed_stage: str | None = None
        self.dead_air = 0                    # recoveries in the current turn
        self._speech_end: float | None = None
        self._utterance_end: float | None = None
        self._final_at: float | None = None
        self._final_stream_at = -1.0         # stream time when the last final arrived
        self._clock_offset = 0.0             # monotonic time minus stream time
        self._latency_shown = -1             # the turn whose latency the caller's screen has

    # -- Agent --------------------------------------------------------------------------------

    async def on_start(self, call: CallInfo, control: CallControl) -> Greeting | None:
        self.call, self.control = call, control
        self.speaker = Speaker(control)
        self.taker = TurnTaker(self.settings)
        self.keypad = KeypadEntry(self.settings)
        self._keys_at = 0.0  # monotonic time of the latest key
        self.conversation = (Conversation.decode(call.restored_state) if call.restored_state
                             else Conversation(system_prompt=self.config.prompt))
        targets = _flow_targets(self.flow) if self.flow is not None else ()
        self.tools = ToolBox(self.config, call, control, self.speaker, self.services.webhooks,
                             transfer_targets=targets)
        self.listener = Listener(self._make_stt, on_final=self._on_final,
                                 on_failure=self._stt_failed, call_id=call.call_id)
        self.recovery = Recovery(self)
        self.watchdog = DeadAirWatchdog(threshold=self.settings.dead_air_ms / 1000,
                                        audible=self._audible, stage=self.recovery.stage,
                                        recover=self.recovery.recover,
                                        grace=self.settings.dead_air_grace_ms / 1000)
        control.spawn(self.listener.run(), name="stt")
        control.spawn(self.watchdog.run(), name="dead-air")
        control.spawn(self.recovery.prepare(), name="phrases")
        if call.resumed:
            return self._resume()
        return self._greet()

    def on_audio(self, frame: AudioChunk, vad: VoiceActivity) -> None:
        self.listener.feed(frame)
        self._clock_offset = time.monotonic() - frame.end
        busy = self.turn is not None or self.control.playout_queued > 0
        decision = self.taker.on_frame(frame, vad, busy)
        if decision is BARGE_IN:
            self._barge_in()
        elif decision is ENDED:
            self._speech_ended(vad)
        elif decision is STARTED and self.turn is None:
            self.watchdog.settle()  # the caller has the floor: owed again once they stop
        if self.keypad.keys and self.keypad.due(self.taker.now):
            self.commit()
        elif self.pending and not self.taker.voiced:
            self._maybe_commit()

    def on_dtmf(self, digit: str) -> None:
        """A key is caller input like speech: over the agent it barges in (no minimum: a key
        is never a backchannel); keys make one entry, committed as the caller's turn at '#'
        or after `dtmf_timeout_ms` (checked per frame in `on_audio`)."""
        if self.turn is not None or self.control.playout_queued > 0:
            self._barge_in()
        else:
            self.watchdog.settle()  # the caller has the floor until the entry is over
        self._keys_at = time.monotonic()
        self.keypad.press(digit, self.taker.now)
        if self.keypad.due(self.taker.now):
            self.commit()

    async def on_end(self, reason: str) -> None:
        if not hasattr(self, "listener"):
            return  # never started
        self.listener.close()
        self.cancel_turn()
        self.close_reply(interrupted=False)
        self.save()

    # -- greeting and resumption ------------------------------------------------------------

    def _greet(self) -> Greeting | None:
        text = self.config.greeting or (self.flow.script.greeting if self.flow else "")
        self.conversation.state.greeted = True
        if not text:
            self.recovery.greeting_done.set()
            self.save()
            return None
        index = self.conversation.open_assistant(text)
        self.reply_since = index
        self.save()
        return self._greeting_audio(text, index)

    async def _greeting_audio(self, text: str, index: int) -> AsyncIterator[bytes]:
        rate, voice = self.call.sample_rate, self.voice
        kept = self.services.phrases.get(text, rate, voice)
        source = _replay(kept) if kept is not None else self.make_tts().synthesize(text)
        made: list[SynthesisChunk] = []
        try:
            async with contextlib.aclosing(source):  # type: ignore[type-var]
                async for chunk in source:
                    made.append(chunk)
                    self.speaker.record(chunk.duration, key=index, offset=chunk.text_offset,
                                        in_leg=False)
                    yield chunk.pcm
        except ProviderError as exc:
            log.warning("call %s: the greeting could not be synthesized (%s)",
                        self.call.call_id, error_code(exc))
            self.conversation.cut({index: made[-1].text_offset if made else 0})
            return
        finally:
            self.recovery.greeting_done.set()
        if kept is None:
            self.services.phrases.keep(text, rate, voice, tuple(made))

    def _resume(self) -> Greeting | None:
        self.conversation.close_pending("interrupted")
        self.recovery.greeting_done.set()
        reply = self.conversation.state.open_reply
        if reply is not None:  # the reply that was playing when the actor crashed
            self.reply_since, self.reply_skip = reply.since, reply.skip
            if reply.at:
                self.timing = TurnTiming.restore(self.conversation.turn, reply.at, reply.marks)
        log.info("call %s resumes its conversation at turn %d", self.call.call_id,
                 self.conversation.turn)
        if self.conversation.owes_answer():
            self.timing = self.timing or TurnTiming(self.conversation.turn, time.monotonic())
            self.watchdog.owe(time.monotonic())
            self.start_turn()
            return None
        return self.recovery.phrase_audio(self.settings.resume)

    # -- the caller ---------------------------------------------------------------------------

    def _audible(self) -> bool:
        """Someone is talking: the agent's audio is playing, or the caller speaks."""
        return self.control.playout_queued > 0 or self.taker.voiced

    def _wall(self, stream_time: float) -> float:
        return stream_time + self._clock_offset

    def _speech_ended(self, vad: VoiceActivity) -> None:
        segment = self.taker.segment
        if segment is not None and segment.blip:
            BARGE_INS.labels("blip").inc()
            return  # a backchannel over the agent owes nothing
        assert vad.event is not None
        self._speech_end = self._wall(vad.event.at)
        if self._final_stream_at < vad.event.at:  # else its final came during the hangover
            self.listener.expect_final()
        if not self.keypad.keys:  # else the answer is owed once the entry is over
            self.watchdog.owe(self._speech_end)

    def _on_final(self, transcript: Transcript) -> None:
        self._final_at = time.monotonic()
        self._final_stream_at = self.taker.now
        if self.taker.only_blips(transcript):
            if self.turn is None and not self.pending and self.control.playout_queued == 0:
                self.watchdog.settle()
            return
        text = transcript.text.strip()
        if not text:
            if self.pending:
                self._maybe_commit()
            elif self.keypad.keys:
                return  # the caller is typing (an in-band tone?): the entry is their turn
            elif self.interrupted or self.reopen:
                self.recovery.lost_turn()  # the interruption was noise: go on
            elif self.turn is None:
                self.watchdog.settle()
            return
        self.pending = f"{self.pending} {text}".strip()
        if transcript.end > 0:
            self._utterance_end = self._wall(transcript.end)
        self._maybe_commit()

    def _stt_failed(self) -> None:
        self.pending = ""

    def _maybe_commit(self) -> None:
        if not self.pending or self.taker.voiced or self.keypad.keys:
            return  # words said while typing go with the entry
        if self.taker.quiet_for() >= end_of_turn_after(self.pending, self.settings,
                                                        self.min_silence):
            self.commit()

    def commit(self) -> None:
        if self.turn is not None or self.control.playout_queued > 0:
            self._barge_in()  # words the VAD missed, over the agent: it stops for them
        text, self.pending = self.pending, ""
        keys = self.keypad.take()
        merge, self.reopen, self.interrupted = self.reopen, False, False
        self.close_reply(interrupted=False)
        self.conversation.add_user(text, merge=merge, keys=keys)
        self.control.show(LiveTranscript(speaker="caller", text=caller_texts(text, keys)[1],
                                         turn=self.conversation.turn))
        now = time.monotonic()
        end = self._speech_end or self._utterance_end or now
        if keys:  # the caller's input ended with their last key (or words after it)
            end = max(self._keys_at, end) if text else self._keys_at
        self._speech_end = self._utterance_end = None
        self.timing = TurnTiming(self.conversation.turn, end)
        if text:  # a keypad entry alone has no transcript
            self.timing.mark("stt_final", self._final_at or now)
        self.timing.mark("end_of_turn", now)
        self.dead_air = 0
        # After keys the caller expects nothing before the entry is over (the pause is theirs).
        self.watchdog.owe(now if keys else end)
        self.save()
        self.start_turn()

    def _barge_in(self) -> None:
        heard = self.speaker.interrupt()  # the agent's audio stops in this very frame
        BARGE_INS.labels("interrupted").inc()
        turn = self.cancel_turn()
        spoke = turn is None or turn.spoke  # else: none of this answer reached the leg
        self.conversation.cut(heard)
        self.conversation.close_pending("interrupted")
        self.watchdog.settle()  # the caller has the floor: owed again once they stop
        if spoke:
            self.interrupted = True
            self.close_reply(interrupted=True)
        elif turn is not None:  # committed too early: they went on before hearing anything
            self.reopen = True
            self.timing, self.reply_since = None, None
        self.save()

    # -- the agent's turn ---------------------------------------------------------------------

    @property
    def voice(self) -> str:
        return ",".join(self.orders["tts"])

    def start_turn(self, resume: tuple[int, str] | None = None) -> None:
        self.cancel_turn()
        self.failed_stage = None
        timing = self.timing or TurnTiming(self.conversation.turn, time.monotonic())
        runner = TurnRunner(make_llm=self._make_llm, tts=self.make_tts(), speaker=self.speaker,
                            conversation=self.conversation, tools=self.tools, timing=timing,
                            max_rounds=self.settings.max_tool_rounds,
                            on_audio=self._agent_audible, save=self.save, resume=resume)
        if self.reply_since is None:
            self.reply_since = runner.first_message
            self.reply_skip = len(resume[1]) if resume else 0
        self.turn = runner
        self._task = self.control.spawn(self._run(runner), name="turn")

    async def _run(self, runner: TurnRunner) -> None:
        try:
            await runner.run()
        except ProviderError as exc:
            log.warning("call %s: turn %d failed while waiting on %s (%s)", self.call.call_id,
                        self.conversation.turn, runner.stage, error_code(exc))
            if self.turn is runner:
                self.turn, self.failed_stage = None, runner.stage
                self.conversation.drop_empty()  # still owed: the watchdog recovers
            return
        except MediaError:
            return  # the leg is closing: the call is ending
        if self.turn is runner:
            self.turn = None
            self.conversation.drop_empty()
            self.watchdog.settle()  # the whole answer is with the leg
            self.save()

    def cancel_turn(self) -> TurnRunner | None:
        runner, task = self.turn, self._task
        self.turn, self._task = None, None
        if task is not None:
            task.cancel()  # its LLM and TTS streams close as the cancellation unwinds them
        return runner

    def _agent_audible(self) -> None:
        """A sentence's first audio went to the leg: the watchdog hears it, and on the first
        sentence of a turn the caller's screen gets the turn's latency."""
        self.watchdog.heard()
        timing = self.timing
        if timing is None or self._latency_shown == timing.turn:
            return
        total = timing.ms("first_audio")
        if total is None:
            return
        self._latency_shown = timing.turn
        stages = {f"{stage}_ms": ms for stage in ("end_of_turn", "stt_final", "llm_first_token",
                                                   "tts_first_audio")
                  if (ms := timing.ms(stage)) is not None}
        self.control.show(TurnLatency(turn=timing.turn, total_ms=total, stages=stages))

    def close_reply(self, *, interrupted: bool) -> None:
        """The agent's reply is over: transcript line, turn event and metrics."""
        since, self.reply_since = self.reply_since, None
        if since is None:
            return
        texts = self.conversation.assistant_texts(since)
        if texts and self.reply_skip:
            texts[0] = texts[0][self.reply_skip:]
        self.reply_skip = 0
        said = self.conversation.record_agent(texts, interrupted=interrupted)
        timing, self.timing = self.timing, None
        if timing is None:
            return
        timing.observe()
        event = timing.event(call_id=self.call.call_id, tenant_id=self.call.tenant_id,
                             caller=self.conversation.last_caller_text(), agent=said,
                             interrupted=interrupted, dead_air=self.dead_air)
        self.control.publish_event("turn", event, event_id=event.event_id)
        if said:
            self.control.show(LiveTranscript(speaker="agent", text=said, turn=timing.turn))

    def save(self) -> None:
        open_reply = None
        if self.reply_since is not None:
            timing = self.timing
            open_reply = OpenReply(since=self.reply_since, skip=self.reply_skip,
                                   at=timing.wall_speech_end if timing else 0.0,
                                   marks=timing.saved_marks() if timing else {})
        self.conversation.state.open_reply = open_reply
        self.control.save_state(self.conversation.encode())

    # -- providers ----------------------------------------------------------------------------

    def _make_llm(self, on_diverge: Callable[[str], bool]) -> LanguageModel:
        if self.flow is not None:
            return FlowModel(self.flow, self.services.failover)
        return FailoverLanguageModel(self.orders["llm"], pools=self.services.pools,
                                     providers=self.services.providers,
                                     call_id=self.call.call_id,
                                     settings=self.services.failover, on_diverge=on_diverge)

    def make_tts(self) -> FailoverTextToSpeech:
        return FailoverTextToSpeech(self.orders["tts"], pools=self.services.pools,
                                    providers=self.services.providers,
                                    call_id=self.call.call_id,
                                    sample_rate=self.call.sample_rate,
                                    settings=self.services.failover)

    def _make_stt(self) -> FailoverSpeechToText:
        return FailoverSpeechToText(self.orders["stt"], pools=self.services.pools,
                                    providers=self.services.providers,
                                    call_id=self.call.call_id, settings=self.services.failover)


async def _replay(chunks: Sequence[SynthesisChunk]) -> AsyncIterator[SynthesisChunk]:
    for chunk in chunks:
        yield chunk


def _flow_targets(flow: FlowAgent) -> list[str]:
    script = flow.script
    return [t for t in (script.transfer_to, *(i.transfer_to for i in script.intents)) if t]


class ConversationBrain:
    """The `AgentFactory` of brain `flow` (the agent's script) or `llm` (its models)."""

    def __init__(self, services: ConversationServices, *, mode: Literal["flow", "llm"],
                 flows: FlowLibrary | None = None) -> None:
        self.services = services
        self.mode = mode
        self.flows = flows or FlowLibrary()

    def __call__(self, agent: AgentConfig) -> ConversationAgent:
        flow = None
        if self.mode == "flow":
            if not agent.flow:
                raise ValueError(f"agent {agent.id} has brain `flow` but no `flow` script")
            flow = self.flows.load(agent.flow)
        return ConversationAgent(agent, self.services, flow=flow)
