"""`Speaker`: hands the agent's audio to the media leg and knows which words the caller heard.

Every chunk played is noted in a ledger: where its audio ends (seconds of agent audio handed
to the leg so far) and which text it completes (`key`: an assistant message of the
conversation; `offset`: characters of that message fully spoken once the chunk has played,
from `SynthesisChunk.text_offset`). The leg plays in real time, so what the caller has heard
is everything handed over minus what is still queued (`playout_queued`). On a barge-in
`interrupt()` clears the leg's playout at once and returns, for each message cut short, the
offset the caller heard up to: the conversation keeps only that.

`room()` paces the handing over: at most `max_ahead` seconds wait in the leg, so a barge-in
throws away little synthesized audio and a leg's playout limit is never reached.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

from switchboard.actors.agent import CallControl

NOT_RECORDED = -1  # key of audio that completes no message text (a filler phrase)


@dataclass(slots=True)
class _Entry:
    end: float   # seconds of agent audio handed over once this chunk is
    key: int
    offset: int


class Speaker:
    def __init__(self, control: CallControl, *, max_ahead: float = 3.0,
                 poll: float = 0.02) -> None:
        self._control = control
        self.max_ahead = max_ahead
        self._poll = poll
        self._pushed = 0.0
        self._ledger: deque[_Entry] = deque()
        self._heard: dict[int, int] = {}  # key -> offset known to be heard
        self.last_play_at: float | None = None  # monotonic

    @property
    def queued(self) -> float:
        """Seconds of agent audio handed over and not played yet."""
        return self._control.playout_queued

    def play(self, pcm: bytes, *, key: int = NOT_RECORDED, offset: int = 0) -> None:
        """Hand `pcm` to the leg (raises `MediaError` if the leg cannot take it)."""
        self._control.play(pcm)
        self.record(len(pcm) / 2 / self._control.sample_rate, key=key, offset=offset)
        self.last_play_at = time.monotonic()

    def record(self, seconds: float, *, key: int = NOT_RECORDED, offset: int = 0,
               in_leg: bool = True) -> None:
        """Note audio handed to the leg; `in_leg=False` when someone else is about to hand
        it over (the call actor plays the greeting the agent yields)."""
        self._pushed += seconds
        if key != NOT_RECORDED:
            self._ledger.append(_Entry(self._pushed, key, offset))
        if in_leg:
            self._settle(self._pushed - self.queued)

    async def room(self) -> None:
        """Wait until less than `max_ahead` seconds of audio are queued in the leg."""
        while (ahead := self.queued - self.max_ahead) >= 0:
            await asyncio.sleep(max(ahead, self._poll))

    async def drained(self) -> None:
        """Wait until the caller has heard everything handed over."""
        while (queued := self.queued) > 0:
            await asyncio.sleep(min(max(queued, self._poll), 0.2))

    def interrupt(self) -> dict[int, int]:
        """Barge-in: stop the agent's audio now; {key: offset heard} of the texts cut short."""
        dropped = self._control.clear_playout()
        played = self._pushed - dropped
        self._settle(played)
        cut = {entry.key: self._heard.get(entry.key, 0) for entry in self._ledger}
        self._ledger.clear()
        self._pushed = played
        return cut

    def _settle(self, played: float) -> None:
        ledger, heard = self._ledger, self._heard
        while ledger and ledger[0].end <= played + 1e-9:
            entry = ledger.popleft()
            if entry.offset > heard.get(entry.key, -1):
                heard[entry.key] = entry.offset
