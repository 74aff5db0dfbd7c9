"""The operator's history, read back from Prometheus: what each budget used in each period.

Why Prometheus (see docs/reports.md): the operator's own metrics already hold
every budget's cumulative spend, idle spend and GPU-hours over time, labelled
by namespace, budget, team and cost centre; the series outlive a deleted budget
and an operator restart, and retention (or recording rules and remote write
for longer) bounds how far back a report can go, with no database of the
plugin's own. Each quantity is read with one range query over the report's
period and one instant query for its value at the period's start; the growth
maths is :mod:`gpu_budget.plugin.increments`.

Utilisation in a period is the growth of busy GPU-hours (utilisation so far
times GPU-hours so far) over the growth of GPU-hours; while the operator
exports no GPU-hours, spend stands in as the weight.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from gpu_budget.plugin.increments import Attribution, Growth, Series, growth
from gpu_budget.plugin.periods import Period, step_seconds
from gpu_budget.plugin.prometheus import Prometheus

SPENT = "gpubudget_spent_usd"
IDLE = "gpubudget_idle_spend_usd"
GPU_HOURS = "gpubudget_gpu_hours"
"""Requested from the operator: GPU-hours held so far (cumulative, like spend)."""
UTILIZATION = "gpubudget_gpu_utilization_ratio"
INFO = "gpubudget_budget_info"
"""Requested from the operator: 1, labelled with how the budget is priced (see docs/reports.md)."""
APPROVED = "gpubudget_approved_usd"
"""Requested from the operator: the amount finance approved (absent when none)."""

BY = "namespace, budget, team, cost_center"
INFO_LABELS = ("gpu_product", "capacity_type", "instance_type", "region")
LOOKBACK = "7d"
"""How far before a period's start a budget's last value is looked for."""


def current(metric: str) -> str:
    """One series per budget and owner, whichever replica or scrape target exported it."""
    return f"max by ({BY}) ({metric})"


def last_known(metric: str) -> str:
    return f"max by ({BY}) (last_over_time({metric}[{LOOKBACK}]))"


def product(left: str, right: str) -> str:
    return f"{left} * on ({BY}) {right}"


@dataclass
class Usage:
    """What one budget (or a group of them) used in one period."""

    spent: float = 0.0
    idle: float = 0.0
    gpu_hours: float = 0.0
    busy: float = 0.0
    """Growth of utilisation x weight: busy GPU-hours (or busy spend, see the module)."""
    weight: float = 0.0

    @property
    def utilization(self) -> float | None:
        return self.busy / self.weight if self.weight > 0 else None

    def add(self, other: Usage) -> None:
        self.spent += other.spent
        self.idle += other.idle
        self.gpu_hours += other.gpu_hours
        self.busy += other.busy
        self.weight += other.weight


@dataclass(frozen=True)
class BudgetFacts:
    """How a budget is priced and approved, from the operator's info metrics."""

    gpu_product: str = ""
    capacity_type: str = ""
    instance_type: str = ""
    region: str = ""
    approved: float | None = None


@dataclass
class History:
    periods: list[Period]
    usage: dict[tuple[Attribution, int], Usage] = field(default_factory=dict)
    gpu_hours_known: bool = False
    facts: dict[tuple[str, str], BudgetFacts] = field(default_factory=dict)


def assemble(
    periods: list[Period],
    spent: Growth,
    idle: Growth,
    gpu_hours: Growth | None,
    busy: Growth,
    weight: Growth,
) -> dict[tuple[Attribution, int], Usage]:
    """Per-quantity growth, joined into one :class:`Usage` per budget and period."""
    usage: dict[tuple[Attribution, int], Usage] = defaultdict(Usage)
    for key, value in spent.items():
        usage[key].spent = value
    for key, value in idle.items():
        usage[key].idle = value
    for key, value in (gpu_hours or {}).items():
        usage[key].gpu_hours = value
    for key, value in busy.items():  # a budget without utilisation series has none
        usage[key].busy = value
        usage[key].weight = weight.get(key, 0.0)
    return {key: u for key, u in usage.items() if 0 <= key[1] < len(periods)}


def fetch(prometheus: Prometheus, periods: list[Period]) -> History:
    """Everything ``report`` and ``export`` show for ``periods`` (consecutive, ascending)."""
    whole = Period(periods[0].start, periods[-1].end)
    bounds = [p.start.timestamp() for p in periods] + [whole.end.timestamp()]
    step = step_seconds(whole)

    def grown(now: str, then: str) -> Growth:
        series = prometheus.range(now, whole.start, whole.end, step)
        return growth(series, _baseline(prometheus.instant(then, whole.start)), bounds)

    hours_series = prometheus.range(current(GPU_HOURS), whole.start, whole.end, step)
    weight_metric = GPU_HOURS if hours_series else SPENT
    spent = grown(current(SPENT), last_known(SPENT))
    gpu_hours = grown(current(GPU_HOURS), last_known(GPU_HOURS)) if hours_series else None
    weight = gpu_hours if gpu_hours is not None else spent
    history = History(
        periods=periods,
        usage=assemble(
            periods,
            spent=spent,
            idle=grown(current(IDLE), last_known(IDLE)),
            gpu_hours=gpu_hours,
            busy=grown(
                product(current(UTILIZATION), current(weight_metric)),
                product(last_known(UTILIZATION), last_known(weight_metric)),
            ),
            weight=weight,
        ),
        gpu_hours_known=gpu_hours is not None,
    )
    info = prometheus.range(
        f"max by (namespace, budget, {', '.join(INFO_LABELS)}) ({INFO})",
        whole.start,
        whole.end,
        step,
    )
    approved = prometheus.range(
        f"max by (namespace, budget) ({APPROVED})", whole.start, whole.end, step
    )
    history.facts = budget_facts(info, approved)
    return history


def budget_facts(
    info: Sequence[Series], approved: Sequence[Series]
) -> dict[tuple[str, str], BudgetFacts]:
    """Each budget's latest pricing labels and approved amount within the period."""
    latest: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}
    for one in info:
        key = (one.labels.get("namespace", ""), one.labels.get("budget", ""))
        last = max((t for t, _ in one.points), default=None)
        if last is not None and (key not in latest or last > latest[key][0]):
            latest[key] = (last, {name: one.labels.get(name, "") for name in INFO_LABELS})
    amounts: dict[tuple[str, str], tuple[float, float]] = {}
    for one in approved:
        key = (one.labels.get("namespace", ""), one.labels.get("budget", ""))
        for t, value in one.points:
            if key not in amounts or t > amounts[key][0]:
                amounts[key] = (t, value)
    return {
        key: BudgetFacts(
            **(latest[key][1] if key in latest else {}),
            approved=amounts[key][1] if key in amounts else None,
        )
        for key in latest.keys() | amounts.keys()
    }


def _baseline(series: Sequence[Series]) -> dict[tuple[str, str], float]:
    values: dict[tuple[str, str], float] = {}
    for one in series:
        key = Attribution.of(one.labels).key
        for _, value in one.points:
            values[key] = max(values.get(key, value), value)
    return values
