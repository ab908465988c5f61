"""`switchboard dial`: a test caller. It calls a SIP URI with our own user agent (as UAC),
listens to the greeting, plays a WAV as the caller's question, records everything the agent
says to a WAV, hangs up, and prints the timeline with millisecond offsets:

    $ switchboard dial sip:+15550100@127.0.0.1:5060 --play question.wav --record reply.wav
         0 ms  INVITE sent
         3 ms  180 Ringing
        61 ms  200 OK: answered (PCMU)
        84 ms  first agent audio (the greeting)
      3912 ms  question played (2.1 s)
      4422 ms  first answer audio (+510 ms after the question)
      7101 ms  BYE sent
    recorded 7.0 s to reply.wav (agent audio 5.4 s, peak -9 dBFS)

An agent "speaks" when a 20 ms frame is louder than -40 dBFS; an utterance ends after
`quiet` seconds below that. Exit status: 0 answered and heard, 1 answered but silent, 2 not
answered or bad input; failures say what to fix.
"""

from __future__ import annotations

import asyncio
import math
import socket
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from switchboard.actors.echo_agent import GreetingAudio
from switchboard.gateways.sip.call import SipCall
from switchboard.gateways.sip.codecs import CODECS, Pcm
from switchboard.gateways.sip.errors import CallFailed, SipError
from switchboard.gateways.sip.handler import CallEnd, MediaOptions, Refuse
from switchboard.gateways.sip.message import REASONS
from switchboard.gateways.sip.transport import TransportConfig
from switchboard.gateways.sip.uri import SipUri, UriError
from switchboard.gateways.sip.useragent import UserAgent, UserAgentConfig

__all__ = ["DialOptions", "DialResult", "dial", "dial_command"]

LOUD_RMS = 327.0  # -40 dBFS on int16
_HINTS = {
    404: "the number is not routed: add it to a tenant's `numbers` in the tenants file",
    403: "refused: the SIP node does not accept calls from this address (allow-list)",
    480: "the agent did not answer in time: see the node's log",
    486: "busy: the tenant is at its max_concurrent_calls; retry after the Retry-After",
    503: "unavailable or over the tenant's calls_per_minute: retry after the Retry-After",
    408: "no answer: is a node listening there (`switchboard up` prints its SIP URI)?",
}


@dataclass(frozen=True, slots=True)
class DialOptions:
    target: str                    # sip:+15550100@127.0.0.1:5060
    play: Path | None = None       # the caller's question, a PCM16 WAV (any rate, mono)
    record: Path | None = None     # everything the agent says, from answer to BYE
    dtmf: str = ""                 # keys pressed after the question
    hangup_after: float | None = None  # seconds after the answer; None: once the reply ends
    max_seconds: float = 60.0      # hang up after this long in any case
    greeting_wait: float = 8.0     # how long to wait for the greeting to end
    reply_wait: float = 10.0       # how long to wait for the reply to start
    quiet: float = 1.2             # silence that ends an utterance
    ring_timeout: float = 30.0
    response_timeout: float = 5.0  # not even 100 Trying by then: nothing listens there
    caller_id: str = "+15550111"
    codec: str = ""                # PCMU, PCMA or G722 (empty: the callee chooses ours)
    pcm_rate: int = 16000


@dataclass
class DialResult:
    answered: bool = False
    status: int | None = None
    timeline: list[tuple[float, str]] = field(default_factory=list)
    heard_seconds: float = 0.0     # loud agent audio
    recorded_seconds: float = 0.0
    peak_dbfs: float = -math.inf
    end: CallEnd | None = None

    @property
    def exit_code(self) -> int:
        return 2 if not self.answered else 0 if self.heard_seconds > 0 else 1


class _Ear:
    """What the caller hears: every frame (for the WAV) and when it was loud."""

    def __init__(self, rate: int, now: Callable[[], float]) -> None:
        self.rate = rate
        self._now = now
        self.frames: list[Pcm] = []
        self.loud_at: list[float] = []
        self.peak = 0

    def on_audio(self, pcm: Pcm, at: float, concealed: bool) -> None:
        self.frames.append(pcm)
        if not concealed and len(pcm):
            rms = float(np.sqrt(np.mean(pcm.astype(np.float32) ** 2)))
            if rms > LOUD_RMS:
                self.loud_at.append(self._now())
                self.peak = max(self.peak, int(np.abs(pcm.astype(np.int32)).max()))

    def first_loud_after(self, t: float) -> float | None:
        return next((x for x in self.loud_at if x > t), None)

    async def utterance(self, after: float, *, start_within: float,
                        quiet: float) -> tuple[float, float] | None:
        """(start, end) of the next utterance after `after`; None if none starts in time."""
        deadline = after + start_within
        while (start := self.first_loud_after(after)) is None:
            if self._now() > deadline:
                return None
            await asyncio.sleep(0.02)
        while self._now() - self.loud_at[-1] < quiet:
            await asyncio.sleep(0.02)
        return start, self.loud_at[-1] + 0.02


class _Refuser:
    """The dial tool takes no calls."""

    async def admit(self, call: SipCall) -> Refuse:
        return Refuse(403)

    def call_ended(self, call: SipCall, end: CallEnd) -> None:
        return None


async def dial(options: DialOptions, out: Callable[[str], None] = print) -> DialResult:
    """Place the call and run the script of the module docstring; never raises SipError."""
    uri = SipUri.parse(options.target)  # UriError: the caller's input, said by dial_command
    question = GreetingAudio.load(options.play).at_rate(options.pcm_rate) \
        if options.play else b""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    result = DialResult()

    def mark(what: str, at: float | None = None) -> None:
        when = (loop.time() if at is None else at) - t0
        result.timeline.append((when, what))
        out(f"{when * 1000:8.0f} ms  {what}")

    ear = _Ear(options.pcm_rate, loop.time)
    preferences = (CODECS[options.codec.upper()],) if options.codec else \
        (CODECS["G722"], CODECS["PCMU"], CODECS["PCMA"])
    media = MediaOptions(on_audio=ear.on_audio, pcm_rate=options.pcm_rate,
                         preferences=preferences, inactivity_timeout=options.max_seconds)
    transport = uri.transport.upper()
    config = UserAgentConfig(
        transport=TransportConfig(host=_local_host(uri.host), port=0, udp=transport == "UDP",
                                  tcp=transport == "TCP"),
        rtp_ports=(32000, 32999), rtp_host=_local_host(uri.host), flood=None,
        user_agent="switchboard-dial")
    async with UserAgent(config, _Refuser()) as ua:
        mark("INVITE sent")

        heard_back: list[int] = []

        def progress(status: int) -> None:
            heard_back.append(status)
            if status > 100:
                mark(f"{status} {REASONS.get(status, '')}".rstrip())

        placing = asyncio.ensure_future(ua.place_call(
            options.target, media=media, caller_id=options.caller_id,
            timeout=options.ring_timeout, on_progress=progress))
        await asyncio.wait({placing}, timeout=options.response_timeout)
        if not placing.done() and not heard_back:  # not even 100 Trying: nobody there
            placing.cancel()
            await asyncio.gather(placing, return_exceptions=True)
            mark(f"no response within {options.response_timeout:g} s")
            out(f"not answered: nothing answers SIP at {uri.host}:{uri.port or 5060} "
                f"({transport}); is a node listening there? (`switchboard up` prints the URI "
                "to call)")
            return result
        try:
            call = await placing
        except CallFailed as exc:
            result.status = exc.status
            retry = f"; Retry-After {exc.retry_after:g} s" if exc.retry_after else ""
            mark(f"{exc.status} {exc.reason}{retry}")
            out(f"not answered: {_HINTS.get(exc.status, 'see the callee for why')}")
            return result
        except (SipError, OSError) as exc:  # the transport: refused connection, no route
            mark(f"failed: {type(exc).__name__}")
            out("not answered: cannot reach the target; check its host, port and transport "
                "(`switchboard up` prints the URI to call)")
            return result
        result.answered, result.status = True, 200
        answered = loop.time()
        codec = call.rtp.media.codec.name if call.rtp is not None else "?"
        mark(f"200 OK: answered ({codec})")
        await _converse(call, options, question, ear, answered, mark)
        if call.end is None:
            mark("BYE sent")
            await call.hangup()
        else:
            mark(f"the agent hung up ({call.end.reason})", at=loop.time())
        result.end = await call.wait_ended()
    _summarise(result, ear, options, out)
    return result


async def _converse(call: SipCall, options: DialOptions, question: bytes, ear: _Ear,
                    answered: float, mark: Callable[..., None]) -> None:
    loop = asyncio.get_running_loop()
    deadline = answered + (options.hangup_after if options.hangup_after is not None
                           else options.max_seconds)
    try:
        async with asyncio.timeout_at(deadline):
            greeting = await ear.utterance(answered, start_within=options.greeting_wait,
                                           quiet=options.quiet)
            if greeting is None:
                mark("no greeting (the agent stayed silent)")
            else:
                mark("first agent audio (the greeting)", at=greeting[0])
            spoke_at = loop.time()
            if question and call.rtp is not None:
                mark("question playing")
                call.rtp.send_audio_nowait(np.frombuffer(question, dtype=np.int16))
                length = len(question) / 2 / options.pcm_rate
                await asyncio.sleep(length + 0.02)
                spoke_at = loop.time()
                mark(f"question played ({length:.1f} s)")
            if options.dtmf:
                try:
                    call.send_dtmf(options.dtmf)
                    keys = len(options.dtmf)
                    mark(f"DTMF sent ({keys} key{'s' if keys > 1 else ''})")
                except ValueError:
                    mark("DTMF not sent: the agent's side did not negotiate telephone-event")
            if question or options.dtmf:
                reply = await ear.utterance(spoke_at, start_within=options.reply_wait,
                                            quiet=options.quiet)
                if reply is None:
                    mark(f"no answer audio within {options.reply_wait:g} s")
                else:
                    mark(f"first answer audio (+{(reply[0] - spoke_at) * 1000:.0f} ms after "
                         "the question)", at=reply[0])
            if options.hangup_after is not None:
                await call.wait_ended()  # until the deadline: hang up on time
    except TimeoutError:
        pass
    except SipError:
        pass  # the call ended under us: the caller sees it in the timeline


def _summarise(result: DialResult, ear: _Ear, options: DialOptions,
               out: Callable[[str], None]) -> None:
    pcm = np.concatenate(ear.frames) if ear.frames else np.zeros(0, np.int16)
    result.recorded_seconds = len(pcm) / options.pcm_rate
    result.heard_seconds = len(ear.loud_at) * 0.02
    result.peak_dbfs = 20 * math.log10(ear.peak / 32768) if ear.peak else -math.inf
    if options.record is not None:
        with wave.open(str(options.record), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(options.pcm_rate)
            wav.writeframes(pcm.astype("<i2").tobytes())
    where = f" to {options.record}" if options.record else ""
    peak = f", peak {result.peak_dbfs:.0f} dBFS" if ear.peak else ""
    out(f"recorded {result.recorded_seconds:.1f} s{where} (agent audio "
        f"{result.heard_seconds:.1f} s{peak})")
    if result.answered and not ear.loud_at:
        out("the agent was silent: check its greeting (greeting_audio or greeting) and the "
            "node's log")


def _local_host(target_host: str) -> str:
    """The address of this machine that reaches `target_host` (127.0.0.1 for loopback)."""
    host = target_host.strip("[]")
    if host in ("localhost", "127.0.0.1", "::1"):
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host, 5060))  # no packet is sent: this only picks the route
            return str(probe.getsockname()[0])
        except OSError:
            return "0.0.0.0"


async def dial_command(target: str, *, play: Path | None = None, record: Path | None = None,
                       dtmf: str = "", hangup_after: float | None = None,
                       max_seconds: float = 60.0, caller_id: str = "+15550111",
                       codec: str = "") -> int:
    """`switchboard dial`: print the timeline; the exit status of `DialResult.exit_code`."""
    if codec and codec.upper() not in CODECS:
        print(f"switchboard dial: --codec must be one of {', '.join(CODECS)}")
        return 2
    try:
        SipUri.parse(target)
    except UriError:
        print("switchboard dial: the target must be a SIP URI, e.g. sip:+15550100@127.0.0.1:5060"
              " (`switchboard up` prints the one of its demo number)")
        return 2
    if play is not None and not play.is_file():
        print(f"switchboard dial: --play {play}: no such file")
        return 2
    options = DialOptions(target=target, play=play, record=record, dtmf=dtmf,
                          hangup_after=hangup_after, max_seconds=max_seconds,
                          caller_id=caller_id, codec=codec)
    try:
        result = await dial(options)
    except (wave.Error, ValueError, EOFError) as exc:
        print(f"switchboard dial: --play {play}: {exc} (need a PCM16 mono WAV)")
        return 2
    except OSError as exc:
        print(f"switchboard dial: {exc.strerror or exc} (check the target's host and port)")
        return 2
    return result.exit_code

