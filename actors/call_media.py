"""The call actor's media path: the greeting's playout, and the caller's events to the agent.

`listen` is the hot path, 50 frames a second per call: each caller frame goes through the
VAD (`Endpointer`, with a `VadProbe` so the agent can tell a voiced frame from one in the
silence hangover) straight to `agent.on_audio`, with no copy, no queue and no allocation for
the frames that carry no VAD event. A batched VAD (`push`: Silero, providers/vad/silero.py)
makes a frame that completes a model window wait a few ms for the node's shared model run. Keys go to `on_dtmf`. It returns when the call's media is
over, with the reason the call ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from switchboard.actors.agent import PAUSING, SILENT, SPEAKING, Agent, Greeting, VoiceActivity
from switchboard.actors.turn_taking import VadProbe
from switchboard.protocols.audio import AudioChunk
from switchboard.protocols.call import CALLER_HANGUP, RTP_TIMEOUT
from switchboard.protocols.media import (
    CANCELLED,
    REMOTE_HANGUP,
    DtmfReceived,
    LegEnded,
    MediaError,
    MediaEvent,
    MediaInactive,
    MediaLeg,
)
from switchboard.protocols.tenants import VadSettings
from switchboard.providers.base import Vad
from switchboard.providers.vad.endpoint import Endpointer

log = logging.getLogger("switchboard.call")

_HYSTERESIS = 0.15  # providers.vad.endpoint leaves speech below threshold - 0.15


async def listen(events: AsyncIterator[MediaEvent], agent: Agent, vad: Vad,
                 settings: VadSettings, on_dtmf: Callable[[DtmfReceived], None]
                 ) -> tuple[str, bool]:
    """Hand the caller's events to the agent until the media ends; return why the call ends
    and whether the leg is gone (no hang-up needed)."""
    probe = VadProbe(vad)
    endpointer = Endpointer(probe, threshold=settings.threshold,
                            min_speech_ms=settings.min_speech_ms,
                            min_silence_ms=settings.min_silence_ms)
    voiced = max(settings.threshold - _HYSTERESIS, 0.01)
    feed, decide, on_audio = endpointer.feed, endpointer.decide, agent.on_audio
    # A batched VAD (Silero) shares one model run among the calls whose windows are due
    # within a few ms: the frame waits for its result, which costs less than a lone run.
    push: Callable[[bytes], float | Awaitable[float]] | None = getattr(vad, "push", None)
    async for event in events:
        if type(event) is AudioChunk:  # the hot path: 50 times a second per call
            if push is None:
                decided = feed(event)
            else:
                result = push(event.pcm)
                probability = result if isinstance(result, float) else await result
                probe.last = probability
                decided = decide(event, probability)
            speaking = endpointer.in_speech
            if decided is None:
                activity = (SPEAKING if probe.last >= voiced else PAUSING) if speaking \
                    else SILENT
            else:
                activity = VoiceActivity(speaking=speaking, event=decided, voiced=speaking)
            on_audio(event, activity)
        elif isinstance(event, DtmfReceived):
            on_dtmf(event)
        elif isinstance(event, MediaInactive):
            return RTP_TIMEOUT, False
        elif isinstance(event, LegEnded):
            reason = event.reason
            return (CALLER_HANGUP if reason in (REMOTE_HANGUP, CANCELLED) else reason), True
    return CALLER_HANGUP, True


async def first_chunk(greeting: Greeting, timeout: float, call_id: str) -> bytes | None:
    """The greeting's first audio; past `timeout` the call is answered without it, since a
    caller hearing only ringing hangs up."""
    try:
        async with asyncio.timeout(timeout):
            return await anext(greeting, None)
    except TimeoutError:
        log.warning("call %s: greeting not ready within %.1fs; answering without it",
                    call_id, timeout)
        await close_greeting(greeting)
        return None


async def play_greeting(leg: MediaLeg, first: bytes, rest: Greeting) -> None:
    try:
        leg.play(first)
        async for pcm in rest:
            leg.play(pcm)
    except MediaError:
        pass  # playout full, or the leg is closing: the greeting stops there
    finally:
        await close_greeting(rest)  # cancelled by a barge-in too: stop the synthesis behind it


async def close_greeting(greeting: Greeting) -> None:
    aclose = getattr(greeting, "aclose", None)  # async generators have it; others may not
    if aclose is not None:
        await aclose()
