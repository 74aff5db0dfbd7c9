"""``top``: which budgets spend most, how fast, and how long until each hits its cap.

Time left is (cap - spent) / burn rate: the figure the operator plans its stop
from. A budget that burns nothing has no time left to show, and one at or past
its cap has none left. With ``spec.outcome``, COST/UNIT is what one unit of the
outcome (a million tokens, an epoch) cost so far: ``status.outcome.costPerUnit``.
PERIOD is where the budget stands under the policy's limits per period (its
``PeriodLimit`` condition): ``ok``, ``no room`` (waits for finance) or ``at limit``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gpu_budget.plugin.budgets import meta, number, owner, section
from gpu_budget.plugin.output import Cell, Column, text, usd
from gpu_budget.plugin.periods import human_duration


def per_unit(value: Any) -> str:
    """Dollars per unit: cents for a unit worth a dollar or more, three figures below."""
    if value is None:
        return "-"
    return f"${value:,.2f}" if value >= 1 else f"${value:.3g}"


COLUMNS = (
    Column("namespace", "namespace"),
    Column("name", "name"),
    Column("phase", "phase"),
    Column("spent", "spent", usd),
    Column("cap", "cap", usd),
    Column("burn_per_hour", "burn/h", usd),
    Column("time_left", "time left", text),
    Column("cost_per_unit", "cost/unit", per_unit),
    Column("unit", "unit", text),
    Column("period", "period", text),
    Column("team", "team", text),
)

PERIOD_STANDING = {
    "WithinPeriodLimit": "ok",
    "DoesNotFitPeriod": "no room",
    "PeriodLimitReached": "at limit",
}
"""The PeriodLimit condition's reason, as the PERIOD column says it."""


def top_rows(budgets: Iterable[Mapping[str, Any]]) -> list[dict[str, Cell]]:
    """One row per budget, the biggest spender first (ties by namespace and name)."""
    rows = [_row(body) for body in budgets]
    rows.sort(key=lambda r: (-float(r["spent"] or 0), str(r["namespace"]), str(r["name"])))
    return rows


def _row(body: Mapping[str, Any]) -> dict[str, Cell]:
    status = section(body, "status")
    spent = number(status.get("spent")) or 0.0
    cap = number(section(body, "spec").get("costCap"))
    burn = number(status.get("burnRatePerHour")) or 0.0
    left_seconds = time_left_seconds(cap, spent, burn)
    outcome = section(body, "status", "outcome")
    period = next(
        (
            c
            for c in status.get("conditions") or []
            if isinstance(c, Mapping) and c.get("type") == "PeriodLimit"
        ),
        None,
    )
    return {
        "namespace": meta(body).get("namespace"),
        "name": meta(body).get("name"),
        "phase": status.get("phase") or "Pending",
        "spent": spent,
        "cap": cap,
        "burn_per_hour": burn,
        "time_left_seconds": left_seconds,
        "time_left": None if left_seconds is None else human_duration(left_seconds),
        "cost_per_unit": number(outcome.get("costPerUnit")),
        "outcome": number(outcome.get("value")),
        "unit": str(outcome["unit"]) if outcome.get("unit") else None,
        "period": None if period is None else PERIOD_STANDING.get(str(period.get("reason"))),
        "period_detail": None if period is None else period.get("message"),
        "team": owner(body)[0],
    }


def time_left_seconds(cap: float | None, spent: float, burn_per_hour: float) -> float | None:
    """Seconds until spend reaches ``cap`` at the current burn; None when it burns nothing."""
    if cap is None:
        return None
    if spent >= cap:
        return 0.0
    if burn_per_hour <= 0:
        return None
    return (cap - spent) / burn_per_hour * 3600
