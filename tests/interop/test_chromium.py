"""Headless Chromium (Debian's package, driven by Playwright) on the call page.

The browser loads signaling's page, presses Call with the test tone and
talks to the agent through the relay of a live stack; a second test moves it
to a new address mid-call through the path emulator, with the scenario
machinery `rtclab scenario run ip-change --client chromium` uses.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lab.callers.chromium import DRIVER, ChromiumCall, ChromiumOptions
from lab.scenarios.catalogue.mobility import IP_CHANGE, with_client
from lab.scenarios.evidence import CONSENT_INTERVAL_MAX_S, RECOVERY_MARGIN_S
from lab.scenarios.report import run_scenario
from lab.stack import Stack, StackConfig
from tests.interop.live import skip_or_fail

pytestmark = pytest.mark.e2e

CALL_SECONDS = 6.0
# ~300 Opus frames in 6 s; allow for setup and frames in flight at hang-up.
MIN_PACKETS = 200
# The agent answers at -16 dBFS; decoded and measured by an analyser it stays far
# above the VAD threshold (-45), and silence is below -90.
AGENT_AUDIBLE_DBFS = -40.0


@pytest.fixture(autouse=True)
def chromium_available() -> None:
    reason = DRIVER.unavailable()
    if reason is not None:
        skip_or_fail(reason)


async def get_json(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.json()


@pytest.mark.parametrize("forward", ["nat", "encap"])
async def test_a_browser_calls_the_agent_through_the_relay(tmp_path: Path, forward: str) -> None:
    config = StackConfig(media_servers=1, forward=forward, log_dir=tmp_path / "logs")
    async with Stack(config) as stack:
        call = ChromiumCall(
            f"{stack.signaling_url}/v1/calls", ChromiumOptions(seconds=CALL_SECONDS)
        )
        running = asyncio.create_task(call.run())
        await asyncio.wait_for(call.connected.wait(), 60)
        await asyncio.sleep(1.0)  # media flowing both ways
        _, flows = await get_json(f"{stack.relay_admin_url}/flows")
        result = await running
        hung_up, _ = await get_json(result["location"])

    assert result["ok"], result["error"]
    assert all(value is not None for value in result["setup_ms"].values()), result["setup_ms"]
    # Audio both ways: the server heard the tone, the page heard the agent.
    assert result["uplink"]["packets_received"] > MIN_PACKETS, result["uplink"]
    assert result["downlink"]["packets_received"] > MIN_PACKETS, result["downlink"]
    assert result["agent_level_peak_dbfs"] > AGENT_AUDIBLE_DBFS
    assert result["turns"], "the page never heard the agent answer the tone"
    assert all(turn["latency_ms"] > 0 for turn in result["turns"])
    events = [event[0] for event in result["events"]]
    assert events[0] == "session.created"
    assert "input_audio_buffer.speech_stopped" in events and "response.created" in events
    # One relay flow, the browser's, routed by this call's server ufrag.
    assert len(flows) == 1, flows
    (flow,) = flows
    assert flow["server_ufrag"] == result["server_view"]["server_ufrag"]
    assert flow["client"] == result["local_address"]
    assert flow["packets_up"] > 0 and flow["packets_down"] > 0
    if forward == "nat":
        # The media server sees the relay's upstream socket, and reflects it back to the
        # browser, which takes it for a peer-reflexive address of its own.
        assert result["server_view"]["remote"] == flow["upstream"] == result["mapped_address"]
        assert flow["upstream"] != flow["client"]
    else:
        # It sees the browser's own address, so what it reflects is no new address.
        assert result["server_view"]["remote"] == flow["upstream"] == result["local_address"]
        assert result["mapped_address"] is None
    # The page's Hang up deleted the call.
    assert hung_up == 404


async def test_a_browser_recovers_from_an_ip_change_with_verified_rebinding(
    tmp_path: Path,
) -> None:
    chromium = with_client(IP_CHANGE, "chromium")
    # One stack of the verified runs: two browsers, moved together.
    first_verified = dataclasses.replace(
        chromium,
        runs=lambda quick: tuple(r for r in chromium.runs(quick) if r.tags["rebind"] == "verified")[
            :1
        ],
    )
    results = await run_scenario(
        first_verified, tmp_path / chromium.name, quick=True, progress=lambda _m: None
    )

    assert results["error"] is None, results.get("traceback")
    (run,) = results["runs"]
    assert run["config"]["client"] == "chromium"
    assert len(run["calls"]) == 2 and all(call["ok"] for call in run["calls"]), run["calls"]
    moved = [step for step in run["steps"] if step["action"] == "rebind"]
    assert moved and len(moved[0]["outcome"]["rebinds"]) == 2, moved
    verified = results["metrics"]["policies"]["verified"]
    assert verified["moves"] == 2, verified["errors"]
    for direction in ("uplink", "downlink"):
        spread = verified[direction]
        assert spread["ended"] == 2, (direction, spread)
        assert spread["max"] <= CONSENT_INTERVAL_MAX_S + RECOVERY_MARGIN_S, (direction, spread)
    # The browsers' own ICE rode it out: still connected when they hung up.
    assert verified["caller_noticed_after_s"]["ended"] == 0
