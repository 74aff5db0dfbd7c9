"""Period maths: the instants a user writes, charge periods, billing months.

``--since`` and ``--until`` take an RFC 3339 instant (read by
:func:`gpu_budget.formats.parse_time`, the one reading of a time), a UTC date
(``2026-06-01``, midnight), ``now``, or a duration ago (``90m``, ``36h``,
``7d``). Charge periods are whole UTC hours or days, clipped to the report's
bounds, so the rows of an export add up to exactly the report's period.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gpu_budget.formats import FormatError, parse_time
from gpu_budget.plugin.errors import PluginError

_AGO = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

GRANULARITIES = {"hourly": timedelta(hours=1), "daily": timedelta(days=1)}

MAX_POINTS = 10_000
"""Points per series in one range query; Prometheus refuses more than 11,000."""


def parse_instant(raw: str, now: datetime) -> datetime:
    """An instant as written on the command line (see the module docstring)."""
    value = raw.strip()
    if value == "now":
        return now
    ago = _AGO.fullmatch(value)
    if ago is not None:
        return now - timedelta(seconds=float(ago.group(1)) * _UNITS[ago.group(2)])
    if _DATE.fullmatch(value):
        value += "T00:00:00Z"
    try:
        return parse_time(value).astimezone(UTC)
    except FormatError as error:
        raise PluginError(
            f"{error}; write an RFC 3339 time, a date (2026-06-01), 'now', or a duration "
            "ago (90m, 36h, 7d)"
        ) from None


@dataclass(frozen=True)
class Period:
    """A half-open interval of time ``[start, end)``."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise PluginError(f"the period must end after it starts ({self.start} .. {self.end})")

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


def step_seconds(period: Period, floor: float = 1.0) -> float:
    """The range-query resolution: as fine as Prometheus allows for the period, whole seconds."""
    return float(max(math.ceil(floor), math.ceil(period.seconds / MAX_POINTS)))


def charge_periods(period: Period, granularity: str) -> Iterator[Period]:
    """Whole UTC hours or days covering ``period``, the first and last clipped to it."""
    size = GRANULARITIES[granularity]
    start = _floor(period.start, size)
    while start < period.end:
        end = start + size
        yield Period(max(start, period.start), min(end, period.end))
        start = end


def billing_month(moment: datetime) -> Period:
    """The calendar month (UTC) that ``moment`` falls in: the FOCUS billing period."""
    moment = moment.astimezone(UTC)
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return Period(start, datetime(year, month, 1, tzinfo=UTC))


def _floor(moment: datetime, size: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    whole = (moment - epoch) // size
    return epoch + whole * size


def human_duration(seconds: float) -> str:
    """``3d4h``, ``2h05m``, ``45s``: how long, as a table cell."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h"


def even_periods(period: Period, count: int) -> list[Period]:
    """``period`` cut into ``count`` equal parts: the bars of a chart of any length."""
    size = (period.end - period.start) / count
    edges = [period.start + size * i for i in range(count)] + [period.end]
    return [Period(a, b) for a, b in itertools.pairwise(edges)]
