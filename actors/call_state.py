"""`CallStateStore`: one call's `CallSnapshot` in the state bucket, written off the media path.

The call actor saves its snapshot (and, inside it, the agent's conversation state) after each
turn; a call actor restarted by the calls supervisor loads it and resumes the conversation.
Key: `call.<call_id>` in `sb_state` (the bucket virtual actors use; no virtual kind is named
`call`), `call_hex.<hex>` for the ids JetStream keys cannot hold. The key is deleted when the
call ends.

`save` returns at once: a task owned by the call actor (`run`) writes, latest first wins: a
save made while a write is in flight replaces any save still waiting, so a slow store never
queues more than one snapshot. A failed write is retried with back-off (a JetStream leader
election takes seconds); the snapshot is personal data and never logged. Before a restart
the crashed incarnation `flush`es, so the next one reads the latest state.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
from switchboard.protocols.conversation import CallSnapshot
from switchboard.protocols.subjects import lease_key
from switchboard.storage.kv import KeyValue, StorageError

log = logging.getLogger("switchboard.call")

CALL_STATE_KIND = "call"


def snapshot_key(call_id: str) -> str:
    """`call.<call_id>`; ids with a `:` (a valid token, not a valid KV key) go hex-encoded."""
    if ":" in call_id:
        return f"{CALL_STATE_KIND}_hex.{call_id.encode().hex()}"
    return lease_key(CALL_STATE_KIND, call_id)


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(CallSnapshot)


class CallStateStore:
    """Persistence of one call; `kv=None` persists nothing (and a crash then ends the call)."""

    def __init__(self, kv: KeyValue | None, call_id: str, *, retry_initial: float = 0.05,
                 retry_max: float = 1.0) -> None:
        self._kv = kv
        self._key = snapshot_key(call_id)
        self._call_id = call_id
        self._waiting: bytes | None = None
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self.writes = 0

    @property
    def enabled(self) -> bool:
        return self._kv is not None

    async def load(self, timeout: float) -> CallSnapshot | None:
        """The last snapshot saved, or None (none saved, the store is off or unreachable)."""
        if self._kv is None:
            return None
        try:
            async with asyncio.timeout(timeout):
                entry = await self._kv.get(self._key)
        except (StorageError, TimeoutError) as exc:
            log.error("call %s: could not load its saved state (%s)", self._call_id,
                      type(exc).__name__)
            return None
        if entry is None:
            return None
        try:
            return _DECODER.decode(entry.value)
        except msgspec.DecodeError:
            log.error("call %s: its saved state cannot be decoded; it is ignored", self._call_id)
            return None

    def save(self, snapshot: CallSnapshot) -> None:
        if self._kv is None:
            return
        self._waiting = _ENCODER.encode(snapshot)
        self._idle.clear()
        self._wakeup.set()

    async def run(self) -> None:
        """Write saved snapshots until cancelled (a task owned by the call actor)."""
        delay = self._retry_initial
        while True:
            if self._waiting is None:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            data, self._waiting = self._waiting, None
            try:
                assert self._kv is not None
                await self._kv.put(self._key, data)
            except StorageError as exc:
                if self._waiting is None:  # nothing newer: this one is still the latest
                    self._waiting = data
                log.warning("call %s: state not saved yet (%s); retrying in %.2fs",
                            self._call_id, type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
                continue
            self.writes += 1
            delay = self._retry_initial

    async def flush(self, timeout: float) -> bool:
        """Wait until the latest snapshot is written; False if `timeout` came first."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            log.error("call %s: its latest state was not saved within %.1fs", self._call_id,
                      timeout)
            return False
        return True

    async def delete(self, timeout: float) -> None:
        """Forget the call's state (it ended); best effort: a stale key holds no slot."""
        self._waiting = None
        if self._kv is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._kv.delete(self._key)
        except (StorageError, TimeoutError) as exc:
            log.warning("call %s: its saved state was not deleted (%s)", self._call_id,
                        type(exc).__name__)
