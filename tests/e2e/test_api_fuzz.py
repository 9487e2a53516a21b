"""Schemathesis against signaling's OpenAPI document on a running stack (a short run;
the full run's figures are in reliability/api.json): no 5xx, every error the
documented JSON, answers as documented, and nothing left on the media server."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.attacks.api import run_schemathesis

pytestmark = pytest.mark.e2e


async def test_schemathesis_finds_nothing_and_leaves_nothing(tmp_path: Path) -> None:
    summary = await run_schemathesis(max_examples=10, work=tmp_path)

    assert summary["failures"] == [] and summary["errors"] == 0, summary
    assert summary["ok"], (tmp_path / "schemathesis.log").read_text()[-3000:]
    assert set(summary["phases"].values()) == {"success"}
    assert summary["test_cases"] > 100
    assert summary["media_sessions_after"] == 0
    assert summary["media_peer_connections_after"] == 0
