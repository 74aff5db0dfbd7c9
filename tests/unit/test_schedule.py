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


def test_a_budget_keeps_one_entry_its_earliest() -> None:
    schedule = Schedule()
    for offset in range(1000, 0, -1):  # each add earlier than the last
        schedule.add(T0 + timedelta(seconds=offset), ("ns", "a"))
    for offset in range(1, 1000):  # each later than the live one: dropped
        schedule.add(T0 + timedelta(seconds=offset), ("ns", "a"))
    assert len(schedule.heap) <= 4 + 64
    assert schedule.earliest() == T0 + timedelta(seconds=1)
    assert schedule.pop_due(T0 + timedelta(seconds=5000)) == {("ns", "a")}
    assert schedule.earliest() is None


@given(st.lists(st.tuples(st.integers(0, 5), st.floats(0, 100)), max_size=80), st.floats(0, 100))
def test_what_is_due_is_each_budgets_earliest_instant(
    adds: list[tuple[int, float]], at: float
) -> None:
    schedule = Schedule()
    for budget, offset in adds:
        schedule.add(T0 + timedelta(seconds=offset), ("ns", str(budget)))
    earliest: dict[str, float] = {}
    for budget, offset in adds:
        earliest[str(budget)] = min(offset, earliest.get(str(budget), offset))
    now = T0 + timedelta(seconds=at)
    assert schedule.pop_due(now) == {
        ("ns", b) for b, o in earliest.items() if T0 + timedelta(seconds=o) <= now
    }
    assert schedule.pop_due(now) == set()
