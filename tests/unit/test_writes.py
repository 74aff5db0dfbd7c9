"""When a status is worth writing: changes someone acts on, or spend gone stale."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gpu_budget.models import Condition, Phase, TrainingBudgetStatus
from gpu_budget.writes import MAX_STALENESS, needs_write, staleness_bound

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def status(**update: object) -> TrainingBudgetStatus:
    base = TrainingBudgetStatus(last_accounted_at=T0, spent=10.0, burn_rate_per_hour=3600.0)
    return base.model_copy(update=update)


def test_the_first_status_is_written() -> None:
    assert needs_write(None, status(), T0)


def test_running_spend_is_written_only_when_it_gets_stale() -> None:
    written = status()
    later = status(spent=12.0, last_accounted_at=T0 + timedelta(seconds=2))
    assert not needs_write(written, later, T0 + timedelta(seconds=2))
    assert needs_write(written, later, T0 + MAX_STALENESS)


def test_a_phase_change_is_written_at_once() -> None:
    later = status(phase=Phase.SUSPENDED, last_accounted_at=T0 + timedelta(seconds=1))
    assert needs_write(status(), later, T0 + timedelta(seconds=1))


def test_a_condition_that_flips_is_written_at_once_but_a_changed_message_is_not() -> None:
    cond = Condition(
        type="CapReached", status="False", reason="WithinBudget", message="Spent $1 of $9.",
        last_transition_time=T0,
    )  # fmt: skip
    written = status(conditions=[cond])
    reworded = status(conditions=[cond.model_copy(update={"message": "Spent $2 of $9."})])
    flipped = status(conditions=[cond.model_copy(update={"status": "True", "reason": "Cap"})])
    soon = T0 + timedelta(seconds=1)
    assert not needs_write(written, reworded, soon)
    assert needs_write(written, flipped, soon)


def test_a_budget_with_nothing_running_costs_no_writes() -> None:
    idle = status(burn_rate_per_hour=0.0)
    assert not needs_write(
        idle,
        idle.model_copy(update={"last_accounted_at": T0 + timedelta(hours=1)}),
        T0 + timedelta(hours=1),
    )


def test_the_staleness_bound_leaves_room_for_the_write() -> None:
    assert staleness_bound(5.0) == timedelta(seconds=8)
    assert staleness_bound(1.0) == timedelta(seconds=2)
    for interval in (0.5, 1.0, 2.0, 5.0, 60.0):
        assert staleness_bound(interval) < MAX_STALENESS
