"""The fuzz runner: what it reads from libFuzzer, and one real (short) run."""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.runner import parse_log, run_target, summary
from fuzz.target import load

CRASH_LOG = Path(__file__).parent.parent / "data" / "fuzz" / "sdp-crash.log"


def test_a_crash_log_is_read_as_one_finding_with_its_input() -> None:
    # libFuzzer replaying the input on which the sdp target's candidate property first failed
    # (over-strict: it was a substring test), paths replaced.
    result = parse_log(load("sdp"), CRASH_LOG.read_text(), exit_code=1, seconds=0.5, seeds=1)
    assert result.crashes == 1 and not result.ok
    [finding] = result.findings
    assert finding["exception"] == "AssertionError: <EMPTY MESSAGE>"
    assert finding["input"].endswith("crash-7e1e06977564e61e03f3db02f5d5e32df94cf8bb")
    assert result.executions == 2


def test_a_short_real_run_reports_executions_and_no_crash(tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris is installed by scripts/fuzz (the fuzz extra)")
    result = run_target(load("demux"), tmp_path, runs=2000)
    assert result.ok, (tmp_path / "demux.log").read_text()[-2000:]
    assert result.executions == 2000
    assert result.coverage_edges > 0 and result.seeds > 0
    report = summary([result], mode="test", budget="2000 executions")
    assert report["ok"] and report["total"]["executions"] == 2000


def test_a_merge_keeps_the_targets_a_run_did_not_fuzz() -> None:
    from fuzz.runner import merge

    def entry(name: str, executions: int) -> dict[str, object]:
        return {
            "target": name,
            "executions": executions,
            "crashes": 0,
            "exit_code": 0,
            "seconds": 1.0,
        }

    previous = {"targets": [entry("a", 1_000_000), entry("b", 5)]}
    report = {"targets": [entry("b", 1_000_000)], "ok": True}
    merged = merge(previous, report)
    assert [(t["target"], t["executions"]) for t in merged["targets"]] == [
        ("a", 1_000_000),
        ("b", 1_000_000),
    ]
    assert merged["total"]["executions"] == 2_000_000 and merged["total"]["below_a_million"] == []
