"""A client in a process of its own: it prints one JSON line, which becomes a call result.

The Node stacks (``node/call.js``) and GStreamer (``gst/call.py``) run as
subprocesses and print what they measured in one shape: ``ok``, ``error``,
``call_id``, ``backend``, ``location``, ``started`` (Unix time of the POST),
``setup_ms``, ``talk_ms``, ``uplink`` {``packets_sent``}, ``downlink``
{``packets_received``, ``packets_lost``, ``loss_ratio``, ``max_gap_ms``},
``events``, ``agent_turns``, ``arrivals_ms``, ``states``, ``selected_pair``
{``local``, ``local_type``, ``remote``}, ``server`` (the ``GET <Location>``
body read before hanging up), ``hang_up_status``, ``stack`` and
``stack_version``.  :func:`call_result` turns that into the call result of
DESIGN.md; :func:`run_client` runs one such process with a hang guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lab.callers.record import SETUP_PHASES, CallRecord, session_from_body

log = logging.getLogger("rtclab.caller")


def call_result(raw: dict[str, Any]) -> dict[str, Any]:
    """The call result (DESIGN.md) from what a client's script printed.

    Uplink comes from the server's session (what arrived there), downlink from
    the client's own count; setup times are the client's, in ms from the POST.
    ``arrivals_ms`` holds [ms since the POST, packets received so far] whenever
    audio arrived: per packet for werift and libdatachannel, per 20 ms stats poll
    for libwebrtc (which shows no packets, only counters); GStreamer's are [ms,
    RTP timestamp] per packet (lab/callers/gstreamer.py reads those itself).
    """
    record = CallRecord(keep_arrivals=True)
    record.call_id = raw.get("call_id")
    record.backend = raw.get("backend")
    record.location = raw.get("location")
    record.error = None if raw.get("ok") else str(raw.get("error") or "failed")
    record.started_epoch = raw.get("started")
    record.server_session = session_from_body(raw.get("server"))
    record.uplink_sent = (raw.get("uplink") or {}).get("packets_sent")
    result = record.result()

    seen = raw.get("setup_ms") or {}
    result["setup_ms"] = {phase: seen.get(phase) for phase in SETUP_PHASES}
    result["talk_ms"] = raw.get("talk_ms")
    down = raw.get("downlink") or {}
    result["downlink"].update({key: down.get(key) for key in down})
    # werift and libdatachannel count RTP packets; libwebrtc's counters are RTP-level too.
    received, lost = down.get("packets_received"), down.get("packets_lost")
    if isinstance(received, int) and isinstance(lost, int):
        result["downlink"].update(
            rtp_packets_received=received,
            rtp_packets_lost=lost,
            rtp_loss_ratio=down.get("loss_ratio"),
        )
    pair = raw.get("selected_pair") or {}
    # A peer-reflexive local candidate is the address the server saw (through the
    # relay: the relay's upstream socket), not this client's own.
    result["local_address"] = pair.get("local") if pair.get("local_type") == "host" else None
    result["remote_address"] = pair.get("remote")
    result["selected_pair"] = pair or None
    result["events"] = raw.get("events") or []
    result["arrivals_ms"] = raw.get("arrivals_ms") or []
    result["states"] = raw.get("states") or []
    result["agent_turns"] = raw.get("agent_turns") or []
    result["client"] = {"stack": raw.get("stack"), "version": raw.get("stack_version")}
    result["hang_up_status"] = raw.get("hang_up_status")
    return result


def failed_result(error: str) -> dict[str, Any]:
    record = CallRecord()
    record.error = error
    return record.result()


def last_json_line(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        with contextlib.suppress(ValueError):
            parsed = json.loads(line)
            if isinstance(parsed, dict):
                return parsed
    return None


async def run_client(
    argv: Sequence[str],
    budget_s: float,
    name: str,
    *,
    env: Mapping[str, str] | None = None,
    read: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run one client process; its call result, or a failed one saying why there is none.

    The process gets ``budget_s`` in all (its own timeouts should end it first);
    then it is killed.  Its last JSON line on stdout is its result, whatever its
    exit status (a native stack may crash on the way out, after printing), read
    by ``read`` (default :func:`call_result`).
    """
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=None if env is None else dict(env),
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), budget_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
        await process.wait()
        return failed_result(f"client_hung: {name} gave no result in {budget_s:g} s")
    raw = last_json_line(stdout.decode(errors="replace"))
    if raw is None:
        tail = "\n".join(stderr.decode(errors="replace").strip().splitlines()[-10:])
        return failed_result(
            f"client_crashed: {name} exited {process.returncode} without a result: {tail}"
        )
    if stderr.strip():
        log.debug("client stderr", extra={"client": name, "stderr": stderr.decode()})
    return (read or call_result)(raw)
