"""The operator's own Prometheus metrics, served on /metrics.

Per-budget series carry namespace, budget, team and cost_center so finance
can sum spend by team or cost centre without joining anything.
"""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from gpu_budget.conditions import find
from gpu_budget.models import Owner, Phase, TrainingBudgetSpec, TrainingBudgetStatus
from gpu_budget.periods import LimitStanding
from gpu_budget.reasons import ConditionType

BUDGET_LABELS = ("namespace", "budget", "team", "cost_center")

SPENT = Gauge("gpubudget_spent_usd", "Spend so far.", BUDGET_LABELS)
CAP = Gauge("gpubudget_cap_usd", "The budget's cost cap.", BUDGET_LABELS)
BURN_RATE = Gauge("gpubudget_burn_rate_usd_per_hour", "Current spend rate.", BUDGET_LABELS)
UTILIZATION = Gauge(
    "gpubudget_gpu_utilization_ratio", "GPU-time-weighted utilisation so far (0-1).", BUDGET_LABELS
)
IDLE_SPEND = Gauge("gpubudget_idle_spend_usd", "Spend on GPU time that did no work.", BUDGET_LABELS)
GPU_HOURS = Gauge("gpubudget_gpu_hours", "GPU-hours held so far.", BUDGET_LABELS)
APPROVED = Gauge(
    "gpubudget_approved_usd",
    "What finance approved (absent without an approval).",
    BUDGET_LABELS,
)
PLACEMENT_LABELS = ("gpu_product", "capacity_type", "instance_type", "region")
INFO = Gauge(
    "gpubudget_budget_info",
    "1 per budget, labelled with what its GPUs ran on (for reports and FOCUS export).",
    BUDGET_LABELS + PLACEMENT_LABELS,
)
OUTCOME_LABELS = (*BUDGET_LABELS, "unit")
OUTCOME_VALUE = Gauge(
    "gpubudget_outcome_value",
    "What the run produced so far (spec.outcome), in its unit.",
    OUTCOME_LABELS,
)
COST_PER_OUTCOME = Gauge(
    "gpubudget_cost_per_outcome_usd",
    "Spend per unit of the outcome so far (absent while the outcome is not above 0).",
    OUTCOME_LABELS,
)
OUTCOME_QUERIES = Counter(
    "gpubudget_outcome_queries_total",
    "Evaluations of budgets' outcome queries, by result (QueryAnswered, NoSamples, QueryFailed).",
    ("result",),
)
SPENT_RATIO = Gauge("gpubudget_spent_ratio", "Spend as a fraction of the cap.", BUDGET_LABELS)
AWAITING_SINCE = Gauge(
    "gpubudget_awaiting_approval_since_timestamp_seconds",
    "Unix time since which the budget waits for finance (absent when not waiting).",
    BUDGET_LABELS,
)
APPROVALS_PENDING = Gauge("gpubudget_approvals_pending", "Budgets waiting for finance's approval.")
ACTIONS = Counter(
    "gpubudget_enforcement_actions_total",
    "Enforcement actions taken on workloads and budgets.",
    ("action",),
)
RECONCILE_SECONDS = Histogram(
    "gpubudget_reconcile_duration_seconds",
    "Duration of one budget's part of an accounting pass (charge, decide, act).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
RECONCILE_ERRORS = Counter(
    "gpubudget_reconcile_errors_total",
    "Budget passes that raised and will be retried; other budgets are not affected.",
)
QUERY_SECONDS = Histogram(
    "gpubudget_prometheus_query_duration_seconds",
    "Duration of the cluster-wide utilisation query.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
METRICS_SOURCE_UP = Gauge(
    "gpubudget_metrics_source_up", "1 while the DCGM metrics source (Prometheus) answers."
)

INVALID_OBJECTS = Counter(
    "gpubudget_invalid_objects_total",
    "Objects (pods, workloads, policies, records) the operator could not fully read; each is "
    "counted conservatively and named in an Event or condition.",
    ("kind",),
)
STATUS_WRITES = Counter(
    "gpubudget_status_writes_total",
    "TrainingBudget status writes; passes that changed nothing anyone acts on write none.",
)

PERIOD_LABELS = ("scope", "name", "period")
PERIOD_SPENT = Gauge(
    "gpubudget_period_spent_usd",
    "Spend of a limit's scope in the current period, deleted budgets included.",
    PERIOD_LABELS,
)
PERIOD_LIMIT = Gauge("gpubudget_period_limit_usd", "A limit per period.", PERIOD_LABELS)
PERIOD_CLAIMED = Gauge(
    "gpubudget_period_claimed_usd",
    "What the scope's budgets claim of the period: spend plus what their caps still allow.",
    PERIOD_LABELS,
)

_awaiting: set[tuple[str, str]] = set()
_series: dict[tuple[str, str], tuple[str, ...]] = {}
"""The label values each budget's series were last written with."""
_info: dict[tuple[str, str], tuple[str, ...]] = {}
"""The label values each budget's info series was last written with."""
_outcome: dict[tuple[str, str], tuple[str, ...]] = {}
"""The label values (with the unit) each budget's outcome series were last written with."""

PER_BUDGET = (
    SPENT,
    CAP,
    SPENT_RATIO,
    BURN_RATE,
    IDLE_SPEND,
    UTILIZATION,
    AWAITING_SINCE,
    GPU_HOURS,
    APPROVED,
)


def budget_labels(namespace: str, name: str, owner: Owner) -> tuple[str, ...]:
    return (namespace, name, owner.team or "", owner.cost_center or "")


def observe_budget(
    namespace: str,
    name: str,
    spec: TrainingBudgetSpec,
    owner: Owner,
    status: TrainingBudgetStatus,
) -> None:
    """Export a budget's figures; a changed owner moves its series, so nothing counts twice."""
    labels = budget_labels(namespace, name, owner)
    key = (namespace, name)
    previous = _series.get(key)
    if previous is not None and previous != labels:
        for gauge in PER_BUDGET:
            _remove(gauge, previous)
    _series[key] = labels
    SPENT.labels(*labels).set(status.spent)
    CAP.labels(*labels).set(spec.cost_cap)
    SPENT_RATIO.labels(*labels).set(status.spent / spec.cost_cap)
    BURN_RATE.labels(*labels).set(status.burn_rate_per_hour)
    IDLE_SPEND.labels(*labels).set(status.idle_spend)
    GPU_HOURS.labels(*labels).set(status.gpu_hours)
    if status.approval is not None and status.approval.approved_amount is not None:
        APPROVED.labels(*labels).set(status.approval.approved_amount)
    else:
        _remove(APPROVED, labels)
    placed = status.placement
    info = labels + (
        ("", "", "", "")
        if placed is None
        else tuple(
            value or ""
            for value in (
                placed.gpu_product,
                placed.capacity_type,
                placed.instance_type,
                placed.region,
            )
        )
    )
    previous_info = _info.get(key)
    if previous_info is not None and previous_info != info:
        _remove(INFO, previous_info)
    _info[key] = info
    INFO.labels(*info).set(1)
    if status.gpu_utilization is not None:
        UTILIZATION.labels(*labels).set(status.gpu_utilization)
    _observe_outcome(key, labels, status)
    waiting = find(status.conditions, ConditionType.APPROVED)
    if (
        status.phase == Phase.AWAITING_APPROVAL
        and waiting is not None
        and waiting.status == "False"
    ):
        AWAITING_SINCE.labels(*labels).set(waiting.last_transition_time.timestamp())
        _awaiting.add(key)
    else:
        _remove(AWAITING_SINCE, labels)
        _awaiting.discard(key)
    APPROVALS_PENDING.set(len(_awaiting))


def _observe_outcome(
    key: tuple[str, str], labels: tuple[str, ...], status: TrainingBudgetStatus
) -> None:
    outcome = status.outcome
    previous = _outcome.pop(key, None)
    current = None if outcome is None else (*labels, outcome.unit)
    if previous is not None and previous != current:
        _remove(OUTCOME_VALUE, previous)
        _remove(COST_PER_OUTCOME, previous)
    if outcome is None or current is None:
        return
    _outcome[key] = current
    OUTCOME_VALUE.labels(*current).set(outcome.value)
    if outcome.cost_per_unit is None:
        _remove(COST_PER_OUTCOME, current)
    else:
        COST_PER_OUTCOME.labels(*current).set(outcome.cost_per_unit)


def forget_budget(namespace: str, name: str) -> None:
    labels = _series.pop((namespace, name), None)
    if labels is not None:
        for gauge in PER_BUDGET:
            _remove(gauge, labels)
    info = _info.pop((namespace, name), None)
    if info is not None:
        _remove(INFO, info)
    outcome = _outcome.pop((namespace, name), None)
    if outcome is not None:
        _remove(OUTCOME_VALUE, outcome)
        _remove(COST_PER_OUTCOME, outcome)
    _awaiting.discard((namespace, name))
    APPROVALS_PENDING.set(len(_awaiting))


def _remove(gauge: Gauge, labels: tuple[str, ...]) -> None:
    with contextlib.suppress(KeyError):  # never set: nothing to remove
        gauge.remove(*labels)


def observe_periods(standings: list[LimitStanding]) -> None:
    for standing in standings:
        limit = standing.limit
        labels = (str(limit.scope), limit.name, str(limit.period))
        PERIOD_SPENT.labels(*labels).set(standing.spent)
        PERIOD_LIMIT.labels(*labels).set(limit.amount)
        PERIOD_CLAIMED.labels(*labels).set(standing.claimed)


def serve(port: int, address: str = "0.0.0.0") -> None:
    start_http_server(port, addr=address)
