"""The node under test of bench/sip_media.py when `switchboard node` cannot serve SIP itself.

Exactly what `switchboard node` builds (supervisor/node.py: NATS, actors, tenants, call
actors with the node's call VAD, the echo brain) plus the SIP gateway started the way the
node starts it (`supervisor.edges.start_sip_gateway`), with the media probe on
(SWITCHBOARD_MEDIA_PROBE, supervisor/media_probe.py). Used while the command line has no SIP
flags; `bench/sip_media.py` prefers the real command when it has them.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import uvloop
from switchboard.providers.base import Vad
from switchboard.providers.vad.webrtc import WebRtcVad
from switchboard.storage.sip_file import load_sip_config
from switchboard.supervisor import brains
from switchboard.supervisor.edges import start_sip_gateway
from switchboard.supervisor.node import Node, NodeConfig


async def webrtc_vad() -> Callable[[int], Vad]:
    return lambda rate: WebRtcVad(rate)


async def serve(args: argparse.Namespace) -> int:
    if args.call_vad == "webrtc":
        # The node loads Silero when installed; this variant measures the call path with the
        # WebRTC VAD (2 µs a frame instead of ~40) in its place.
        brains.load_call_vad = webrtc_vad
    node = Node(NodeConfig(nats_urls=[args.nats], node_id=args.node_id,
                           tenants_file=Path(args.tenants), warm_up_models=False))
    await node.start()
    gateway = await start_sip_gateway(node, load_sip_config(args.sip_config))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, node.request_stop)
    print(f"bench node ready, SIP on {gateway.address}", flush=True)
    code = await node.wait()
    await gateway.close(10.0)
    await node.drain()
    return code


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--nats", required=True)
    p.add_argument("--node-id", default="bench-sip")
    p.add_argument("--tenants", required=True)
    p.add_argument("--sip-config", required=True)
    p.add_argument("--call-vad", choices=("default", "webrtc"), default="default",
                   help="default: the node's own choice (Silero when installed)")
    raise SystemExit(uvloop.run(serve(p.parse_args())))


if __name__ == "__main__":
    main()
