"""Unit tests for the period maths over cumulative gauges (gpu_budget.plugin.increments)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gpu_budget.plugin.increments import Attribution, Series, growth

LABELS = {"namespace": "ml", "budget": "a", "team": "nlp", "cost_center": "cc1"}
WHO = Attribution.of(LABELS)


def series(points: list[tuple[float, float]], **labels: str) -> Series:
    return Series({**LABELS, **labels}, points)


def test_growth_between_bounds_subtracts_the_value_at_the_start() -> None:
    result = growth([series([(0, 10), (50, 15), (100, 30)])], {("ml", "a"): 10}, [0, 100])
    assert result == {(WHO, 0): 20}


def test_a_series_that_starts_inside_the_period_grew_from_zero() -> None:
    assert growth([series([(40, 3), (60, 7)])], {}, [0, 100]) == {(WHO, 0): 7}


def test_a_deleted_budget_keeps_what_it_grew_before_it_ended() -> None:
    result = growth([series([(0, 5), (30, 9)])], {("ml", "a"): 5}, [0, 50, 100])
    assert result == {(WHO, 0): 4}


def test_a_gap_resumes_from_the_last_value_seen() -> None:
    result = growth([series([(10, 2), (20, 4), (80, 10)])], {}, [0, 50, 100])
    assert result == {(WHO, 0): 4, (WHO, 1): 6}


def test_an_owner_move_attributes_growth_to_the_new_labels_without_counting_twice() -> None:
    old = series([(10, 2), (20, 4)])
    new = series([(30, 6), (40, 9)], team="vision")
    result = growth([old, new], {}, [0, 100])
    assert result == {(WHO, 0): 4, (Attribution("ml", "a", "vision", "cc1"), 0): 5}


def test_a_drop_counts_like_a_counter_reset() -> None:
    assert growth([series([(10, 8), (20, 1), (30, 3)])], {}, [0, 100]) == {(WHO, 0): 11}


def test_a_stale_replica_at_the_same_instants_does_not_make_spend_oscillate() -> None:
    active = series([(10, 5), (20, 7), (30, 9)], instance="a")
    standby = series([(10, 1), (20, 1), (30, 1)], instance="b")
    assert growth([active, standby], {}, [0, 100]) == {(WHO, 0): 9}


def test_samples_after_the_period_are_ignored_and_a_boundary_sample_closes_the_earlier_period() -> (
    None
):
    result = growth([series([(50, 4), (100, 6), (150, 20)])], {}, [0, 50, 100])
    assert result == {(WHO, 0): 4, (WHO, 1): 2}


increasing = st.lists(st.floats(0, 1000, allow_nan=False), min_size=1, max_size=30).map(
    lambda steps: [(float(i + 1), sum(steps[: i + 1])) for i in range(len(steps))]
)


@given(increasing, st.floats(0, 100), st.lists(st.floats(0.5, 31.5), max_size=5))
def test_growth_adds_up_to_the_rise_however_the_period_is_cut(
    points: list[tuple[float, float]], start_value: float, cuts: list[float]
) -> None:
    """Whatever the charge periods, their growth sums to the last value minus the baseline."""
    shifted = [(t, v + start_value) for t, v in points]
    bounds = [0.0, *sorted(set(cuts)), 40.0]
    result = growth([series(shifted)], {("ml", "a"): start_value}, bounds)
    total = sum(result.values())
    assert abs(total - (shifted[-1][1] - start_value)) < 1e-6 * max(1.0, shifted[-1][1])
    assert all(value >= 0 for value in result.values())
