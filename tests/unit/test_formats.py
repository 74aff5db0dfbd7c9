"""Parsing what users write: amounts of USD and RFC 3339 times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from gpu_budget.formats import FormatError, optional_time, parse_time, parse_usd, rfc3339


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("20000", 20000.0),
        ("$20,000", 20000.0),
        ("1,234,567.5", 1234567.5),
        ("20_000.50", 20000.5),
        (" $1,000 ", 1000.0),
        ("0", 0.0),
        ("1e3", 1000.0),
        (12, 12.0),
        (12.5, 12.5),
    ],
)
def test_parse_usd_reads_amounts(raw: object, expected: float) -> None:
    assert parse_usd(raw) == expected


@pytest.mark.parametrize(
    # A comma is a thousands separator only: "1,5" is likely a decimal comma, not 15.
    "raw",
    [
        "1,5",
        "12,34",
        ",100",
        "lots",
        "",
        "-5",
        "$-1",
        "nan",
        "inf",
        "-inf",
        "1e999",
        True,
        None,
        [1],
        {"a": 1},
    ],
)
def test_parse_usd_refuses_what_is_no_amount(raw: object) -> None:
    with pytest.raises(FormatError, match=r"USD"):
        parse_usd(raw)


def test_format_errors_are_value_errors_that_name_the_text() -> None:
    with pytest.raises(ValueError, match="'lots'"):
        parse_usd("lots")
    with pytest.raises(ValueError, match="'yesterday'"):
        parse_time("yesterday")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-12-02T05:00:00Z", datetime(2026, 12, 2, 5, 0, tzinfo=UTC)),
        ("2026-12-02T05:00:00+00:00", datetime(2026, 12, 2, 5, 0, tzinfo=UTC)),
        ("2026-12-02T07:00:00+02:00", datetime(2026, 12, 2, 5, 0, tzinfo=UTC)),
        ("2026-12-02T05:00:00.250Z", datetime(2026, 12, 2, 5, 0, 0, 250000, tzinfo=UTC)),
    ],
)
def test_parse_time_reads_rfc3339(raw: str, expected: datetime) -> None:
    moment = parse_time(raw)
    assert moment == expected
    assert moment.tzinfo is not None


@pytest.mark.parametrize("raw", ["", "yesterday", "2026-13-01T00:00:00Z", None, 1700000000, True])
def test_parse_time_refuses_what_is_no_time(raw: object) -> None:
    with pytest.raises(FormatError, match="RFC 3339"):
        parse_time(raw)


def test_a_time_without_a_zone_is_refused() -> None:
    with pytest.raises(FormatError, match="no time zone"):
        parse_time("2026-12-02T05:00:00")


@pytest.mark.parametrize("raw", [None, "", "garbage", "2026-12-02T05:00:00", 5])
def test_optional_time_is_none_for_missing_or_unreadable(raw: object) -> None:
    assert optional_time(raw) is None


def test_optional_time_parses_what_parse_time_parses() -> None:
    assert optional_time("2026-12-02T05:00:00Z") == datetime(2026, 12, 2, 5, 0, tzinfo=UTC)


def test_rfc3339_is_utc_seconds_with_z() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert rfc3339(datetime(2026, 3, 1, 14, 30, 5, 999999, tzinfo=plus_two)) == (
        "2026-03-01T12:30:05Z"
    )
    assert parse_time(rfc3339(datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC))) == datetime(
        2026, 3, 1, 12, 30, 5, tzinfo=UTC
    )
