"""Benchmark: the actor layer against raw nats-py, and virtual-actor reactivation after SIGKILL.

Same processes, same event loop (uvloop), same NATS server, same bytes (msgspec msgpack on
both paths): only the actor layer differs. Rounds of raw and actor measurements alternate, so
drift of a noisy machine hits both alike.

  ask:  raw `nc.request` to a subscription that decodes and answers, vs `ref.ask` to an echo
        actor on another ActorSystem (its own connection), over NATS (not the local shortcut).
  tell: raw `nc.publish` to a subscription that decodes and counts, vs `ref.tell` to a counting
        actor; throughput until the receiver has counted every message.
  reactivation: two node processes host a virtual Counter; the one holding it is SIGKILLed;
        a client asks every 100 ms; time from the kill to the first successful reply.

Prints the figures, writes bench/results/actors.json, and ends with
`reactivation_s_p50=... reactivation_s_max=...` then
`ask_p50_ratio=X ask_p99_ratio=Y tell_ratio=Z`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import nats
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from switchboard.actors import Actor, ActorSystem
from switchboard.actors.transport_nats import NatsTransport
from switchboard.supervisor.client import connect_client
from switchboard.supervisor.nats_server import NatsServer, NatsServerConfig

from tests.support.actors import Count, Echo, EchoActor, Get, Incr, node_env


class Tally(Actor):
    kind = "tally"
    accepts = Echo
    target = 0
    done: asyncio.Event

    async def receive(self, message: Echo) -> None:
        Tally.count += 1
        if Tally.count >= Tally.target:
            Tally.done.set()

    count = 0


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def bench_ask_and_tell(url: str, n_ask: int, n_tell: int, rounds: int,
                             payload_size: int) -> dict[str, Any]:
    enc = msgspec.msgpack.Encoder()
    dec = msgspec.msgpack.Decoder(Echo)
    message = Echo(payload=os.urandom(payload_size))
    data = enc.encode(message)

    # Raw nats-py: a responder connection and a requester connection.
    srv = await nats.connect(url)
    cli = await nats.connect(url)

    async def responder(msg: Any) -> None:
        await srv.publish(msg.reply, enc.encode(dec.decode(msg.data)))

    await srv.subscribe("bench.raw.ask", cb=responder)
    raw_count = 0
    raw_done = asyncio.Event()
    raw_target = 0

    async def counter(msg: Any) -> None:
        nonlocal raw_count
        dec.decode(msg.data)
        raw_count += 1
        if raw_count >= raw_target:
            raw_done.set()

    await srv.subscribe("bench.raw.tell", cb=counter, pending_msgs_limit=10_000_000)
    await srv.flush()

    # The actor layer: a hosting system and an asking system, each on its own connection.
    host = ActorSystem(await NatsTransport.connect(url), node_id="bench-host")
    client = ActorSystem(await NatsTransport.connect(url), node_id="bench-client")
    await host.start()
    await client.start()
    await host.spawn(EchoActor, "e1")
    Tally.done = asyncio.Event()
    Tally.target = 10**12
    Tally.mailbox_capacity = 10_000_000  # like the raw subscription's pending limit
    await host.spawn(Tally, "t1")
    await host.transport.flush()
    echo = client.ref("echo", "e1")
    tally = client.ref("tally", "t1")

    async def raw_ask() -> float:
        t = time.perf_counter()
        reply = await cli.request("bench.raw.ask", data, timeout=5)
        dec.decode(reply.data)
        return time.perf_counter() - t

    async def actor_ask() -> float:
        t = time.perf_counter()
        await echo.ask(message, reply_type=Echo)
        return time.perf_counter() - t

    for _ in range(500):  # warm-up both paths
        await raw_ask()
        await actor_ask()
    raw_lat: list[float] = []
    act_lat: list[float] = []
    per_round = max(1, n_ask // rounds)
    for _ in range(rounds):
        raw_lat += [await raw_ask() for _ in range(per_round)]
        act_lat += [await actor_ask() for _ in range(per_round)]

    async def raw_tell_run(n: int) -> float:
        nonlocal raw_count, raw_target
        raw_count, raw_target = 0, n
        raw_done.clear()
        t = time.perf_counter()
        for _ in range(n):
            await cli.publish("bench.raw.tell", data)
        await raw_done.wait()
        return n / (time.perf_counter() - t)

    async def actor_tell_run(n: int) -> float:
        Tally.count, Tally.target = 0, n
        Tally.done.clear()
        t = time.perf_counter()
        for _ in range(n):
            await tally.tell(message)
        await Tally.done.wait()
        return n / (time.perf_counter() - t)

    await raw_tell_run(2000)
    await actor_tell_run(2000)
    raw_tput: list[float] = []
    act_tput: list[float] = []
    for _ in range(rounds):
        raw_tput.append(await raw_tell_run(n_tell // rounds))
        act_tput.append(await actor_tell_run(n_tell // rounds))

    await client.shutdown()
    await host.shutdown()
    await client.transport.close()
    await host.transport.close()
    await cli.close()
    await srv.close()
    return {
        "payload_bytes": len(data),
        "asks_per_path": len(raw_lat),
        "raw_ask_p50_us": pct(raw_lat, 0.5) * 1e6, "raw_ask_p99_us": pct(raw_lat, 0.99) * 1e6,
        "actor_ask_p50_us": pct(act_lat, 0.5) * 1e6,
        "actor_ask_p99_us": pct(act_lat, 0.99) * 1e6,
        "raw_tell_per_s": statistics.median(raw_tput),
        "actor_tell_per_s": statistics.median(act_tput),
    }


async def bench_reactivation(url: str, trials: int) -> list[float]:
    """Two node processes; SIGKILL the holder of a Counter; time to its first answer again."""
    times: list[float] = []
    procs: list[subprocess.Popen[bytes]] = []

    def start_node(name: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "switchboard", "node", "--nats", url, "--node-id", name,
             "--kinds", "tests.support.actors:Counter"],
            env=node_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        for line in proc.stdout:
            if b"ready" in line:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {name} did not start")
        procs.append(proc)
        return proc

    try:
        nodes = {f"bench-n{i}": start_node(f"bench-n{i}") for i in range(2)}
        async with connect_client([url], membership_refresh=0.2) as client:
            await asyncio.sleep(1.0)  # both heartbeats visible to the client
            for trial in range(trials):
                ref = client.ref("counter", f"bench-{trial}")
                before = await ref.ask(Incr(n=7), reply_type=Count, timeout=10)
                victim = nodes[before.node]
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                killed = time.monotonic()
                while True:
                    try:
                        after = await ref.ask(Get(), reply_type=Count, timeout=0.5)
                    except Exception:  # noqa: BLE001 - any failure means: not back yet
                        await asyncio.sleep(0.1)
                        continue
                    break
                elapsed = time.monotonic() - killed
                if after.value != before.value:
                    raise AssertionError(f"state lost: {before.value} -> {after.value}")
                times.append(elapsed)
                print(f"  reactivation trial {trial + 1}: {elapsed * 1000:.0f} ms "
                      f"({before.node} -> {after.node})", flush=True)
                nodes[before.node] = start_node(before.node + "r")
                nodes[before.node + "r"] = nodes.pop(before.node)
                await asyncio.sleep(1.0)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return times


async def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="sb-bench-") as tmp:
        async with NatsServer(NatsServerConfig(store_dir=Path(tmp) / "nats")) as server:
            print(f"NATS {server.url}; uvloop; payload {args.payload} bytes + framing", flush=True)
            r = await bench_ask_and_tell(server.url, args.asks, args.tells, args.rounds,
                                         args.payload)
            print(f"ask  raw   p50 {r['raw_ask_p50_us']:7.1f} us  p99 {r['raw_ask_p99_us']:7.1f} us")
            print(f"ask  actor p50 {r['actor_ask_p50_us']:7.1f} us  "
                  f"p99 {r['actor_ask_p99_us']:7.1f} us")
            print(f"tell raw   {r['raw_tell_per_s']:10.0f} msg/s")
            print(f"tell actor {r['actor_tell_per_s']:10.0f} msg/s")
            re_times = await bench_reactivation(server.url, args.trials)
    r["reactivation_s"] = re_times
    r["ask_p50_ratio"] = r["actor_ask_p50_us"] / r["raw_ask_p50_us"]
    r["ask_p99_ratio"] = r["actor_ask_p99_us"] / r["raw_ask_p99_us"]
    r["tell_ratio"] = r["actor_tell_per_s"] / r["raw_tell_per_s"]
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "actors.json").write_text(json.dumps(r, indent=2))
    print(f"results written to {out / 'actors.json'}")
    print(f"reactivation_s_p50={statistics.median(re_times):.3f} "
          f"reactivation_s_max={max(re_times):.3f}")
    print(f"ask_p50_ratio={r['ask_p50_ratio']:.3f} ask_p99_ratio={r['ask_p99_ratio']:.3f} "
          f"tell_ratio={r['tell_ratio']:.3f}")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--asks", type=int, default=20000, help="asks per path")
    p.add_argument("--tells", type=int, default=100000, help="tells per path")
    p.add_argument("--rounds", type=int, default=10, help="alternating rounds")
    p.add_argument("--payload", type=int, default=64, help="payload bytes")
    p.add_argument("--trials", type=int, default=5, help="SIGKILL reactivation trials")
    raise SystemExit(uvloop.run(main(p.parse_args())))
