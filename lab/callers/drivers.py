"""Every kind of client the lab can put on a call, behind one interface.

Scenarios and interop tests ask for a client by name; each driver says whether
it can run on this machine (a browser or Node may be missing) and makes one
call, returning the call result of DESIGN.md (``schema: 1``) as far as that
client can measure it.  Drivers live in their own modules and are imported
only when asked for, so a missing browser costs nothing to the rest.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

ConnectedHook = Callable[[Any], Awaitable[None] | None]


class ClientDriver(Protocol):
    name: str
    # What the client sends and hears: "sendrecv", or "sendonly" (FFmpeg WHIP publishes).
    direction: str

    def unavailable(self) -> str | None:
        """None if the client can run here, else why not (shown in reports and skips)."""
        ...

    async def call(self, offer_url: str, *, seconds: float) -> dict[str, Any]:
        """One call to ``offer_url`` (POST SDP, 201 + Location); its call result.

        Must include ``ok``, ``error``, ``call_id``, ``backend``, ``setup_ms``
        (``answer`` and ``dtls_connected`` at least, ms from the offer POST),
        ``uplink``/``downlink`` packet counts where measurable, ``started``
        (Unix time of the POST) and ``arrivals_ms`` ([ms since the POST, pts]
        per downlink frame or packet, for recovery timelines) where it can.
        """
        ...


# name -> "module:attribute"; modules are imported on first use.
DRIVERS: dict[str, str] = {
    "aiortc": "lab.callers.aiortc_caller:DRIVER",
    "chromium": "lab.callers.chromium:DRIVER",
    "ffmpeg-whip": "lab.callers.ffmpeg_whip:DRIVER",
    "node-wrtc": "lab.callers.node:WRTC",
    "node-werift": "lab.callers.node:WERIFT",
    "node-datachannel": "lab.callers.node:NODE_DATACHANNEL",
    "gstreamer": "lab.callers.gstreamer:DRIVER",
}


def driver(name: str) -> ClientDriver:
    try:
        target = DRIVERS[name]
    except KeyError as exc:
        raise ValueError(f"no client {name!r}; known: {', '.join(DRIVERS)}") from exc
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    found: ClientDriver = getattr(module, attribute)
    return found
