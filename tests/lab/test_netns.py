"""The namespace lab for real: namespaces, a kernel NAT, the ip-change scenario through it.

Needs root and a kernel that lets us create network namespaces; skipped with
the reason otherwise.  The runs go through the command users type
(`python -m lab.netns --netns run ...`, registered as `rtclab lab`), and read
the results.json it writes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lab.netns.host import Capabilities, Topology, cleanup_stale, lab_namespaces, probe, run
from lab.netns.plan import PREFIX, Plan
from lab.scenarios.evidence import CONSENT_INTERVAL_MAX_S, RECOVERY_MARGIN_S

pytestmark = pytest.mark.e2e

WITHIN_CONSENT_S = CONSENT_INTERVAL_MAX_S + RECOVERY_MARGIN_S
PLAN = Plan(run_id="unused")  # the lab's default addresses, as every run uses them
RUN_TIMEOUT_S = 300  # three parallel runs of 16 s calls take ~25 s; a hang guard only


@pytest.fixture(scope="module")
def capabilities() -> Capabilities:
    found = probe()
    reason = found.unusable()
    if reason:
        pytest.skip(f"the namespace lab cannot run here: {reason}")
    return found


def lab_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "lab.netns", "--netns", *args]


def namespaces_of(pid: int) -> list[str]:
    return [name for name in lab_namespaces() if name.startswith(f"{PREFIX}{pid}-")]


def run_scenario(name: str, out: Path, *extra: str) -> dict[str, Any]:
    process = subprocess.Popen(lab_command("run", name, "--quick", "--out", str(out), *extra))
    try:
        code = process.wait(RUN_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
    # Whatever happened inside, nothing of this run is left on the machine.
    assert namespaces_of(process.pid) == []
    assert code == 0
    results: dict[str, Any] = json.loads((out / name / "results.json").read_text())
    assert results["error"] is None, results.get("traceback")
    assert results["environment"]["lab"] == "netns"
    return results


def relay_clients(run_data: dict[str, Any]) -> set[str]:
    return {
        flow["client"]
        for snapshot in run_data["snapshots"]["relay"]
        for flow in snapshot["flows"]
        if flow["client"]
    }


def check_mobility_verdicts(results: dict[str, Any]) -> None:
    """The same verdicts as the loopback lab's mobility test (tests/scenarios)."""
    policies = results["metrics"]["policies"]
    off, verified, ssrc = policies["off"], policies["verified"], policies["ssrc"]
    assert all(policy["moves"] == 4 for policy in (off, verified, ssrc))
    assert off["uplink"]["ended"] == 4 and off["uplink"]["max"] <= WITHIN_CONSENT_S
    assert off["downlink"]["ended"] == 0
    for direction in ("uplink", "downlink"):
        assert verified[direction]["ended"] == 4
        assert verified[direction]["max"] <= WITHIN_CONSENT_S
        assert ssrc[direction]["ended"] == 4 and ssrc[direction]["max"] <= 1.0
    assert "refuted" not in {f["verdict"] for f in results["findings"]}


def the_moves(run_data: dict[str, Any]) -> list[dict[str, str]]:
    """Every mapping the run's one rebind moved: its calls move together, as behind one NAT."""
    (step,) = [s for s in run_data["steps"] if s["action"] == "rebind"]
    assert "error" not in step, step
    moved: list[dict[str, str]] = step["outcome"]["rebinds"]
    assert len(moved) == len(run_data["calls"]), moved
    return moved


def test_ip_change_through_a_real_nat(capabilities: Capabilities, tmp_path: Path) -> None:
    results = run_scenario("ip-change", tmp_path)
    wan = PLAN.nat_wan_address
    for run_data in results["runs"]:
        clients = relay_clients(run_data)
        for moved in the_moves(run_data):
            old_host, new_host = moved["old"].rsplit(":")[0], moved["new"].rsplit(":")[0]
            # The NAT's public address changed to one of the lab's other public addresses.
            assert old_host == wan and new_host in PLAN.moved_addresses
            # The relay saw the caller only as the NAT: the old public address, then the new.
            assert {moved["old"], moved["new"]} <= clients
            assert all(client.rsplit(":")[0] in (wan, new_host) for client in clients)
        assert not any(client.startswith(PLAN.caller_address + ":") for client in clients)
    check_mobility_verdicts(results)


def test_nat_rebind_on_the_bare_kernel_path(capabilities: Capabilities, tmp_path: Path) -> None:
    # No emulator anywhere: callers -> kernel NAT -> relay; the rebind flushes conntrack.
    results = run_scenario("nat-rebind", tmp_path, "--impairment", "none")
    for run_data in results["runs"]:
        for moved in the_moves(run_data):
            old_host, old_port = moved["old"].rsplit(":")
            new_host, new_port = moved["new"].rsplit(":")
            assert old_host == new_host == PLAN.nat_wan_address and old_port != new_port
            # The mapping is the caller's own socket, translated by the kernel.
            assert moved["caller"].startswith(PLAN.caller_address + ":")
            assert {moved["old"], moved["new"]} <= relay_clients(run_data)
    check_mobility_verdicts(results)


def test_everything_is_removed_when_the_run_fails(capabilities: Capabilities) -> None:
    plan = Plan.new()
    links_before = run(["ip", "-o", "link", "show"])
    rules_before = run(["nft", "list", "ruleset"])
    with pytest.raises(RuntimeError, match="the run failed"), Topology(plan) as topology:
        # A process left inside, as a crashed stack would leave one.
        leftover = subprocess.Popen(topology.exec_argv("server", ["sleep", "300"]))
        assert set(plan.namespaces) <= set(lab_namespaces())
        nat_rules = run(topology.exec_argv("nat", ["nft", "list", "ruleset"]))
        assert "masquerade fully-random" in nat_rules
        raise RuntimeError("the run failed")
    assert leftover.wait(10) == -signal.SIGTERM
    assert not set(plan.namespaces) & set(lab_namespaces())
    # Nothing was ever created where the lab was started from.
    assert run(["ip", "-o", "link", "show"]) == links_before
    assert run(["nft", "list", "ruleset"]) == rules_before


def wait_for_namespaces(pid: int, timeout_s: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = namespaces_of(pid)
        if len(found) == 3:
            return found
        time.sleep(0.1)
    raise AssertionError("the lab never built its namespaces")


def test_sigterm_removes_the_lab(capabilities: Capabilities, tmp_path: Path) -> None:
    process = subprocess.Popen(lab_command("run", "ip-change", "--quick", "--out", str(tmp_path)))
    try:
        wait_for_namespaces(process.pid)
        time.sleep(3)  # the runner and stacks are starting inside
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) != 0
    finally:
        if process.poll() is None:
            process.kill()
    assert namespaces_of(process.pid) == []


def test_a_killed_run_is_cleaned_up_by_the_next(capabilities: Capabilities, tmp_path: Path) -> None:
    process = subprocess.Popen(lab_command("run", "ip-change", "--quick", "--out", str(tmp_path)))
    try:
        left = wait_for_namespaces(process.pid)
    finally:
        process.kill()  # SIGKILL: no chance to clean up
        process.wait()
    assert namespaces_of(process.pid) == left
    removed = cleanup_stale()
    assert set(left) <= set(removed)
    assert namespaces_of(process.pid) == []
    # Live labs (other test runs on this machine) are never touched: their owner is alive.
    assert all(not name.startswith(f"{PREFIX}{os.getpid()}-") for name in removed)
