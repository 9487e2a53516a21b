"""A short run of every scenario, checking that its verdicts see what they claim.

Each test starts real stacks (subprocesses, real aiortc callers, the path
emulator) through the same code as `rtclab scenario run --quick`, then reads
the results the report is rendered from.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from lab.scenarios.catalogue import CATALOGUE, SCENARIOS
from lab.scenarios.evidence import CONSENT_INTERVAL_MAX_S, RECOVERY_MARGIN_S
from lab.scenarios.report import SCHEMA, run_scenario

pytestmark = pytest.mark.e2e

WITHIN_CONSENT_S = CONSENT_INTERVAL_MAX_S + RECOVERY_MARGIN_S


async def run(name: str, out: Path) -> dict[str, Any]:
    results = await run_scenario(CATALOGUE[name], out / name, quick=True, progress=lambda _m: None)
    assert results["error"] is None, results.get("traceback")
    # What was returned is what was written, and the report was rendered from it.
    written = json.loads((out / name / "results.json").read_text())
    assert written["schema"] == SCHEMA and written["scenario"] == name
    report = (out / name / "report.md").read_text()
    assert "| claim | expected | observed | verdict |" in report
    for plot in written["plots"]:
        assert (out / name / plot["file"]).stat().st_size > 1000
    return written


def verdicts(results: dict[str, Any]) -> dict[str, str]:
    return {f["claim"]: f["verdict"] for f in results["findings"]}


def test_catalogue_names_match_design() -> None:
    assert [s.name for s in SCENARIOS] == [
        "baseline",
        "ip-change",
        "nat-rebind",
        "relay-restart",
        "relay-failover",
        "backend-crash",
        "backend-drain",
        "loss",
        "setup-rtt",
        "tts-burst",
        "capacity",
        "port-footprint",
        "interop",
    ]
    assert all(s.purpose and len(s.runs(True)) >= 1 for s in SCENARIOS)


async def test_baseline(tmp_path: Path) -> None:
    results = await run("baseline", tmp_path)
    assert set(verdicts(results).values()) == {"confirmed"}
    assert results["metrics"]["max_loss_ratio"] == 0


@pytest.mark.parametrize("name", ["ip-change", "nat-rebind"])
async def test_mobility(name: str, tmp_path: Path) -> None:
    results = await run(name, tmp_path)
    metrics = results["metrics"]
    # Each figure rests on its moves (fewer in the quick set, and the report says so),
    # drawn from the seed results.json records.
    assert results["seed"] == metrics["seed"] == CATALOGUE[name].seed
    assert metrics["quick"] and metrics["moves_planned"] == 4
    policies = metrics["policies"]
    off, verified, ssrc = policies["off"], policies["verified"], policies["ssrc"]
    for policy in (off, verified, ssrc):
        assert policy["moves"] == 4 and not policy["errors"], policy["errors"]
        low, high = policy["after_connect_s"]  # the moves fell at different phases
        assert high - low > 2.0
    # The published design: uplink back at the next consent check, downlink never.
    assert off["uplink"]["ended"] == 4 and off["uplink"]["max"] <= WITHIN_CONSENT_S
    assert off["downlink"]["ended"] == 0 and off["downlink"]["median"] is None
    # Keyed by the session and the server's answer: both back within one interval.
    for direction in ("uplink", "downlink"):
        assert verified[direction]["ended"] == 4
        assert verified[direction]["max"] <= WITHIN_CONSENT_S
        assert ssrc[direction]["ended"] == 4 and ssrc[direction]["max"] <= 1.0
    # The figure spreads with the phase: what one move alone would have hidden.
    waiting = off["uplink"]["values"] + verified["uplink"]["values"]
    assert max(waiting) - min(waiting) >= 1.5
    assert "refuted" not in verdicts(results).values()
    report = (tmp_path / name / "report.md").read_text()
    assert "4 moves each (quick set; a full run makes 8)" in report
    assert any(plot["file"] == "recovery.png" for plot in results["plots"])


async def test_relay_restart(tmp_path: Path) -> None:
    results = await run("relay-restart", tmp_path)
    calls = results["metrics"]["calls"]
    assert calls and all("uplink" in c for c in calls)
    for call in calls:
        # The next consent check rebuilds the route for the uplink...
        assert call["uplink"]["after_restart_s"] <= WITHIN_CONSENT_S
        # ...but the new upstream socket is a new peer to aioice: the downlink stays dead.
        assert not call["downlink"]["recovered"]
    found = list(verdicts(results).values())
    assert found == ["confirmed", "refuted"]


@pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server is not installed")
async def test_relay_failover(tmp_path: Path) -> None:
    results = await run("relay-failover", tmp_path)
    metrics = results["metrics"]
    # Killed instance, in-memory state: uplink at the next consent check, downlink lost.
    for call in metrics["memory"]["moved"]:
        assert call["uplink"]["recovery_s"] <= WITHIN_CONSENT_S
        assert not call["downlink"]["recovered"]
    # Redis: the survivor takes the flow over on its first packet, same upstream address.
    moved = metrics["redis"]["moved"]
    assert moved and metrics["memory"]["moved"], "the busiest relay carried no call"
    for call in moved:
        for direction in ("uplink", "downlink"):
            assert call[direction]["recovery_s"] is not None
            assert call[direction]["recovery_s"] <= 0.5
    assert metrics["redis"]["takeovers"].get("same", 0) >= len(moved)
    # Redis gone: known flows carry on.
    outage = metrics["redis_outage"]
    assert outage["calls_ok"] == outage["calls"] and outage["max_gap_s"] < 0.3


async def test_backend_crash(tmp_path: Path) -> None:
    results = await run("backend-crash", tmp_path)
    metrics = results["metrics"]
    assert metrics["survivors"] >= 1 and metrics["survivors_ok"] == metrics["survivors"]
    assert metrics["survivors_max_loss"] == 0
    assert metrics["victims"] and all(not v["downlink"]["recovered"] for v in metrics["victims"])
    assert metrics["new_calls"] and all(c["ok"] and c["backend"] == 1 for c in metrics["new_calls"])


async def test_backend_drain(tmp_path: Path) -> None:
    results = await run("backend-drain", tmp_path)
    assert set(verdicts(results).values()) == {"confirmed"}
    assert set(results["metrics"]["new_calls_backends"]) == {1}


async def test_loss(tmp_path: Path) -> None:
    results = await run("loss", tmp_path)
    conditions = results["metrics"]["conditions"]
    five = conditions["random 5%"]
    for direction in ("uplink", "downlink"):
        assert five[direction] >= 0.025, (direction, five)  # audio lost on that direction
        assert five[f"{direction}_rtp"] > 0  # and the wire did lose packets
        assert conditions["random 0%"][direction] == 0


async def test_setup_rtt(tmp_path: Path) -> None:
    results = await run("setup-rtt", tmp_path)
    fits = results["metrics"]["fits"]
    # Each later phase costs more round trips, and the fit is a line.
    assert 1.0 < fits["answer"]["round_trips"] < fits["datachannel_open"]["round_trips"]
    assert fits["ice_connected"]["round_trips"] < fits["dtls_connected"]["round_trips"]
    assert fits["datachannel_open"]["r2"] > 0.9
    medians = results["metrics"]["medians_ms"]
    assert medians["200"]["datachannel_open"] > medians["0"]["datachannel_open"] + 600


async def test_tts_burst(tmp_path: Path) -> None:
    results = await run("tts-burst", tmp_path)
    clean = results["metrics"]["answers"]["clean"]
    dark = results["metrics"]["answers"]["1 s downlink blackout mid-answer"]
    assert clean["generation_finished_ms"] < clean["last_frame_sent_ms"] - 2000
    assert clean["frames_heard"] >= clean["frames_expected"] - 5
    assert 35 <= dark["frames_expected"] - dark["frames_heard"] <= 65


async def test_capacity(tmp_path: Path) -> None:
    results = await run("capacity", tmp_path)
    metrics = results["metrics"]
    levels = metrics["levels"]
    assert [lvl["concurrent"] for lvl in levels] == [2, 4, 6][: len(levels)]
    assert metrics["stopped"] in ("cap", "degraded")
    if metrics["stopped"] == "degraded":
        assert metrics["degraded_at"] == levels[-1]["concurrent"]
    # Every call the ramp started ran, and was ended when the ramp stopped.
    assert metrics["calls"] == levels[-1]["concurrent"] and metrics["calls_ok"] == metrics["calls"]
    fractions = [lvl["media_core_fraction"] for lvl in levels]
    assert all(f is not None and f > 0 for f in fractions)
    # The lab's busy share adds the media server to the callers and the other parts.
    for lvl in levels:
        assert lvl["lab_busy"] * metrics["cores"] > lvl["media_core_fraction"]
        assert lvl["cpu_pressure"] is None or 0 <= lvl["cpu_pressure"] <= 1
    assert fractions[-1] > fractions[0]  # more sessions, more CPU
    assert metrics["media_core_per_session"] > 0


async def test_port_footprint(tmp_path: Path) -> None:
    results = await run("port-footprint", tmp_path)
    direct, relay = results["metrics"]["direct"], results["metrics"]["relay"]
    assert direct["public_udp_ports"] == direct["calls"] == direct["calls_ok"]
    # Behind the relay, the media server holds one shared socket for every call.
    assert relay["public_udp_ports"] == 1 and relay["media_server_udp_ports"] == 1


async def test_interop(tmp_path: Path) -> None:
    results = await run("interop", tmp_path)
    metrics = results["metrics"]
    assert results["seed"] == metrics["seed"] and metrics["moves_planned"] == 1
    clients = metrics["clients"]
    available = {name: c for name, c in clients.items() if c["available"]}
    assert "aiortc" in available
    for name, client in available.items():
        for policy, cell in client["policies"].items():
            assert cell["calls"] == 1 and cell["connected"], (name, policy, cell["errors"])
            assert cell["uplink_received"] > 0, (name, policy)
            if not cell["send_only"]:
                assert cell["downlink_received"] > 0, (name, policy)
            assert cell["rebind"]["moves"] == 1, (name, policy)
        uplink = client["policies"]["verified"]["rebind"]["uplink"]
        checks_again = client["keepalive"]["first_request_after_move_s"]["ended"] > 0
        if checks_again:
            # Keyed by the session and the server's answer, a client that checks comes back.
            assert uplink["ended"] == 1 and uplink["max"] <= WITHIN_CONSENT_S, (name, uplink)
        else:
            # One that sends no check after the move (libnice as webrtcbin runs it) is
            # never found again by a relay that learns addresses from STUN.
            assert uplink["ended"] == 0, (name, uplink)
            silent = [f for f in results["findings"] if f["claim"].startswith(f"A {name} ")]
            assert [f["verdict"] for f in silent] == ["confirmed"], silent
    # The published policy strands the downlink of the lab's own caller.
    assert clients["aiortc"]["policies"]["off"]["rebind"]["downlink"]["ended"] == 0
    assert any(plot["file"] == "recovery.png" for plot in results["plots"])
