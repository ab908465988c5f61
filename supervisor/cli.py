"""The `switchboard` command line.

    switchboard up                       NATS (embedded) + one node, on this machine
    switchboard node --nats URL[,URL]    join an existing cluster as one more node
    switchboard status [--nats URL]      nodes, regions, load and active actors
    switchboard token --tenant T --agent A   a short-lived call token for the web widget
    switchboard call --tenant T --agent A --target sip:...   an outbound call by an agent
    switchboard dial sip:... --play q.wav --record a.wav     a test caller with a timeline
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import platformdirs
from switchboard.supervisor.sip_cli import (
    add_call_parser,
    add_dial_parser,
    add_sip_options,
    run_call,
    run_dial,
    sip_config_from_args,
)

from switchboard import __version__

log = logging.getLogger("switchboard")

ENV_NATS = "SWITCHBOARD_NATS"


def data_dir() -> Path:
    return Path(os.environ.get("SWITCHBOARD_DATA_DIR")
                or platformdirs.user_data_dir("switchboard", appauthor=False))


def example_tenants_file() -> Path:
    """The demo tenants file shipped with the package (configs/ installs as package data)."""
    from importlib.resources import files

    return Path(str(files("switchboard.configs").joinpath("tenants.example.yaml")))


def _url_file() -> Path:
    return data_dir() / "nats-url"


def _default_nats() -> str | None:
    if os.environ.get(ENV_NATS):
        return os.environ[ENV_NATS]
    path = _url_file()
    return path.read_text().strip() if path.exists() else None


def _load_kinds(spec: str) -> list[Any]:
    """`pkg.module:Class,pkg.module:Other` → the classes (virtual actor kinds to host)."""
    kinds = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        module, _, name = item.partition(":")
        if not name:
            raise SystemExit(f"--kinds: {item!r} must look like package.module:ClassName")
        try:
            kinds.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError) as exc:
            raise SystemExit(f"--kinds: cannot load {item!r}: {exc}") from None
    return kinds


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="switchboard", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"switchboard {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def node_options(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--region", default="local", help="this node's region (placement)")
        sp.add_argument("--node-id", default=None, help="unique node id (default: host-pid-rand)")
        sp.add_argument("--capacity", type=int, default=1000,
                        help="how many actors this node takes (placement weight)")
        sp.add_argument("--kinds", default="",
                        help="extra virtual actor kinds to host: module:Class[,module:Class]")
        sp.add_argument("--replicas", type=int, default=1,
                        help="JetStream replicas for the buckets (3 in a 3-node cluster)")
        sp.add_argument("--call-vad", choices=("silero", "webrtc"), default="silero",
                        help="the VAD of call legs: silero (accurate; its model runs batched "
                             "across calls) or webrtc (~3 µs a frame, less sure in noise: for "
                             "nodes that carry many calls; docs/performance.md)")
        sp.add_argument("--tenants", default=None, metavar="FILE",
                        help="tenants, numbers and agents (format: configs/tenants.example.yaml;"
                             " `up` defaults to that demo file)")
        sp.add_argument("--providers", default=None, metavar="FILE",
                        help="cloud and self-hosted LLMs this node offers, keys from "
                             "environment variables (format: configs/providers.example.yaml;"
                             " default: `openai` / `anthropic` when $OPENAI_API_KEY / "
                             "$ANTHROPIC_API_KEY are set)")
        add_sip_options(sp)
        web = sp.add_argument_group("web gateway (browser calls over WebRTC; docs/web.md)")
        web.add_argument("--web-host", default="127.0.0.1",
                         help="address of the page and API (default 127.0.0.1; any other "
                              "host is served over HTTPS)")
        web.add_argument("--web-port", type=int, default=None,
                         help="port of the page and API; `up` defaults to 8080 (a free one "
                              "if busy), `node` serves no page unless given one")
        web.add_argument("--web-cert", type=Path, default=None, metavar="PEM",
                         help="HTTPS certificate chain (default: self-signed off loopback)")
        web.add_argument("--web-key", type=Path, default=None, metavar="PEM",
                         help="HTTPS private key")
        web.add_argument("--stun", action="append", default=[], metavar="URL",
                         help="STUN server for browsers and the node, e.g. stun:stun.example"
                              ".com:3478 (repeatable)")
        web.add_argument("--turn", action="append", default=[], metavar="URL",
                         help="TURN server, e.g. turn:turn.example.com:3478?transport=udp "
                              "(repeatable); credentials from $SWITCHBOARD_TURN_USERNAME and "
                              "$SWITCHBOARD_TURN_PASSWORD, or $SWITCHBOARD_TURN_SECRET "
                              "(coturn use-auth-secret)")
        web.add_argument("--demo", action=argparse.BooleanOptionalAction, default=None,
                         help="pages on this machine may call the demo tenant without a "
                              "token (`up` with the bundled demo tenants: on by default)")

    up = sub.add_parser("up", help="start NATS and one node on this machine (embedded defaults)",
                        description="Start an embedded NATS server with JetStream (data under "
                                    "the user data folder) and one node. Ctrl-C drains and stops.")
    up.add_argument("--nats", default=None,
                    help="use this existing NATS instead of starting one (URL[,URL...])")
    up.add_argument("--port", type=int, default=4222,
                    help="client port of the embedded NATS (0 or a busy port: a free one)")
    up.add_argument("--data-dir", default=None, help=f"default: {data_dir()}")
    node_options(up)

    node = sub.add_parser("node", help="run one node against an existing NATS cluster",
                          description="Join a NATS JetStream cluster as a node.")
    node.add_argument("--nats", required=True, help="NATS URL(s), comma separated")
    node_options(node)

    tok = sub.add_parser("token", help="mint a short-lived call token for the web widget",
                         description="Print a call token (JWT, HS256) signed with the "
                                     "tenant's web_token_secret from the tenants file.")
    tok.add_argument("--tenant", required=True)
    tok.add_argument("--agent", required=True)
    tok.add_argument("--ttl", type=float, default=600.0, help="seconds, at most 900")
    tok.add_argument("--subject", default="", help="your reference for the caller (optional)")
    tok.add_argument("--tenants", default=None, metavar="FILE",
                     help="the tenants file (default: the bundled demo file)")

    add_call_parser(sub)
    add_dial_parser(sub)
    st = sub.add_parser("status", help="list nodes, regions, load and active actors",
                        description="Read the membership and lease buckets and print them.")
    st.add_argument("--nats", default=None,
                    help=f"NATS URL (default: ${ENV_NATS} or the one `switchboard up` started)")
    st.add_argument("--actors", action="store_true", help="also list every virtual actor")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop
        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    if args.command == "status":
        return int(runner(_status(args)))
    if args.command == "token":
        return _token(args)
    if args.command == "call":
        return int(runner(run_call(args, _default_nats())))
    if args.command == "dial":
        return int(runner(run_dial(args)))
    if args.command == "up":
        return int(runner(_up(args)))
    return int(runner(_run_node(args, args.nats.split(","))))


async def _run_node(args: argparse.Namespace, urls: list[str]) -> int:
    from switchboard.gateways.sip.gateway import SipListenError
    from switchboard.gateways.webrtc import ListenError
    from switchboard.storage.providers_file import ProvidersFileError
    from switchboard.storage.sip_file import SipConfigError
    from switchboard.supervisor.brains import UnknownProviderError
    from switchboard.supervisor.edges import sip_banner
    from switchboard.supervisor.node import Node, NodeConfig, default_node_id

    try:
        sip = sip_config_from_args(args, args.command)
    except SipConfigError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    cfg = NodeConfig(nats_urls=urls, node_id=args.node_id or default_node_id(),
                     region=args.region, capacity=args.capacity, replicas=args.replicas,
                     virtual_kinds=_load_kinds(args.kinds),
                     tenants_file=Path(args.tenants) if args.tenants else None,
                     providers_file=Path(args.providers) if args.providers else None,
                     web=_web_config(args), sip=sip, call_vad=args.call_vad)
    node = Node(cfg)
    try:
        async with asyncio.timeout(20):  # reconnects are forever once up; the first try is not
            await node.start()
    except (ProvidersFileError, UnknownProviderError) as exc:  # before anything connected
        print(f"switchboard: {exc}", file=sys.stderr)
        await node.drain()
        return 2
    except (ListenError, SipListenError) as exc:  # an OSError too: before the NATS message below
        print(f"switchboard: {exc}", file=sys.stderr)
        await node.drain()
        return 2
    except (TimeoutError, OSError) as exc:
        print(f"switchboard: cannot reach NATS at {','.join(urls)} ({exc}); "
              "start it, or use `switchboard up` for an embedded one", file=sys.stderr)
        return 2
    loop = asyncio.get_running_loop()
    presses = 0

    def on_signal() -> None:
        nonlocal presses
        presses += 1
        if presses > 1:
            print("switchboard: second interrupt, exiting now", file=sys.stderr)
            os._exit(130)
        print("switchboard: draining (Ctrl-C again to exit at once)", file=sys.stderr)
        node.request_stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    print(f"switchboard: node {cfg.node_id} ready (region {cfg.region}, "
          f"NATS {','.join(urls)})", flush=True)
    if node.web is not None:
        demo = " (demo mode: no token needed from this machine)" if cfg.web and \
            cfg.web.demo_mode else ""
        print(f"switchboard: talk to an agent at {node.web.url}{demo}", flush=True)
    if node.sip is not None:
        print(sip_banner(node.sip, node.directory), flush=True)
    code = await node.wait()
    await node.drain()
    print(f"switchboard: node {cfg.node_id} stopped", flush=True)
    return code


async def _up(args: argparse.Namespace) -> int:
    from switchboard.supervisor.nats_server import NatsServer, NatsServerConfig

    if args.tenants is None:
        args.tenants = str(example_tenants_file())
        args.demo_tenants = True
        print(f"switchboard: tenants from {args.tenants} (the demo tenant; --tenants to change)")
    if args.nats:
        return await _run_node(args, args.nats.split(","))
    root = Path(args.data_dir) if args.data_dir else data_dir()
    port = args.port if args.port and _port_free(args.port) else 0  # 0: the server picks
    print(f"switchboard: starting NATS with JetStream (data in {root / 'nats'})", flush=True)
    server = NatsServer(NatsServerConfig(store_dir=root / "nats", port=port))
    await server.start()
    root.mkdir(parents=True, exist_ok=True)
    _url_file().parent.mkdir(parents=True, exist_ok=True)
    _url_file().write_text(server.url)
    print(f"switchboard: NATS at {server.url}", flush=True)
    try:
        return await _run_node(args, [server.url])
    finally:
        _url_file().unlink(missing_ok=True)
        await server.stop()


def _web_config(args: argparse.Namespace) -> Any:
    """The web gateway's settings from the node flags (None: no web gateway)."""
    port = args.web_port
    if port is None and args.command == "up":
        port = 8080 if _port_free(8080) else 0
    if port is None:
        return None
    from switchboard.gateways.webrtc import TlsConfig, WebConfig, ice_servers_from_flags

    demo = args.demo
    if demo is None:  # `up` on the bundled demo tenants file: the newcomer's path
        demo = args.command == "up" and getattr(args, "demo_tenants", False)
    ice = ice_servers_from_flags(
        stun=args.stun, turn=args.turn,
        turn_username=os.environ.get("SWITCHBOARD_TURN_USERNAME", ""),
        turn_password=os.environ.get("SWITCHBOARD_TURN_PASSWORD", ""),
        turn_secret=os.environ.get("SWITCHBOARD_TURN_SECRET", ""))
    return WebConfig(host=args.web_host, port=port,
                     tls=TlsConfig(args.web_cert, args.web_key), ice_servers=ice,
                     demo_mode=bool(demo), state_dir=data_dir() / "web")


def _token(args: argparse.Namespace) -> int:
    from switchboard.gateways.webrtc import TokenError, mint_token_for
    from switchboard.storage.tenants_file import TenantsFileError, load_tenants

    try:
        directory = load_tenants(args.tenants or example_tenants_file())
        print(mint_token_for(directory, args.tenant, args.agent, ttl=args.ttl,
                             subject=args.subject))
    except (TokenError, TenantsFileError, ValueError, OSError) as exc:
        print(f"switchboard token: {exc}", file=sys.stderr)
        return 2
    return 0


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def _status(args: argparse.Namespace) -> int:
    import msgspec
    from nats.errors import NoServersError
    from switchboard.actors.transport_nats import NatsTransport
    from switchboard.protocols import LeaseRecord, NodeInfo
    from switchboard.protocols.subjects import LEASE_TTL, LEASES_BUCKET, NODE_TTL, NODES_BUCKET
    from switchboard.storage.jetstream import open_kv

    url = args.nats or _default_nats()
    if not url:
        print("switchboard status: no NATS to ask; pass --nats URL, set "
              f"{ENV_NATS}, or start one with `switchboard up`", file=sys.stderr)
        return 2
    try:
        # nats-py retries a first connect forever unless bounded: status must answer quickly.
        async with asyncio.timeout(5):
            transport = await NatsTransport.connect(url.split(","), name="switchboard-status",
                                                    max_reconnect_attempts=1,
                                                    reconnect_time_wait=0.2)
    except (TimeoutError, OSError, NoServersError) as exc:
        print(f"switchboard status: cannot reach NATS at {url} ({exc})", file=sys.stderr)
        return 2
    try:
        js = transport.nc.jetstream()
        nodes = [msgspec.msgpack.decode(e.value, type=NodeInfo)
                 for e in await (await open_kv(js, NODES_BUCKET, ttl=NODE_TTL)).entries()]
        leases = [(e.key, msgspec.msgpack.decode(e.value, type=LeaseRecord))
                  for e in await (await open_kv(js, LEASES_BUCKET, ttl=LEASE_TTL)).entries()]
    finally:
        await transport.close()
    per_node: dict[str, int] = {}
    for _, lease in leases:
        per_node[lease.node_id] = per_node.get(lease.node_id, 0) + 1
    if args.json:
        print(json.dumps({
            "nodes": [msgspec.to_builtins(n) | {"virtual_actors": per_node.get(n.node_id, 0)}
                      for n in nodes],
            "actors": [{"actor": k, "node_id": v.node_id} for k, v in leases]
            if args.actors else None}, indent=2))
        return 0
    now = time.time()
    print(f"{'NODE':<36} {'REGION':<10} {'LOAD':>9} {'ACTORS':>7} {'VIRTUAL':>8} "
          f"{'STATE':<9} {'SEEN':>6}")
    for n in sorted(nodes, key=lambda n: (n.region, n.node_id)):
        print(f"{n.node_id:<36} {n.region:<10} {n.load:>4}/{n.capacity:<4} {n.actors:>7} "
              f"{per_node.get(n.node_id, 0):>8} {'draining' if n.draining else 'up':<9} "
              f"{now - n.heartbeat_at:>5.1f}s")
    if not nodes:
        print("(no live nodes)")
    if args.actors:
        print()
        print(f"{'ACTOR':<50} NODE")
        for key, lease in sorted(leases):
            print(f"{key:<50} {lease.node_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
