"""Benchmark: concurrent SIP calls with live G.711 RTP both ways that one node core sustains.

The node under test is a real `python -m switchboard node` (SIP gateway, call actors with the
node's call VAD: Silero by default, `--call-vad webrtc` for the WebRTC VAD; the echo agent;
no STT) pinned to one core (`taskset -c 0`); NATS, the load
generator (bench/sip_loadgen.py: our own user agent as UAC, PCMU both ways, speech and pauses
so the echo agent talks back) and this driver share the other core. Steps add calls (50, 100,
150, ... by default) and hold each for `--duration` seconds (60 by default; `--quick`: 10) after
a settling pause; the sweep stops at the first step with more than 0.1 % late frames or any
failed call.

A frame is late (measured inside the node by its media probe, supervisor/media_probe.py) when
- sent: it leaves more than 5 ms after its 20 ms slot, or its slot is skipped (the RTP frame
  clock's statistics, gateways/sip/frame_clock.py);
- received: caller audio reaches the call actor's agent more than 20 ms later than the
  stream's own transit (arrival against the RTP timestamp's place on the stream's clock).
Per step: calls, late frame % (sent, received, both), node CPU % of its core (utime + stime
from /proc/<pid>/stat), RSS, failed calls, frames the callers lost or heard as echo, and the
load generator's own lateness (if it were late, the node would be blamed for it).

`--node rtp-echo` runs, instead of a node, a bare user agent that echoes audio back (no
actors, no VAD, no NATS): the SIP/RTP layer alone. `--profile` samples the node with py-spy
at the last passing step (not counted in the figures) and sorts its time into categories.

Prints the figures, writes bench/results/sip_media.json (and sip_media_profile.txt with
--profile), and ends with `calls=N late_frame_pct=P cpu_per_call_pct=C`: N the largest step
under 0.1 % late on one core, C the node's CPU % of its core divided by N at that step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from switchboard.supervisor.nats_server import NatsServer, NatsServerConfig

from bench.sip_profile import profile_node

LATE_LIMIT_PCT = 0.1
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

TENANTS = """version: 1
tenants:
  - id: bench
    numbers:
      - number: "+15550100"
        agent: echo
    limits:
      max_concurrent_calls: 100000
      calls_per_minute: 1000000
      retry_after_seconds: 1
    agents:
      - id: echo
        brain: echo
        greeting_audio: {greeting}
        max_call_seconds: 86400
        rtp_inactivity_seconds: 60
"""


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of `pid`, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # utime, stime


def core_busy_seconds(core: int) -> float:
    """Seconds core `core` spent busy (anyone's work, interrupts and steal included)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, line.split()[1:9])
            return (user + nice + system + irq + softirq + steal) / CLK_TCK
    raise RuntimeError(f"no core {core} in /proc/stat")


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


class LoadGen:
    """The load generator process, spoken to one JSON line at a time."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def ask(self, command: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        await self.proc.stdin.drain()
        async with asyncio.timeout(timeout):
            line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the load generator exited; see its messages above")
        return dict(json.loads(line))


async def wait_ready(probe: Path, log: Path, proc: asyncio.subprocess.Process,
                     timeout: float) -> None:
    """Until the node writes its media probe and says it is ready (SIP listening)."""
    deadline = time.monotonic() + timeout
    while not (probe.exists() and b"ready" in log.read_bytes()):
        if proc.returncode is not None or time.monotonic() > deadline:
            raise RuntimeError("the node under test did not start; see its messages above")
        await asyncio.sleep(0.2)


SIP_CONFIG = """version: 1
sip:
  host: 127.0.0.1
  port: {port}
  tcp: false
  rtp_host: 127.0.0.1
  rtp_port_min: 20000
  rtp_port_max: 29998
  codecs: [PCMU, PCMA]
  pcm_rate: {pcm_rate}
  flood:
    enabled: false
  max_calls: 100000
"""


async def start_node(args: argparse.Namespace, tmp: Path, nats_url: str | None,
                     probe: Path) -> asyncio.subprocess.Process:
    env = dict(os.environ, SWITCHBOARD_MEDIA_PROBE=str(probe),
               **({"SWITCHBOARD_MEDIA_PROBE_STALL_MS": str(args.stall_ms)} if args.stall_ms
                  else {}),
               PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    pin = ["taskset", "-c", str(args.node_core)]
    if args.node == "rtp-echo":
        command = [*pin, sys.executable, "-m", "bench.sip_echo_node", "--port",
                   str(args.sip_port), "--probe", str(probe)]
    else:
        assert nats_url is not None
        tenants, sip = tmp / "tenants.yaml", tmp / "sip.yaml"
        tenants.write_text(TENANTS.format(greeting=ROOT / "configs" / "audio" /
                                          "echo-greeting.wav"))
        sip.write_text(SIP_CONFIG.format(port=args.sip_port, pcm_rate=args.pcm_rate))
        command = [*pin, sys.executable, "-m", "switchboard", "node", "--nats", nats_url,
                   "--node-id", "bench-sip", "--tenants", str(tenants),
                   "--sip-config", str(sip), "--call-vad", args.call_vad]
    print("node under test:", " ".join(command[3:]), flush=True)
    log = (tmp / "node.log").open("wb")
    proc = await asyncio.create_subprocess_exec(*command, env=env, cwd=ROOT,
                                                stdout=log, stderr=subprocess.STDOUT)
    try:
        await wait_ready(probe, tmp / "node.log", proc, 60)
    except RuntimeError:
        print((tmp / "node.log").read_text()[-3000:], file=sys.stderr)
        raise
    return proc


def read_probe(path: Path) -> dict[str, Any]:
    for _ in range(20):
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            time.sleep(0.05)
    raise RuntimeError(f"cannot read the node's media probe at {path}")


def sample(args: argparse.Namespace, node_pid: int, probe: Path,
           helpers: list[int]) -> dict[str, Any]:
    """Counters now; `helpers`: the load generator, NATS and this driver (the other core)."""
    return {"t": time.monotonic(), "cpu": cpu_seconds(node_pid), "rss_mb": rss_mb(node_pid),
            "core_busy": core_busy_seconds(args.node_core), "probe": read_probe(probe),
            "loadgen_cpu": sum(cpu_seconds(helpers[0])),
            "helpers_cpu": sum(sum(cpu_seconds(pid)) for pid in helpers),
            "loadgen_core_busy": core_busy_seconds(args.loadgen_core)}


def percentile(histogram: list[int], q: float) -> float:
    total = sum(histogram)
    if not total:
        return 0.0
    running = 0
    for ms, count in enumerate(histogram):
        running += count
        if running >= q * total:
            return float(ms)
    return float(len(histogram) - 1)


def step_figures(calls: int, a: dict[str, Any], b: dict[str, Any], gen_a: dict[str, Any],
                 gen_b: dict[str, Any], failed: int) -> dict[str, Any]:
    wall = b["t"] - a["t"]
    sa, sb = a["probe"]["send"], b["probe"]["send"]
    ra, rb = a["probe"]["receive"], b["probe"]["receive"]
    sent = sb["frames"] - sa["frames"]
    skipped = sb["skipped_slots"] - sa["skipped_slots"]
    late_sent = sb["late_frames"] - sa["late_frames"] + skipped
    received = rb["frames"] - ra["frames"]
    late_received = rb["late_frames"] - ra["late_frames"]
    hist = [y - x for x, y in zip(ra["histogram_ms"], rb["histogram_ms"], strict=True)]
    total = sent + skipped + received
    gen_sent = gen_b["sent"] - gen_a["sent"]
    gen_frames = gen_b["frames"] - gen_a["frames"]
    return {
        "calls": calls,
        "seconds": round(wall, 1),
        "late_frame_pct": 100 * (late_sent + late_received) / total if total else 100.0,
        "late_sent_pct": 100 * late_sent / (sent + skipped) if sent + skipped else 100.0,
        "late_received_pct": 100 * late_received / received if received else 100.0,
        "frames_sent": sent, "frames_received": received, "skipped_slots": skipped,
        "receive_lag_p50_ms": percentile(hist, 0.5), "receive_lag_p99_ms": percentile(hist, 0.99),
        "receive_lag_p999_ms": percentile(hist, 0.999),
        "send_max_lateness_ms": 1000 * sb["max_lateness"],
        "cpu_pct": 100 * (sum(b["cpu"]) - sum(a["cpu"])) / wall,
        "cpu_system_pct": 100 * (b["cpu"][1] - a["cpu"][1]) / wall,
        # Anything else that ran on the node's core (other processes, interrupts): noise.
        "core_other_pct": max(0.0, 100 * (b["core_busy"] - a["core_busy"]) / wall
                              - 100 * (sum(b["cpu"]) - sum(a["cpu"])) / wall),
        "loadgen_core_other_pct": max(0.0, 100 * (b["loadgen_core_busy"] - a["loadgen_core_busy"]
                                                  - b["helpers_cpu"] + a["helpers_cpu"]) / wall),
        "rss_mb": b["rss_mb"],
        "failed_calls": failed,
        "caller_frames_lost_pct": 100 * (gen_b["lost"] - gen_a["lost"]) / gen_frames
        if gen_frames else 100.0,
        "caller_echo_frames": gen_b["voiced"] - gen_a["voiced"],
        "node_received_vs_callers_sent_pct": 100 * received / gen_sent if gen_sent else 0.0,
        "loadgen_cpu_pct": 100 * (b["loadgen_cpu"] - a["loadgen_cpu"]) / wall,
        "loadgen_late_pct": 100 * (gen_b["late"] - gen_a["late"] + gen_b["skipped"]
                                   - gen_a["skipped"]) / gen_sent if gen_sent else 0.0,
        "setup_p50_ms": gen_b["setup_p50_ms"],
        "gc_collections": [y - x for x, y in zip(a["probe"]["gc"]["collections"],
                                                 b["probe"]["gc"]["collections"], strict=True)],
        "gc_pct": 100 * (b["probe"]["gc"]["seconds"] - a["probe"]["gc"]["seconds"]) / wall,
        "gc_max_pause_ms": 1000 * b["probe"]["gc"]["max_pause"],
    }


def print_row(row: dict[str, Any]) -> None:
    print(f"calls {row['calls']:4d}  late {row['late_frame_pct']:6.3f}% "
          f"(sent {row['late_sent_pct']:.3f}%, recv {row['late_received_pct']:.3f}%)  "
          f"cpu {row['cpu_pct']:5.1f}% (sys {row['cpu_system_pct']:4.1f}%)  others on the cores "
          f"{row['core_other_pct']:.1f}%/{row['loadgen_core_other_pct']:.1f}%  rss {row['rss_mb']:6.1f} MB  "
          f"failed {row['failed_calls']}  recv lag p99 {row['receive_lag_p99_ms']:.0f} ms  "
          f"caller lost {row['caller_frames_lost_pct']:.3f}%  "
          f"loadgen late {row['loadgen_late_pct']:.3f}% cpu {row['loadgen_cpu_pct']:.0f}%  gc {row['gc_collections']} "
          f"max {row['gc_max_pause_ms']:.0f} ms"
          f"{'  DISTURBED' if row.get('disturbed') else ''}", flush=True)


async def late_per_second(probe: Path, seconds: float) -> list[int]:
    """Wait `seconds`, noting the late frames (sent and received) of each second: late frames
    spread evenly mean overload, a few bursts mean stalls."""
    def late(snapshot: dict[str, Any]) -> int:
        send, receive = snapshot["send"], snapshot["receive"]
        return int(send["late_frames"] + send["skipped_slots"] + receive["late_frames"])

    counts: list[int] = []
    end = time.monotonic() + seconds
    previous = late(read_probe(probe))
    while (left := end - time.monotonic()) > 0:
        await asyncio.sleep(min(1.0, left))
        current = late(read_probe(probe))
        counts.append(current - previous)
        previous = current
    return counts


async def wait_quiet(args: argparse.Namespace, node_pid: int, helpers: list[int],
                     limit: float = 300.0) -> None:
    """Wait (at most `limit` s) until other processes leave both cores alone: on a shared
    machine a test run landing on the node's core makes its frames late, and one on the load
    generator's core makes the callers' packets come in bursts."""
    def others() -> tuple[float, float]:
        return (core_busy_seconds(args.node_core) - sum(cpu_seconds(node_pid)),
                core_busy_seconds(args.loadgen_core)
                - sum(sum(cpu_seconds(pid)) for pid in helpers))

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = others()
        await asyncio.sleep(2.0)
        after = others()
        node_core, gen_core = ((y - x) / 2.0 * 100 for x, y in zip(before, after, strict=True))
        if max(node_core, gen_core) <= args.max_others:
            return
        print(f"waiting: other processes use {node_core:.0f}% of core {args.node_core} and "
              f"{gen_core:.0f}% of core {args.loadgen_core}", flush=True)


async def wait_node_idle(pid: int, limit: float = 180.0) -> None:
    """A node loads its speech models in the background after start: wait until it idles."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = sum(cpu_seconds(pid))
        await asyncio.sleep(2.0)
        busy = (sum(cpu_seconds(pid)) - before) / 2.0 * 100
        if busy < 5.0:
            return
        print(f"waiting: the node is still starting ({busy:.0f}% CPU)", flush=True)


async def sweep(args: argparse.Namespace, tmp: Path, nats_url: str | None) -> dict[str, Any]:
    probe = tmp / "probe.json"
    node = await start_node(args, tmp, nats_url, probe)
    await wait_node_idle(node.pid)
    gen_proc = await asyncio.create_subprocess_exec(
        *["taskset", "-c", str(args.loadgen_core)], sys.executable, "-m", "bench.sip_loadgen",
        "--target", f"127.0.0.1:{args.sip_port}", "--line-noise-dbov",
        str(args.line_noise_dbov), cwd=ROOT,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    gen = LoadGen(gen_proc)
    helpers = [gen_proc.pid, os.getpid(), *([args.nats_pid] if args.nats_pid else [])]
    rows: list[dict[str, Any]] = []
    profile: dict[str, Any] | None = None
    stopped = "every step passed"
    try:
        for calls in args.steps:
            before = await gen.ask({"cmd": "stats"})
            await gen.ask({"cmd": "ramp", "calls": calls, "rate": args.rate})
            for attempt in range(1 + args.repeats):
                await wait_quiet(args, node.pid, helpers)
                await asyncio.sleep(args.settle)
                gen_a, a = await gen.ask({"cmd": "stats"}), sample(args, node.pid, probe, helpers)
                per_second = await late_per_second(probe, args.duration)
                gen_b, b = await gen.ask({"cmd": "stats"}), sample(args, node.pid, probe, helpers)
                failed = (gen_b["setup_failed"] - before["setup_failed"]
                          + gen_b["dropped"] - before["dropped"])
                row = step_figures(gen_b["active"], a, b, gen_a, gen_b, failed)
                row["disturbed"] = max(row["core_other_pct"],
                                       row["loadgen_core_other_pct"]) > args.max_others
                row["late_frames_per_second"] = per_second
                # The loop's stalls over 30 ms in this step, with the stack that held it.
                row["stalls"] = [st for st in b["probe"].get("stalls", [])
                                 if st not in a["probe"].get("stalls", [])]
                if not row["disturbed"] or attempt == args.repeats:
                    break
                print(f"calls {calls}: other processes took {row['core_other_pct']:.0f}% of the "
                      f"node's core, {row['loadgen_core_other_pct']:.0f}% of the load "
                      f"generator's; measuring the step again", flush=True)
            rows.append(row)
            print_row(row)
            for stall in row["stalls"][-3:]:
                print(f"  loop stalled {stall['ms']} ms in: {' | '.join(stall['stack'][-3:])}",
                      flush=True)
            if row["late_frame_pct"] > LATE_LIMIT_PCT or failed or gen_b["active"] < calls:
                stopped = ("failed calls" if failed else "calls not placed"
                           if gen_b["active"] < calls else "late frames")
                if row["disturbed"]:
                    stopped += " while other processes shared the cores (inconclusive)"
                print(f"stopped at {calls} calls: {stopped}", flush=True)
                break
        passing = [r for r in rows if r["late_frame_pct"] <= LATE_LIMIT_PCT
                   and not r["failed_calls"]]
        if args.profile and rows:
            target = (passing or rows)[-1]["calls"]
            await gen.ask({"cmd": "ramp", "calls": target, "rate": args.rate})
            await wait_quiet(args, node.pid, helpers)
            profile = await profile_node(node.pid, seconds=args.profile_seconds,
                                         out=ROOT / "bench" / "results" / "sip_media_profile.txt")
            profile["calls"] = target
    finally:
        try:
            await gen.ask({"cmd": "stop"}, timeout=60)
        except (RuntimeError, TimeoutError, BrokenPipeError, ConnectionResetError):
            pass
        for proc in (gen_proc, node):
            if proc.returncode is None:
                proc.terminate()
                try:
                    async with asyncio.timeout(15):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
    return {"rows": rows, "profile": profile, "stopped": stopped}


async def main(args: argparse.Namespace) -> int:
    # This driver, NATS and the load generator on one core; the node alone on the other.
    os.sched_setaffinity(0, {args.loadgen_core})
    with tempfile.TemporaryDirectory(prefix="sb-sip-bench-") as tmp_name:
        tmp = Path(tmp_name)
        print(f"node on core {args.node_core} ({args.node}); load generator, NATS and driver on "
              f"core {args.loadgen_core}; steps {args.steps}; {args.duration:.0f} s each after "
              f"{args.settle:.0f} s settling", flush=True)
        args.nats_pid = None
        if args.node == "rtp-echo":
            result = await sweep(args, tmp, None)
        else:
            async with NatsServer(NatsServerConfig(store_dir=tmp / "nats")) as server:
                args.nats_pid = server.pid
                result = await sweep(args, tmp, server.url)
    rows = result["rows"]
    passing = [r for r in rows if r["late_frame_pct"] <= LATE_LIMIT_PCT and not r["failed_calls"]]
    best = passing[-1] if passing else None
    summary = {
        "calls": best["calls"] if best else 0,
        "late_frame_pct": best["late_frame_pct"] if best else (rows[0]["late_frame_pct"]
                                                               if rows else 100.0),
        "cpu_per_call_pct": best["cpu_pct"] / best["calls"] if best else 0.0,
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    name = "sip_media" if args.node == "switchboard" else f"sip_media_{args.node}"
    name += "_webrtc_vad.json" if args.call_vad == "webrtc" else ".json"
    report = {"node": args.node, "pcm_rate": args.pcm_rate, "call_vad": args.call_vad,
              "line_noise_dbov": args.line_noise_dbov, "duration_s": args.duration,
              "settle_s": args.settle,
              "late_limit_pct": LATE_LIMIT_PCT, "steps": rows, "stopped": result["stopped"],
              "summary": summary,
              "profile": result["profile"], "cpu": os.cpu_count()}
    (out / name).write_text(json.dumps(report, indent=2))
    print(f"results written to {out / name}")
    print(f"calls={summary['calls']} late_frame_pct={summary['late_frame_pct']:.3f} "
          f"cpu_per_call_pct={summary['cpu_per_call_pct']:.3f}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", default="50,100,150,200,250,300,350,400,450,500",
                   help="call counts, comma separated (the sweep stops at the first failure)")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds measured per step (default 60; 10 with --quick)")
    p.add_argument("--settle", type=float, default=None,
                   help="seconds between reaching a step's calls and measuring (default 5; 3 "
                        "with --quick)")
    p.add_argument("--quick", action="store_true", help="short steps, for a smoke run")
    p.add_argument("--rate", type=float, default=25.0, help="new calls per second")
    p.add_argument("--node", choices=("switchboard", "rtp-echo"), default="switchboard",
                   help="switchboard: a real node (`switchboard node`); rtp-echo: the SIP/RTP "
                        "layer alone")
    p.add_argument("--pcm-rate", type=int, choices=(8000, 16000), default=8000,
                   help="PCM rate the call actors get (G.711 is 8 kHz: 16000 adds resampling)")
    p.add_argument("--call-vad", choices=("silero", "webrtc"), default="silero",
                   help="the node's call VAD (`switchboard node --call-vad`): silero, the "
                        "default, or webrtc")
    p.add_argument("--line-noise-dbov", type=float, default=-70.0,
                   help="white noise the callers send under their speech and in their pauses "
                        "(a real line is never digitally silent; Silero skips windows below "
                        "-60 dBov once it has judged the line silent)")
    p.add_argument("--stall-ms", type=float, default=None,
                   help="keep the node loop's stack whenever it is this many ms overdue "
                        "(a thread that itself costs a little: off by default)")
    p.add_argument("--node-core", type=int, default=0)
    p.add_argument("--loadgen-core", type=int, default=1)
    p.add_argument("--sip-port", type=int, default=5080)
    p.add_argument("--max-others", type=float, default=5.0,
                   help="%% of the node's core other processes may use during a step; above "
                        "it the step is measured again (shared machines)")
    p.add_argument("--repeats", type=int, default=3,
                   help="how many times a disturbed step is measured again")
    p.add_argument("--profile", action="store_true",
                   help="sample the node with py-spy at the last passing step")
    p.add_argument("--profile-seconds", type=float, default=20.0)
    args = p.parse_args(argv)
    args.steps = [int(s) for s in args.steps.split(",")]
    args.duration = args.duration if args.duration is not None else (10.0 if args.quick else 60.0)
    args.settle = args.settle if args.settle is not None else (3.0 if args.quick else 5.0)
    if shutil.which("taskset") is None:
        p.error("taskset (util-linux) is needed to pin the node and the load generator")
    return args


if __name__ == "__main__":
    raise SystemExit(uvloop.run(main(parse_args())))
