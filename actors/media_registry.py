"""`MediaLegRegistry`: where a gateway leaves a call's media leg for the call actor to pick up.

Messages between actors must be serializable, and a media leg (sockets, queues, a pacing task)
is not. So the gateway that terminates the media registers the leg here under the call id,
then sends the calls supervisor of the same node a plain `StartCall`; the call actor looks the
leg up by its call id. This is also why call actors run on the media node: the registry is
node-local and audio never crosses the network.

Ownership: the gateway registers; the call actor unregisters when the call is over (the leg
has been hung up by then). `unregister` is idempotent, so a gateway cleaning up after a
failed setup may call it too.
"""

from __future__ import annotations

from switchboard.protocols.media import MediaLeg


class LegAlreadyRegistered(ValueError):
    """Another leg is registered under this call id: call ids must be unique per node."""


class MediaLegRegistry:
    def __init__(self) -> None:
        self._legs: dict[str, MediaLeg] = {}

    def register(self, leg: MediaLeg) -> None:
        existing = self._legs.get(leg.call_id)
        if existing is not None and existing is not leg:
            raise LegAlreadyRegistered(f"a media leg is already registered for call "
                                       f"{leg.call_id}; call ids must be unique")
        self._legs[leg.call_id] = leg

    def get(self, call_id: str) -> MediaLeg | None:
        return self._legs.get(call_id)

    def unregister(self, call_id: str, leg: MediaLeg | None = None) -> None:
        """Forget the call's leg (only if it is `leg`, when given)."""
        if leg is None or self._legs.get(call_id) is leg:
            self._legs.pop(call_id, None)

    def __len__(self) -> int:
        return len(self._legs)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._legs
