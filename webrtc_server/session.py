"""One media session: an RTCPeerConnection, the synthetic agent, and their stats.

The thin shell around the pure pieces: it wires aiortc's callbacks to the
session lifecycle (:mod:`webrtc_server.core.phases`) and to the agent
(:mod:`agent.turns`), and owns every resource a session holds —
the peer connection (and so its UDP socket), the tasks reading remote tracks,
the setup timer — so that :meth:`MediaSession.close` leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack
from av import AudioFrame

from agent.events import EventWriter, turn_timings
from agent.turns import Agent, AgentEvent, ResponseDone
from webrtc_server import aioice_patch
from webrtc_server.config import MediaConfig
from webrtc_server.core.answer import PreparedOffer, local_answer, wire_answer
from webrtc_server.core.phases import CloseReason, Milestone, Phase, SessionLifecycle
from webrtc_server.media import PacedAudioTrack, frame_samples, read_track
from webrtc_server.media_socket import Endpoint, MediaSocket, MediaSockets
from webrtc_server.metrics import MediaMetrics
from wire import route_token
from wire.addr import Address, format_hostport
from wire.service import ApiError
from wire.speech import Samples, level_dbfs
from wire.streamstats import ArrivalStats, with_rtp

log = logging.getLogger("rtclab.media")

# Events produced before the data channel opens wait here; a caller that never
# opens it must not make the server hold events without bound.
MAX_UNSENT_EVENTS = 256

# The data channel the agent's events travel on, named as the published service names it.
CHANNEL_LABEL = "oai-events"

# Route tokens carry 32 random bits; a ufrag another session on the same
# socket holds is drawn again.  Eight draws all colliding means a bug.
TOKEN_DRAWS = 8


class MediaSession:
    """Create, :meth:`answer`, then :meth:`close` (or let the peer or the timer close it)."""

    def __init__(
        self,
        session_id: str,
        config: MediaConfig,
        metrics: MediaMetrics,
        sockets: MediaSockets,
        *,
        on_closed: Callable[[MediaSession], None],
        on_peer_connection: Callable[[RTCPeerConnection], None] = lambda _pc: None,
        clock: Callable[[], float] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._clock = clock or self._loop.time
        now = self._clock()
        self.id = session_id
        self.config = config
        self.created_epoch = wall_clock()
        self.lifecycle = SessionLifecycle(created_s=now)
        self.agent = Agent(config.agent)
        self.uplink = ArrivalStats()
        self.uplink_rtp: tuple[int, int] | None = None  # refreshed by refresh_rtp_stats()
        self.downlink_sent = 0
        self.server_ufrag: str | None = None
        self.local_port: int | None = None
        self.remote: Address | None = None
        self._metrics = metrics
        self._sockets = sockets
        # The media socket this session's ICE agent talks through, and its
        # endpoint on it; None where aioice binds its own (per-session, nat).
        self._media: MediaSocket | None = None
        self._endpoint: Endpoint | None = None
        self._on_closed = on_closed
        self._events = EventWriter(session_id, now, self.created_epoch - now)
        self._pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self._track = PacedAudioTrack(self._next_downlink_frame, self._clock)
        self._channel: RTCDataChannel | None = None
        self._unsent: deque[str] = deque(maxlen=MAX_UNSENT_EVENTS)
        self._caller_track_seen = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._setup_timer: asyncio.TimerHandle | None = None
        self._close_task: asyncio.Task[None] | None = None
        on_peer_connection(self._pc)
        self._pc.on("connectionstatechange", self._on_connection_state)
        self._pc.on("iceconnectionstatechange", self._on_ice_state)
        self._pc.on("track", self._on_track)
        self._pc.on("datachannel", self._on_datachannel)

    # --- offer / answer --------------------------------------------------------

    async def answer(self, offer: PreparedOffer) -> str:
        """Apply the offer and return the answer to send (DESIGN.md call path step 3).

        Raises ApiError 503 ``closed`` if the session was closed meanwhile (its
        setup timer on a loaded machine, a DELETE, shutdown).
        """
        try:
            answer = await self._answer(offer)
        except Exception as exc:
            if self._close_task is None:
                raise
            raise ApiError(503, "closed", "the session was closed while it was answered") from exc
        finally:
            if self._close_task is not None:
                # The gatherer may have bound its socket after the peer connection
                # closed, and closing a closed peer connection closes nothing.
                await aioice_patch.close_ice(self._pc)
        if self._close_task is not None:
            raise ApiError(503, "closed", "the session was closed while it was answered")
        return answer

    async def _answer(self, offer: PreparedOffer) -> str:
        self._setup_timer = self._loop.call_later(self.config.setup_timeout_s, self._on_setup_timer)
        pc = self._pc
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        except Exception as exc:  # aiortc raises several types for offers it cannot use
            raise ApiError(422, "unsupported_offer", f"cannot use this offer: {exc}") from exc
        pc.addTrack(self._track)

        transports = aioice_patch.ice_transports(pc)
        if len(transports) != 1:  # max-bundle on our side makes this a bug, not bad input
            raise ApiError(500, "internal", f"expected one ICE transport, got {len(transports)}")
        gatherer = transports[0].iceGatherer
        if self._sockets.uses_endpoints:
            try:
                self._media = await self._sockets.endpoint_socket()
            except OSError as exc:
                raise ApiError(503, "no_socket", f"could not bind a UDP socket: {exc}") from exc
            aioice_patch.gather_on(gatherer, self._attach)
        # Gather now, not in setLocalDescription: the route token needs the port.
        with aioice_patch.bind_addresses([self.config.bind_host]):
            await gatherer.gather()
        candidates = gatherer.getLocalCandidates()
        if not candidates:
            raise ApiError(
                503, "no_socket", f"could not bind a UDP socket on {self.config.bind_host}"
            )
        self.local_port = candidates[0].port
        secret = self.config.secret
        self.server_ufrag = self._route_token(secret, self.local_port)
        aioice_patch.set_local_credentials(
            gatherer, self.server_ufrag, route_token.ice_password(secret, self.server_ufrag)
        )

        created = await pc.createAnswer()
        await pc.setLocalDescription(
            RTCSessionDescription(sdp=local_answer(created.sdp, offer.setup), type="answer")
        )
        answer = wire_answer(
            pc.localDescription.sdp, self.config.advertised(self.local_port), offer.setup
        )
        now = self._clock()
        self.lifecycle.advance(Phase.ANSWERED, now)
        self._mark(Milestone.ANSWER, now)
        log.info(
            "session answered",
            extra={
                "session": self.id,
                "ufrag": self.server_ufrag,
                "port": self.local_port,
                "advertised": format_hostport(self.config.advertised(self.local_port)),
            },
        )
        return answer

    def _attach(self, protocol: Any) -> Address:
        """Connect the ICE agent's protocol to this session's endpoint on the media socket."""
        assert self._media is not None
        self._endpoint = self._media.attach(protocol)
        return self._endpoint.local_address

    def _route_token(self, secret: bytes, port: int) -> str:
        """A fresh route token naming this server and ``port``, routed to us on a shared socket."""
        for _ in range(TOKEN_DRAWS):
            ufrag = route_token.encode(secret, self.config.backend_id, port)
            if self._endpoint is None or self._endpoint.register(ufrag):
                return ufrag
        raise ApiError(500, "internal", "no free route token after several draws")

    # --- closing -----------------------------------------------------------------

    def close_soon(self, reason: CloseReason) -> None:
        """Start closing for ``reason`` (the first reason given wins)."""
        if self._close_task is None:
            self._close_task = self._loop.create_task(self._close(reason))

    async def close(self, reason: CloseReason) -> None:
        self.close_soon(reason)
        assert self._close_task is not None
        await asyncio.shield(self._close_task)

    @property
    def closed(self) -> bool:
        return self._close_task is not None and self._close_task.done()

    @property
    def pending(self) -> bool:
        """Setup in flight: not yet connected, not closing (what --max-pending-setups bounds)."""
        return self._close_task is None and self.lifecycle.phase in (Phase.NEW, Phase.ANSWERED)

    async def _close(self, reason: CloseReason) -> None:
        self.lifecycle.close(reason, self._clock())
        if self._setup_timer is not None:
            self._setup_timer.cancel()
        self._refresh_remote()  # aioice forgets the pair on close
        await self.refresh_rtp_stats()  # and aiortc its receive statistics
        try:
            await self._pc.close()
        except Exception:
            log.exception("closing the peer connection failed", extra={"session": self.id})
        if self._endpoint is not None:
            self._endpoint.close()  # aioice closed it with the connection; to be sure
        if self._media is not None:
            self._sockets.done_with(self._media)
        self._track.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._metrics.sessions_closed.labels(reason=reason.value).inc()
        self._on_closed(self)
        log.info(
            "session closed",
            extra={
                "session": self.id,
                "reason": self.lifecycle.close_reason.value
                if self.lifecycle.close_reason
                else None,
                "uplink": self.uplink.snapshot(),
                "downlink_sent": self.downlink_sent,
                "turns": len(self.agent.turns),
            },
        )

    def _on_setup_timer(self) -> None:
        if self.lifecycle.setup_expired(self._clock(), self.config.setup_timeout_s):
            log.info(
                "session setup timed out",
                extra={"session": self.id, "timeout_s": self.config.setup_timeout_s},
            )
            self.close_soon(CloseReason.SETUP_TIMEOUT)

    # --- aiortc callbacks ----------------------------------------------------------

    def _on_connection_state(self) -> None:
        state = self._pc.connectionState
        if state == "connected":
            now = self._clock()
            transition = self.lifecycle.advance(Phase.CONNECTED, now)
            if transition is None:
                return
            if self._setup_timer is not None:
                self._setup_timer.cancel()
            self._mark(Milestone.DTLS_CONNECTED, now)
            self._refresh_remote()
            log.info(
                "session connected",
                extra={
                    "session": self.id,
                    "remote": format_hostport(self.remote) if self.remote else None,
                    "setup_ms": self.lifecycle.setup_ms(),
                },
            )
        elif state == "failed":
            self.close_soon(CloseReason.FAILED)
        elif state == "closed":
            self.close_soon(CloseReason.PEER_CLOSED)

    def _on_ice_state(self) -> None:
        if self._pc.iceConnectionState == "completed":
            self._mark(Milestone.ICE_CONNECTED, self._clock())
            self._refresh_remote()

    def _on_track(self, track: MediaStreamTrack) -> None:
        # The first audio track is the caller's voice; any other is read and dropped.
        if track.kind == "audio" and not self._caller_track_seen:
            self._caller_track_seen = True
            self._spawn(read_track(track, self._on_uplink_frame))
        else:
            self._spawn(read_track(track, lambda _frame: None))

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != CHANNEL_LABEL or self._channel is not None:
            log.info("ignoring data channel", extra={"session": self.id, "label": channel.label})
            return
        self._channel = channel
        now = self._clock()
        self._mark(Milestone.DATACHANNEL_OPEN, now)
        details = {"backend_id": self.config.backend_id, "server_ufrag": self.server_ufrag}
        self._send_json(json.dumps(self._events.session_created(now, details)))
        while self._unsent:
            self._send_json(self._unsent.popleft())

    # --- media --------------------------------------------------------------------

    def _on_uplink_frame(self, frame: AudioFrame) -> None:
        now = self._clock()
        lost_before = self.uplink.lost
        self.uplink.on_frame(now, frame.pts)
        self._metrics.uplink_frames_received.inc()
        if self.uplink.lost > lost_before:
            self._metrics.uplink_frames_lost.inc(self.uplink.lost - lost_before)
        self._mark(Milestone.FIRST_AUDIO_IN, now)
        self.agent.on_frame_received(level_dbfs(frame_samples(frame)), now)
        self._publish(self.agent.take_events())

    def _next_downlink_frame(self, now_s: float) -> Samples | None:
        samples = self.agent.next_frame(now_s)
        self.downlink_sent += 1
        self._metrics.downlink_frames_sent.inc()
        self._publish(self.agent.take_events())
        return samples

    def _publish(self, events: list[AgentEvent]) -> None:
        for event in events:
            if isinstance(event, ResponseDone):
                turn = event.turn
                self._metrics.turns.inc()
                self._metrics.response_latency.observe(turn.response_latency_s)
                self._metrics.pacing_wait.observe(turn.pacing_wait_s)
            text = json.dumps(self._events.from_agent(event))
            if self._channel is None:
                self._unsent.append(text)
            else:
                self._send_json(text)

    def _send_json(self, text: str) -> None:
        channel = self._channel
        if channel is None or channel.readyState != "open":
            return
        with contextlib.suppress(Exception):  # the channel may close under us
            channel.send(text)

    # --- helpers ------------------------------------------------------------------

    async def refresh_rtp_stats(self) -> None:
        """Read the caller's RTP counters (aiortc's getStats is async; to_json is not)."""
        if self.closed:
            return
        for receiver in self._pc.getReceivers():
            if receiver.track is not None and receiver.track.kind == "audio":
                counts = await aioice_patch.inbound_rtp(receiver)
                if counts is not None:
                    self.uplink_rtp = counts
                return

    def _mark(self, milestone: Milestone, now: float) -> None:
        if self.lifecycle.mark(milestone, now):
            self._metrics.setup.labels(phase=milestone.value).observe(
                now - self.lifecycle.created_s
            )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _remotes(self) -> list[dict[str, str | None]]:
        if self._endpoint is not None:
            return self._endpoint.remotes()
        return [{"remote": format_hostport(self.remote), "via": None}] if self.remote else []

    def _refresh_remote(self) -> None:
        pair = aioice_patch.peer_selected_pair(self._pc)
        if pair is not None:
            self.remote = pair[1]

    # --- reporting ----------------------------------------------------------------

    def _epoch(self, at_s: float | None) -> float | None:
        """A time on the session clock as Unix time, so other processes can line it up."""
        if at_s is None:
            return None
        return round(self.created_epoch + (at_s - self.lifecycle.created_s), 6)

    def _uplink_timeline(self) -> dict[str, Any]:
        """When the caller's audio arrived: first, last, and every stall (Unix time, s)."""
        stats = self.uplink
        return {
            "first": self._epoch(stats.first_arrival_s),
            "last": self._epoch(stats.last_arrival_s),
            "gaps": [[self._epoch(start), round(gap, 6)] for start, gap in stats.gaps],
        }

    def to_json(self) -> dict[str, Any]:
        now = self._clock()
        if self.lifecycle.phase is Phase.CONNECTED:
            self._refresh_remote()
        live = self.lifecycle.phase is Phase.CONNECTED and self.uplink.received > 0
        return {
            "id": self.id,
            "backend_id": self.config.backend_id,
            "state": self.lifecycle.phase.value,
            "close_reason": (
                self.lifecycle.close_reason.value if self.lifecycle.close_reason else None
            ),
            "created": round(self.created_epoch, 6),
            "age_ms": self.lifecycle.ms_since_created(now),
            "server_ufrag": self.server_ufrag,
            "local_port": self.local_port,
            "local": (
                format_hostport((self.config.bind_host, self.local_port))
                if self.local_port
                else None
            ),
            "advertised": (
                format_hostport(self.config.advertised(self.local_port))
                if self.local_port
                else None
            ),
            "remote": format_hostport(self.remote) if self.remote else None,
            "media_socket": self.config.media_socket.value,
            "forward": self.config.forward.value,
            # Every remote address the session's socket delivers to it (a client
            # that moved has several), with the relay each came through (encap).
            "remotes": self._remotes(),
            "connection_state": self._pc.connectionState,
            "setup_ms": self.lifecycle.setup_ms(),
            "uplink": with_rtp(
                self.uplink.snapshot(until_s=now if live else None), self.uplink_rtp
            ),
            "uplink_timeline": self._uplink_timeline(),
            "closed": self._epoch(self.lifecycle.closed_s),
            "downlink_sent": self.downlink_sent,
            "agent": {"phase": self.agent.phase.value, "superseded": self.agent.superseded},
            "turns": [turn_timings(turn, self._events.ms) for turn in self.agent.turns],
        }
