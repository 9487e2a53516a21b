"""Slow, oversized, truncated, failed and abandoned requests against a running stack
(a short run; the committed figures are in reliability/http.json): every error is
the JSON shape, pending setups stay within their bound with a 503 past it, and
the servers' own /metrics show they let go of everything."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.attacks.http_abuse import run_abuse

pytestmark = [pytest.mark.e2e, pytest.mark.attack]


async def test_abuse_leaves_nothing_behind(tmp_path: Path) -> None:
    outcome = await run_abuse(scale=0.1, log_dir=tmp_path)
    cases = outcome["cases"]

    assert outcome["ok"], outcome
    for name in ("oversized_signaling", "oversized_media"):
        assert set(cases[name]["content_length"]["statuses"]) == {"413"}, cases[name]
        assert cases[name]["content_length"]["non_json_errors"] == 0
    assert cases["failed_offers"]["statuses"] == {"400": cases["failed_offers"]["count"]}
    assert cases["failed_offers"]["non_json_errors"] == 0
    abandoned = cases["abandoned_offers"]
    assert abandoned["peak_pending_setups"] <= outcome["max_pending_setups"]
    assert set(abandoned["statuses"]) <= {"201", "503"} and abandoned["non_json_errors"] == 0
    assert cases["slowloris_signaling"]["healthz_answered_during"] > 0
    assert outcome["media_held_after"] == {
        "sessions": 0.0,
        "pending_setups": 0.0,
        "peer_connections": 0.0,
    }
