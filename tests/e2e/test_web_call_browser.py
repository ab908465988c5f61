"""The web page in a real browser: headless Chromium (Debian's `chromium`, driven by
Playwright with the system browser) calls a real node (NATS server, tenant actor, calls
supervisor, echo agent with the WebRTC VAD) through the web gateway running in the node's
process.

- a call: the page connects, shows the greeting, and the greeting's audio reaches the
  browser (WebRTC inbound stats); the question, spoken by espeak-ng and played as the fake
  microphone, reaches the call actor (its agent sees the frames and the VAD's turn) and the
  echo agent plays it back; Hang up ends the call and frees the tenant's slot;
- a denied microphone shows its message;
- a refused call (the tenant's quota is 0; an unknown agent) shows the server's message and
  when to retry.

Screenshots go to tests/artifacts/web/ (gitignored). ICE runs over this machine's own
addresses; Chromium is told not to hide them behind mDNS names, so nothing is multicast.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from switchboard.actors.agent import CallControl, CallInfo, Greeting, VoiceActivity
from switchboard.actors.echo_agent import EchoBrain
from switchboard.gateways.webrtc import CallStarter, WebConfig, WebGateway, mint_token_for
from switchboard.protocols.audio import AudioChunk, SpeechEnded
from switchboard.protocols.call import GetUsage, Usage
from switchboard.protocols.live import LiveEventSink, LiveTranscript, TurnLatency
from switchboard.protocols.tenants import AgentConfig
from switchboard.supervisor.nats_server import NatsServer
from switchboard.supervisor.node import Node, NodeConfig

from tests.support.harness import wait_until

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists() or shutil.which("espeak-ng") is None,
                       reason="needs Debian's chromium and espeak-ng "
                              "(scripts/bootstrap-system.sh test)"),
]
playwright_api = pytest.importorskip("playwright.async_api")

ARTIFACTS = Path(__file__).parents[1] / "artifacts" / "web"
GREETING_WAV = Path(__file__).parents[2] / "configs" / "audio" / "echo-greeting.wav"
QUESTION = "What time does the store open tomorrow?"
QUESTION_AT = 6.5  # seconds into the fake microphone: after the 5.4 s greeting
TENANTS = f"""
version: 1
tenants:
  - id: demo
    agents:
      - id: demo
        name: Demo echo agent
        brain: echo
        greeting_audio: {GREETING_WAV}
  - id: shop
    web_token_secret: "shop-tenant-secret-0123456789abcdef"
    agents:
      - id: sales
        name: Sales
        brain: echo
        greeting_audio: {GREETING_WAV}
  - id: closed
    web_token_secret: "closed-tenant-secret-0123456789abcdef"
    limits: {{max_concurrent_calls: 0, retry_after_seconds: 9}}
    agents:
      - id: support
        brain: echo
"""


# -- the node ------------------------------------------------------------------------------

class TapBrain:
    """The echo brain, with a tap on what its agents receive: proof that the caller's audio
    reached the call actor (frames, and the VAD's decisions on them)."""

    def __init__(self) -> None:
        self.inner = EchoBrain()
        self.frames = 0
        self.voiced = 0
        self.turns: list[SpeechEnded] = []

    def __call__(self, config: AgentConfig) -> TapAgent:
        return TapAgent(self.inner(config), self)


class TapAgent:
    def __init__(self, inner: Any, tap: TapBrain) -> None:
        self.inner, self.tap = inner, tap

    async def on_start(self, call: CallInfo, control: CallControl) -> Greeting | None:
        result: Greeting | None = await self.inner.on_start(call, control)
        return result

    def on_audio(self, frame: AudioChunk, vad: VoiceActivity) -> None:
        self.tap.frames += 1
        self.tap.voiced += vad.speaking
        if isinstance(vad.event, SpeechEnded):
            self.tap.turns.append(vad.event)
        self.inner.on_audio(frame, vad)

    def on_dtmf(self, digit: str) -> None:
        self.inner.on_dtmf(digit)

    async def on_end(self, reason: str) -> None:
        await self.inner.on_end(reason)


@dataclass
class WebNodeProcess:
    node: Node
    gateway: WebGateway
    tap: TapBrain

    async def usage(self, tenant: str) -> Usage:
        assert self.node.system is not None
        usage: Usage = await self.node.system.ref("tenant", tenant).ask(GetUsage(),
                                                                        reply_type=Usage)
        return usage


@pytest.fixture
async def web_node(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[WebNodeProcess]:
    """A node on a real NATS server with the web gateway in its process, in demo mode."""
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(TENANTS)
    node = Node(NodeConfig(nats_urls=[nats_server.url], tenants_file=tenants,
                           heartbeat_interval=0.5))
    tap = TapBrain()
    node.brains["echo"] = tap  # type: ignore[assignment]
    await node.start()
    assert node.system is not None
    gateway = WebGateway(CallStarter(node.system, node.legs, node.directory),
                         WebConfig(host="127.0.0.1", port=0, demo_mode=True,
                                   state_dir=tmp_path / "web"))
    await gateway.start()
    try:
        yield WebNodeProcess(node, gateway, tap)
    finally:
        await gateway.close()
        await node.drain(timeout=5)


# -- the browser ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The caller's microphone: silence through the greeting, the question, then silence."""
    folder = tmp_path_factory.mktemp("mic")
    spoken = folder / "spoken.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(spoken), QUESTION],
                   check=True, capture_output=True)
    with wave.open(str(spoken)) as source:
        rate = source.getframerate()
        pcm = np.frombuffer(source.readframes(source.getnframes()), np.int16)
    padded = np.concatenate([np.zeros(int(QUESTION_AT * rate), np.int16), pcm,
                             np.zeros(4 * rate, np.int16)])
    path = folder / "question.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(padded.tobytes())
    return path


def chromium_args(*, microphone: Path | None, grant: bool) -> list[str]:
    args = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            "--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required",
            "--disable-features=WebRtcHideLocalIpsWithMdns"]
    if grant:
        args.append("--use-fake-ui-for-media-stream")
    if microphone is not None:
        args.append(f"--use-file-for-fake-audio-capture={microphone}%noloop")
    return args


@pytest.fixture
async def browser_factory() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as playwright:
        browsers: list[Any] = []

        async def launch(*, microphone: Path | None = None, grant: bool = True) -> Any:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True,
                args=chromium_args(microphone=microphone, grant=grant))
            browsers.append(browser)
            return browser

        try:
            yield launch
        finally:
            for browser in browsers:
                await browser.close()


async def open_page(browser: Any, url: str) -> Any:
    page = await browser.new_page(viewport={"width": 900, "height": 1000})
    await page.goto(url)
    await page.wait_for_function("() => !document.getElementById('agent').disabled || "
                                 "!document.getElementById('message').hidden")
    return page


async def shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def page_value(page: Any, expression: str) -> Any:
    return await page.evaluate(f"() => {expression}")


# -- the tests -----------------------------------------------------------------------------

async def test_a_call_from_the_page(web_node: WebNodeProcess, browser_factory: Any,
                                    question_wav: Path) -> None:
    browser = await browser_factory(microphone=question_wav)
    page = await open_page(browser, web_node.gateway.url)
    assert await page.locator("#agent").input_value() == "demo"
    await shot(page, "01-ready")

    await page.click("#call")
    await page.wait_for_selector("body[data-state='greeting']", timeout=10_000)
    # The greeting's audio reaches the browser: bytes and energy on the inbound RTP stream.
    await page.wait_for_function(
        "() => { const s = window.switchboardPage.stats; "
        "return s && s.packetsReceived > 50 && s.totalAudioEnergy > 0.001; }", timeout=10_000)
    await shot(page, "02-greeting")
    assert (await web_node.usage("demo")).active_calls == 1
    stats = await page_value(page, "window.switchboardPage.stats")
    assert stats["codec"] == "opus/48000" and stats["bytesSent"] > 0

    # The question (at 6.5 s on the fake microphone) reaches the call actor: its agent sees
    # the frames, the VAD hears a turn of about the question's length, and the echo plays it.
    await wait_until(lambda: len(web_node.tap.turns) >= 1, timeout=20,
                     what="the call actor heard the question")
    turn = web_node.tap.turns[0]
    assert 1.0 < turn.at - turn.started_at < 4.0
    assert web_node.tap.frames > 300  # > 6 s of 20 ms frames reached the agent
    await page.wait_for_function(
        "() => window.switchboardPage.states.includes('speaking')", timeout=10_000)
    await shot(page, "03-echo")
    assert await page.locator("#state").inner_text() == "Agent speaking"
    states = await page_value(page, "window.switchboardPage.states")
    assert states[:3] == ["idle", "connecting", "greeting"] and "listening" in states

    # The live channel is ready for the conversation loop (issue 4): what a call actor
    # publishes through the leg shows up on the page, partials replaced by finals.
    call_id = await page_value(page, "window.switchboardPage.callId")
    leg = web_node.node.legs.get(call_id)
    assert isinstance(leg, LiveEventSink)
    leg.publish(LiveTranscript(speaker="caller", text="What time", final=False, turn=1))
    leg.publish(LiveTranscript(speaker="caller", text=QUESTION, turn=1))
    leg.publish(LiveTranscript(speaker="agent", text="We open at nine.", turn=1))
    leg.publish(TurnLatency(turn=1, total_ms=642.4,
                            stages={"eot_ms": 300, "llm_ms": 210.2, "tts_ms": 132.2}))
    await page.wait_for_function("() => window.switchboardPage.latencies.length === 1")
    assert await page.locator("#transcript .who").all_inner_texts() == ["You", "Agent"]
    assert await page.locator("#transcript .who + span").all_inner_texts() == [
        QUESTION, "We open at nine."]
    assert await page.locator("#latency-last").inner_text() == "Last turn: 642 ms"
    assert await page.locator("#latency li").inner_text() == \
        "Turn 1: 642 ms (eot 300 · llm 210 · tts 132)"
    await shot(page, "03b-transcript-and-latency")

    await page.click("#hangup")
    await page.wait_for_selector("body[data-state='ended']", timeout=5_000)
    await shot(page, "04-ended")
    assert await page.locator("#state").inner_text() == "Call ended (you hung up)"

    async def slot_free() -> bool:
        return (await web_node.usage("demo")).active_calls == 0

    await wait_until(slot_free, timeout=5, what="the tenant's slot was released")


async def test_a_denied_microphone_says_so(web_node: WebNodeProcess,
                                           browser_factory: Any) -> None:
    browser = await browser_factory(grant=False)
    page = await open_page(browser, web_node.gateway.url)
    await page.click("#call")
    await page.wait_for_selector("body[data-error='microphone_denied']", timeout=10_000)
    message = await page.locator("#message").inner_text()
    assert "Microphone access was denied" in message and "press Call again" in message
    assert await page_value(page, "window.switchboardPage.state") == "idle"
    await shot(page, "05-microphone-denied")
    assert (await web_node.usage("demo")).calls_last_minute == 0  # nothing was admitted


async def test_a_refused_call_shows_the_reason_and_when_to_retry(
        web_node: WebNodeProcess, browser_factory: Any) -> None:
    token = mint_token_for(web_node.node.directory, "closed", "support")
    browser = await browser_factory()
    page = await open_page(browser, f"{web_node.gateway.url}#token={token}")
    assert await page.locator("#agent").input_value() == "support"
    await page.click("#call")
    await page.wait_for_selector("body[data-error='quota_exceeded']", timeout=10_000)
    message = await page.locator("#message").inner_text()
    assert "The call was refused" in message and "limit of 0 concurrent calls" in message
    assert "try again in 9 s" in message
    assert await page.locator("#call").is_disabled()  # until the retry time has passed
    await shot(page, "06-refused-quota")

    await page.goto(f"{web_node.gateway.url}?agent=nobody")
    await page.wait_for_function("() => !document.getElementById('agent').disabled")
    await page.click("#call")
    await page.wait_for_selector("body[data-error='not_found']", timeout=10_000)
    assert "agent nobody of tenant demo is not configured" in \
        await page.locator("#message").inner_text()
    await shot(page, "07-refused-unknown-agent")
    await asyncio.sleep(0)  # nothing pending on the loop


async def test_the_widget_calls_from_another_site(web_node: WebNodeProcess,
                                                  browser_factory: Any,
                                                  question_wav: Path) -> None:
    """One script tag on a tenant's site (another origin) adds a button that calls the agent
    its token names, through CORS, and hangs up."""
    token = mint_token_for(web_node.node.directory, "shop", "sales")
    site = web.Application()
    html = (f"<!doctype html><html><body><h1>Shop</h1>"
            f"<script src='{web_node.gateway.url}widget.js' data-token='{token}' "
            f"data-label='Talk to sales'></script></body></html>")

    async def home(request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    site.router.add_get("/", home)
    runner = web.AppRunner(site)
    await runner.setup()
    server = web.TCPSite(runner, "127.0.0.1", 0)
    await server.start()
    port = runner.addresses[0][1]
    try:
        browser = await browser_factory(microphone=question_wav)
        page = await browser.new_page(viewport={"width": 700, "height": 500})
        await page.goto(f"http://127.0.0.1:{port}/")  # not the gateway's origin
        button = page.locator("#switchboard-widget button")
        await button.wait_for()
        assert await button.inner_text() == "Talk to sales"
        await button.click()
        panel = page.locator("#switchboard-widget .panel")
        await page.wait_for_function(
            "() => document.querySelector('#switchboard-widget').shadowRoot"
            ".querySelector('.panel').textContent === 'Agent greeting'", timeout=10_000)
        assert (await web_node.usage("shop")).active_calls == 1
        assert await button.inner_text() == "Hang up"
        await shot(page, "08-widget-in-call")
        await button.click()
        await page.wait_for_function(
            "() => document.querySelector('#switchboard-widget').shadowRoot"
            ".querySelector('button').textContent === 'Talk to sales'", timeout=5_000)
        assert await panel.inner_text() == "Call ended"

        async def slot_free() -> bool:
            return (await web_node.usage("shop")).active_calls == 0

        await wait_until(slot_free, timeout=5, what="the widget's call ended")
    finally:
        await runner.cleanup()
