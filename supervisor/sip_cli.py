"""The command line's SIP parts: the `--sip-*` flags of `up` and `node`, and the `call` and
`dial` commands. Light on imports (the SIP stack loads only when a command needs it), so
`switchboard status` stays quick.

    add_sip_options(parser)                  in node_options(): --sip/--no-sip, --sip-port...
    sip = sip_config_from_args(args, cmd)    None when this node runs no SIP gateway
    add_call_parser(sub); add_dial_parser(sub)
    runner(run_call(args, default_nats)) / runner(run_dial(args))

`switchboard up` answers SIP by default on 127.0.0.1:5060 (a free port if 5060 is taken:
the banner prints the URI to call) with a `default` trunk that dials SIP URIs directly, so
`switchboard call` works on one machine. `switchboard node` runs a gateway only when given
`--sip-port` or `--sip-config` (or `--sip`).
"""

from __future__ import annotations

import argparse
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import msgspec
from switchboard.protocols.sip_config import SipConfig, SipTrunkConfig
from switchboard.storage.sip_file import load_sip_config

__all__ = ["add_call_parser", "add_dial_parser", "add_sip_options", "run_call", "run_dial",
           "sip_config_from_args"]

UP_SIP_PORT = 5060
LOOPBACK = "127.0.0.1"


def add_sip_options(parser: argparse.ArgumentParser) -> None:
    """The `--sip-*` flags of `up` and `node`."""
    sip = parser.add_argument_group("SIP gateway (phones, PBXs and carriers; docs/sip.md)")
    sip.add_argument("--sip", action=argparse.BooleanOptionalAction, default=None,
                     help="answer SIP calls (`up`: on by default; `node`: on with --sip-port "
                          "or --sip-config)")
    sip.add_argument("--sip-host", default=None,
                     help="address SIP and RTP listen on (`up` default 127.0.0.1; `node` "
                          "default 0.0.0.0)")
    sip.add_argument("--sip-port", type=int, default=None,
                     help="UDP+TCP port (`up` default 5060, or a free one if taken; 0: free)")
    sip.add_argument("--sip-advertise", default=None, metavar="HOST",
                     help="address put into Via, Contact and SDP (a NAT's public address)")
    sip.add_argument("--sip-config", type=Path, default=None, metavar="FILE",
                     help="trunks, TLS, limits (format: configs/sip.example.yaml)")


def sip_config_from_args(args: argparse.Namespace, command: str) -> SipConfig | None:
    """The node's `SipConfig` from its flags (`command`: "up" or "node"); None: no SIP.

    Raises `storage.sip_file.SipConfigError` for a bad --sip-config file."""
    wanted = args.sip
    if wanted is None:
        wanted = command == "up" or args.sip_port is not None or args.sip_config is not None
    if not wanted:
        return None
    config = load_sip_config(args.sip_config) if args.sip_config else SipConfig()
    changes: dict[str, object] = {}
    if command == "up" and args.sip_config is None:
        host = args.sip_host or LOOPBACK
        # One machine: dial SIP URIs directly, so the demo tenant can `switchboard call`.
        changes.update(host=host, rtp_host=host, port=UP_SIP_PORT, any_port_if_busy=True,
                       trunks=[SipTrunkConfig(name="default")])
    elif args.sip_host is not None:
        changes.update(host=args.sip_host, rtp_host=args.sip_host)
    if args.sip_port is not None:
        changes.update(port=args.sip_port, any_port_if_busy=False)
    if args.sip_advertise:
        changes["advertised_host"] = args.sip_advertise
    return msgspec.structs.replace(config, **changes) if changes else config


def add_call_parser(sub: Any) -> argparse.ArgumentParser:
    """`switchboard call` (supervisor/originate.py) in the command line's subparsers."""
    call: argparse.ArgumentParser = sub.add_parser(
        "call", help="place an outbound call from an agent, through its tenant's SIP trunk",
        description="Ask a tenant to call a number or SIP URI with one of its agents, then "
                    "follow the call until it ends.")
    call.add_argument("--nats", default=None, help="NATS URL (default: the one of `up`)")
    call.add_argument("--tenant", required=True)
    call.add_argument("--agent", required=True)
    call.add_argument("--target", required=True,
                      help="an E.164 number (through the trunk's proxy) or a SIP URI")
    call.add_argument("--caller-id", default="",
                      help="one of the tenant's numbers (default: its first)")
    call.add_argument("--no-follow", action="store_true",
                      help="print the call id and return without waiting for the end")
    return call


def run_call(args: argparse.Namespace, nats_url: str | None) -> Coroutine[Any, Any, int]:
    """The coroutine `main` runs for `switchboard call` (`nats_url`: the default NATS)."""
    from switchboard.supervisor.originate import originate_command

    url = args.nats or nats_url
    if not url:
        return _fail("switchboard call: no NATS to ask; pass --nats URL or start "
                     "`switchboard up`")
    return originate_command(url.split(","), args.tenant, args.agent, args.target,
                             caller_id=args.caller_id, follow=not args.no_follow)


def add_dial_parser(sub: Any) -> argparse.ArgumentParser:
    """`switchboard dial` (supervisor/dial.py) in the command line's subparsers."""
    dial: argparse.ArgumentParser = sub.add_parser(
        "dial", help="test caller: call a SIP URI, play a WAV, record the agent, print timings",
        description="Call an agent over SIP as a caller would, play a question, record the "
                    "reply and print the call's timeline in milliseconds.")
    dial.add_argument("target", help="SIP URI, e.g. sip:+15550100@127.0.0.1:5060")
    dial.add_argument("--play", type=Path, default=None, metavar="WAV",
                      help="the question, a PCM16 mono WAV, played after the greeting")
    dial.add_argument("--record", type=Path, default=None, metavar="WAV",
                      help="write everything heard, from answer to hang-up")
    dial.add_argument("--dtmf", default="", help="keys to press after the question")
    dial.add_argument("--hangup-after", type=float, default=None, metavar="SECONDS",
                      help="hang up this long after the answer (default: after the reply)")
    dial.add_argument("--max-seconds", type=float, default=60.0)
    dial.add_argument("--caller-id", default="+15550111")
    dial.add_argument("--codec", default="", choices=["", "PCMU", "PCMA", "G722"],
                      help="offer only this codec")
    return dial


def run_dial(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    """The coroutine `main` runs for `switchboard dial`."""
    from switchboard.supervisor.dial import dial_command

    return dial_command(args.target, play=args.play, record=args.record, dtmf=args.dtmf,
                        hangup_after=args.hangup_after, max_seconds=args.max_seconds,
                        caller_id=args.caller_id, codec=args.codec)


async def _fail(message: str) -> int:
    print(message)
    return 2
