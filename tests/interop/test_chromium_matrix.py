"""The interop matrix: which runs it plans, and how it reads what they saw.

Runs are planned for every client this machine can run (Chromium among them
where it is installed); the analysis is fed run data in the runner's shape,
built from call results, so the matrix rows are checked against known
timelines: a client whose downlink never returns, one that recovers, one that
only sends.
"""

from __future__ import annotations

from typing import Any

from lab.callers.chromium import DRIVER
from lab.callers.drivers import DRIVERS
from lab.callers.page.result import call_result
from lab.scenarios.catalogue.interop import INTEROP, POLICIES, availability
from lab.scenarios.model import Verdict
from lab.scenarios.observe import RunClock
from lab.scenarios.runner import place_call_on_clock

ORIGIN = 1_800_000_000.0
MOVE_S = 6.0
END_MS = 14_000.0


def test_every_known_client_is_planned_or_explained() -> None:
    found = availability()
    assert list(found) == list(DRIVERS)
    assert found["aiortc"] is None
    runs = INTEROP.runs(True)
    planned = {run.client for run in runs}
    assert planned == {name for name, reason in found.items() if reason is None}
    assert ("chromium" in planned) == (DRIVER.unavailable() is None)
    for name in planned:
        mine = [run for run in runs if run.client == name]
        assert [run.stack["rebind"] for run in mine] == list(POLICIES)  # quick: one run each
        for run in mine:
            *starts, move = run.steps
            assert move.action.value == "rebind" and move.args["mode"] == "port"
            # One call (quick), moved once, watched past the move.
            assert [s.action.value for s in starts] == ["start_calls"]
            assert all(s.at_s + s.args["seconds"] > move.at_s for s in starts)


def frames(start_ms: float, end_ms: float) -> list[list[float]]:
    """One arrival per 20 ms frame, ms since the call's POST."""
    count = int((end_ms - start_ms) // 20)
    return [[start_ms + 20 * i, i + 1] for i in range(count)]


def run_data(
    client: str,
    policy: str,
    *,
    down_back_ms: float | None,
    up_back_s: float,
    send_only: bool = False,
) -> dict[str, Any]:
    """One run as execute_run returns it: the call started at the run's origin."""
    move_ms = MOVE_S * 1000
    arrivals = [] if send_only else frames(60, move_ms)
    if down_back_ms is not None and not send_only:
        arrivals += frames(move_ms + down_back_ms, END_MS)
    page = {
        "started": ORIGIN,
        "phases": {"answer": 20.0, "dtls_connected": 50.0},
        "arrivals": arrivals,
        "stats": {
            "inbound": None if send_only else {"packetsReceived": len(arrivals), "packetsLost": 0}
        },
    }
    server = {
        "uplink": {"packets_received": 500},
        "uplink_timeline": {
            "first": ORIGIN + 0.06,
            "last": ORIGIN + END_MS / 1000,
            "gaps": [[ORIGIN + MOVE_S, up_back_s]],
        },
    }
    result = call_result(page, server, end_ms=END_MS, error=None)
    clock = RunClock()
    clock.origin = ORIGIN
    return {
        "label": f"{client}, rebind={policy}",
        "tags": {
            "client": client,
            "rebind": policy,
            "direction": "sendonly" if send_only else "sendrecv",
            "moves": 1,
            "quick": True,
        },
        "steps": [{"action": "rebind", "done_at_s": MOVE_S, "outcome": {"rebinds": [{}]}}],
        "calls": [place_call_on_clock(result, clock, "initial")],
    }


def test_the_matrix_reads_connection_audio_and_recovery_per_client_and_policy() -> None:
    data = [
        run_data("aiortc", "off", down_back_ms=None, up_back_s=4.0),
        run_data("aiortc", "verified", down_back_ms=4000, up_back_s=4.0),
        run_data("chromium", "off", down_back_ms=500, up_back_s=0.5),
        run_data("chromium", "verified", down_back_ms=400, up_back_s=0.4),
        run_data("ffmpeg-whip", "off", down_back_ms=None, up_back_s=3.0, send_only=True),
    ]
    analysis = INTEROP.analyse(data)
    clients = analysis.metrics["clients"]

    assert clients["aiortc"]["policies"]["off"]["rebind"]["downlink"]["ended"] == 0
    assert (
        clients["chromium"]["policies"]["off"]["rebind"]["downlink"]["max"] == 0.52
    )  # the last frame before came at 5.98 s
    assert clients["ffmpeg-whip"]["policies"]["off"]["rebind"]["downlink"] is None
    # Clients with no run are still listed, each with the reason.
    for name in set(DRIVERS) - {"aiortc", "chromium", "ffmpeg-whip"}:
        assert clients[name]["available"] is False and clients[name]["reason"]

    ((_title, header, rows),) = analysis.tables
    assert header[:2] == ("client", "--rebind")
    by_cell = {(row[0], row[1]): row for row in rows}
    assert by_cell[("aiortc", "off")][2] == "50 ms"
    assert by_cell[("aiortc", "off")][5].startswith("never")
    assert by_cell[("chromium", "off")][5] == "0.5 s"
    assert by_cell[("ffmpeg-whip", "off")][3] == "n/a / 500"
    assert by_cell[("ffmpeg-whip", "off")][5] == "n/a (send-only)"

    verdicts = {f.claim: f.verdict for f in analysis.findings}
    off = "rebind=off (as published) loses the downlink of a moved {} client"
    assert verdicts[off.format("aiortc")] is Verdict.CONFIRMED
    assert verdicts[off.format("chromium")] is Verdict.REFUTED
    assert off.format("ffmpeg-whip") not in verdicts  # it has no downlink to lose
    assert verdicts["rebind=verified: every client recovers after a rebind"] is Verdict.CONFIRMED
    assert verdicts["Every client here connects through signaling and the one-port relay"] is (
        Verdict.CONFIRMED
    )
