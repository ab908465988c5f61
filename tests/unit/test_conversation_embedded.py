"""One turn with the real embedded providers (Silero VAD, Whisper tiny.en, the flow agent,
Piper) through a real-time fake media leg: a Piper-spoken question gets a spoken answer that
Whisper transcribes back to the flow script's answer. Skipped when the models are not
installed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from switchboard.protocols.audio import AudioChunk
from switchboard.providers.errors import ModelNotInstalled

from tests.support.conversation import RealtimeLeg, conversation_env, flow_agent
from tests.support.harness import wait_until
from tests.support.media import silence

pytestmark = pytest.mark.unit

RATE = 16000
QUESTION = "What are your opening hours?"


async def _frames(pcm: bytes) -> AsyncIterator[AudioChunk]:
    size = RATE // 50 * 2
    for n, offset in enumerate(range(0, len(pcm), size)):
        yield AudioChunk(pcm=pcm[offset:offset + size], sample_rate=RATE, timestamp=n * 0.02)


async def test_a_spoken_question_gets_the_flow_answer_spoken_back() -> None:
    from switchboard.supervisor import brains

    try:
        vad = await brains.load_call_vad()
        registry = brains.embedded_registry(vad)
        whisper = await registry.stt("whisper")
        piper = await registry.tts("piper", RATE)
    except ModelNotInstalled as exc:
        pytest.skip(str(exc))
    question = b"".join([c.pcm async for c in piper.synthesize(QUESTION)])
    agent = flow_agent("flow", greeting="Hello.",
                       providers={"stt": ["whisper"], "tts": ["piper"]})
    try:
        async with conversation_env(registry, agents=[agent], vad=vad) as env:
            leg: RealtimeLeg = await env.call("c1", sample_rate=RATE)
            await wait_until(lambda: len(leg.played) > 0 and leg.playout_queued == 0,
                             timeout=10, what="the greeting played")
            leg.say(question + silence(0.3, RATE))
            await wait_until(lambda: leg.speaking, timeout=1)
            await wait_until(lambda: not leg.speaking, timeout=10)
            assert leg.speech_ended_at is not None
            asked = leg.speech_ended_at

            def answer() -> bytes:  # handed to the leg: played, or queued to play
                return b"".join(pcm for start, pcm in leg.timeline if start >= asked)

            await wait_until(lambda: len(answer()) >= 2.5 * RATE * 2, timeout=20,
                             what="2.5 s of the answer handed to the leg")
            first = leg.first_audio_after(asked)
            assert first is not None
            heard = [t.text async for t in whisper.stream(_frames(answer() + silence(1, RATE)))]
            text = " ".join(heard).lower()
            assert "open every day from noon" in text, text
            print(f"\nembedded turn: end of speech -> first audio {first - asked:.3f}s")
    finally:
        registry.close()
