"""FFmpeg's WHIP muxer (RFC 9725) as a lab caller: it publishes the caller's voice.

The FFmpeg binary comes from the PyPI package ``imageio-ffmpeg`` (Debian's
FFmpeg has no WHIP muxer).  FFmpeg POSTs its offer to the offer URL, runs ICE
and DTLS itself, sends Opus, and on a clean stop (SIGINT) DELETEs its
resource.  It is send-only: it receives no audio and opens no data channel,
so the agent's answer is visible only on the server (its session's ``agent``).

The caller's voice is the aiortc caller's (:class:`SpeakingPlan`), looped
from a WAV file.  What FFmpeg measured comes from its log at ``-loglevel
verbose`` (parsed by :class:`WhipLog`, pure); what arrived comes from the media
session: ``GET <Location>`` while live names the backend and the session, whose
last report is read once FFmpeg has stopped.

Two things FFmpeg 9.0.2 does that a caller must know: it never answers the
server's consent checks after setup (aiortc closes the session ~30 s in; the
result then says ``connection_lost``), and it logs "Failed to read response
from DELETE" whatever the server answers, although the DELETE took effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import aiohttp

from lab.callers.conversation import SpeakingPlan
from lab.callers.record import STATS_KEYS, CallRecord, session_from_body
from lab.callers.voicefiles import voice_cache_dir, voice_file
from wire.speech import FRAME_SAMPLES

# --- the log, parsed (pure) -----------------------------------------------------------

_TAG = re.compile(r"^\[[^\]]+ @ 0x[0-9a-f]+\]\s*")
_SDP = re.compile(r"SDP state=\d+, .*transport=\w+://([^,]+), elapsed=")
_ICE = re.compile(r"ICE STUN ok, .*location=(\S+), username=")
_MUXER = re.compile(r"Muxer state=\d+, .*elapsed=[\d.]+ms\(([^)]*)\)")
_MUXED = re.compile(r"Output stream #\d+:\d+ \(audio\): .*?(\d+) packets muxed")
_HTTP_ERROR = re.compile(r"HTTP error (\d{3}.*)")
# What looks like trouble in the log; "0 decode errors" and option echoes do not.
_PROBLEM = re.compile(
    r"\bfail|\berror\b(?!s)|timed out|handshake timeout|unsupported", re.IGNORECASE
)


@dataclass
class WhipLog:
    """What FFmpeg's WHIP muxer said about one publish, fed one log line at a time."""

    answered: bool = False
    connected: bool = False
    location: str | None = None  # absolute: FFmpeg logs it resolved
    remote: str | None = None  # where it sent ICE (the answer's one candidate)
    # FFmpeg's own setup breakdown in ms: init, offer, answer, udp, ice, dtls, srtp.
    phases: dict[str, float] = field(default_factory=dict)
    packets_muxed: int | None = None
    http_error: str | None = None
    hang_up: str | None = None  # "ok" | "failed" (FFmpeg's view of its DELETE)
    problems: list[str] = field(default_factory=list)

    def feed(self, line: str) -> None:
        text = _TAG.sub("", line.strip())
        if match := _SDP.search(text):
            self.answered = True
            self.remote = match.group(1)
        elif match := _ICE.search(text):
            self.location = match.group(1)
        elif match := _MUXER.search(text):
            self.connected = True
            for item in match.group(1).split(","):
                name, _, value = item.partition(":")
                with contextlib.suppress(ValueError):
                    self.phases[name.strip()] = float(value)
        elif match := _MUXED.search(text):
            self.packets_muxed = int(match.group(1))
        elif text.startswith("Dispose resource"):
            self.hang_up = "ok"
        elif text.startswith("Failed to dispose resource"):
            self.hang_up = "failed"
        if match := _HTTP_ERROR.search(text):
            self.http_error = match.group(1)
        if _PROBLEM.search(text) and len(self.problems) < 20:
            self.problems.append(text)

    def setup_ms(self) -> dict[str, float | None]:
        """Setup phases in ms from the POST (FFmpeg posts right after making its offer)."""
        p = self.phases
        answer = p.get("answer")
        ice = answer + p.get("udp", 0.0) + p["ice"] if answer is not None and "ice" in p else None
        dtls = ice + p["dtls"] + p.get("srtp", 0.0) if ice is not None and "dtls" in p else None
        rounded = {"answer": answer, "ice_connected": ice, "dtls_connected": dtls}
        return {
            phase: None if value is None else round(value, 1) for phase, value in rounded.items()
        }

    def post_offset_ms(self) -> float:
        """How long after start FFmpeg POSTed: its init and offer phases."""
        return self.phases.get("init", 0.0) + self.phases.get("offer", 0.0)

    def failure(self) -> str:
        """The call-result error for a publish that never connected."""
        detail = self.problems[0] if self.problems else "no reason in FFmpeg's log"
        if not self.answered:
            if self.http_error:
                return f"offer_rejected: HTTP {self.http_error}"
            return f"unreachable: {detail}"
        return f"connection_failed: {detail}"


# --- running FFmpeg -------------------------------------------------------------------


@functools.cache
def ffmpeg_binary() -> str | None:
    """The imageio-ffmpeg binary, if that package is installed."""
    try:
        import imageio_ffmpeg  # type: ignore[import-untyped]
    except ImportError:
        return None
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError:
        return None


@functools.cache
def whip_problem() -> str | None:
    """None if this machine's imageio-ffmpeg binary can publish over WHIP, else why not."""
    binary = ffmpeg_binary()
    if binary is None:
        return "imageio-ffmpeg is not installed (pip install imageio-ffmpeg)"
    try:
        muxers = subprocess.run(
            [binary, "-hide_banner", "-muxers"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{binary} does not run: {exc}"
    if not re.search(r"^\s*E\s+whip\b", muxers, re.MULTILINE):
        return f"{binary} has no WHIP muxer (FFmpeg 8 or newer has one)"
    return None


@dataclass(frozen=True, slots=True)
class WhipOptions:
    speaking: SpeakingPlan = field(default_factory=SpeakingPlan)
    # FFmpeg offers a=setup:passive by default, so the server is the DTLS client;
    # FFmpeg leaves its first ClientHello unanswered and DTLS completes only at the
    # 1 s retransmit.  As the DTLS client (setup:active) FFmpeg connects in ~15 ms.
    dtls_active: bool = True
    # Bounds FFmpeg's own ICE + DTLS wait and ours for the whole setup.
    setup_timeout_s: float = 10.0
    # Signaling answers in milliseconds; a stuck server must not hang the caller.
    http_timeout_s: float = 10.0
    # After SIGINT FFmpeg flushes, DELETEs and exits within a second here.
    stop_timeout_s: float = 10.0
    # A voice call's Opus rate, as browsers send it.
    bitrate: str = "32k"


def whip_argv(binary: str, offer_url: str, voice_wav: str, options: WhipOptions) -> list[str]:
    handshake_ms = int(options.setup_timeout_s * 1000)
    return [
        binary,
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "verbose",  # the WHIP muxer's state lines (setup times, Location) are verbose
        "-re",  # real time: WHIP sends as fast as it is fed
        "-stream_loop",
        "-1",
        "-f",
        "wav",
        # One 20 ms frame per packet: FFmpeg's WHIP muxer sends what it is given at
        # once, so the default 85 ms packets left as bursts of four.
        "-max_size",
        str(FRAME_SAMPLES * 2),
        "-i",
        voice_wav,
        "-c:a",
        "libopus",
        "-ac",
        "2",  # FFmpeg's WHIP muxer refuses mono ("choose stereo")
        "-b:a",
        options.bitrate,
        "-frame_duration",
        "20",
        "-application",
        "voip",
        "-f",
        "whip",
        "-handshake_timeout",
        str(handshake_ms),
        *(["-whip_flags", "dtls_active"] if options.dtls_active else []),
        offer_url,
    ]


@dataclass
class Publish:
    """One FFmpeg run, as the driver saw it."""

    whip: WhipLog
    spawned_epoch: float  # Unix time FFmpeg was started
    error: str | None = None
    talk_s: float | None = None
    call: dict[str, Any] | None = None  # signaling's GET <Location>, while live
    session: dict[str, Any] | None = None  # the media session's report after the stop


def whip_result(publish: Publish) -> dict[str, Any]:
    """The call result (DESIGN.md) of one publish."""
    whip = publish.whip
    record = CallRecord()
    record.location = whip.location
    if whip.location is not None:
        record.call_id = whip.location.rstrip("/").rsplit("/", 1)[-1]
    record.started_epoch = publish.spawned_epoch + whip.post_offset_ms() / 1000
    backend = (publish.call or {}).get("backend")
    record.backend = backend if isinstance(backend, int | str) else None
    record.server_session = publish.session
    record.uplink_sent = whip.packets_muxed
    record.error = publish.error or _server_gave_up(publish.session)
    result = record.result()
    result["setup_ms"].update(whip.setup_ms())
    result["talk_ms"] = None if publish.talk_s is None else round(publish.talk_s * 1000, 1)
    # Send-only: nothing comes down, so nothing is measured there but what the server sent.
    sent = result["downlink"].get("packets_sent")
    result["downlink"] = dict.fromkeys(STATS_KEYS) | {"packets_sent": sent}
    session = publish.session or {}
    turns = session.get("turns")
    result["agent"] = {
        "phase": (session.get("agent") or {}).get("phase"),
        "turns": len(turns) if isinstance(turns, list) else turns,
    }
    result["remote_address"] = whip.remote
    # FFmpeg's own verdict on its DELETE (the server's is server_view.close_reason).
    result["ffmpeg_hang_up"] = whip.hang_up
    result["ffmpeg_problems"] = whip.problems
    return result


def _server_gave_up(session: dict[str, Any] | None) -> str | None:
    """An error if the server closed the session on its own while FFmpeg published.

    FFmpeg does not notice: it never answers the server's consent checks after
    setup, so aiortc closes the session ~30 s in while FFmpeg sends on.
    """
    if session is None or session.get("state") != "closed":
        return None
    reason = session.get("close_reason")
    if reason in (None, "deleted"):
        return None
    return f"connection_lost: the media server closed the session ({reason}) while FFmpeg sent"


class FfmpegWhipDriver:
    """FFmpeg WHIP as a :class:`lab.callers.drivers.ClientDriver` (send-only)."""

    name = "ffmpeg-whip"
    direction = "sendonly"

    def __init__(self, options: WhipOptions | None = None) -> None:
        self.options = options or WhipOptions()

    def unavailable(self) -> str | None:
        return whip_problem()

    async def call(self, offer_url: str, *, seconds: float) -> dict[str, Any]:
        problem = self.unavailable()
        if problem is not None:
            record = CallRecord()
            record.error = f"unavailable: {problem}"
            return record.result()
        publish = await self._publish(offer_url, seconds)
        publish.session = await self._final_session(publish.call)
        result = whip_result(publish)
        result["client"] = {"stack": "ffmpeg-whip", "binary": ffmpeg_binary()}
        return result

    async def _publish(self, offer_url: str, seconds: float) -> Publish:
        """Run FFmpeg: connect, talk for ``seconds``, look at the call, stop it cleanly."""
        binary = ffmpeg_binary()
        assert binary is not None  # unavailable() said so
        options = self.options
        voice = voice_file("wav", options.speaking, voice_cache_dir())
        publish = Publish(WhipLog(), time.time())
        whip = publish.whip
        process = await asyncio.create_subprocess_exec(
            *whip_argv(binary, offer_url, str(voice), options),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        connected = asyncio.Event()
        reader = asyncio.create_task(_read_log(process, whip, connected))
        exited = asyncio.create_task(process.wait())
        loop = asyncio.get_running_loop()
        try:
            await _first(connected.wait(), exited, timeout_s=2 * options.setup_timeout_s)
            if not whip.connected:
                publish.error = (
                    whip.failure()
                    if exited.done()
                    else "setup_timeout: "
                    + (whip.problems[0] if whip.problems else "FFmpeg never connected")
                )
                return publish
            talk_start = loop.time()
            await _first(exited, timeout_s=seconds)
            publish.talk_s = loop.time() - talk_start
            if exited.done():
                publish.error = f"connection_lost: FFmpeg exited {process.returncode}: " + (
                    whip.problems[-1] if whip.problems else "no reason in its log"
                )
            elif whip.location is not None:
                publish.call = await _get_json(whip.location, options.http_timeout_s)
        finally:
            await _stop(process, exited, options.stop_timeout_s)
            await reader
        return publish

    async def _final_session(self, call: dict[str, Any] | None) -> dict[str, Any] | None:
        """The media session's report once FFmpeg stopped (FFmpeg's DELETE ended the call
        record in signaling, so ask the media server the record named)."""
        if call is None:
            return None
        media_url, path = call.get("media_url"), call.get("session_path")
        if isinstance(media_url, str) and isinstance(path, str):
            final = await _get_json(urljoin(media_url, path), self.options.http_timeout_s)
            if final is not None:
                return final
        return session_from_body(call)


async def _read_log(
    process: asyncio.subprocess.Process, whip: WhipLog, connected: asyncio.Event
) -> None:
    assert process.stderr is not None
    async for raw in process.stderr:
        whip.feed(raw.decode(errors="replace"))
        if whip.connected:
            connected.set()


async def _first(*waitables: Any, timeout_s: float) -> None:
    """Until any of ``waitables`` finishes or ``timeout_s`` passes (none is cancelled)."""
    futures = [asyncio.ensure_future(w) for w in waitables]
    await asyncio.wait(futures, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    for future, waitable in zip(futures, waitables, strict=True):
        if future is not waitable and not future.done():
            future.cancel()


async def _stop(
    process: asyncio.subprocess.Process, exited: asyncio.Task[int], timeout_s: float
) -> None:
    """SIGINT (FFmpeg's clean stop: it DELETEs its resource), then SIGKILL."""
    if not exited.done():
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        await asyncio.wait([exited], timeout=timeout_s)
    if not exited.done():
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
    await exited


async def _get_json(url: str, timeout_s: float) -> dict[str, Any] | None:
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as response:
            if response.status != 200:
                return None
            body = await response.json()
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return None
    return body if isinstance(body, dict) else None


DRIVER = FfmpegWhipDriver()
