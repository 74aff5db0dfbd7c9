"""The liveness rule: a wedged pass or passes that only fail make the operator stuck."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gpu_budget.liveness import INTERVALS_ALLOWED, MIN_ALLOWANCE, PassTracker, allowance, stuck

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
INTERVAL = 30.0
ALLOWED = timedelta(seconds=INTERVAL * INTERVALS_ALLOWED)  # 180 s


def test_allowance_is_some_intervals_but_never_below_the_minimum() -> None:
    assert allowance(INTERVAL) == ALLOWED
    assert allowance(1.0) == MIN_ALLOWANCE
    assert allowance(0.0) == MIN_ALLOWANCE


def test_a_standby_replica_with_no_passes_is_healthy() -> None:
    assert stuck(PassTracker(), T0, INTERVAL) is None
    assert stuck(PassTracker(), T0 + timedelta(days=30), INTERVAL) is None


def test_a_pass_running_within_the_allowance_is_healthy() -> None:
    tracker = PassTracker()
    tracker.started("b1", T0)
    assert stuck(tracker, T0 + ALLOWED, INTERVAL) is None


def test_a_wedged_pass_beyond_the_allowance_is_stuck() -> None:
    tracker = PassTracker()
    tracker.started("b1", T0)
    tracker.started("b2", T0 + timedelta(seconds=100))
    tracker.succeeded("b2", T0 + timedelta(seconds=101))
    reason = stuck(tracker, T0 + ALLOWED + timedelta(seconds=1), INTERVAL)
    assert reason is not None
    assert "running for 181s" in reason and "allowed 180s" in reason


def test_a_finished_pass_is_no_longer_in_flight() -> None:
    tracker = PassTracker()
    tracker.started("b1", T0)
    tracker.succeeded("b1", T0 + timedelta(seconds=5))
    assert stuck(tracker, T0 + timedelta(hours=1), INTERVAL) is None


def test_failures_without_success_beyond_the_allowance_are_stuck() -> None:
    tracker = PassTracker()
    for offset in range(0, 200, 30):
        tracker.started("b1", T0 + timedelta(seconds=offset))
        tracker.failed("b1", T0 + timedelta(seconds=offset + 1))
    assert tracker.failing_since == T0 + timedelta(seconds=1)
    assert stuck(tracker, T0 + ALLOWED, INTERVAL) is None  # 179 s of failures
    reason = stuck(tracker, T0 + ALLOWED + timedelta(seconds=2), INTERVAL)
    assert reason is not None
    assert "failed for 181s" in reason and "last success: never" in reason


def test_the_last_success_is_named_when_failures_set_in_later() -> None:
    tracker = PassTracker()
    tracker.succeeded("b1", T0)
    tracker.failed("b1", T0 + timedelta(seconds=10))
    reason = stuck(tracker, T0 + timedelta(seconds=10) + ALLOWED + timedelta(seconds=1), INTERVAL)
    assert reason is not None and T0.isoformat() in reason


def test_a_success_resets_the_failures() -> None:
    tracker = PassTracker()
    tracker.failed("b1", T0)
    tracker.failed("b2", T0 + timedelta(seconds=60))
    tracker.succeeded("b2", T0 + timedelta(seconds=170))
    assert tracker.failing_since is None and tracker.last_success == T0 + timedelta(seconds=170)
    assert stuck(tracker, T0 + timedelta(hours=1), INTERVAL) is None
    # A new run of failures counts from its own start, not the first one's.
    tracker.failed("b1", T0 + timedelta(seconds=200))
    assert stuck(tracker, T0 + timedelta(seconds=200) + ALLOWED, INTERVAL) is None
    assert stuck(tracker, T0 + timedelta(seconds=201) + ALLOWED, INTERVAL) is not None


def test_a_long_interval_allows_proportionally_longer_passes() -> None:
    tracker = PassTracker()
    tracker.started("b1", T0)
    now = T0 + timedelta(seconds=250)
    assert stuck(tracker, now, INTERVAL) is not None
    assert stuck(tracker, now, 60.0) is None
