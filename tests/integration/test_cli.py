"""The `switchboard` command line, run as a user runs it: `up` on a fresh data folder, `status`
finding what `up` started, Ctrl-C leaving no process behind, and `--help` on every command."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from switchboard.supervisor.nats_server import NatsServer

from tests.fixtures.nodes import COUNTER, NodeProcesses
from tests.support.actors import Count, Incr, node_env
from tests.support.client import ActorClient

pytestmark = pytest.mark.integration


async def run_cli(*args: str, env: dict[str, str] | None = None,
                  timeout: float = 30.0) -> tuple[int, str, str]:
    """`python -m switchboard ARGS` to completion: (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env or cli_env())
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def cli_env(data_dir: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in node_env().items() if k != "SWITCHBOARD_NATS"}
    if data_dir is not None:
        env["SWITCHBOARD_DATA_DIR"] = str(data_dir)
    return env


def children_of(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain `text` (e.g. a test's data folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().split(") ", 1)[1][:1]
        except (OSError, IndexError):
            continue  # gone meanwhile
        if text in cmdline and state != "Z":
            found.append(f"{proc.name}: {cmdline}")
    return found


async def test_every_command_has_help() -> None:
    commands = [[], ["up"], ["node"], ["status"]]
    results = await asyncio.gather(*(run_cli(*command, "--help") for command in commands))
    for command, (code, out, err) in zip(commands, results, strict=True):
        assert code == 0, (command, out, err)
        assert out.startswith(f"usage: switchboard {' '.join(command)}".rstrip()), out
    for command in ("up", "node", "status"):
        assert command in results[0][1]
    script = Path(sys.executable).parent / "switchboard"  # the console command, if installed
    if script.exists():
        proc = await asyncio.create_subprocess_exec(
            str(script), "--help", stdout=asyncio.subprocess.PIPE, env=cli_env())
        out, _ = await proc.communicate()
        assert proc.returncode == 0 and out.startswith(b"usage: switchboard")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
async def test_up_then_status_then_ctrl_c_leaves_no_process_behind(
    tmp_path: Path, node_processes: NodeProcesses
) -> None:
    data = tmp_path / "data"
    up = await node_processes.spawn(
        "up", "--port", "0", "--node-id", "solo", "--kinds", COUNTER,
        ready="node solo ready", name="up", env=cli_env(data))
    url = (data / "nats-url").read_text().strip()
    nats_pids = children_of(up.pid)
    assert len(nats_pids) == 1 and "nats-server" in Path(f"/proc/{nats_pids[0]}/cmdline") \
        .read_text(), up.describe("expected one nats-server child")
    assert (data / "nats" / "nats-server.conf").exists()

    async with ActorClient.connect(url) as client:
        await client.wait_for_nodes({"solo"}, kind="counter")
        assert await client.ask(client.ref("counter", "first"), Incr(), reply_type=Count) \
            == Count(value=1, node="solo")

    code, out, err = await run_cli("status", env=cli_env(data))  # NATS from the data folder
    assert code == 0, out + err
    assert "solo" in out and "local" in out, out
    code, out, err = await run_cli("status", "--json", "--actors", env=cli_env(data))
    assert code == 0, out + err
    assert "WARNING" not in err, err  # a clean run says nothing on stderr
    status = json.loads(out)
    assert [n["node_id"] for n in status["nodes"]] == ["solo"]
    assert status["actors"] == [{"actor": "counter.first", "node_id": "solo"}]

    assert len(processes_mentioning(str(data))) == 1  # nats-server, by its config path

    assert await up.stop() == 0
    assert not (data / "nats-url").exists()
    assert processes_mentioning(str(data)) == []
    assert not any(Path(f"/proc/{pid}").exists() for pid in nats_pids)

    code, out, err = await run_cli("status", env=cli_env(data))  # nothing to ask any more
    assert code == 2 and "no NATS to ask" in err, out + err


async def test_status_json_lists_nodes_with_regions_and_actors(
    nats_server: NatsServer, node_processes: NodeProcesses
) -> None:
    await node_processes.start_nodes([nats_server.url], ("a", "eu"), ("b", "us"))
    async with ActorClient.connect(nats_server.url) as client:
        await client.wait_for_nodes({"a", "b"}, kind="counter")
        host = (await client.ask(client.ref("counter", "listed"), Incr(),
                                 reply_type=Count)).node

    code, out, err = await run_cli("status", "--nats", nats_server.url, "--json", "--actors")
    assert code == 0, out + err
    status = json.loads(out)
    nodes = {n["node_id"]: n for n in status["nodes"]}
    assert {(i, n["region"]) for i, n in nodes.items()} == {("a", "eu"), ("b", "us")}
    assert all("counter" in n["kinds"] and not n["draining"] for n in nodes.values())
    assert nodes[host]["virtual_actors"] == 1
    assert status["actors"] == [{"actor": "counter.listed", "node_id": host}]

    code, out, err = await run_cli("status", "--nats", nats_server.url)
    assert code == 0, out + err
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line.strip()}
    assert rows["a"][1] == "eu" and rows["b"][1] == "us", out
