"""Where a node's time goes: py-spy samples of the node process, sorted into categories.

Used by `bench/sip_media.py --profile`, after the sweep (py-spy pauses the process for each
sample, which would spoil the timing figures). Native stacks (`--native`) are needed: without
them py-spy often loses the coroutine frames of tasks that uvloop steps from C, and charges
their time to the event loop. Each stack is charged to the first frame of ours from the leaf
up (standard library, numpy, onnxruntime and uvloop frames above it belong to it: `sendto` to
the RTP sender, onnxruntime to the VAD); a stack with no frame of ours is the event loop's
own work (UDP reads in libuv, timers, task switching); idle waits (epoll, idle worker
threads) are left out.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

# First match wins, tried on each frame from the leaf up; (category, file pattern, function).
CATEGORIES: list[tuple[str, str, str]] = [
    ("resampling", r"gateways/sip/codecs\.py", r"Resampler|process"),
    ("codec (G.711/G.722)", r"gateways/sip/codecs\.py", r".*"),
    ("RTP parse", r"gateways/sip/rtp\.py", r".*"),
    ("jitter buffer", r"gateways/sip/jitterbuffer\.py", r".*"),
    ("DTMF", r"gateways/sip/dtmf\.py", r".*"),
    ("RTP send + pacing", r"gateways/sip/(frame_clock|rtp_session)\.py",
     r"_serve|_on_slot|_send_slot|_housekeeping|_skip_slots|_pace"),
    ("RTP receive (session)", r"gateways/sip/rtp_session\.py", r".*"),
    ("SIP leg (gateway glue)", r"gateways/sip/(leg|gateway)\.py", r".*"),
    ("SIP signalling", r"gateways/sip/", r".*"),
    ("VAD", r"providers/vad/", r".*"),
    ("echo agent", r"actors/echo_agent\.py", r".*"),
    ("media probe (bench only)", r"supervisor/media_probe\.py", r".*"),
    ("call actor", r"actors/(call|turn_taking|listener|audio_tap)\.py", r".*"),
    ("actor runtime (mailbox, cells)", r"actors/", r".*"),
    ("NATS / JetStream", r"(nats/|storage/)", r".*"),
    ("node, supervisors", r"supervisor/", r".*"),
]
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")
_IDLE = ("epoll_pwait", "epoll_wait", "PyThread_acquire_lock_timed", "pthread_cond_wait",
         "pthread_cond_timedwait", "select", "poll", "nanosleep", "clock_nanosleep")
_OURS = re.compile(r"/work/main/|switchboard/|(gateways|actors|providers|supervisor|protocols)/")
# The entry points every stack starts with: a stack that ends in them is the event loop's own.
_ENTRY = re.compile(r"(switchboard/__main__\.py|supervisor/cli\.py|bench/sip_\w+\.py|"
                    r"sip_\w+\.py)$")


def categorise(stack: list[str]) -> str | None:
    """The category of one sampled stack (root first); None for an idle wait."""
    names = [frame.split(" (", 1)[0] for frame in stack]
    if any(name in _IDLE for name in names):
        return None
    for frame in reversed(stack):
        match = _FRAME.match(frame.strip())
        if match is None:
            continue
        file, func = match["file"], match["func"]
        if "site-packages/nats/" in file:
            return "NATS / JetStream"
        if not _OURS.search(file) or "site-packages" in file or _ENTRY.search(file):
            continue
        for name, file_pattern, func_pattern in CATEGORIES:
            if re.search(file_pattern, file) and re.search(func_pattern, func):
                return name
        return "other (ours)"
    if "uv__udp_io" in names:
        return "UDP reads (libuv, kernel)"
    if "uv__run_timers" in names:
        return "timers (libuv)"
    return "event loop (uvloop, asyncio, no frame of ours)"


def summarise(raw: str) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        category = categorise(stack.split(";"))
        if category is not None:
            counts[category] += int(count)
    total = sum(counts.values())
    return {"samples": total,
            "categories_pct": {k: round(100 * v / total, 1) for k, v in counts.most_common()}
            if total else {}}


async def profile_node(pid: int, *, seconds: float, out: Path) -> dict[str, Any]:
    """Sample `pid` for `seconds`; write the raw stacks to `out`; return the breakdown."""
    py_spy = shutil.which("py-spy") or str(Path(__file__).resolve().parent.parent
                                           / ".venv" / "bin" / "py-spy")
    if not Path(py_spy).exists():
        return {"error": "py-spy is not installed: pip install py-spy"}
    proc = await asyncio.create_subprocess_exec(
        py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "100",
        "--native", "--format", "raw", "--output", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0 or not out.exists():
        return {"error": f"py-spy failed: {err.decode(errors='replace').strip()[-300:]}"}
    summary = summarise(out.read_text())
    summary["raw_stacks"] = str(out)
    return summary
