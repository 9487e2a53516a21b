"""What one call observed, and the call result made from it (pure; the shell feeds it).

Every time is on the caller's monotonic clock, in seconds; the result reports
milliseconds since the offer was POSTed (``t0_s``).  The shell hands in
received frames, data-channel messages and the server's session JSON; nothing
here touches sockets, aiortc or a clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from lab.callers.conversation import pair_turns
from wire.addr import Address, format_hostport
from wire.speech import Vad, VadEvent
from wire.streamstats import ArrivalStats, with_rtp

SCHEMA = 1
SETUP_PHASES = ("answer", "ice_connected", "dtls_connected", "first_audio_in", "datachannel_open")
STATS_KEYS = (
    "packets_sent",
    "packets_received",
    "packets_lost",
    "loss_ratio",
    "max_gap_ms",
    "rtp_packets_received",
    "rtp_packets_lost",
    "rtp_loss_ratio",
)


def session_from_body(body: object) -> dict[str, Any] | None:
    """The media session in a ``GET <Location>`` body: the body itself, or its ``session``."""
    if isinstance(body, dict) and isinstance(body.get("session"), dict):
        body = body["session"]
    return body if isinstance(body, dict) else None


def error_text(body: str) -> str:
    """``code: message`` from a JSON error body, else the body's start."""
    try:
        error = json.loads(body).get("error", {})
        return f"{error.get('code')}: {error.get('message')}"
    except (ValueError, AttributeError):
        return body[:200]


# What the caller keeps of the media server's own report on the session.
SERVER_VIEW_KEYS = (
    "id",
    "remote",
    "server_ufrag",
    "local_port",
    "state",
    "close_reason",
    "closed",
    "uplink_timeline",
    "media_socket",
    "forward",
    "remotes",
)


@dataclass
class CallRecord:
    keep_arrivals: bool = False
    keep_events: bool = True
    t0_s: float | None = None  # when the offer was POSTed
    started_epoch: float | None = None
    talk_start_s: float | None = None
    end_s: float | None = None
    call_id: str | None = None
    backend: int | str | None = None
    location: str | None = None
    error: str | None = None
    local: Address | None = None
    remote: Address | None = None
    phases: dict[str, float] = field(default_factory=dict)
    downlink: ArrivalStats = field(default_factory=ArrivalStats)
    listener: Vad = field(default_factory=Vad)  # hears the agent's answers start
    response_onsets: list[float] = field(default_factory=list)
    utterance_ends: list[float] = field(default_factory=list)
    arrivals: list[list[float]] = field(default_factory=list)
    events: list[list[Any]] = field(default_factory=list)
    # [ms since the offer, "connection" | "ice", new state]: when the caller's own
    # stack noticed anything (a dead path often shows here late, or never).
    states: list[list[Any]] = field(default_factory=list)
    agent_turns: list[dict[str, Any]] = field(default_factory=list)
    server_session: dict[str, Any] | None = None
    uplink_sent: int | None = None
    downlink_rtp: tuple[int, int] | None = None  # (received, lost) at the RTP layer

    def ms(self, at_s: float | None) -> float | None:
        if at_s is None or self.t0_s is None:
            return None
        return round((at_s - self.t0_s) * 1000, 1)

    def mark(self, phase: str, now_s: float) -> None:
        """A setup phase reached (the first time counts; nothing before the offer)."""
        if self.t0_s is not None and phase not in self.phases:
            self.phases[phase] = now_s

    def on_downlink_frame(self, now_s: float, pts: int | None, level_dbfs: float) -> None:
        self.mark("first_audio_in", now_s)
        self.downlink.on_frame(now_s, pts)
        if self.keep_arrivals:
            self.arrivals.append([self.ms(now_s) or 0.0, int(pts or 0)])
        change = self.listener.feed(level_dbfs, now_s)
        if change is not None and change[0] is VadEvent.SPEECH_STARTED:
            self.response_onsets.append(change[1])

    def on_state(self, kind: str, state: str, now_s: float) -> None:
        self.states.append([self.ms(now_s), kind, state])

    def on_event(self, message: object, now_s: float) -> None:
        """One ``oai-events`` message; anything that is not a JSON object is ignored."""
        try:
            event = json.loads(message) if isinstance(message, str) else None
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        kind = str(event.get("type"))
        if self.keep_events:
            self.events.append([kind, event.get("ts"), self.ms(now_s)])
        if kind == "response.done":
            response = event.get("response")
            timings = response.get("timings") if isinstance(response, dict) else None
            if isinstance(timings, dict):
                self.agent_turns.append(timings)

    def result(self) -> dict[str, Any]:
        """The call result (DESIGN.md, ``schema: 1``)."""
        end = self.end_s
        ends = [t for t in self.utterance_ends if end is None or t <= end]
        turns = pair_turns(ends, self.response_onsets)
        server = self.server_session or {}
        downlink = with_rtp(
            self.downlink.snapshot(until_s=end if self.downlink.received else None),
            self.downlink_rtp,
        )
        if isinstance(server.get("downlink_sent"), int):
            downlink["packets_sent"] = server["downlink_sent"]
        uplink: dict[str, Any] = dict.fromkeys(STATS_KEYS)
        if isinstance(server.get("uplink"), dict):
            uplink.update({k: v for k, v in server["uplink"].items() if k in uplink})
        uplink["packets_sent"] = self.uplink_sent
        talk_ms = None
        if end is not None and self.talk_start_s is not None:
            talk_ms = round((end - self.talk_start_s) * 1000, 1)
        result: dict[str, Any] = {
            "schema": SCHEMA,
            "ok": self.error is None,
            "error": self.error,
            "call_id": self.call_id,
            "backend": self.backend,
            "location": self.location,
            "started": round(self.started_epoch, 6) if self.started_epoch else None,
            "talk_ms": talk_ms,
            "setup_ms": {phase: self.ms(self.phases.get(phase)) for phase in SETUP_PHASES},
            "uplink": uplink,
            "downlink": downlink,
            "turns": [
                {
                    "speech_end_ms": self.ms(turn.speech_end_s),
                    "first_response_audio_ms": self.ms(turn.response_onset_s),
                    "latency_ms": round(turn.latency_s * 1000, 1),
                }
                for turn in turns
            ],
            "utterances": len(ends),
            "agent_turns": self.agent_turns,
            "local_address": format_hostport(self.local) if self.local else None,
            "remote_address": format_hostport(self.remote) if self.remote else None,
            "server_view": ({key: server.get(key) for key in SERVER_VIEW_KEYS} if server else None),
        }
        result["states"] = self.states
        if self.keep_events:
            result["events"] = self.events
        if self.keep_arrivals:
            result["arrivals_ms"] = self.arrivals
        return result
