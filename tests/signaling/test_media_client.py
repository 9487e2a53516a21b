"""Reading the media servers' answers: /healthz bodies and session locations."""

from __future__ import annotations

from typing import Any

import pytest

from signaling.core.forwarding import FailureReason
from signaling.core.health import HealthReport
from signaling.media_client import Failed, parse_health, session_path


def test_a_healthz_body_becomes_a_report() -> None:
    body = {"status": "ok", "backend_id": 3, "sessions": 4, "draining": True, "extra": 1}
    assert parse_health(body) == HealthReport(backend_id=3, sessions=4, draining=True)


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {"status": "starting", "backend_id": 1, "sessions": 0, "draining": False},
        {"status": "ok", "sessions": 0, "draining": False},
        {"status": "ok", "backend_id": "1", "sessions": 0, "draining": False},
        {"status": "ok", "backend_id": True, "sessions": 0, "draining": False},
        {"status": "ok", "backend_id": 1, "sessions": 0, "draining": "no"},
    ],
)
def test_a_bad_healthz_body_is_a_failed_poll(body: Any) -> None:
    result = parse_health(body)
    assert isinstance(result, Failed) and result.reason is FailureReason.BAD_RESPONSE


@pytest.mark.parametrize(
    ("location", "path"),
    [
        ("/sessions/abc", "/sessions/abc"),
        ("sessions/abc", "/sessions/abc"),
        ("http://127.0.0.1:8101/sessions/abc", "/sessions/abc"),
        ("http://127.0.0.1:9999/sessions/abc", None),
        ("http://evil.example/sessions/abc", None),
    ],
)
def test_session_location_must_stay_on_the_backend(location: str, path: str | None) -> None:
    assert session_path("http://127.0.0.1:8101", location) == path
