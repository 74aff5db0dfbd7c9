"""Unit tests for the plugin's instants and charge periods (gpu_budget.plugin.periods)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpu_budget.plugin.errors import PluginError
from gpu_budget.plugin.periods import (
    Period,
    billing_month,
    charge_periods,
    even_periods,
    human_duration,
    parse_instant,
    step_seconds,
)

NOW = datetime(2026, 6, 15, 12, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("now", NOW),
        ("90m", NOW - timedelta(minutes=90)),
        ("7d", NOW - timedelta(days=7)),
        ("2026-06-01", datetime(2026, 6, 1, tzinfo=UTC)),
        ("2026-06-01T02:00:00+02:00", datetime(2026, 6, 1, tzinfo=UTC)),
    ],
)
def test_parse_instant(raw: str, expected: datetime) -> None:
    assert parse_instant(raw, NOW) == expected


@pytest.mark.parametrize("raw", ["yesterday", "2026-06-01T00:00:00", "7x"])
def test_parse_instant_refuses_with_the_forms_it_reads(raw: str) -> None:
    with pytest.raises(PluginError, match="duration ago"):
        parse_instant(raw, NOW)


def test_a_period_must_end_after_it_starts() -> None:
    with pytest.raises(PluginError):
        Period(NOW, NOW)


def test_daily_charge_periods_are_whole_utc_days_clipped_to_the_bounds() -> None:
    periods = list(charge_periods(Period(NOW - timedelta(days=1), NOW), "daily"))
    assert [(p.start, p.end) for p in periods] == [
        (NOW - timedelta(days=1), datetime(2026, 6, 15, tzinfo=UTC)),
        (datetime(2026, 6, 15, tzinfo=UTC), NOW),
    ]


moments = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)


@given(moments, st.integers(1, 24 * 90), st.sampled_from(["hourly", "daily"]))
def test_charge_periods_tile_the_period_exactly(start: datetime, hours: int, size: str) -> None:
    period = Period(start, start + timedelta(hours=hours, minutes=7))
    periods = list(charge_periods(period, size))
    assert periods[0].start == period.start and periods[-1].end == period.end
    assert all(a.end == b.start for a, b in itertools.pairwise(periods))
    limit = timedelta(hours=1) if size == "hourly" else timedelta(days=1)
    assert all(p.end - p.start <= limit for p in periods)


@given(moments)
def test_billing_month_holds_the_moment(moment: datetime) -> None:
    month = billing_month(moment)
    assert month.start <= moment < month.end
    assert month.start.day == 1 and month.end.day == 1


def test_even_periods_and_step() -> None:
    period = Period(NOW - timedelta(days=30), NOW)
    parts = even_periods(period, 24)
    assert len(parts) == 24 and parts[0].start == period.start and parts[-1].end == period.end
    assert step_seconds(period) * 10_000 >= period.seconds
    assert step_seconds(Period(NOW - timedelta(minutes=5), NOW)) == 1


def test_human_duration() -> None:
    assert [human_duration(s) for s in (5, 125, 3 * 3600 + 300, 3 * 86400 + 4 * 3600)] == [
        "5s",
        "2m",
        "3h05m",
        "3d4h",
    ]
