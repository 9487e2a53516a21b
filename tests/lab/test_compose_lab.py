"""The compose lab for real: the stack in containers, a call through the relay, mobility.

Needs a Docker daemon and Compose v2; skipped with the reason without them,
except where CI started a daemon (.ci/dockerd.sh sets RTCLAB_COMPOSE_TEST),
which makes a missing one a failure.  The images are those scripts/test built
before entering the tests' offline namespace (the same command again here
finds them cached).  Everything goes through the command users type
(``python -m lab.compose``, which scripts/compose runs), under a project name
and network of this test's own, with every published port on an ephemeral
loopback port so nothing on the machine is in the way.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.compose.project import (
    ComposeError,
    compose_command,
    daemon_problem,
    free_lab_net,
    network_subnets,
)
from tests.lab.test_netns import check_mobility_verdicts, relay_clients, the_moves

PUBLISH = ("RELAY", "ADMIN", "SIGNALING", "PROMETHEUS")
RUN_TIMEOUT_S = 900  # three passes of two quick scenarios: ~4 min on 2 cores; a hang guard

pytestmark = [pytest.mark.e2e, pytest.mark.compose, pytest.mark.timeout(RUN_TIMEOUT_S)]


def _unavailable(reason: str) -> None:
    if os.environ.get("RTCLAB_COMPOSE_TEST") == "required":
        pytest.fail(f"CI started a Docker daemon, yet: {reason}")
    pytest.skip(os.environ.get("RTCLAB_COMPOSE_SKIP") or reason)


def lab(env: dict[str, str], *args: str, timeout_s: float = RUN_TIMEOUT_S) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "lab.compose", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, f"{args}: {done.stderr[-3000:]}"
    return done.stdout


def containers(env: dict[str, str]) -> list[str]:
    label = f"label=com.docker.compose.project={env['COMPOSE_PROJECT_NAME']}"
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", label], capture_output=True, text=True, check=True
    )
    return out.stdout.split()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    problem = daemon_problem()
    if problem:
        _unavailable(problem)
    try:
        compose_command()
    except ComposeError as exc:
        _unavailable(str(exc))
    env = {
        **os.environ,
        "COMPOSE_PROJECT_NAME": f"rtclab-test-{os.getpid()}",
        "RTCLAB_NET": free_lab_net(network_subnets()),
        **{f"RTCLAB_{name}_PUBLISH": "127.0.0.1:0" for name in PUBLISH},
    }
    try:
        up = subprocess.run(
            [sys.executable, "-m", "lab.compose", "up"],
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        if up.returncode != 0:  # no images (no registry, and no root to debootstrap)...
            _unavailable(f"the compose lab did not come up: {up.stderr.strip()[-1500:]}")
        yield env
    finally:
        subprocess.run([sys.executable, "-m", "lab.compose", "down"], env=env, check=False)
    assert containers(env) == []


def test_a_call_reaches_the_media_servers_only_through_the_relay(env: dict[str, str]) -> None:
    found: dict[str, Any] = json.loads(lab(env, "call", "--seconds", "4"))
    call = found["call"]
    assert call["ok"], call["error"]
    assert call["uplink"]["packets_received"] > 0 and call["downlink"]["packets_received"] > 0
    caller, relay_host = found["caller_address"], found["relay"].rsplit(":")[0]
    net = ipaddress.ip_network(f"{env['RTCLAB_NET']}.0/24")
    assert ipaddress.ip_address(caller) in net and caller != relay_host
    # The relay saw the caller (its own NAT keeps the address, randomises the port)...
    (flow,) = [f for f in found["flows"] if f["client"].startswith(f"{caller}:")]
    # ...and reached the media server from its own upstream socket.
    assert flow["upstream"].startswith(f"{relay_host}:")
    sessions = [s for listed in found["sessions"].values() for s in listed]
    (session,) = [s for s in sessions if s.get("remote") == flow["upstream"]]
    assert session["state"] in ("connected", "closed")
    # No media server ever had the caller as its peer.
    assert not [s for s in sessions if str(s.get("remote", "")).startswith(f"{caller}:")]


def test_the_relay_publishes_one_udp_port(env: dict[str, str]) -> None:
    out = subprocess.run(
        [*compose_command(), "-p", env["COMPOSE_PROJECT_NAME"], "ps", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    # One JSON object per line (newer Compose) or one array (older).
    text = out.strip()
    rows = json.loads(text) if text.startswith("[") else [json.loads(x) for x in text.splitlines()]
    udp = [
        (row["Service"], publisher["TargetPort"])
        for row in rows
        for publisher in row.get("Publishers") or []
        if publisher.get("Protocol") == "udp" and publisher.get("PublishedPort")
    ]
    assert udp == [("relay", 3478)]


PROMETHEUS_TARGETS = """
import json, time, urllib.request
deadline = time.monotonic() + 60
while True:
    found = json.load(urllib.request.urlopen("http://prometheus:9090/api/v1/targets"))
    targets = {t["scrapeUrl"]: t["health"] for t in found["data"]["activeTargets"]}
    if all(h == "up" for h in targets.values()) or time.monotonic() > deadline:
        break
    time.sleep(1)
flows = urllib.request.urlopen(
    "http://prometheus:9090/api/v1/query?query=rtclab_lb_flows_created_total"
)
print(json.dumps({"targets": targets, "flows": json.load(flows)["data"]["result"]}))
"""


def test_prometheus_scrapes_every_part(env: dict[str, str]) -> None:
    argv = [*compose_command(), "-p", env["COMPOSE_PROJECT_NAME"], "exec", "-T", "relay"]
    out = subprocess.run(
        [*argv, "python", "-c", PROMETHEUS_TARGETS],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    found = json.loads(out)
    assert set(found["targets"]) == {
        "http://relay:9478/metrics",
        "http://media-1:8101/metrics",
        "http://media-2:8102/metrics",
        "http://signaling:8080/metrics",
    }
    assert set(found["targets"].values()) == {"up"}
    # The relay's own counters, as a user of the lab watches them: the call above opened a flow.
    assert found["flows"] and float(found["flows"][0]["value"][1]) >= 1


def test_ip_change_and_nat_rebind_in_containers(env: dict[str, str], tmp_path: Path) -> None:
    lab(env, "run", "ip-change", "nat-rebind", "--quick", "--out", str(tmp_path))
    # `run` takes the stack down when it is done.
    assert containers(env) == []
    index = json.loads((tmp_path / "index.json").read_text())
    assert [entry["scenario"] for entry in index["scenarios"]] == ["ip-change", "nat-rebind"]
    moved_pool = [ipaddress.ip_address(f"{env['RTCLAB_NET']}.{i}") for i in range(200, 251)]
    for name in ("ip-change", "nat-rebind"):
        results = json.loads((tmp_path / name / "results.json").read_text())
        assert results["error"] is None, results.get("traceback")
        assert results["environment"]["lab"] == "compose"
        assert "impairment: " in results["environment"]["summary"]
        assert [p["label"] for p in results["passes"]] == [
            "rebind=off",
            "rebind=ssrc",
            "rebind=verified",
        ]
        assert [run["label"] for run in results["runs"]] == [
            "rebind=off",
            "rebind=verified",
            "rebind=ssrc",
        ]
        for run_data in results["runs"]:
            assert run_data["config"]["rebind"] == run_data["tags"]["rebind"]
            for moved in the_moves(run_data):
                old_host, old_port = moved["old"].rsplit(":")
                new_host, new_port = moved["new"].rsplit(":")
                if name == "ip-change":  # the caller took another address of its network
                    assert ipaddress.ip_address(new_host) in moved_pool and new_host != old_host
                else:  # its NAT forgot the mapping: same address, a new random port
                    assert new_host == old_host and new_port != old_port
                # The relay saw exactly that: the old public address, then the new.
                assert {moved["old"], moved["new"]} <= relay_clients(run_data)
        check_mobility_verdicts(results)
