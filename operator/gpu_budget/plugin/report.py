"""``report``: spend, GPU-hours, idle spend and utilisation per team, cost centre or namespace.

Budgets deleted within the period count like any other: their series end in
the period, and what they grew before that is theirs (see
:mod:`gpu_budget.plugin.increments`). A budget without an owner is grouped
under ``(none)`` rather than dropped, so the groups add up to the total.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from gpu_budget.plugin.history import History, Usage
from gpu_budget.plugin.increments import Attribution
from gpu_budget.plugin.output import Cell, Column, number, ratio, text, usd

NONE = "(none)"

DIMENSIONS: dict[str, Callable[[Attribution], str]] = {
    "team": lambda a: a.team or NONE,
    "cost-center": lambda a: a.cost_center or NONE,
    "namespace": lambda a: a.namespace or NONE,
    "budget": lambda a: f"{a.namespace}/{a.budget}",
}


def columns(by: str) -> tuple[Column, ...]:
    return (
        Column("group", by),
        Column("spent", "spent", usd),
        Column("gpu_hours", "gpu-hours", number),
        Column("idle_spent", "idle spend", usd),
        Column("utilization", "util", ratio),
        Column("budgets", "budgets", text),
    )


def grouped(history: History, by: str) -> dict[str, tuple[Usage, set[tuple[str, str]]]]:
    """Usage per group over the whole history, and the budgets in each group."""
    name = DIMENSIONS[by]
    groups: dict[str, tuple[Usage, set[tuple[str, str]]]] = defaultdict(lambda: (Usage(), set()))
    for (who, _), usage in history.usage.items():
        total, budgets = groups[name(who)]
        total.add(usage)
        budgets.add(who.key)
    return dict(groups)


def report_rows(history: History, by: str) -> list[dict[str, Cell]]:
    """One row per group, the biggest spender first."""
    rows: list[dict[str, Cell]] = [
        {
            "group": group,
            "spent": round(usage.spent, 2),
            "gpu_hours": round(usage.gpu_hours, 3) if history.gpu_hours_known else None,
            "idle_spent": round(usage.idle, 2),
            "utilization": None if usage.utilization is None else round(usage.utilization, 4),
            "budgets": len(budgets),
        }
        for group, (usage, budgets) in grouped(history, by).items()
    ]
    rows.sort(key=lambda r: (-float(r["spent"] or 0), str(r["group"])))
    return rows


def footer(history: History) -> str:
    """The period and what the figures rest on, under the table."""
    whole_start, whole_end = history.periods[0].start, history.periods[-1].end
    total = Usage()
    for usage in history.usage.values():
        total.add(usage)
    lines = [
        f"Period: {whole_start.isoformat()} .. {whole_end.isoformat()}; "
        f"total spend ${total.spent:,.2f}, idle ${total.idle:,.2f}"
    ]
    if not history.gpu_hours_known:
        lines.append(
            "GPU-hours: not exported by this operator (gpubudget_gpu_hours); "
            "utilisation is weighted by spend."
        )
    return "".join(line + "\n" for line in lines)
