"""The loop's one schedule: earliest first, each due budget once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from gpu_budget.schedule import Schedule

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_due_budgets_come_out_once_and_later_ones_stay() -> None:
    schedule = Schedule()
    schedule.add(T0 + timedelta(seconds=3), ("ns", "b"))
    schedule.add(T0 + timedelta(seconds=1), ("ns", "a"))
    schedule.add(T0 + timedelta(seconds=2), ("ns", "a"))
    assert schedule.earliest() == T0 + timedelta(seconds=1)
    assert schedule.pop_due(T0 + timedelta(seconds=2)) == {("ns", "a")}
    assert schedule.earliest() == T0 + timedelta(seconds=3)
    assert schedule.pop_due(T0) == set()


@given(st.lists(st.floats(min_value=0, max_value=1000), max_size=50), st.floats(0, 1000))
def test_pop_due_takes_exactly_what_is_due(offsets: list[float], at: float) -> None:
    schedule = Schedule()
    for i, offset in enumerate(offsets):
        schedule.add(T0 + timedelta(seconds=offset), ("ns", str(i)))
    now = T0 + timedelta(seconds=at)
    due = schedule.pop_due(now)
    assert due == {
        ("ns", str(i)) for i, o in enumerate(offsets) if T0 + timedelta(seconds=o) <= now
    }
    remaining = schedule.earliest()
    assert remaining is None or remaining > now
