"""`WebGateway`: the node's HTTP(S) server for browser calls: the page, the widget, the API.

    gateway = WebGateway(CallStarter(node.system, node.legs, node.directory),
                         WebConfig(host="127.0.0.1", port=8080, demo_mode=True))
    await gateway.start()          # listening; gateway.url is the page's address
    ...
    await gateway.close()          # before the node stops its actors (see below)

Serves `/` (the page), `/widget.js` (the embeddable widget), `/static/*` (their scripts and
styles) and the API of api.py under `/api/`. The API answers any origin (CORS `*`): it is
authenticated by bearer tokens and per-call secrets, never by cookies, so a tenant's site on
another origin can call it and no ambient credential can be abused. HTTPS as tls.py decides.
The access log is off: URLs are not secret, but a request log is where tokens leak first.

`close()` stops listening, then disconnects every web call still up with reason `shutdown`:
their call actors end them properly (quota released, `call.ended` published), so call it
while the node's actors and NATS are still up, i.e. first thing in the node's drain.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from switchboard.gateways.webrtc.admission import CallStarter
from switchboard.gateways.webrtc.api import ApiSettings, CallApi, error_response
from switchboard.gateways.webrtc.errors import NotFound, WebError
from switchboard.gateways.webrtc.ice import IceServer
from switchboard.gateways.webrtc.tls import TlsConfig, server_ssl_context
from switchboard.protocols.call import SHUTDOWN

log = logging.getLogger("switchboard.web")

STATIC_DIR = Path(__file__).parent / "static"
_PAGE_HEADERS = {
    # The page loads nothing from elsewhere; the microphone is for this origin only.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'",
    "Permissions-Policy": "microphone=(self)",
    "Cache-Control": "no-cache",
}
_CORS = {"Access-Control-Allow-Origin": "*",
         "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
         "Access-Control-Allow-Headers": "Authorization, Content-Type",
         "Access-Control-Max-Age": "600"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ListenError(OSError):
    """The gateway's address is taken or not ours; the message says which and what to do."""


@dataclass(frozen=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8080                 # 0: any free port (tests)
    tls: TlsConfig = field(default_factory=TlsConfig)
    ice_servers: tuple[IceServer, ...] = ()
    demo_mode: bool = False          # loopback pages may call the demo tenant without a token
    demo_tenant: str = "demo"
    state_dir: Path = field(default_factory=lambda: Path.home() / ".switchboard")
    max_calls: int = 100
    connect_timeout: float = 15.0
    reconnect_grace: float = 15.0


class WebGateway:
    def __init__(self, starter: CallStarter, config: WebConfig) -> None:
        self.config = config
        self.api = CallApi(starter, ApiSettings(
            ice_servers=config.ice_servers, demo_mode=config.demo_mode,
            demo_tenant=config.demo_tenant, max_calls=config.max_calls,
            connect_timeout=config.connect_timeout, reconnect_grace=config.reconnect_grace))
        self._runner: web.AppRunner | None = None
        self._scheme = "http"
        self._port = config.port

    def app(self) -> web.Application:
        """The aiohttp application (tests may serve it with aiohttp's TestServer)."""
        # _cors outermost: error answers carry CORS headers too, so a widget can read them.
        app = web.Application(client_max_size=64 * 1024, middlewares=[_cors, _errors])
        app.add_routes(self.api.routes())
        app.add_routes([web.get("/", _file("index.html", _PAGE_HEADERS)),
                        web.get("/widget.js", _file("widget.js", {"Cache-Control": "no-cache"})),
                        web.get("/healthz", _health),
                        web.static("/static", STATIC_DIR, append_version=False)])
        return app

    async def start(self) -> None:
        config = self.config
        ice_log = logging.getLogger("aioice")
        if ice_log.level == logging.NOTSET:
            # aioice logs every candidate pair at INFO: callers' IP addresses, personal data.
            # An operator who sets its level on purpose (debugging ICE) keeps that level.
            ice_log.setLevel(logging.WARNING)
        context = server_ssl_context(config.host, config.tls, config.state_dir)
        self._scheme = "https" if context is not None else "http"
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False,
                                     shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, config.host, config.port, ssl_context=context)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise ListenError(f"the web gateway cannot listen on {config.host}:"
                              f"{config.port} ({exc.strerror}); choose another port "
                              "(--web-port) or stop what uses it") from None
        addresses = self._runner.addresses
        if addresses:
            self._port = int(addresses[0][1])
        log.info("web gateway listening on %s (demo mode %s)", self.url,
                 "on" if config.demo_mode else "off")

    @property
    def url(self) -> str:
        host = self.config.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        return f"{self._scheme}://{host}:{self._port}/"

    @property
    def active_calls(self) -> int:
        return len(self.api.calls)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop listening, disconnect the web calls still up (`shutdown`), wait for them."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        legs = [call.leg for call in self.api.calls.values()]
        for leg in legs:
            leg.disconnect(SHUTDOWN)
        if legs:
            _, pending = await asyncio.wait(
                [asyncio.ensure_future(leg.wait_closed()) for leg in legs], timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("web gateway: %d calls did not close within %.0f s", len(pending),
                            timeout)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except WebError as error:
        return error_response(error)
    except web.HTTPNotFound:
        if request.path.startswith("/api/"):
            return error_response(NotFound(f"no API at {request.path}"))
        raise
    except web.HTTPException:
        raise
    except Exception as exc:  # an answer, not a dropped connection; the cause goes to the log
        log.exception("web gateway: %s %s failed", request.method, request.path)
        return error_response(WebError(f"the server failed handling this request "
                                       f"({type(exc).__name__}); it has been logged"))


@web.middleware
async def _cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/api/"):
        return await handler(request)
    if request.method == "OPTIONS":
        return web.Response(status=204, headers=_CORS)
    response = await handler(request)
    response.headers.update(_CORS)
    return response


def _file(name: str, headers: dict[str, str]) -> Handler:
    path = STATIC_DIR / name

    async def serve(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path, headers=headers)

    return serve


async def _health(request: web.Request) -> web.Response:
    return web.Response(text="ok")
