"""GStreamer's webrtcbin (libnice ICE) as a lab caller.

Each call runs ``gst/call.py`` under the system's Python, not the project's
virtualenv: GStreamer is driven through GObject introspection, and Debian's
``python3-gi`` and typelibs serve the system's Python only (PyGObject from
PyPI would have to compile against the girepository and cairo development
packages, and a crash inside GStreamer or libnice then takes down a caller
process, not the lab).  The script prints one JSON line, as the Node clients'
script does (lab/callers/external.py reads both).

Install (Debian)::

    apt-get install python3-gi gir1.2-gst-plugins-base-1.0 gir1.2-gst-plugins-bad-1.0 \\
        gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \\
        gstreamer1.0-nice

``$RTCLAB_GST_PYTHON`` names another interpreter (default ``/usr/bin/python3``).

The caller's voice is the aiortc caller's (:class:`SpeakingPlan`), as raw PCM
that webrtcbin's pipeline encodes to Opus.  Downlink figures come from every
RTP packet as it reached GStreamer's receive jitter buffer (``arrivals_ms``:
[ms since the POST, RTP timestamp]); what the jitter buffer did with them
(``num_lost``, ``num_late``, ``drop_on_latency``, ...) is kept beside them in
``jitterbuffer``, and libnice's keepalive settings in ``ice``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.callers.conversation import SpeakingPlan
from lab.callers.external import call_result, failed_result, run_client
from lab.callers.voicefiles import voice_cache_dir, voice_file
from wire.streamstats import ArrivalStats

SCRIPT = Path(__file__).with_name("gst") / "call.py"
PYTHON_ENV = "RTCLAB_GST_PYTHON"
DEFAULT_PYTHON = "/usr/bin/python3"
APT_PACKAGES = (
    "python3-gi gir1.2-gst-plugins-base-1.0 gir1.2-gst-plugins-bad-1.0 "
    "gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad "
    "gstreamer1.0-nice"
)


def python() -> str:
    return os.environ.get(PYTHON_ENV) or DEFAULT_PYTHON


@functools.cache
def gstreamer_problem(interpreter: str | None = None) -> str | None:
    """None if ``interpreter`` can run a GStreamer call here, else why not (and what to install)."""
    interpreter = interpreter or python()
    if shutil.which(interpreter) is None:
        return f"{interpreter} not found (set ${PYTHON_ENV} to a Python with python3-gi)"
    try:
        done = subprocess.run(
            [interpreter, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60
        )
        missing = json.loads(done.stdout.strip().splitlines()[-1])["missing"]
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError, KeyError) as exc:
        return f"{interpreter} {SCRIPT.name} --check did not answer: {exc}"
    if missing:
        return f"missing {'; '.join(missing)} (apt-get install {APT_PACKAGES})"
    return None


def gstreamer_result(raw: dict[str, Any]) -> dict[str, Any]:
    """What ``call.py`` printed -> the call result, downlink figures from its RTP arrivals."""
    stats = ArrivalStats()
    for at_ms, rtp_ts in raw.get("arrivals_ms") or []:
        stats.on_frame(at_ms / 1000, int(rtp_ts))
    end_ms = raw.get("end_ms")
    until = end_ms / 1000 if isinstance(end_ms, int | float) and stats.received else None
    # What the server sent comes from its own report (call_result reads it).
    seen = {k: v for k, v in stats.snapshot(until_s=until).items() if k != "packets_sent"}
    raw = {**raw, "downlink": seen}
    result = call_result(raw)
    result["jitterbuffer"] = raw.get("jitterbuffer")
    result["ice"] = raw.get("ice")
    return result


@dataclass(frozen=True, slots=True)
class GstCallOptions:
    speaking: SpeakingPlan = field(default_factory=SpeakingPlan)
    # ICE gathers on this address only (webrtcbin's add-local-ip-address).
    bind_host: str = "127.0.0.1"
    # Loopback connects in ~150 ms; a loaded 2-core CI machine still fits.
    setup_timeout_s: float = 10.0
    # Signaling answers in milliseconds; a stuck server must not hang the caller.
    http_timeout_s: float = 10.0
    # Hang guard on top of the script's own timeouts: Python and GStreamer start-up,
    # gathering, three HTTP requests and stopping the pipeline.
    exit_grace_s: float = 30.0


class GstreamerDriver:
    """GStreamer webrtcbin as a :class:`lab.callers.drivers.ClientDriver`."""

    name = "gstreamer"
    direction = "sendrecv"

    def __init__(self, options: GstCallOptions | None = None) -> None:
        self.options = options or GstCallOptions()

    def unavailable(self) -> str | None:
        return gstreamer_problem(python())

    async def call(self, offer_url: str, *, seconds: float) -> dict[str, Any]:
        problem = self.unavailable()
        if problem is not None:
            return failed_result(f"unavailable: {problem}")
        options = self.options
        audio = voice_file("pcm", options.speaking, voice_cache_dir())
        argv = [
            python(),
            str(SCRIPT),
            "--offer-url",
            offer_url,
            "--audio",
            str(audio),
            "--seconds",
            f"{seconds:g}",
            "--setup-timeout",
            f"{options.setup_timeout_s:g}",
            "--http-timeout",
            f"{options.http_timeout_s:g}",
            "--bind",
            options.bind_host,
        ]
        budget_s = seconds + 2 * options.setup_timeout_s + options.exit_grace_s
        return await run_client(argv, budget_s, self.name, read=gstreamer_result)


DRIVER = GstreamerDriver()
