"""One WebRTC call from GStreamer's webrtcbin (libnice ICE) to a WHIP-style offer URL.

Run by the system's Python with its GObject introspection bindings (Debian:
python3-gi, gir1.2-gst-plugins-bad-1.0 and the GStreamer plugins), never the
project's virtualenv: it imports only the standard library and ``gi``.  It
POSTs one offer (non-trickle: after ICE gathering completed), sends the
caller's voice as Opus, counts what comes back, reads ``GET <Location>`` (the
server's view), DELETEs it, and prints ONE JSON line on stdout in the shape
the Node clients' call.js prints (lab/callers/external.py reads both).
Diagnostics go to stderr.  See ``--help``.

What it records that only GStreamer can tell: every downlink RTP packet as it
reaches the receive jitter buffer ([ms since the POST, RTP timestamp]), the
jitter buffer's own statistics (rtpjitterbuffer ``stats``: num-pushed,
num-lost, num-late, num-duplicates, avg-jitter) and settings (latency,
drop-on-latency), and the ICE agent's keepalive settings (libnice's
``keepalive-conncheck`` and ``consent-freshness``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

try:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstSdp", "1.0")
    gi.require_version("GstWebRTC", "1.0")
    from gi.repository import GLib, Gst, GstSdp, GstWebRTC
except (ImportError, ValueError) as missing:  # said by --check; a call cannot start
    IMPORT_ERROR: str | None = f"{type(missing).__name__}: {missing}"
else:
    IMPORT_ERROR = None

# The elements a call needs, and the Debian package each comes in.
ELEMENTS = {
    "appsrc": "gstreamer1.0-plugins-base",
    "audioconvert": "gstreamer1.0-plugins-base",
    "audioresample": "gstreamer1.0-plugins-base",
    "opusenc": "gstreamer1.0-plugins-base",
    "opusdec": "gstreamer1.0-plugins-base",
    "rtpopuspay": "gstreamer1.0-plugins-good",
    "rtpopusdepay": "gstreamer1.0-plugins-good",
    "rtpbin": "gstreamer1.0-plugins-good",
    "webrtcbin": "gstreamer1.0-plugins-bad",
    "dtlsenc": "gstreamer1.0-plugins-bad",
    "srtpenc": "gstreamer1.0-plugins-bad",
    "sctpenc": "gstreamer1.0-plugins-bad",
    "nicesrc": "gstreamer1.0-nice",
}
EVENTS_LABEL = "oai-events"
BACKEND_HEADER = "X-Rtclab-Backend"
SAMPLE_RATE = 48_000
FRAME_MS = 20
FRAME_BYTES = SAMPLE_RATE * FRAME_MS // 1000 * 2  # 16-bit mono
SETUP_PHASES = ("answer", "ice_connected", "dtls_connected", "datachannel_open", "first_audio_in")
# The jitter buffer's stats fields later work reads (rtpjitterbuffer "stats").
JITTER_STATS = ("num-pushed", "num-lost", "num-late", "num-duplicates", "avg-jitter", "rtx-count")
# The ICE agent's settings that decide its keepalives (libnice NiceAgent properties).
ICE_SETTINGS = (
    "keepalive-conncheck",
    "consent-freshness",
    "idle-timeout",
    "stun-max-retransmissions",
    "stun-initial-timeout",
    "nomination-mode",
)

PIPELINE = (
    "appsrc name=voice is-live=true format=time do-timestamp=false "
    f"caps=audio/x-raw,format=S16LE,rate={SAMPLE_RATE},channels=1,layout=interleaved "
    "! audioconvert ! audioresample "
    "! opusenc bitrate=32000 frame-size=20 audio-type=voice "
    "! rtpopuspay name=pay pt=111 "
    "! application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,payload=111 "
    "! webrtcbin name=pc bundle-policy=max-bundle"
)


class CallFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")


class Recorder:
    """What one call observed, in ms since the offer was POSTed (thread-safe: GStreamer
    calls back from its streaming threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.t0: float | None = None
        self.started: float | None = None
        self.phases: dict[str, float] = {}
        self.states: list[list[Any]] = []
        self.events: list[list[Any]] = []
        self.agent_turns: list[Any] = []
        self.arrivals: list[list[float]] = []
        self.sent = 0
        self._first_ts: int | None = None
        self._ts_wraps = 0
        self._last_ts: int | None = None
        self.changed = threading.Condition(self.lock)

    def start_clock(self) -> None:
        with self.lock:
            self.t0 = time.monotonic()
            self.started = time.time()

    def ms(self, at: float | None = None) -> float | None:
        if self.t0 is None:
            return None
        return round(((time.monotonic() if at is None else at) - self.t0) * 1000, 1)

    def mark(self, phase: str) -> None:
        with self.lock:
            if self.t0 is not None and phase not in self.phases:
                self.phases[phase] = self.ms() or 0.0
            self.changed.notify_all()

    def state(self, kind: str, state: str) -> None:
        with self.lock:
            if self.t0 is not None:
                self.states.append([self.ms(), kind, state])
            self.changed.notify_all()

    def event(self, text: str) -> None:
        try:
            event = json.loads(text)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        with self.lock:
            self.events.append([str(event.get("type")), event.get("ts"), self.ms()])
            response = event.get("response")
            if event.get("type") == "response.done" and isinstance(response, dict):
                timings = response.get("timings")
                if isinstance(timings, dict):
                    self.agent_turns.append(timings)

    def rtp(self, header: bytes) -> None:
        """One downlink RTP packet (its first 8 bytes) as it reached the jitter buffer:
        its arrival and its RTP timestamp, unwrapped and counted from the first
        (lab/callers/gstreamer.py counts loss and gaps from them)."""
        ts = int.from_bytes(header[4:8], "big")
        with self.lock:
            if self.t0 is None:
                return
            if self._first_ts is None:
                self._first_ts = ts
            elif self._last_ts is not None and ts < self._last_ts and self._last_ts - ts > 1 << 31:
                self._ts_wraps += 1
            self._last_ts = ts
            relative = ts + (self._ts_wraps << 32) - self._first_ts
            self.arrivals.append([self.ms() or 0.0, relative])
            if "first_audio_in" not in self.phases:
                self.phases["first_audio_in"] = self.ms() or 0.0

    def wait(self, predicate: Any, timeout_s: float) -> bool:
        with self.lock:
            return bool(self.changed.wait_for(predicate, timeout_s))


class GstCall:
    """The pipeline and its webrtcbin; the call's steps run on the main thread."""

    def __init__(self, options: argparse.Namespace, rec: Recorder) -> None:
        self.options = options
        self.rec = rec
        self.pipeline = Gst.parse_launch(PIPELINE)
        self.pc = self.pipeline.get_by_name("pc")
        self.voice = self.pipeline.get_by_name("voice")
        self.jitterbuffers: list[Any] = []
        self.channel: Any = None
        self.gathered = threading.Event()
        self.offer_sdp: str | None = None
        self.failure: str | None = None
        self.connection = "new"
        self.loop = GLib.MainLoop()
        self._talking = threading.Event()
        self._stop = threading.Event()
        self._feeder: threading.Thread | None = None
        self._audio = open(options.audio, "rb").read()  # noqa: SIM115 - read at once
        self._configure_ice()
        self.pc.connect("on-negotiation-needed", self._on_negotiation_needed)
        self.pc.connect("notify::ice-gathering-state", self._on_gathering)
        self.pc.connect("notify::ice-connection-state", self._on_ice_state)
        self.pc.connect("notify::connection-state", self._on_connection_state)
        self.pc.connect("pad-added", self._on_pad_added)
        self.pipeline.connect("deep-element-added", self._on_element_added)
        pay_src = self.pipeline.get_by_name("pay").get_static_pad("src")
        pay_src.add_probe(Gst.PadProbeType.BUFFER, self._on_sent)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self._on_error)

    def _configure_ice(self) -> None:
        # Both objects are read once and kept for the process's life: GStreamer 1.22
        # hands them out floating, and a Python wrapper that went away would drop a
        # reference webrtcbin still needs.
        self.ice = ice = self.pc.get_property("ice-agent")
        # Loopback only: gathering on an added address stops the automatic discovery.
        ice.emit("add-local-ip-address", self.options.bind)
        # The relay speaks UDP; and nothing may reach beyond loopback (no UPnP discovery).
        ice.set_property("ice-tcp", False)
        self.agent = ice.get_property("agent")
        self.agent.set_property("upnp", False)

    def ice_settings(self) -> dict[str, Any]:
        agent = self.agent
        settings: dict[str, Any] = {}
        for name in ICE_SETTINGS:
            try:
                value = agent.get_property(name)
            except TypeError:
                continue
            settings[name] = value if isinstance(value, bool | int | str) else str(value)
        return settings

    # --- setup -----------------------------------------------------------------------

    def _on_negotiation_needed(self, _pc: Any) -> None:
        if self.channel is not None:
            return
        self.channel = self.pc.emit("create-data-channel", EVENTS_LABEL, None)
        if self.channel is not None:
            self.channel.connect("on-open", lambda _ch: self.rec.mark("datachannel_open"))
            self.channel.connect("on-message-string", lambda _ch, text: self.rec.event(text))
        promise = Gst.Promise.new_with_change_func(self._on_offer_created, None)
        self.pc.emit("create-offer", None, promise)

    def _on_offer_created(self, promise: Any, _data: Any) -> None:
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None else None
        if offer is None:
            self.failure = "internal: webrtcbin made no offer"
            self.gathered.set()
            return
        self.pc.emit("set-local-description", offer, Gst.Promise.new())

    def _on_gathering(self, pc: Any, _spec: Any) -> None:
        if pc.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            local = pc.get_property("local-description")
            if local is not None:
                self.offer_sdp = local.sdp.as_text()
            self.gathered.set()

    def apply_answer(self, sdp_text: str) -> None:
        result, sdp = GstSdp.SDPMessage.new_from_text(sdp_text)
        if result != GstSdp.SDPResult.OK:
            raise CallFailed("bad_answer", "the answer is not SDP")
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        promise = Gst.Promise.new()
        self.pc.emit("set-remote-description", answer, promise)
        promise.wait()
        reply = promise.get_reply()
        if reply is not None and reply.has_field("error"):
            raise CallFailed("bad_answer", str(reply.get_value("error")))

    def _on_ice_state(self, pc: Any, _spec: Any) -> None:
        state = pc.get_property("ice-connection-state").value_nick
        self.rec.state("ice", state)
        if state in ("connected", "completed"):
            self.rec.mark("ice_connected")

    def _on_connection_state(self, pc: Any, _spec: Any) -> None:
        state = pc.get_property("connection-state").value_nick
        self.connection = state
        self.rec.state("connection", state)
        if state == "connected":
            self.rec.mark("dtls_connected")

    def _on_error(self, _bus: Any, message: Any) -> None:
        error, debug = message.parse_error()
        self.failure = f"{error.message} ({debug})" if debug else error.message
        self.rec.state("connection", "failed")

    # --- media -----------------------------------------------------------------------

    def _on_element_added(self, _bin: Any, _sub: Any, element: Any) -> None:
        factory = element.get_factory()
        if factory is not None and factory.get_name() == "rtpjitterbuffer":
            self.jitterbuffers.append(element)
            sink = element.get_static_pad("sink")
            sink.add_probe(Gst.PadProbeType.BUFFER, self._on_rtp_in)

    def _on_rtp_in(self, _pad: Any, info: Any) -> Any:
        buffer = info.get_buffer()
        if buffer is not None and buffer.get_size() >= 12:
            self.rec.rtp(buffer.extract_dup(0, 8))
        return Gst.PadProbeReturn.OK

    def _on_sent(self, _pad: Any, _info: Any) -> Any:
        if self._talking.is_set():
            self.rec.sent += 1
        return Gst.PadProbeReturn.OK

    def _on_pad_added(self, _pc: Any, pad: Any) -> None:
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        # Decode what arrives, as a listener would; nothing is played.
        sink = Gst.parse_bin_from_description(
            "queue ! rtpopusdepay ! opusdec ! fakesink sync=false async=false", True
        )
        self.pipeline.add(sink)
        sink.sync_state_with_parent()
        pad.link(sink.get_static_pad("sink"))

    def start_feeding(self) -> None:
        """Silence from the start (webrtcbin offers only once caps reached it), the voice
        from its beginning once :meth:`start_audio` is called."""
        self._feeder = threading.Thread(target=self._feed, name="voice", daemon=True)
        self._feeder.start()

    def start_audio(self) -> None:
        self._talking.set()

    def _feed(self) -> None:
        """One 20 ms buffer every 20 ms, timestamped on the pipeline's running time
        (appsrc is live: what is late is late); the voice file loops."""
        clock = self.pipeline.get_clock()
        base = clock.get_time() - self.pipeline.get_base_time()
        frame_ns = FRAME_MS * Gst.MSECOND
        silence = bytes(FRAME_BYTES)
        loop_frames = max(1, len(self._audio) // FRAME_BYTES)
        started = time.monotonic()
        index = 0
        spoken = 0
        while not self._stop.is_set():
            if self._talking.is_set():
                offset = (spoken % loop_frames) * FRAME_BYTES
                chunk = self._audio[offset : offset + FRAME_BYTES].ljust(FRAME_BYTES, b"\0")
                spoken += 1
            else:
                chunk = silence
            buffer = Gst.Buffer.new_wrapped(chunk)
            buffer.pts = base + index * frame_ns
            buffer.duration = frame_ns
            self.voice.emit("push-buffer", buffer)
            index += 1
            delay = started + index * FRAME_MS / 1000 - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)

    def stop_audio(self) -> None:
        self._talking.clear()
        self._stop.set()
        if self._feeder is not None:
            self._feeder.join(2)

    # --- what it saw -----------------------------------------------------------------

    def jitter(self) -> dict[str, Any] | None:
        if not self.jitterbuffers:
            return None
        element = self.jitterbuffers[0]
        stats = element.get_property("stats")
        out: dict[str, Any] = {}
        for name in JITTER_STATS:
            if stats is not None and stats.has_field(name):
                out[name.replace("-", "_")] = stats.get_value(name)
        out["latency_ms"] = element.get_property("latency")
        out["drop_on_latency"] = element.get_property("drop-on-latency")
        out["mode"] = element.get_property("mode").value_nick
        return out

    def selected_pair(self) -> dict[str, Any] | None:
        promise = Gst.Promise.new()
        self.pc.emit("get-stats", None, promise)
        if promise.wait() != Gst.PromiseResult.REPLIED:
            return None
        reply = promise.get_reply()
        if reply is None:
            return None
        entries: dict[str, Any] = {}

        def collect(_field: str, value: Any) -> bool:
            if isinstance(value, Gst.Structure) and value.has_field("id"):
                entries[value.get_value("id")] = value
            return True

        reply.foreach(collect)
        transport = next((s for s in entries.values() if s.get_name() == "transport"), None)
        if transport is None or not transport.has_field("selected-candidate-pair-id"):
            return None
        pair = entries.get(transport.get_value("selected-candidate-pair-id"))
        if pair is None:
            return None

        def candidate(field: str) -> tuple[str | None, str | None]:
            # Follow the ids: GStreamer 1.22 names the two candidates' stats types the
            # wrong way round, but each pair field points at the right one.
            found = entries.get(pair.get_value(field)) if pair.has_field(field) else None
            if found is None:
                return None, None
            address = f"{found.get_value('address')}:{found.get_value('port')}"
            kind = found.get_value("candidate-type") if found.has_field("candidate-type") else None
            return address, None if kind is None else str(kind)

        local, local_type = candidate("local-candidate-id")
        remote, _ = candidate("remote-candidate-id")
        return {"local": local, "local_type": local_type, "remote": remote}

    def close(self) -> None:
        self.stop_audio()
        self.pipeline.set_state(Gst.State.NULL)
        self.loop.quit()


def call(options: argparse.Namespace) -> dict[str, Any]:
    rec = Recorder()
    out: dict[str, Any] = {
        "ok": False,
        "error": None,
        "stack": "gstreamer",
        "stack_version": f"GStreamer {Gst.version_string().split()[-1]}",
        "call_id": None,
        "backend": None,
        "location": None,
        "started": None,
        "talk_ms": None,
        "selected_pair": None,
        "server": None,
        "hang_up_status": None,
    }
    gst: GstCall | None = None
    talk_start: float | None = None
    end: float | None = None
    try:
        gst = GstCall(options, rec)
        out["ice"] = gst.ice_settings()
        threading.Thread(target=gst.loop.run, name="glib", daemon=True).start()
        if gst.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            raise CallFailed("internal", "the pipeline would not start")
        gst.start_feeding()
        if not gst.gathered.wait(options.setup_timeout):
            raise CallFailed("gather_timeout", f"ICE gathering took over {options.setup_timeout} s")
        if gst.failure or gst.offer_sdp is None:
            raise CallFailed("internal", gst.failure or "no local description")
        rec.start_clock()
        out["started"] = rec.started
        body = _post_offer(options, gst.offer_sdp, out)
        rec.mark("answer")
        gst.apply_answer(body)
        connected = rec.wait(
            lambda: gst is not None and gst.connection in ("connected", "failed", "closed"),
            options.setup_timeout,
        )
        if not connected:
            raise CallFailed(
                "setup_timeout", f"not connected {options.setup_timeout} s after the answer"
            )
        if gst.connection != "connected":
            raise CallFailed("connection_failed", f"connection {gst.connection} during setup")
        talk_start = time.monotonic()
        gst.start_audio()
        lost = rec.wait(
            lambda: gst is not None and gst.connection in ("failed", "closed"), options.seconds
        )
        gst.stop_audio()
        end = time.monotonic()
        if lost:
            raise CallFailed(
                "connection_lost",
                f"connection {gst.connection} after {end - talk_start:.1f} s of talk",
            )
    except CallFailed as error:
        out["error"] = str(error)
    except Exception as error:  # the call result must still be printed
        out["error"] = f"internal: {type(error).__name__}: {error}"
    finally:
        if end is None and rec.t0 is not None:
            end = time.monotonic()
        if gst is not None:
            gst.stop_audio()
            try:
                out["selected_pair"] = gst.selected_pair()
                out["jitterbuffer"] = gst.jitter()
            except Exception as error:
                print(f"stats failed: {error}", file=sys.stderr)
        if out["location"] is not None:
            out["server"] = _get_json(out["location"], options.http_timeout)
            out["hang_up_status"] = _delete(out["location"], options.http_timeout)
        if gst is not None:
            gst.close()
    out["ok"] = out["error"] is None
    if talk_start is not None and end is not None:
        out["talk_ms"] = round((end - talk_start) * 1000, 1)
    out["setup_ms"] = {phase: rec.phases.get(phase) for phase in SETUP_PHASES}
    out["uplink"] = {"packets_sent": rec.sent}
    out["end_ms"] = rec.ms(end) if end is not None else None
    out["events"] = rec.events
    out["agent_turns"] = rec.agent_turns
    out["arrivals_ms"] = rec.arrivals
    out["states"] = rec.states
    return out


def _post_offer(options: argparse.Namespace, sdp: str, out: dict[str, Any]) -> str:
    request = urllib.request.Request(
        options.offer_url,
        data=sdp.encode(),
        method="POST",
        headers={"Content-Type": "application/sdp"},
    )
    try:
        with urllib.request.urlopen(request, timeout=options.http_timeout) as response:
            status, headers, body = response.status, response.headers, response.read().decode()
            url = response.url
    except urllib.error.HTTPError as error:
        text = error.read().decode(errors="replace")
        raise CallFailed("offer_rejected", f"HTTP {error.code}: {_error_text(text)}") from error
    except (urllib.error.URLError, OSError) as error:
        raise CallFailed("unreachable", f"POST {options.offer_url}: {error}") from error
    if status != 201:
        raise CallFailed("offer_rejected", f"HTTP {status}: {_error_text(body)}")
    location = headers.get("Location")
    if not location:
        raise CallFailed("bad_answer", "201 without a Location header")
    out["location"] = urllib.parse.urljoin(url, location)
    out["call_id"] = location.rstrip("/").rsplit("/", 1)[-1]
    backend = headers.get(BACKEND_HEADER)
    out["backend"] = int(backend) if backend and backend.isdigit() else backend
    return body


def _error_text(body: str) -> str:
    try:
        error = json.loads(body)["error"]
        return f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return body[:200]


def _get_json(url: str, timeout_s: float) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return json.loads(response.read()) if response.status == 200 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _delete(url: str, timeout_s: float) -> int | None:
    request = urllib.request.Request(url, method="DELETE")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, OSError):
        print(f"hang-up failed: {url}", file=sys.stderr)
        return None


def check() -> list[str]:
    """What this Python and GStreamer lack for a call (empty: nothing)."""
    if IMPORT_ERROR is not None:
        return [
            f"GObject introspection for GStreamer ({IMPORT_ERROR}): python3-gi, "
            "gir1.2-gst-plugins-base-1.0, gir1.2-gst-plugins-bad-1.0"
        ]
    Gst.init(None)
    return [
        f"GStreamer element {name} ({package})"
        for name, package in ELEMENTS.items()
        if Gst.ElementFactory.find(name) is None
    ]


def parse_options(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="call.py",
        description=(
            "One call from GStreamer's webrtcbin: an Opus sendrecv transceiver and the "
            f'"{EVENTS_LABEL}" data channel, no ICE servers, ICE on --bind only; waits for '
            "ICE gathering to complete, POSTs the offer (application/sdp), sends the voice in "
            "--audio in a loop while counting the agent's audio and events, then reads "
            "GET <Location>, DELETEs it and prints one JSON line. Exit status 0 when a result "
            "was printed (its ok says how the call went), 2 for bad arguments."
        ),
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="print what is missing for a call as one JSON line and exit (1 if anything is)",
    )
    parser.add_argument("--offer-url", help="where to POST the offer (required for a call)")
    parser.add_argument(
        "--audio", help="the caller's voice, looped: raw 16-bit mono PCM, 48 kHz (required)"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="talk time once connected")
    parser.add_argument(
        "--setup-timeout",
        type=float,
        default=10.0,
        help="give up if not gathered, or not connected, this many seconds in",
    )
    parser.add_argument("--http-timeout", type=float, default=10.0, help="per HTTP request")
    parser.add_argument("--bind", default="127.0.0.1", help="the only address ICE gathers on")
    options = parser.parse_args(argv)
    if not options.check and not (options.offer_url and options.audio):
        parser.error("--offer-url and --audio are required for a call")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_options(sys.argv[1:] if argv is None else argv)
    if options.check:
        missing = check()
        print(json.dumps({"missing": missing}))
        return 1 if missing else 0
    if IMPORT_ERROR is not None:
        print(f"cannot call: {IMPORT_ERROR}", file=sys.stderr)
        return 2
    Gst.init(None)
    result = call(options)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    # GStreamer and libnice keep threads alive after the pipeline stopped: leave now.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
