"""The compose lab's pure parts: where images come from, which passes, merging them.

The wheelhouse's marker closure is checked on requirement lines copied from
real wheels' METADATA (redis 8.1.0 asks for async-timeout below Python
3.11.3: bookworm's 3.11.2 needs it, a newer host Python does not).
"""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path
from typing import Any

from lab.compose.caller import ComposeServices
from lab.compose.images import (
    DEFAULT_MIRROR,
    Images,
    Wheel,
    base_key,
    debian_mirror,
    debootstrap_argv,
    manylinux_platforms,
    missing_requirements,
    project_requirements,
)
from lab.compose.passes import Pass, plan_passes
from lab.compose.project import REPORTS_BACK, free_lab_net
from lab.scenarios.catalogue import CATALOGUE
from lab.scenarios.model import Analysis, CallPlan, Finding, Run, Scenario, Verdict
from lab.scenarios.report import merge_passes

ROOT = Path(__file__).resolve().parents[2]

# Requires-Dist lines as redis 8.1.0 and async-timeout 5.0.1 ship them.
REDIS = Wheel(
    "redis",
    "8.1.0",
    (
        "async-timeout>=4.0.3; python_full_version < '3.11.3'",
        "hiredis>=3.2.0; extra == 'hiredis'",
        "requests>=2.31.0; extra == 'ocsp'",
    ),
)
ASYNC_TIMEOUT = Wheel("async-timeout", "5.0.1", ())
BOOKWORM = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.2",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_release": "6.1.0",
    "platform_system": "Linux",
    "platform_version": "#1 SMP",
    "python_full_version": "3.11.2",
    "python_version": "3.11",
    "sys_platform": "linux",
}


def test_markers_are_evaluated_for_the_images_python() -> None:
    assert missing_requirements(["redis>=5.0"], [REDIS], BOOKWORM) == ["async-timeout>=4.0.3"]
    newer = {**BOOKWORM, "python_full_version": "3.11.7"}
    assert missing_requirements(["redis>=5.0"], [REDIS], newer) == []
    assert missing_requirements(["redis>=5.0"], [REDIS, ASYNC_TIMEOUT], BOOKWORM) == []


def test_extras_and_versions_count() -> None:
    # An extra asked for pulls in its requirements; one not asked for does not.
    assert missing_requirements(["redis[hiredis]>=5"], [REDIS, ASYNC_TIMEOUT], BOOKWORM) == [
        "hiredis>=3.2.0"
    ]
    # A wheel of the wrong version does not satisfy; an absent one is missing.
    assert missing_requirements(["redis>=9"], [REDIS], BOOKWORM) == ["redis>=9"]
    assert missing_requirements(["aiortc<1.17,>=1.16"], [], BOOKWORM) == ["aiortc<1.17,>=1.16"]
    # A marker false on the target drops the requirement, and with it its own.
    assert missing_requirements(["uvloop; sys_platform == 'win32'"], [], BOOKWORM) == []


def test_a_wheel_is_read_from_its_own_metadata(tmp_path: Path) -> None:
    path = tmp_path / "redis-8.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(
            "redis-8.1.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: redis\nVersion: 8.1.0\n"
            f"Requires-Dist: {REDIS.requires[0]}\nRequires-Dist: {REDIS.requires[1]}\n",
        )
        # A vendored package's metadata deeper inside is not the wheel's own.
        archive.writestr("redis/_vendor/x-1.dist-info/METADATA", "Name: x\nRequires-Dist: y\n")
    assert Wheel.read(path) == Wheel("redis", "8.1.0", REDIS.requires[:2])


def test_manylinux_tags_reach_down_from_the_images_glibc() -> None:
    tags = manylinux_platforms("2.36", "x86_64")
    assert tags[0] == "manylinux_2_36_x86_64"
    # av ships manylinux_2_28 wheels; pip's --platform takes only the tags it is given.
    assert "manylinux_2_28_x86_64" in tags and "manylinux2014_x86_64" in tags
    assert "manylinux_2_37_x86_64" not in tags


def test_the_mirror_comes_from_apts_sources() -> None:
    deb822 = (
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
    )
    assert debian_mirror({"debian.sources": deb822}) == "http://mirror.example/debian"
    one_line = "deb [arch=amd64] http://other.example/debian/ bookworm main\n"
    assert debian_mirror({"sources.list": one_line}) == "http://other.example/debian"
    assert debian_mirror({"x.list": "# deb http://commented.example/debian bookworm main\n"}) == (
        DEFAULT_MIRROR
    )


def test_the_base_says_what_it_holds() -> None:
    argv = debootstrap_argv(Path("/tmp/root"), DEFAULT_MIRROR)
    assert argv[:2] == ["debootstrap", "--variant=minbase"]
    included = argv[2].removeprefix("--include=").split(",")
    for package in ("python3", "python3-venv", "nftables", "conntrack", "redis-server"):
        assert package in included
    # Another package list or mirror is another base.
    assert base_key(DEFAULT_MIRROR) != base_key("http://mirror.example/debian")
    assert base_key(DEFAULT_MIRROR, ("python3",)) != base_key(DEFAULT_MIRROR)


def test_the_wheelhouse_holds_the_build_backend_too() -> None:
    requirements = project_requirements(ROOT / "pyproject.toml")
    assert any(r.startswith("aiortc") for r in requirements)
    assert any(r.startswith("setuptools") for r in requirements)  # pip builds `.` offline


def test_local_images_name_every_image_the_file_reads() -> None:
    local = Images("local", "rtclab-base:k", "rtclab-wheels:w", "rtclab-base:k", "rtclab-base:k")
    assert local.environment() == {
        "RTCLAB_BASE_IMAGE": "rtclab-base:k",
        "RTCLAB_WHEELS_IMAGE": "rtclab-wheels:w",
        "RTCLAB_REDIS_IMAGE": "rtclab-base:k",
        "RTCLAB_PROMETHEUS_IMAGE": "rtclab-base:k",
    }
    compose = (ROOT / "docker-compose.yml").read_text()
    for variable in local.environment():
        assert "${" + variable + ":-" in compose, variable


SERVICES = ComposeServices(
    signaling_url="http://signaling:8080",
    relay=("172.31.77.10", 3478),
    relay_admin_url="http://relay:9478",
    media_urls=("http://media-1:8101", "http://media-2:8102"),
    rebind="off",
    state="memory",
    interface="eth0",
    prefix_len=24,
    moved_addresses=("172.31.77.200",),
)


def test_a_pass_per_relay_policy_the_scenarios_compare() -> None:
    mobility = [CATALOGUE["ip-change"], CATALOGUE["nat-rebind"]]
    passes = plan_passes(mobility, True, SERVICES)
    assert [p.label for p, _ in passes] == ["rebind=off", "rebind=ssrc", "rebind=verified"]
    assert all([s.name for s in chosen] == ["ip-change", "nat-rebind"] for _, chosen in passes)
    assert passes[1][0].environment() == {
        "RTCLAB_REBIND": "ssrc",
        "RTCLAB_STATE": "memory",
        "RTCLAB_FORWARD": "nat",
        "RTCLAB_MEDIA_SOCKET": "shared",
    }
    assert Pass("off", forward="encap").label == "rebind=off, forward=encap"
    assert Pass("off", "redis").environment()["RTCLAB_STATE"] == "redis://redis:6379/0"
    assert Pass("verified", "redis").slug == "rebind-verified-state-redis"


def test_a_scenario_no_pass_can_serve_still_reports_why() -> None:
    failover = CATALOGUE["relay-failover"]  # two relay instances on one port
    passes = plan_passes([failover, CATALOGUE["baseline"]], True, SERVICES)
    ((first, chosen),) = passes
    assert first == Pass() and [s.name for s in chosen] == ["relay-failover", "baseline"]


def _scenario() -> Scenario:
    def analyse(data: list[dict[str, Any]]) -> Analysis:
        labels = [run["label"] for run in data]
        finding = Finding("both ran", "a and b", ", ".join(labels), Verdict.CONFIRMED, ("m",))
        return Analysis(metrics={"labels": labels}, findings=(finding,))

    return Scenario(
        name="fake",
        purpose="runs a, b, c",
        runs=lambda quick: tuple(Run(label, CallPlan(1, 1.0)) for label in "abc"),
        analyse=analyse,
        plots=(),
    )


def _part(ran: str, skipped: str, error: str | None = None) -> dict[str, Any]:
    return {
        "schema": 1,
        "scenario": "fake",
        "purpose": "runs a, b, c",
        "quick": True,
        "started_at": f"2026-01-01T00:00:0{ran}+00:00",
        "environment": {"lab": "compose", "summary": "in containers"},
        "runs": [{"label": ran, "calls": [], "steps": []}],
        "skipped_runs": [{"label": s, "reason": f"not in pass {ran}"} for s in skipped],
        "error": error,
        "duration_s": 2.0,
    }


def test_passes_merge_into_one_analysed_record(tmp_path: Path) -> None:
    parts = {"second": _part("b", "ac"), "first": _part("a", "bc")}
    merged = merge_passes(_scenario(), parts, tmp_path)
    assert merged["error"] is None
    assert [run["label"] for run in merged["runs"]] == ["a", "b"]  # the scenario's order
    assert merged["metrics"] == {"labels": ["a", "b"]}
    assert merged["skipped_runs"] == [{"label": "c", "reason": "not in pass b"}]
    assert [p["label"] for p in merged["passes"]] == ["second", "first"]
    assert "2 pass(es) of the stack (second, first)" in merged["environment"]["summary"]
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["findings"][0]["verdict"] == "confirmed"
    assert "| both ran |" in (tmp_path / "report.md").read_text()


def test_a_failed_pass_fails_the_merge(tmp_path: Path) -> None:
    parts = {"first": _part("a", "bc"), "second": _part("b", "ac", error="StackError: boom")}
    merged = merge_passes(_scenario(), parts, tmp_path)
    assert "second: StackError: boom" in merged["error"]
    assert merged["findings"] == []


def test_a_lab_network_never_overlaps_another() -> None:
    assert free_lab_net(set()) == "172.31.77"
    assert free_lab_net({"172.31.77.0/24", "172.17.0.0/16"}) == "172.31.100"


def test_the_caller_hands_its_reports_back_whatever_its_exit() -> None:
    # The command's own exit status survives the chown after it (which fails here:
    # this machine has no /reports).
    for command, status in ((["true"], 0), (["sh", "-c", "exit 3"], 3)):
        done = subprocess.run(
            ["sh", "-c", REPORTS_BACK, "sh", *command],
            env={"PATH": "/usr/bin:/bin", "OWNER": "65534:65534"},
            capture_output=True,
        )
        assert done.returncode == status
