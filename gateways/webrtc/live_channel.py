"""`LiveChannel`: live call events to the caller's page, and the page's requests back, over
the WebRTC data channel the page opens (label `events`; protocols/live.py has the messages).

Why a data channel and not a websocket: it rides the call's own DTLS path (no second
connection to authenticate, proxy or keep alive), and it follows the call through a
reconnection: the new peer connection brings a new channel, `attach` swaps it in and re-sends
the latest call state, so the page is never left showing a stale one.

Events published before the channel is open (the greeting often starts before SCTP is up)
wait in a bounded backlog; past it the oldest transcript lines go first. Sending never
blocks and never raises: a caller who is gone simply misses the events. Text from the page
is decoded with a typed decoder; anything else is counted and ignored.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

import msgspec
from aiortc import RTCDataChannel
from switchboard.protocols.live import CallState, LiveEvent, PageMessage

log = logging.getLogger("switchboard.web.leg")

CHANNEL_LABEL = "events"
_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(PageMessage)


class LiveChannel:
    def __init__(self, *, on_message: Callable[[PageMessage], None], backlog: int = 200) -> None:
        self._on_message = on_message
        self._channel: RTCDataChannel | None = None
        self._backlog: deque[bytes] = deque(maxlen=backlog)
        self._state: CallState | None = None
        self.sent = 0
        self.ignored = 0

    @property
    def open(self) -> bool:
        return self._channel is not None and self._channel.readyState == "open"

    def attach(self, channel: RTCDataChannel) -> None:
        """Use `channel` from now on (a new peer connection's channel replaces the old one)."""
        if channel.label != CHANNEL_LABEL:
            return
        self._channel = channel
        channel.on("message", lambda data: self._received(channel, data))
        if channel.readyState == "open":
            self._opened(channel)
        else:
            channel.on("open", lambda: self._opened(channel))

    def publish(self, event: LiveEvent) -> None:
        if isinstance(event, CallState):
            self._state = event
        data = _ENCODER.encode(event)
        channel = self._channel
        if channel is not None and channel.readyState == "open":
            self._send(channel, data)
        else:
            self._backlog.append(data)

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) until what was sent has left, e.g. the last state before a hang-up."""
        channel = self._channel
        if channel is None or channel.readyState != "open":
            return
        try:
            async with asyncio.timeout(timeout):
                while channel.bufferedAmount > 0 and channel.readyState == "open":
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.05)  # SCTP hands the chunk to DTLS on its next turn
        except TimeoutError:
            pass

    def _opened(self, channel: RTCDataChannel) -> None:
        if channel is not self._channel:
            return
        pending = list(self._backlog)
        self._backlog.clear()
        if self._state is not None and _ENCODER.encode(self._state) not in pending:
            pending.append(_ENCODER.encode(self._state))  # a reconnected page: the current state
        for data in pending:
            self._send(channel, data)

    def _send(self, channel: RTCDataChannel, data: bytes) -> None:
        try:
            channel.send(data.decode())
            self.sent += 1
        except Exception as exc:  # noqa: BLE001 - best effort: the channel closed under us
            log.debug("live event not sent (%s)", type(exc).__name__)

    def _received(self, channel: RTCDataChannel, data: str | bytes) -> None:
        if channel is not self._channel:
            return
        try:
            message = _DECODER.decode(data)
        except msgspec.DecodeError:
            self.ignored += 1
            return
        self._on_message(message)
