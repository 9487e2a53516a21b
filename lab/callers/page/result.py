"""The call page's own report, ``window.rtclab.snapshot()``, as a call result (pure).

The page (signaling/static/) times everything in ms since its offer POST and
reads the downlink from getStats; the server's session JSON adds the uplink
and what the media server saw.  Any driver of the page (a browser under
automation) hands both here and gets the call result of DESIGN.md
(``schema: 1``) with the keys the aiortc caller fills, plus ``arrivals_ms``
for the scenario timelines.
"""

from __future__ import annotations

import itertools
from typing import Any

from lab.callers.conversation import pair_turns
from lab.callers.record import SCHEMA, SERVER_VIEW_KEYS, SETUP_PHASES, STATS_KEYS

FRAME_MS = 20.0  # one Opus packet per frame, as the agent sends


def failed_result(error: str) -> dict[str, Any]:
    """A call that never got as far as the page's Call button (``error``: "code: message")."""
    return call_result({}, None, end_ms=None, error=error)


def call_result(
    snapshot: dict[str, Any],
    server_session: dict[str, Any] | None,
    *,
    end_ms: float | None,
    error: str | None,
) -> dict[str, Any]:
    """The call result (DESIGN.md, ``schema: 1``) from a page snapshot and the server's session.

    ``end_ms`` is when talking stopped (ms since the POST); the hang-up comes after.
    """
    error = error or snapshot.get("error")
    phases = snapshot.get("phases") or {}
    stats = snapshot.get("stats") or {}
    inbound = stats.get("inbound") or {}
    outbound = stats.get("outbound") or {}
    server = server_session or {}
    arrivals = [[float(ms), int(count)] for ms, count in snapshot.get("arrivals") or []]

    received = inbound.get("packetsReceived")
    missing = frames_missing(arrivals)
    # The browser's own count of lost packets is brought up to date only when it
    # sends an RTCP report (every few seconds): kept, but as the RTP-level view.
    rtp_lost = inbound.get("packetsLost")
    downlink: dict[str, Any] = dict.fromkeys(STATS_KEYS)
    downlink.update(
        packets_sent=server.get("downlink_sent"),
        packets_received=received,
        packets_lost=missing,
        loss_ratio=_ratio(received, missing),
        max_gap_ms=max_gap_ms([ms for ms, _ in arrivals], end_ms),
        rtp_packets_received=received,
        rtp_packets_lost=rtp_lost,
        rtp_loss_ratio=_ratio(received, rtp_lost),
    )
    uplink: dict[str, Any] = dict.fromkeys(STATS_KEYS)
    if isinstance(server.get("uplink"), dict):
        uplink.update({k: v for k, v in server["uplink"].items() if k in uplink})
    uplink["packets_sent"] = outbound.get("packetsSent")

    ends = [ms for ms in snapshot.get("utterance_ends") or [] if end_ms is None or ms <= end_ms]
    turns = pair_turns(ends, list(snapshot.get("agent_onsets") or []))
    connected = phases.get("dtls_connected")
    talk_ms = None if end_ms is None or connected is None else round(end_ms - connected, 1)
    levels = snapshot.get("levels") or {}
    return {
        "schema": SCHEMA,
        "ok": error is None,
        "error": error,
        "call_id": snapshot.get("call_id"),
        "backend": _backend(snapshot.get("backend")),
        "location": snapshot.get("location"),
        "started": snapshot.get("started"),
        "talk_ms": talk_ms,
        "setup_ms": {phase: phases.get(phase) for phase in SETUP_PHASES},
        "uplink": uplink,
        "downlink": downlink,
        "turns": [
            {
                "speech_end_ms": turn.speech_end_s,
                "first_response_audio_ms": turn.response_onset_s,
                "latency_ms": round(turn.latency_s, 1),
            }
            for turn in turns
        ],
        "utterances": len(ends),
        "agent_level_peak_dbfs": levels.get("outPeakDbfs"),
        "rtt_ms": stats.get("rttMs"),
        # STUN checks the browser sent on its selected pair (consent and keepalive).
        "ice_checks": _checks(stats.get("checks")),
        "local_address": stats.get("local"),
        # The address the media server reflected back (the relay's upstream socket).
        "mapped_address": stats.get("mapped"),
        "remote_address": stats.get("remote"),
        "server_view": ({key: server.get(key) for key in SERVER_VIEW_KEYS} if server else None),
        "states": [list(state) for state in snapshot.get("states") or []],
        "events": [list(event) for event in snapshot.get("events") or []],
        "arrivals_ms": arrivals,
    }


def frames_missing(arrivals: list[list[float]]) -> int | None:
    """Frames the sender sent between the first and last arrival that never arrived.

    The agent sends one packet per 20 ms frame without pause, so the span between
    two arrivals says how many packets left in between; the page's packet counts
    at those arrivals say how many came.
    """
    if len(arrivals) < 2:
        return None
    (first_ms, first_count), (last_ms, last_count) = arrivals[0], arrivals[-1]
    sent = round((last_ms - first_ms) / FRAME_MS)
    return max(0, sent - int(last_count - first_count))


def max_gap_ms(arrivals_ms: list[float], end_ms: float | None) -> float | None:
    """The longest silence between downlink arrivals, and after the last one until the end.

    The page samples getStats, which Chromium caches for tens of ms: short gaps
    blur, so a clean call shows ~40 ms, not 20; a stall of 100 ms or more shows.
    """
    if not arrivals_ms:
        return None
    points = sorted(arrivals_ms)
    if end_ms is not None and end_ms > points[-1]:
        points.append(end_ms)
    gaps = [b - a for a, b in itertools.pairwise(points)]
    return round(max(gaps, default=0.0), 1)


def _checks(checks: object) -> dict[str, Any] | None:
    if not isinstance(checks, dict):
        return None
    return {
        "requests_sent": checks.get("requestsSent"),
        "responses_received": checks.get("responsesReceived"),
    }


def _ratio(received: int | None, lost: int | None) -> float | None:
    if received is None or lost is None:
        return None
    expected = received + max(0, lost)
    return round(max(0, lost) / expected, 6) if expected else 0.0


def _backend(value: object) -> int | str | None:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value if isinstance(value, int | str) else None
