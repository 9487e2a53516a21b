"""Node WebRTC stacks nobody here wrote, calling the agent through signaling and the relay.

libwebrtc (``@roamhq/wrtc``), werift and libdatachannel (``node-datachannel``)
each make a real call: offer with an audio transceiver and the ``oai-events``
data channel, audio both ways, hang-up by DELETE.  The npm packages must be
installed beforehand, outside any offline network namespace:
``python -m lab.callers.node install``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from lab.callers import external, node, voicefiles
from lab.callers.conversation import SpeakingPlan
from lab.stack import Stack, StackConfig
from tests.interop.live import get, relay_view_while_live, skip_or_fail

CALL_SECONDS = 5.0
# A 5 s call carries ~250 Opus frames each way; allow for set-up and frames in flight.
MIN_PACKETS = 200


@pytest.fixture(scope="session")
def node_installed() -> None:
    problem = node.node_problem()
    if problem is not None:
        skip_or_fail(problem)
    try:
        node.ensure_installed()
    except node.NodeSetupError as exc:
        skip_or_fail(
            f"{exc}\nInstall the Node packages first, with the npm registry reachable "
            f"(not inside `unshare --net`): {node.INSTALL_COMMAND}"
        )


@pytest.mark.e2e
@pytest.mark.parametrize("forward", ["nat", "encap"])
@pytest.mark.parametrize(
    "client", [node.WRTC, node.WERIFT, node.NODE_DATACHANNEL], ids=lambda driver: driver.name
)
async def test_node_stack_talks_with_the_agent_through_the_relay(
    client: node.NodeDriver, forward: str, node_installed: None, tmp_path: Path
) -> None:
    assert client.unavailable() is None
    config = StackConfig(media_servers=1, forward=forward, log_dir=tmp_path / "logs")
    async with Stack(config) as stack:
        call = asyncio.create_task(
            client.call(f"{stack.signaling_url}/v1/calls", seconds=CALL_SECONDS)
        )
        flows, session = await relay_view_while_live(stack, call, both_ways=True)
        result = await call
        closed = await get(f"{stack.media_url(0)}/sessions?closed=1")

    assert result["ok"], result["error"]
    assert result["backend"] == 1 and result["call_id"], result
    phases = ("answer", "ice_connected", "dtls_connected", "datachannel_open", "first_audio_in")
    for phase in phases:
        assert result["setup_ms"][phase] is not None, (phase, result["setup_ms"])
    # Audio both ways: the server heard the caller, the caller heard the agent.
    assert result["uplink"]["packets_received"] > MIN_PACKETS, result["uplink"]
    assert result["downlink"]["packets_received"] > MIN_PACKETS, result["downlink"]
    assert result["downlink"]["packets_lost"] == 0, result["downlink"]
    # The agent heard an utterance end and answered it, and said so on the data channel.
    kinds = [event[0] for event in result["events"]]
    assert "session.created" in kinds and "input_audio_buffer.speech_stopped" in kinds, kinds
    assert "response.created" in kinds, kinds

    # One flow, and the media server's peer is that flow's upstream: the relay's socket
    # (nat) or the caller's own address (encap).  Nothing bypassed the relay.
    assert len(flows) == 1, flows
    assert session["remote"] == flows[0]["upstream"], (session, flows)
    assert (session["remote"] == flows[0]["client"]) == (forward == "encap"), (session, flows)
    assert result["remote_address"] == f"{stack.relay_address[0]}:{stack.relay_address[1]}"
    if result["local_address"] is not None:  # only when the stack reports its own socket
        assert result["local_address"] == flows[0]["client"]
    # The caller hung up by DELETE through signaling.
    assert [s["close_reason"] for s in closed] == ["deleted"], closed


@pytest.fixture
def node_binary() -> str:
    found = shutil.which("node")
    if found is None:
        skip_or_fail("node not found on PATH")
    assert found is not None
    return found


def test_the_scripts_own_unit_tests_pass(node_binary: str) -> None:
    # Ogg and RTP parsing and the recorder's counting, with node's test runner.
    done = subprocess.run(
        [node_binary, "--test", str(node.PACKAGE_DIR / "test")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_the_opus_voice_reads_back_in_node_as_20_ms_packets(
    node_binary: str, tmp_path: Path
) -> None:
    plan = SpeakingPlan()
    voice = voicefiles.voice_file("opus", plan, tmp_path)
    script = (
        "const { opusPackets, opusPacketSamples } = require(process.argv[1]);"
        "const packets = opusPackets(require('fs').readFileSync(process.argv[2]));"
        "console.log(JSON.stringify(packets.map(opusPacketSamples)));"
    )
    done = subprocess.run(
        [node_binary, "-e", script, str(node.PACKAGE_DIR / "lib" / "ogg.js"), str(voice)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    samples = json.loads(done.stdout)
    assert set(samples) == {960}
    # The loop: lead-in, one utterance, its pause (plus the encoder's look-ahead packet).
    assert len(samples) - (plan.lead_in_frames + plan.cycle_frames) in (0, 1)
    assert voicefiles.voice_file("opus", plan, tmp_path) == voice  # rendered once


def test_the_call_result_takes_uplink_from_the_server_and_downlink_from_the_client() -> None:
    raw = {
        "ok": True,
        "error": None,
        "stack": "node-datachannel",
        "stack_version": "0.33.4",
        "call_id": "call_1",
        "backend": 1,
        "location": "http://127.0.0.1:1/v1/calls/call_1",
        "started": 1795498383.902,
        "talk_ms": 5001.3,
        "setup_ms": {"answer": 48.8, "ice_connected": 52.9, "dtls_connected": 90},
        "uplink": {"packets_sent": 250},
        "downlink": {
            "packets_received": 252,
            "packets_lost": 2,
            "loss_ratio": 0.00787,
            "max_gap_ms": 38,
        },
        "selected_pair": {
            "local": "127.0.0.1:38781",
            "local_type": "prflx",
            "remote": "127.0.0.1:57120",
        },
        "events": [["session.created", 1.0, 99.0]],
        "arrivals_ms": [[102.1, 1]],
        "agent_turns": [{"audio_ms": 2000}],
        "server": {
            "call_id": "call_1",
            "session": {
                "id": "d521",
                "remote": "127.0.0.1:38781",
                "uplink": {"packets_received": 246, "packets_lost": 0, "max_gap_ms": 22.0},
                "downlink_sent": 251,
                "turns": [],
            },
        },
    }
    result = external.call_result(raw)
    assert result["ok"] and result["schema"] == 1
    assert result["uplink"]["packets_sent"] == 250
    assert result["uplink"]["packets_received"] == 246  # what the server heard
    assert result["downlink"]["packets_sent"] == 251  # what the server sent
    assert result["downlink"]["packets_received"] == 252  # what the client heard
    assert result["downlink"]["rtp_packets_lost"] == 2
    assert result["setup_ms"]["answer"] == 48.8 and result["setup_ms"]["first_audio_in"] is None
    # A peer-reflexive local candidate is the relay's upstream socket, not the client's.
    assert result["local_address"] is None
    assert result["remote_address"] == "127.0.0.1:57120"
    assert result["server_view"]["remote"] == "127.0.0.1:38781"
    assert result["agent_turns"] == [{"audio_ms": 2000}]
    assert result["client"] == {"stack": "node-datachannel", "version": "0.33.4"}

    failed = external.call_result({"ok": False, "error": "setup_timeout: not connected"})
    assert not failed["ok"] and failed["error"] == "setup_timeout: not connected"
