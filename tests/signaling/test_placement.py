"""Pure placement decisions: candidate order, backend health, forward outcomes."""

from __future__ import annotations

import pytest

from signaling.core.forwarding import FailureReason, Verdict, classify
from signaling.core.health import BackendHealth, Health, HealthChanged, HealthReport
from signaling.core.placement import BackendView, candidates, retry_after_s


def view(index: int, load: int = 0, *, healthy: bool = True, draining: bool = False) -> BackendView:
    return BackendView(index=index, healthy=healthy, draining=draining, load=load)


# --- candidates ------------------------------------------------------------------


def test_fewest_sessions_first() -> None:
    order = candidates([view(0, load=5), view(1, load=2), view(2, load=3)])
    assert [b.index for b in order] == [1, 2, 0]


def test_unhealthy_and_draining_are_not_candidates() -> None:
    order = candidates(
        [view(0, healthy=False), view(1, draining=True), view(2, load=9), view(3, load=1)]
    )
    assert [b.index for b in order] == [3, 2]


def test_ties_go_to_the_backend_configured_first_whatever_the_input_order() -> None:
    backends = [view(2, load=1), view(0, load=1), view(1, load=1)]
    assert [b.index for b in candidates(backends)] == [0, 1, 2]
    assert [b.index for b in candidates(reversed(backends))] == [0, 1, 2]


def test_excluded_backends_are_skipped() -> None:
    order = candidates([view(0), view(1, load=1), view(2, load=2)], exclude={0, 2})
    assert [b.index for b in order] == [1]


def test_nothing_usable_gives_no_candidates() -> None:
    assert candidates([view(0, healthy=False), view(1, draining=True)]) == []
    assert candidates([]) == []


@pytest.mark.parametrize(("interval", "expected"), [(0.1, 1), (1.0, 1), (1.5, 2), (5.0, 5)])
def test_retry_after_covers_one_health_interval(interval: float, expected: int) -> None:
    assert retry_after_s(interval) == expected


# --- backend health --------------------------------------------------------------


def report(sessions: int = 0, *, draining: bool = False, backend_id: int = 7) -> HealthReport:
    return HealthReport(backend_id=backend_id, sessions=sessions, draining=draining)


def test_a_backend_is_not_placeable_until_it_answers_a_poll() -> None:
    health = BackendHealth(unhealthy_after_failures=2)
    assert health.state is Health.UNKNOWN and not health.placeable
    change = health.poll_succeeded(report(), asked_at=0.0)
    assert change == HealthChanged(Health.UNKNOWN, Health.HEALTHY, "poll answered")
    assert health.placeable and health.backend_id == 7


def test_unhealthy_after_n_failed_polls_and_back_after_one_answer() -> None:
    health = BackendHealth(unhealthy_after_failures=3)
    health.poll_succeeded(report(), asked_at=0.0)
    assert health.poll_failed("refused") is None
    assert health.poll_failed("refused") is None
    assert health.state is Health.HEALTHY
    change = health.poll_failed("refused")
    assert change == HealthChanged(Health.HEALTHY, Health.UNHEALTHY, "refused")
    assert not health.placeable and health.last_error == "refused"
    assert health.poll_failed("refused") is None  # no repeated change
    change = health.poll_succeeded(report(), asked_at=5.0)
    assert change is not None and change.new is Health.HEALTHY
    assert health.consecutive_failures == 0 and health.last_error is None


def test_an_answered_poll_resets_the_failure_count() -> None:
    health = BackendHealth(unhealthy_after_failures=2)
    health.poll_succeeded(report(), asked_at=0.0)
    health.poll_failed("timeout")
    health.poll_succeeded(report(), asked_at=1.0)
    assert health.poll_failed("timeout") is None
    assert health.state is Health.HEALTHY


def test_a_backend_that_never_answers_becomes_unhealthy() -> None:
    health = BackendHealth(unhealthy_after_failures=2)
    health.poll_failed("refused")
    change = health.poll_failed("refused")
    assert change == HealthChanged(Health.UNKNOWN, Health.UNHEALTHY, "refused")


def test_a_refused_forward_takes_the_backend_out_at_once() -> None:
    health = BackendHealth(unhealthy_after_failures=5)
    health.poll_succeeded(report(), asked_at=0.0)
    assert health.forward_failed("HTTP 500", conclusive=False) is None
    assert health.placeable
    change = health.forward_failed("connection refused", conclusive=True)
    assert change is not None and change.new is Health.UNHEALTHY


def test_draining_comes_from_reports_and_from_503s() -> None:
    health = BackendHealth(unhealthy_after_failures=2)
    health.poll_succeeded(report(draining=True), asked_at=0.0)
    assert health.state is Health.HEALTHY and not health.placeable
    health.poll_succeeded(report(draining=False), asked_at=1.0)
    assert health.placeable
    health.saw_draining()
    assert not health.placeable and health.state is Health.HEALTHY
    health.poll_succeeded(report(draining=False), asked_at=2.0)
    assert health.placeable


def test_load_counts_placements_until_a_report_that_includes_them() -> None:
    health = BackendHealth(unhealthy_after_failures=2)
    health.poll_succeeded(report(sessions=3), asked_at=0.0)
    assert health.load == 3
    health.placement_started()
    assert health.load == 4  # in flight counts: concurrent callers see it
    health.placement_finished(placed_at=1.0)
    health.placement_started()
    health.placement_finished(placed_at=None)  # refused: not counted
    health.placement_started()
    health.placement_finished(placed_at=3.0)
    assert health.load == 5
    # A poll asked at 2.0 already counts the first placement, not the one at 3.0.
    health.poll_succeeded(report(sessions=4), asked_at=2.0)
    assert health.load == 5
    health.poll_succeeded(report(sessions=5), asked_at=4.0)
    assert health.load == 5


def test_finishing_a_placement_that_never_started_is_a_bug() -> None:
    with pytest.raises(AssertionError):
        BackendHealth(unhealthy_after_failures=1).placement_finished(placed_at=None)


# --- forward outcomes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "has_location", "verdict", "reason"),
    [
        (201, True, Verdict.CREATED, None),
        (201, False, Verdict.TRY_NEXT, FailureReason.BAD_RESPONSE),
        (400, False, Verdict.REJECTED_OFFER, None),
        (415, False, Verdict.REJECTED_OFFER, None),
        (422, False, Verdict.REJECTED_OFFER, None),
        (503, False, Verdict.TRY_NEXT, FailureReason.DRAINING),
        (500, False, Verdict.TRY_NEXT, FailureReason.BACKEND_ERROR),
        (502, False, Verdict.TRY_NEXT, FailureReason.BACKEND_ERROR),
        (404, False, Verdict.TRY_NEXT, FailureReason.BAD_RESPONSE),
        (200, True, Verdict.TRY_NEXT, FailureReason.BAD_RESPONSE),
    ],
)
def test_forward_status_meaning(
    status: int, has_location: bool, verdict: Verdict, reason: FailureReason | None
) -> None:
    outcome = classify(status, has_location=has_location)
    assert (outcome.verdict, outcome.reason) == (verdict, reason)
