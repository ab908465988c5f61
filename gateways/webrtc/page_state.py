"""`PageState`: the call's state as the caller's page shows it, derived from what a leg sees.

    connecting -> greeting -> listening <-> speaking ... -> ended
                         (reconnecting while the page's connection is being restored)

The leg knows when it was answered, when its connection is lost, and when agent audio is
queued or sent; that is enough to tell the caller whether the agent is talking, with no help
from the call actor. Two rules keep the display honest:
- "listening" only after 300 ms without agent audio, so the gaps between TTS chunks or
  sentences do not make the badge flicker;
- the first stretch of agent audio after the answer is the "greeting", later ones "speaking".
An `ended` state carries the call.ended reason (the leg's remote_hangup becomes
caller_hangup, as the call actor records it).
"""

from __future__ import annotations

from collections.abc import Callable

from switchboard.protocols.call import CALLER_HANGUP
from switchboard.protocols.live import CallState, CallStateName
from switchboard.protocols.media import CANCELLED, REMOTE_HANGUP

QUIET_FRAMES = 15  # 300 ms of 20 ms frames without agent audio


class PageState:
    def __init__(self, publish: Callable[[CallState], None]) -> None:
        self._publish = publish
        self.state: CallStateName = "connecting"
        self._stretches = 0         # stretches of agent audio since the answer
        self._quiet = QUIET_FRAMES  # frames without agent audio, counted up to QUIET_FRAMES

    def agent_audio_queued(self) -> None:
        self._quiet = 0

    def agent_audio_cleared(self) -> None:
        self._quiet = QUIET_FRAMES  # barge-in: listening at once

    def frame_sent(self, had_audio: bool) -> bool:
        """Count one sent frame; True when the agent has just become quiet (update now)."""
        if had_audio:
            self._quiet = 0
            return False
        if self._quiet < QUIET_FRAMES:
            self._quiet += 1
            return self._quiet == QUIET_FRAMES
        return False

    def update(self, *, answered: bool, reconnecting: bool, end_reason: str | None,
               queued: float) -> None:
        """Recompute the state; publish it if it changed."""
        state: CallStateName
        if end_reason is not None:
            state = "ended"
        elif reconnecting:
            state = "reconnecting"
        elif not answered:
            state = "connecting"
        elif queued > 0 or self._quiet < QUIET_FRAMES:
            if self.state not in ("greeting", "speaking"):
                self._stretches += 1
            state = "greeting" if self._stretches <= 1 else "speaking"
        else:
            state = "listening"
        if state == self.state:
            return
        self.state = state
        reason = end_reason or ""
        if reason in (REMOTE_HANGUP, CANCELLED):
            reason = CALLER_HANGUP
        self._publish(CallState(state=state, reason=reason))
