"""Benchmark: the embedded offline providers on this machine (load, VAD, STT, TTS, memory).

Everything runs in one process on an idle machine, the way a node runs them, and offline
(HF_HUB_OFFLINE=1). Test speech is Piper's "joe" voice, which Whisper tiny.en hears well;
real telephone speech is harder, so treat the STT figures as latency, not accuracy, figures.

  load:   import + load of each model, cold, in the order a node loads them.
  vad:    µs of CPU per 20 ms of 16 kHz audio (speech and silence mixed), fed as 20 ms frames.
  stt:    for 2-3 s utterances, from the moment the endpointer can decide (the chunk after
          300 ms of silence is handed in) to the final transcript; and end of speech to final
          (that plus the 300 ms hangover).
  tts:    time to the first 20 ms chunk, and real-time factor, per engine and output rate.
  rss:    resident memory after each load.

Prints the figures, writes bench/results/providers.json, and ends with one line
`load_s=... vad_us_per_20ms=... stt_after_endpoint_ms_p50=... ... rss_mb=...`.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from switchboard.protocols.audio import AudioChunk

RESULTS = Path(__file__).resolve().parent / "results" / "providers.json"
UTTERANCES = [
    "Please book a table for two at seven tonight.",
    "I would like to cancel my appointment on Friday morning.",
    "My order number is four five six and it has not arrived.",
    "Can you transfer me to someone in billing please?",
]
REPLIES = {
    "short clause (5 words)": "Sure, I can do that.",
    "sentence (12 words)": "Your table for two is booked for seven tonight, see you then.",
}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def render(tts: Any, text: str) -> bytes:
    async with aclosing(tts.synthesize(text)) as chunks:
        return b"".join([chunk.pcm async for chunk in chunks])


def load_all(results: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = {}
    loads, memory = {}, {"baseline": rss_mb()}
    started = time.perf_counter()
    from switchboard.providers.vad.silero import SileroVadModel

    loaded["silero"] = SileroVadModel.load()
    loads["silero"] = time.perf_counter() - started
    memory["silero"] = rss_mb()

    started = time.perf_counter()
    from switchboard.providers.vad.webrtc import WebRtcVad

    loaded["webrtc"] = WebRtcVad
    WebRtcVad(16000)
    loads["webrtc"] = time.perf_counter() - started

    started = time.perf_counter()
    from switchboard.providers.stt.whisper import WhisperSpeechToText

    loaded["whisper"] = WhisperSpeechToText.load(vad=loaded["silero"].open)
    loads["whisper"] = time.perf_counter() - started
    memory["whisper"] = rss_mb()

    started = time.perf_counter()
    from switchboard.providers.tts.piper import PiperTextToSpeech, load_voice

    voice = load_voice()
    loaded["piper"] = PiperTextToSpeech(voice)
    loaded["piper-16k"] = PiperTextToSpeech(voice, sample_rate=16000)
    loaded["piper-8k"] = PiperTextToSpeech(voice, sample_rate=8000)
    loads["piper"] = time.perf_counter() - started
    memory["piper"] = rss_mb()

    started = time.perf_counter()
    from switchboard.providers.tts.espeak import EspeakTextToSpeech

    loaded["espeak"] = EspeakTextToSpeech()
    loaded["espeak-8k"] = EspeakTextToSpeech(sample_rate=8000)
    loads["espeak"] = time.perf_counter() - started
    memory["espeak"] = rss_mb()
    results["load_s"], results["rss_mb_after_load"] = loads, memory
    return loaded


async def bench_vad(loaded: dict[str, Any], speech: bytes, results: dict[str, Any]) -> None:
    frame = 640  # 20 ms at 16 kHz
    pcm = (b"\0" * 16000 + speech) * 4
    frames = [pcm[i : i + frame] for i in range(0, len(pcm) - frame + 1, frame)]
    figures = {}
    for name, make in (("silero", lambda: loaded["silero"].open(16000)),
                       ("webrtc", lambda: loaded["webrtc"](16000))):
        vad = make()
        for f in frames[:50]:
            vad.speech_probability(f)  # warm-up
        vad.reset()
        started = time.process_time()
        for f in frames:
            vad.speech_probability(f)
        figures[name] = (time.process_time() - started) / len(frames) * 1e6
    results["vad_us_per_20ms"] = figures


async def bench_stt(loaded: dict[str, Any], results: dict[str, Any], rounds: int = 3) -> None:
    stt, tts = loaded["whisper"], loaded["piper-16k"]
    after_endpoint: list[float] = []
    lengths: list[float] = []
    for text in UTTERANCES:
        speech = await render(tts, text)
        lengths.append(len(speech) / 32000)
        pcm = b"\0" * 16000 + speech + b"\0" * 16000
        for _ in range(rounds):
            handed: list[tuple[float, float]] = []  # (chunk end on the stream clock, wall time)

            async def audio(
                pcm: bytes = pcm, handed: list[tuple[float, float]] = handed
            ) -> AsyncIterator[AudioChunk]:
                for offset in range(0, len(pcm), 640):
                    chunk = AudioChunk(pcm=pcm[offset : offset + 640], sample_rate=16000,
                                       timestamp=offset / 32000)
                    handed.append((chunk.end, time.perf_counter()))
                    yield chunk

            async with aclosing(stt.stream(audio())) as transcripts:
                transcript = await anext(transcripts)
                arrived = time.perf_counter()
            decided = next(wall for end, wall in handed if end >= transcript.end + 0.3 - 1e-6)
            after_endpoint.append((arrived - decided) * 1000)
    results["stt"] = {
        "utterance_s": [round(x, 2) for x in lengths],
        "after_endpoint_ms_p50": statistics.median(after_endpoint),
        "after_endpoint_ms_max": max(after_endpoint),
        "end_of_speech_to_final_ms_p50": statistics.median(after_endpoint) + 300,
    }


async def bench_tts(loaded: dict[str, Any], results: dict[str, Any], rounds: int = 5) -> None:
    figures: dict[str, dict[str, float]] = {}
    for engine in ("piper", "piper-8k", "espeak", "espeak-8k"):
        tts = loaded[engine]
        for label, text in REPLIES.items():
            firsts, rtfs = [], []
            for _ in range(rounds):
                started = time.perf_counter()
                first = None
                audio_s = 0.0
                async with aclosing(tts.synthesize(text)) as chunks:
                    async for chunk in chunks:
                        first = first or time.perf_counter() - started
                        audio_s += chunk.duration
                firsts.append((first or 0.0) * 1000)
                rtfs.append((time.perf_counter() - started) / audio_s)
            figures[f"{engine}: {label}"] = {
                "first_chunk_ms_p50": statistics.median(firsts),
                "first_chunk_ms_max": max(firsts),
                "rtf": statistics.median(rtfs),
            }
    results["tts"] = figures


async def main() -> None:
    results: dict[str, Any] = {"cpus": os.cpu_count()}
    loaded = load_all(results)
    speech = await render(loaded["piper-16k"], UTTERANCES[0])
    await bench_vad(loaded, speech, results)
    await bench_stt(loaded, results)
    await bench_tts(loaded, results)
    results["rss_mb_end"] = rss_mb()
    print(json.dumps(results, indent=2))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    tts = results["tts"]
    print(
        f"load_s={sum(results['load_s'].values()):.2f} "
        f"vad_us_per_20ms={results['vad_us_per_20ms']['silero']:.0f} "
        f"stt_after_endpoint_ms_p50={results['stt']['after_endpoint_ms_p50']:.0f} "
        f"tts_first_chunk_ms_p50={tts['piper: short clause (5 words)']['first_chunk_ms_p50']:.0f} "
        f"rss_mb={results['rss_mb_end']:.0f}"
    )
    for provider in ("whisper", "piper"):
        loaded[provider].close()


if __name__ == "__main__":
    asyncio.run(main())
