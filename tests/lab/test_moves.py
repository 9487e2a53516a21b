"""Many moves at random phases: the plan (seeded, stratified) and the mobility verdicts on it.

The analysis is fed run data in the runner's shape with timelines whose
answers are known, so each verdict is seen coming out both ways.
"""

from __future__ import annotations

from typing import Any, cast

import pytest

from lab.callers.external import failed_result
from lab.scenarios.catalogue import CATALOGUE, with_seed
from lab.scenarios.catalogue.mobility import POLICIES, with_client
from lab.scenarios.model import Action, Verdict
from lab.scenarios.moves import FULL_MOVES, PHASE_WINDOW_S, MovePlan, moving_steps
from lab.scenarios.observe import Poller, RunClock
from lab.scenarios.runner import place_call_on_clock
from lab.stack import Stack

# --- the plan -------------------------------------------------------------------------


def test_offsets_are_stratified_over_one_consent_interval_and_reproducible() -> None:
    plan = MovePlan(moves=8, per_run=4, seed=7)
    runs = plan.offsets("mobility")
    assert plan.runs == 2 and [len(r) for r in runs] == [4, 4]
    width = PHASE_WINDOW_S / 8
    drawn = sorted(offset for run in runs for offset in run)
    # Move k of 8 starts in the k-th eighth of the interval: every phase is covered.
    for k, offset in enumerate(drawn):
        assert k * width <= offset < (k + 1) * width
    # The two runs interleave the strata (0, 2, 4, 6 and 1, 3, 5, 7).
    assert [int(o // width) for o in runs[0]] == [0, 2, 4, 6]
    assert [int(o // width) for o in runs[1]] == [1, 3, 5, 7]
    assert MovePlan(8, 4, seed=7).offsets("mobility") == runs
    assert MovePlan(8, 4, seed=8).offsets("mobility") != runs
    assert MovePlan(8, 4, seed=7).offsets("another figure") != runs


def test_each_call_starts_once_and_all_move_together() -> None:
    steps = moving_steps([0.5, 2.0], move_at_s=8.0, watch_s=11.0, mode="port")
    assert [s.action for s in steps] == [Action.START_CALLS, Action.START_CALLS, Action.REBIND]
    assert [s.args["seconds"] for s in steps[:2]] == [18.5, 17.0]  # all watched to t = 19
    assert [s.args["label"] for s in steps[:2]] == ["move 1", "move 2"]
    assert steps[2].at_s == 8.0 and steps[2].args["mode"] == "port"
    # ...once both calls have connected and settled (a slow client may start late).
    assert steps[2].args["after_connected"] == 2 and steps[2].args["settle_s"] > 0
    with pytest.raises(ValueError, match="before the move"):
        moving_steps([9.0], move_at_s=8.0, watch_s=1.0, mode="port")


@pytest.mark.parametrize("name", ["ip-change", "nat-rebind"])
def test_every_policy_rests_on_its_moves_at_the_same_phases(name: str) -> None:
    scenario = CATALOGUE[name]
    for quick, moves in ((True, 4), (False, FULL_MOVES)):
        runs = scenario.runs(quick)
        for policy in POLICIES:
            mine = [run for run in runs if run.tags["rebind"] == policy]
            starts = [s for run in mine for s in run.steps if s.action is Action.START_CALLS]
            assert len(starts) == moves
            assert all(run.calls.count == 0 for run in mine)
            assert all(run.tags["seed"] == scenario.seed for run in mine)
            assert all(
                len([s for s in run.steps if s.action is Action.REBIND]) == 1 for run in mine
            )
        offsets = {
            policy: [
                [s.at_s for s in run.steps if s.action is Action.START_CALLS]
                for run in runs
                if run.tags["rebind"] == policy
            ]
            for policy in POLICIES
        }
        assert offsets["off"] == offsets["verified"] == offsets["ssrc"]
    # Another seed, other phases; the scenario records it; another client keeps it.
    reseeded = with_seed(scenario, 42)
    assert reseeded.seed == 42 and reseeded.runs(True) != scenario.runs(True)
    assert with_client(reseeded, "node-wrtc").seed == 42
    with pytest.raises(ValueError, match="only sends"):
        with_client(scenario, "ffmpeg-whip")
    assert with_seed(CATALOGUE["baseline"], 42) is CATALOGUE["baseline"]


# --- the analysis ---------------------------------------------------------------------

MOVE_S = 8.0
END_S = 19.0


def frames_ms(start_s: float, end_s: float) -> list[int]:
    return [round(start_s * 1000 + 20 * i) for i in range(int((end_s - start_s) / 0.02))]


def call(
    offset_s: float,
    *,
    up_back_s: float | None,
    down_back_s: float | None,
    server_closed_s: float | None = None,
    end_s: float = END_S,
) -> dict[str, Any]:
    """One moved call in the runner's shape: audio both ways until the move, then back
    after the given seconds (None: never)."""
    down = frames_ms(offset_s + 0.2, MOVE_S)
    if down_back_s is not None:
        down += frames_ms(MOVE_S + down_back_s, end_s)
    up = [[round((offset_s + 0.2) * 1000), round(MOVE_S * 1000)]]
    if up_back_s is not None:
        up.append([round((MOVE_S + up_back_s) * 1000), round(end_s * 1000)])
    return {
        "label": f"move at {offset_s}",
        "ok": True,
        "error": None,
        "start_s": offset_s,
        "setup_ms": {"dtls_connected": 150.0},
        "timeline": {
            "downlink_ms": down,
            "uplink_segments_ms": up,
            "states": [],
            "server_closed_ms": None
            if server_closed_s is None
            else (MOVE_S + server_closed_s) * 1000,
            "server_close_reason": "consent" if server_closed_s is not None else None,
            "end_ms": end_s * 1000,
        },
    }


def run(policy: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "label": f"rebind={policy}",
        "tags": {"rebind": policy, "seed": 1, "moves": len(calls), "quick": True},
        "steps": [{"action": "rebind", "done_at_s": MOVE_S, "outcome": {"rebinds": []}}],
        "calls": calls,
    }


OFFSETS = (0.5, 2.0, 3.5, 5.0)


def published(**changes: Any) -> list[dict[str, Any]]:
    """What the published design does (each policy's four moves), with ``changes`` by policy."""
    runs = {
        "off": [
            call(o, up_back_s=back, down_back_s=None)
            for o, back in zip(OFFSETS, (0.8, 2.5, 4.1, 5.6), strict=True)
        ],
        "verified": [
            call(o, up_back_s=back, down_back_s=back + 0.1)
            for o, back in zip(OFFSETS, (1.2, 3.0, 4.4, 5.9), strict=True)
        ],
        "ssrc": [call(o, up_back_s=0.1, down_back_s=0.3) for o in OFFSETS],
    }
    runs.update(changes)
    return [run(policy, calls) for policy, calls in runs.items()]


def verdicts(data: list[dict[str, Any]]) -> dict[str, Verdict]:
    analysis = CATALOGUE["ip-change"].analyse(data)
    return {f.claim.split(":")[0].split(" (")[0]: f.verdict for f in analysis.findings}


OFF = "A relay that parses only STUN loses a moved client"
PHASE = "One move is an anecdote"
SERVER = "Only consent failure tells the server its client is gone"
VERIFIED = "Moving the session's flow on the server's STUN answer recovers both directions"
SSRC = "Moving on a known RTP SSRC recovers at the first packet"


def test_the_published_design_reads_as_distributions_per_policy() -> None:
    analysis = CATALOGUE["ip-change"].analyse(published())
    off = analysis.metrics["policies"]["off"]
    assert off["moves"] == 4
    assert off["uplink"]["values"] == pytest.approx([0.8, 2.5, 4.1, 5.6], abs=0.03)
    assert off["uplink"]["median"] == pytest.approx(2.5, abs=0.03)
    assert off["uplink"]["p95"] == off["uplink"]["max"] == pytest.approx(5.6, abs=0.03)
    assert off["downlink"]["ended"] == 0 and off["downlink"]["median"] is None
    # The phase of each move: from its call's connection to the move.
    assert off["after_connect_s"] == [pytest.approx(2.85), pytest.approx(7.35)]
    groups = analysis.metrics["recovery"]["groups"]
    assert [g["label"] for g in groups] == ["rebind=off", "rebind=verified", "rebind=ssrc"]
    found = verdicts(published())
    assert found == {
        OFF: Verdict.CONFIRMED,
        PHASE: Verdict.CONFIRMED,
        SERVER: Verdict.INCONCLUSIVE,  # watched 11 s: too short to see the give-up
        VERIFIED: Verdict.CONFIRMED,
        SSRC: Verdict.CONFIRMED,
    }
    ((title, _header, rows),) = analysis.tables
    assert "4 moves each (quick set; a full run makes 8)" in title
    assert rows[0][2] == "median 2.5 s, p95 5.6 s, max 5.6 s over 4 moves"
    assert rows[0][3] == "never, on all 4 moves"


def test_one_downlink_back_under_off_refutes_the_published_loss() -> None:
    off = [call(o, up_back_s=2.0 + o / 2, down_back_s=None) for o in OFFSETS[:3]]
    off.append(call(OFFSETS[3], up_back_s=2.2, down_back_s=2.3))
    assert verdicts(published(off=off))[OFF] is Verdict.REFUTED


def test_an_uplink_slower_than_a_consent_interval_leaves_off_unconfirmed() -> None:
    off = [
        call(o, up_back_s=back, down_back_s=None)
        for o, back in zip(OFFSETS, (1, 2, 3, 9), strict=True)
    ]
    assert verdicts(published(off=off))[OFF] is Verdict.INCONCLUSIVE


def test_moves_that_all_took_as_long_refute_that_the_phase_matters() -> None:
    same = [call(o, up_back_s=3.0, down_back_s=None) for o in OFFSETS]
    verified = [call(o, up_back_s=3.4, down_back_s=3.5) for o in OFFSETS]
    assert verdicts(published(off=same, verified=verified))[PHASE] is Verdict.REFUTED


def test_verified_and_ssrc_are_refuted_by_one_move_that_never_came_back() -> None:
    verified = [call(o, up_back_s=2.0, down_back_s=2.1) for o in OFFSETS[:3]]
    verified.append(call(OFFSETS[3], up_back_s=2.0, down_back_s=None))
    ssrc = [call(o, up_back_s=0.1, down_back_s=0.2) for o in OFFSETS[1:]]
    ssrc.append(call(OFFSETS[0], up_back_s=None, down_back_s=0.2))
    found = verdicts(published(verified=verified, ssrc=ssrc))
    assert found[VERIFIED] is Verdict.REFUTED and found[SSRC] is Verdict.REFUTED
    slow = [call(o, up_back_s=0.1, down_back_s=1.6) for o in OFFSETS]
    assert verdicts(published(ssrc=slow))[SSRC] is Verdict.INCONCLUSIVE


def test_the_server_giving_up_is_judged_on_every_move() -> None:
    on_time = [
        call(o, up_back_s=2.0 + o / 2, down_back_s=None, server_closed_s=9.5) for o in OFFSETS
    ]
    # A server that closed 9.5 s after the move closed too early for consent failure.
    assert verdicts(published(off=on_time))[SERVER] is Verdict.REFUTED

    watched = [
        call(o, up_back_s=2.0 + o / 2, down_back_s=None, server_closed_s=s, end_s=50.0)
        for o, s in zip(OFFSETS, (28.0, 30.5, 31.0, 33.9), strict=True)
    ]
    assert verdicts(published(off=watched))[SERVER] is Verdict.CONFIRMED
    # Watched past the longest give-up and one session still held: refuted.
    held = [*watched[:3], call(OFFSETS[3], up_back_s=2.0, down_back_s=None, end_s=50.0)]
    assert verdicts(published(off=held))[SERVER] is Verdict.REFUTED


def test_a_call_that_never_talked_still_lands_on_the_run_clock() -> None:
    # A client that failed to start (talk_ms and setup times None) must not sink the run.
    result = failed_result("client_crashed: no result")
    clock = RunClock()
    placed = place_call_on_clock(result, clock, "move 1")
    assert placed["timeline"]["downlink_ms"] == [] and placed["label"] == "move 1"
    data = published(off=[call(o, up_back_s=2.0, down_back_s=None) for o in OFFSETS[1:]])
    data[0]["calls"].append(placed)
    policies = CATALOGUE["ip-change"].analyse(data).metrics["policies"]
    assert policies["off"]["moves"] == 3
    assert policies["off"]["errors"] == ["move 1: client_crashed: no result"]


def test_the_move_waits_for_the_nth_session_seen_connected() -> None:
    poller = Poller(cast(Stack, None), RunClock(), 0.5)
    poller.media = [
        {"t": 1.0, "backend": 1, "sessions": [{"id": "a", "state": "connecting"}]},
        {"t": 1.5, "backend": 1, "sessions": [{"id": "a", "state": "connected"}]},
        {"t": 2.0, "backend": 1, "sessions": [{"id": "a", "state": "closed"}]},
        {
            "t": 2.5,
            "backend": 1,
            "sessions": [{"id": "a", "state": "closed"}, {"id": "b", "state": "connected"}],
        },
    ]
    assert poller.connected_at(1) == 1.5
    assert poller.connected_at(2) == 2.5  # "a" counts although it has closed since
    assert poller.connected_at(3) is None
