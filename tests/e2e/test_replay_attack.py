"""The replay attack end to end: a real aiortc call through the real relay
(``--rebind verified --verify-integrity``), the caller's check copied off the
wire and sent from another address.  Before the fix the relay moved the call
to the attacker (reliability/replay.json, entry ``before-fix``); now the copy
is refused and counted, and the call carries on."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.attacks.replay import run_replay

pytestmark = [pytest.mark.e2e, pytest.mark.attack]


async def test_a_replayed_check_does_not_move_a_live_call(tmp_path: Path) -> None:
    outcome = await run_replay(verify_integrity=True, replays=3, talk_s=4.0, log_dir=tmp_path)

    assert not outcome["flow_moved_to_attacker"], outcome
    assert outcome["attacker_received"] == 0, outcome
    assert outcome["flows_after"] == outcome["flows_before"]
    assert outcome["relay_drops"].get("replayed_check") == 3, outcome["relay_drops"]
    assert outcome["relay_rebinds"].get("stun_success", 0) == 0
    assert outcome["call"]["ok"], outcome["call"]
    assert outcome["call"]["downlink_frames_after_attack"], "the caller kept hearing the agent"
