"""When a budget's status is worth writing.

Every write costs the API server a write and every watcher an event, so status
is written when something a user or finance would act on changes (the phase,
a condition, a threshold or a stop, the approval record, the workloads, a pod
joining or leaving the ledger) and otherwise only to keep a running budget's
spend at most :data:`MAX_STALENESS` old. A budget with nothing running costs no
writes. (With a short accounting interval the bound is two intervals, so a test
cluster at 1 s sees spend about 2 s old at most.) Skipping a write loses nothing: the
ledger's marks in memory are always newer than the written ones, and after a
restart the written marks charge the gap exactly once. The outcome (``status.outcome``)
is a running figure too: its value rides along with those rewrites, and a stopped
run's final reading is written once.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from gpu_budget.models import TrainingBudgetStatus

MAX_STALENESS = timedelta(seconds=10)


WRITE_MARGIN = timedelta(seconds=2)
"""Room between the rewrite and the staleness bound: the rewrite is scheduled on the next
whole second after the bound (so many budgets share a wake), and then takes a moment."""


def staleness_bound(interval_seconds: float) -> timedelta:
    """How old a written spend may get before it is rewritten.

    The loop schedules the rewrite for exactly then (a staleness deadline in its
    schedule), so spend read from the API is at most :data:`MAX_STALENESS` old
    without writing at every pass; on a short interval, two intervals.
    """
    return min(MAX_STALENESS - WRITE_MARGIN, timedelta(seconds=2 * interval_seconds))


def _significant(status: TrainingBudgetStatus) -> object:
    """What of a status a user or finance acts on: everything but the running figures."""
    return (
        status.phase,
        # Not the message: some carry the running spend ("Spent $41 of $100").
        [(c.type, c.status, c.reason) for c in status.conditions],
        status.enforcement.model_copy(update={"stop_at": None}),
        status.approval,
        status.workloads,
        status.estimate,
        status.placement,
        status.observed_generation,
        [(line.uid, line.open, line.gpu_hourly_price) for line in status.ledger.pods],
        status.ledger.closed.pods,
        status.ledger.inherited_from,
    )


def _outcome_value(status: TrainingBudgetStatus) -> float | None:
    return None if status.outcome is None else status.outcome.value


def needs_write(
    written: TrainingBudgetStatus | None,
    new: TrainingBudgetStatus,
    now: datetime,
    staleness: timedelta = MAX_STALENESS,
) -> bool:
    if written is None:
        return True
    if _significant(written) != _significant(new):
        return True
    if new.burn_rate_per_hour <= 0 and written.spent == new.spent:
        # Nothing burns: the outcome's final reading (one after the run stops) is written;
        # while the run burns, the outcome rides along with the staleness rewrite.
        return _outcome_value(written) != _outcome_value(new)
    last = written.last_accounted_at
    return last is None or now - last >= staleness
