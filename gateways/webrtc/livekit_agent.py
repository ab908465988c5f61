"""LiveKit: an agent joins a room as a participant and talks to the caller there.

For deployments that already run LiveKit (an SFU with its own clients, apps and telephony):
instead of the browser calling our WebRTC gateway, the caller is in a LiveKit room and
Switchboard sends the agent in. The call is otherwise a Switchboard call like any other: the
tenant admits it, a call actor on this node runs it (admission.py), with a `LiveKitLeg`
(livekit_leg.py) carrying the audio.

    agent = LiveKitAgent(starter, LiveKitSettings(url="wss://lk.example.com",
                                                  api_key="...", api_secret=Secret("...")))
    call_id = await agent.join("support-42", tenant_id="acme", agent_id="support",
                               caller_identity="user-17")

Tokens: `mint_room_token` uses `livekit-api`'s `AccessToken` with `VideoGrants` (room_join for
that room only, publish/subscribe/data) and a short TTL; the same helper gives a tenant's app
a token for the caller's side. The agent's own token marks it `kind="agent"` so LiveKit clients
can tell it from a person.

What is verified here (tests/unit/test_livekit_*.py, without a LiveKit server): token minting
and its grants (decoded with livekit-api's `TokenVerifier`), the leg's audio path with the
SDK's own `AudioFrame`, `AudioResampler` and `AudioSource`. Joining a real room (`connect`,
`track_subscribed`, publishing the agent's track, data messages) is NOT verified: no LiveKit
server runs in our tests (docs/web.md).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import secrets
from dataclasses import dataclass, field

from livekit import api, rtc
from switchboard.gateways.webrtc.admission import CallStarter
from switchboard.gateways.webrtc.livekit_leg import (
    EVENTS_TOPIC,
    SAMPLE_RATE,
    LiveKitLeg,
    audio_frames,
)
from switchboard.protocols.media import REMOTE_HANGUP, TRANSPORT_FAILED
from switchboard.protocols.tenants import Secret

log = logging.getLogger("switchboard.livekit")

DEFAULT_TOKEN_TTL = datetime.timedelta(minutes=15)


@dataclass(frozen=True)
class LiveKitSettings:
    url: str                      # wss://... of the LiveKit server
    api_key: str
    api_secret: Secret = field(repr=False)
    identity_prefix: str = "switchboard-agent"
    connect_timeout: float = 10.0


def mint_room_token(settings: LiveKitSettings, *, room: str, identity: str, name: str = "",
                    ttl: datetime.timedelta = DEFAULT_TOKEN_TTL, agent: bool = False,
                    can_publish: bool = True, can_subscribe: bool = True) -> str:
    """A LiveKit access token to join `room` (and only it) as `identity`."""
    grants = api.VideoGrants(room_join=True, room=room, can_publish=can_publish,
                             can_subscribe=can_subscribe, can_publish_data=True)
    token = (api.AccessToken(settings.api_key, settings.api_secret.reveal())
             .with_identity(identity).with_name(name or identity).with_ttl(ttl)
             .with_grants(grants))
    if agent:
        token = token.with_kind("agent")
    return token.to_jwt()


class LiveKitAgent:
    """Sends agents into LiveKit rooms; one `rtc.Room` connection per call."""

    def __init__(self, starter: CallStarter, settings: LiveKitSettings) -> None:
        self.starter = starter
        self.settings = settings

    async def join(self, room_name: str, *, tenant_id: str, agent_id: str,
                   caller_identity: str = "") -> str:
        """Admit a call, join `room_name`, start the call actor; return the call id.

        The caller is `caller_identity`'s microphone, or the first remote audio track when it
        is empty. Raises the web gateway's `WebError`s for refusals (errors.py).
        """
        call_id = f"lk-{secrets.token_hex(10)}"
        starter = self.starter
        admitted = await starter.admit(call_id, tenant_id, agent_id)
        room = rtc.Room()
        source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=100)
        identity = f"{self.settings.identity_prefix}-{call_id}"
        token = mint_room_token(self.settings, room=room_name, identity=identity, agent=True)
        tenant = starter.directory.tenant(tenant_id)
        config = tenant.agent(agent_id) if tenant is not None else None

        async def send_data(data: bytes) -> None:
            await room.local_participant.publish_data(data, reliable=True, topic=EVENTS_TOPIC)

        leg = LiveKitLeg(call_id, caller=caller_identity or "livekit",
                         callee=f"livekit:{room_name}", sink=source,
                         inactivity_timeout=config.rtp_inactivity_seconds if config else 30.0,
                         send_data=send_data, on_close=room.disconnect)

        def subscribed(track: rtc.Track, publication: rtc.RemoteTrackPublication,
                       participant: rtc.RemoteParticipant) -> None:
            if track.kind != rtc.TrackKind.KIND_AUDIO:
                return
            if caller_identity and participant.identity != caller_identity:
                return
            stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1,
                                     frame_size_ms=20)
            leg.attach_caller(audio_frames(stream))

        def left(participant: rtc.RemoteParticipant) -> None:
            if not caller_identity or participant.identity == caller_identity:
                leg.disconnect(REMOTE_HANGUP)

        room.on("track_subscribed", subscribed)
        room.on("participant_disconnected", left)
        room.on("disconnected", lambda *_: leg.disconnect(TRANSPORT_FAILED))
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                await room.connect(self.settings.url, token,
                                   rtc.RoomOptions(auto_subscribe=True))
                track = rtc.LocalAudioTrack.create_audio_track("switchboard-agent", source)
                await room.local_participant.publish_track(
                    track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        except Exception as exc:
            log.warning("call %s: joining LiveKit room failed (%s)", call_id,
                        type(exc).__name__)
            await room.disconnect()
            await starter.release(tenant_id, call_id)
            raise
        await starter.start(leg, admitted)
        log.info("call %s: agent %s of tenant %s joined a LiveKit room", call_id, agent_id,
                 tenant_id)
        return call_id
