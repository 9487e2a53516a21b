"""A synthetic voice call with a real aiortc peer, measured from the caller's side.

:func:`run_call` makes one call and returns the call result of DESIGN.md
(``schema: 1``).  :class:`AiortcCall` is the same call as an object, for a
scenario engine: start :meth:`AiortcCall.run` as a task, wait for
:attr:`AiortcCall.connected`, read :meth:`AiortcCall.local_address`, end it
early with :meth:`AiortcCall.stop`.  Nothing is global, so many calls can run
concurrently in one process.

The offer goes to any URL that answers like signaling's ``POST /v1/calls`` or
a media server's ``POST /sessions``: 201, ``Location``, the answer SDP.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import aiohttp
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack
from av import AudioFrame

from lab.callers.conversation import Speaker, SpeakingPlan
from lab.callers.record import CallRecord, error_text, session_from_body
from webrtc_server import aioice_patch
from webrtc_server.media import PacedAudioTrack, frame_samples, read_track
from wire.addr import Address
from wire.speech import level_dbfs

log = logging.getLogger("rtclab.caller")

EVENTS_LABEL = "oai-events"
BACKEND_HEADER = "X-Rtclab-Backend"

ConnectedHook = Callable[["AiortcCall"], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class CallOptions:
    # Talk time once connected; setup time comes on top.
    seconds: float = 8.0
    # The caller's ICE binds here only (a scenario may give each caller its own 127.x).
    bind_host: str = "127.0.0.1"
    # Loopback connects in ~50 ms; a path with seconds of delay still fits.
    setup_timeout_s: float = 10.0
    # Signaling answers in milliseconds; a stuck server must not hang the caller.
    http_timeout_s: float = 10.0
    speaking: SpeakingPlan = field(default_factory=SpeakingPlan)
    # Per received frame [ms since the offer, RTP pts]: 50 entries a second.
    keep_arrivals: bool = False
    # Every oai-events event as [type, server ts, ms since the offer it arrived].
    keep_events: bool = True
    # DELETE the call at the end (a scenario may leave it to the server's timers).
    hang_up: bool = True


class CallFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class AiortcCall:
    """One synthetic call; :meth:`run` it once."""

    def __init__(
        self,
        offer_url: str,
        options: CallOptions | None = None,
        *,
        on_connected: ConnectedHook | None = None,
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        self.offer_url = offer_url
        self.options = options or CallOptions()
        self.connected = asyncio.Event()  # set once DTLS is up and media can flow
        self.record = CallRecord(
            keep_arrivals=self.options.keep_arrivals, keep_events=self.options.keep_events
        )
        self._on_connected = on_connected
        self._http = http
        self._loop = asyncio.get_running_loop()
        self._clock = self._loop.time
        self._pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self._speaker = Speaker(self.options.speaking)
        self.record.utterance_ends = self._speaker.utterance_ends  # shared, filled as it speaks
        self._voice = PacedAudioTrack(self._speaker.next_frame, self._clock)
        self._transceiver: RTCRtpTransceiver | None = None
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        self._down_state: str | None = None
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ran = False

    # --- for a scenario engine ------------------------------------------------------

    @property
    def call_id(self) -> str | None:
        return self.record.call_id

    @property
    def location(self) -> str | None:
        return self.record.location

    def local_address(self) -> Address | None:
        """The caller's side of the selected candidate pair (None before ICE completes)."""
        pair = aioice_patch.peer_selected_pair(self._pc)
        if pair is not None:
            self.record.local, self.record.remote = pair
        return self.record.local

    def remote_address(self) -> Address | None:
        """Where the caller sends: the relay, or the media server in direct topology."""
        self.local_address()
        return self.record.remote

    def stop(self) -> None:
        """End the call now (it still fetches its stats and hangs up)."""
        self._stop.set()

    def result(self) -> dict[str, Any]:
        """The call result so far; complete once :meth:`run` has returned."""
        return self.record.result()

    # --- the call -------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        assert not self._ran, "an AiortcCall runs once"
        self._ran = True
        timeout = aiohttp.ClientTimeout(total=self.options.http_timeout_s)
        http = self._http or aiohttp.ClientSession(timeout=timeout)
        try:
            await self._call(http)
        except CallFailed as exc:
            self.record.error = str(exc)
        except Exception as exc:
            log.exception("call failed", extra={"offer_url": self.offer_url})
            self.record.error = f"internal: {type(exc).__name__}: {exc}"
        finally:
            if self.record.end_s is None:
                self.record.end_s = self._clock()
            await self._finish(http)
            if self._http is None:
                await http.close()
        return self.result()

    async def _call(self, http: aiohttp.ClientSession) -> None:
        pc, record = self._pc, self.record
        pc.on("connectionstatechange", self._on_connection_state)
        pc.on("iceconnectionstatechange", self._on_ice_state)
        pc.on("track", self._on_track)
        self._transceiver = pc.addTransceiver(self._voice, direction="sendrecv")
        channel = pc.createDataChannel(EVENTS_LABEL)
        channel.on("open", lambda: record.mark("datachannel_open", self._clock()))
        channel.on("message", lambda message: record.on_event(message, self._clock()))
        with aioice_patch.bind_addresses([self.options.bind_host]):
            await pc.setLocalDescription(await pc.createOffer())

        record.t0_s = self._clock()
        record.started_epoch = time.time()
        answer = await self._post_offer(http, pc.localDescription.sdp)
        record.mark("answer", self._clock())
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        except Exception as exc:  # aiortc raises several types for SDP it cannot use
            raise CallFailed("bad_answer", f"{type(exc).__name__}: {exc}") from exc

        await self._wait_connected()
        record.talk_start_s = self._clock()
        self.local_address()
        self.connected.set()
        await self._run_hook()

        await self._talk()
        record.end_s = self._clock()
        record.uplink_sent = await self._packets_sent()
        if self._transceiver is not None:
            record.downlink_rtp = await aioice_patch.inbound_rtp(self._transceiver.receiver)
        record.server_session = await self._fetch_session(http)

    async def _post_offer(self, http: aiohttp.ClientSession, offer: str) -> str:
        headers = {"Content-Type": "application/sdp"}
        try:
            async with http.post(self.offer_url, data=offer.encode(), headers=headers) as response:
                body = await response.text()
                if response.status != 201:
                    raise CallFailed(
                        "offer_rejected", f"HTTP {response.status}: {error_text(body)}"
                    )
                location = response.headers.get("Location")
                if not location:
                    raise CallFailed("bad_answer", "201 without a Location header")
                backend = response.headers.get(BACKEND_HEADER)
                final_url = str(response.url)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise CallFailed("unreachable", f"POST {self.offer_url}: {exc!r}") from exc
        self.record.location = urljoin(final_url, location)
        self.record.call_id = location.rstrip("/").rsplit("/", 1)[-1]
        if backend is not None:
            self.record.backend = int(backend) if backend.isdigit() else backend
        return body

    async def _wait_connected(self) -> None:
        await self._wait_for(self._up, self._down, timeout_s=self.options.setup_timeout_s)
        if self._up.is_set():
            return
        if self._down.is_set():
            raise CallFailed("connection_failed", f"connection {self._down_state} during setup")
        raise CallFailed(
            "setup_timeout", f"not connected {self.options.setup_timeout_s:g} s after the answer"
        )

    async def _talk(self) -> None:
        await self._wait_for(self._stop, self._down, timeout_s=self.options.seconds)
        if self._down.is_set():
            talked = self._clock() - (self.record.talk_start_s or self._clock())
            raise CallFailed(
                "connection_lost", f"connection {self._down_state} after {talked:.1f} s of talk"
            )

    @staticmethod
    async def _wait_for(*events: asyncio.Event, timeout_s: float) -> None:
        """Until any of ``events`` is set or ``timeout_s`` passes."""
        waiters = {asyncio.ensure_future(event.wait()) for event in events}
        try:
            await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _run_hook(self) -> None:
        if self._on_connected is None:
            return
        try:
            outcome = self._on_connected(self)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            log.exception("on_connected hook failed", extra={"call_id": self.call_id})

    async def _packets_sent(self) -> int | None:
        if self._transceiver is None:
            return None
        with contextlib.suppress(Exception):
            report = await self._transceiver.sender.getStats()
            for stats in report.values():
                if getattr(stats, "type", None) == "outbound-rtp":
                    return int(stats.packetsSent)
        return None

    async def _fetch_session(self, http: aiohttp.ClientSession) -> dict[str, Any] | None:
        """The server's view of the call (media session JSON, maybe under ``session``)."""
        if self.location is None:
            return None
        try:
            async with http.get(self.location) as response:
                if response.status != 200:
                    log.info("no session JSON", extra={"status": response.status})
                    return None
                return session_from_body(await response.json())
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return None

    async def _finish(self, http: aiohttp.ClientSession) -> None:
        if self.options.hang_up and self.location is not None:
            try:
                async with http.delete(self.location) as response:
                    if response.status not in (200, 204, 404):
                        log.info("hang-up refused", extra={"status": response.status})
            except (TimeoutError, aiohttp.ClientError):
                log.info("hang-up failed", extra={"location": self.location})
        self.local_address()  # remember the pair before aioice forgets it
        await self._pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- aiortc callbacks -------------------------------------------------------------

    def _on_connection_state(self) -> None:
        state = self._pc.connectionState
        self.record.on_state("connection", state, self._clock())
        if state == "connected":
            self.record.mark("dtls_connected", self._clock())
            self._up.set()
        elif state in ("failed", "closed"):
            self._down_state = state
            self._down.set()

    def _on_ice_state(self) -> None:
        self.record.on_state("ice", self._pc.iceConnectionState, self._clock())
        if self._pc.iceConnectionState == "completed":
            self.record.mark("ice_connected", self._clock())

    def _on_track(self, track: MediaStreamTrack) -> None:
        task = self._loop.create_task(self._listen(track))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _listen(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            await read_track(track, lambda _frame: None)
            return

        def on_frame(frame: AudioFrame) -> None:
            level = level_dbfs(frame_samples(frame))
            self.record.on_downlink_frame(self._clock(), frame.pts, level)

        await read_track(track, on_frame)


async def run_call(
    offer_url: str,
    *,
    seconds: float,
    bind_host: str = "127.0.0.1",
    setup_timeout_s: float = 10.0,
    speaking: SpeakingPlan | None = None,
    keep_arrivals: bool = False,
    keep_events: bool = True,
    hang_up: bool = True,
    on_connected: ConnectedHook | None = None,
    http: aiohttp.ClientSession | None = None,
) -> dict[str, Any]:
    """Make one synthetic call to ``offer_url`` and return its call result."""
    options = CallOptions(
        seconds=seconds,
        bind_host=bind_host,
        setup_timeout_s=setup_timeout_s,
        speaking=speaking or SpeakingPlan(),
        keep_arrivals=keep_arrivals,
        keep_events=keep_events,
        hang_up=hang_up,
    )
    return await AiortcCall(offer_url, options, on_connected=on_connected, http=http).run()


class AiortcDriver:
    """The lab's own caller as a :class:`lab.callers.drivers.ClientDriver`."""

    name = "aiortc"
    direction = "sendrecv"

    def unavailable(self) -> str | None:
        return None

    async def call(self, offer_url: str, *, seconds: float) -> dict[str, Any]:
        return await run_call(offer_url, seconds=seconds, keep_arrivals=True)


DRIVER = AiortcDriver()
