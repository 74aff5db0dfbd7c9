"""One accounting pass over one budget: facts in, new status and Events out.

The loop calls it (through :func:`gpu_budget.plan.plan_pass`) for every budget
with something to do. It prices each pod from its node, charges the ledger up
to ``now``, prices the estimate, and says what it found (metrics, prices,
estimated spend, inheritance, new workloads) as :class:`Findings` that the
plan folds with its own. It is pure, so every rule here is unit-tested without
a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from gpu_budget.conditions import find
from gpu_budget.estimate import price_estimate
from gpu_budget.findings import BudgetEvent, ConditionChange, Findings
from gpu_budget.gpus import gpu_count
from gpu_budget.inheritance import Inheritance, inherit
from gpu_budget.ledger import AccountingResult, ChargeRates, advance
from gpu_budget.models import (
    BudgetPolicySpec,
    Condition,
    EstimateStatus,
    InternalModel,
    Placement,
    TrainingBudgetSpec,
    TrainingBudgetStatus,
    WorkloadRef,
)
from gpu_budget.node_pricing import NodeFacts, NodePrice, price_node
from gpu_budget.outcomes import OutcomeReading, outcome_findings, outcome_status
from gpu_budget.periods import PeriodTerms, roll_marks
from gpu_budget.pods import PodFacts
from gpu_budget.reasons import ConditionType, Reason
from gpu_budget.utilization import UtilizationSnapshot
from gpu_budget.workloads import WorkloadFacts


class AccountingInput(BaseModel):
    """Everything one accounting pass looks at."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    namespace: str
    name: str
    uid: str
    generation: int | None
    spec: TrainingBudgetSpec
    status: TrainingBudgetStatus
    policy: BudgetPolicySpec
    pods: Sequence[PodFacts]
    """Every GPU pod of the budget's namespace; the pass picks the budget's own."""
    workloads: Sequence[WorkloadFacts]
    """The workloads labelled for this budget."""
    owners: Mapping[str, str]
    """Uid of an intermediate controller (a JobSet's Job) -> uid of its own controller."""
    nodes: Mapping[str, NodeFacts]
    utilization: UtilizationSnapshot
    deleted_at: Mapping[str, datetime]
    period: PeriodTerms = PeriodTerms()
    """What the limits per period say for this budget (none without limits)."""
    now: datetime
    outcome: OutcomeReading | None = None
    """The latest answer to ``spec.outcome``'s query (the loop rate-limits the queries)."""


class AccountingOutcome(InternalModel):
    status: TrainingBudgetStatus
    """The charged status; its conditions are the previous pass's until the plan folds."""
    findings: tuple[Findings, ...]
    pods: tuple[PodFacts, ...]
    """The budget's own pods, for the enforcement step."""
    utilization: float | None
    """GPU-weighted utilisation of the running pods right now; None when unknown."""
    problems: tuple[str, ...]
    """What could not be read (pods, spend records); also in the Valid condition."""


def budget_pods(
    pods: Sequence[PodFacts], workloads: Sequence[WorkloadFacts], owners: Mapping[str, str]
) -> list[PodFacts]:
    """Pods that spend from a budget: those its workloads own, by owner reference.

    Never by labels: a label is copied as easily as written, while an owner
    reference is set by the controller that created the pod. Labelled pods no
    adapted workload controls are workloads of their own (the Pod adapter).
    """
    return [pod for pod in pods if any(workload.owns(pod, owners) for workload in workloads)]


def workload_refs(workloads: Sequence[WorkloadFacts]) -> list[WorkloadRef]:
    refs = [WorkloadRef(kind=w.kind, name=w.name, state=w.state) for w in workloads]
    return sorted(refs, key=lambda ref: (ref.kind, ref.name))


def estimate_gpus(spec: TrainingBudgetSpec, workloads: Sequence[WorkloadFacts]) -> float:
    if spec.estimate is not None and spec.estimate.gpus is not None:
        return spec.estimate.gpus
    return sum(w.requested_gpus for w in workloads)


class _PricedPods(InternalModel):
    rates: dict[str, ChargeRates]
    """Pod uid -> what applies to it this interval."""
    unpriced_nodes: tuple[str, ...]
    claimed_pods: tuple[str, ...]
    """Pods holding DRA claims the operator cannot price."""
    utilization: float | None


def _price_of(node_name: str, facts: AccountingInput) -> NodePrice:
    node = facts.nodes.get(node_name)
    if node is not None:
        return price_node(node, facts.policy.pricing)
    # A node the operator cannot see (deleted, or not yet in the index) is
    # never free: it is charged the fallback price and reported.
    fallback = facts.policy.pricing.fallback_gpu_hourly_price
    return NodePrice(
        node_hourly_price=0.0,
        gpu_hourly_price=fallback,
        gpus=0,
        source=f"fallback: node {node_name} not found",
        known=False,
    )


def _price_pods(pods: Sequence[PodFacts], facts: AccountingInput) -> _PricedPods:
    """Each pod's price and utilisation this interval, each node priced and each pod
    looked up once; and the running pods' utilisation, weighted by their GPUs."""
    rules = facts.policy.gpu_resources
    fallback_price = facts.policy.pricing.fallback_gpu_hourly_price
    prices: dict[str, NodePrice] = {}
    rates: dict[str, ChargeRates] = {}
    unpriced: set[str] = set()
    claimed: list[str] = []
    weighted: list[tuple[float, float]] = []
    for pod in pods:
        utilization = (
            facts.utilization.for_pod(pod.namespace, pod.name, pod.node)
            if facts.utilization.available
            else None
        )
        if pod.holds_gpus and utilization is not None:
            weighted.append((pod.gpus(rules), utilization))
        if pod.node is None:
            continue
        if pod.node not in prices:
            prices[pod.node] = _price_of(pod.node, facts)
        price = prices[pod.node]
        gpu_hourly_price = price.gpu_hourly_price
        if not price.known:
            unpriced.add(pod.node)
        if pod.dra_claims and gpu_count(pod.resources, rules) == 0:
            # The device a claim got is not visible here: never free, never guessed low.
            gpu_hourly_price = fallback_price
            claimed.append(pod.name)
        rates[pod.uid] = ChargeRates(gpu_hourly_price=gpu_hourly_price, utilization=utilization)
    total = sum(gpus for gpus, _ in weighted)
    return _PricedPods(
        rates=rates,
        unpriced_nodes=tuple(sorted(unpriced)),
        claimed_pods=tuple(sorted(claimed)),
        utilization=None if total == 0 else sum(g * v for g, v in weighted) / total,
    )


def placement(pods: Sequence[PodFacts], nodes: Mapping[str, NodeFacts]) -> Placement | None:
    """What the running pods' GPUs run on; None while none runs on a known node."""
    seen = [
        nodes[pod.node]
        for pod in pods
        if pod.holds_gpus and pod.node is not None and pod.node in nodes
    ]
    if not seen:
        return None

    def one(values: set[str | None]) -> str | None:
        known = {value for value in values if value}
        return None if not known else known.pop() if len(known) == 1 else "mixed"

    return Placement(
        gpu_product=one({node.gpu_product for node in seen}),
        capacity_type=one({str(node.capacity_type) for node in seen}),
        instance_type=one({node.instance_type for node in seen}),
        region=one({node.region for node in seen}),
    )


def account(facts: AccountingInput) -> AccountingOutcome:
    now, spec = facts.now, facts.spec
    inheritance = inherit(facts.status, facts.workloads, facts.uid)
    previous = inheritance.status
    own_pods = budget_pods(facts.pods, facts.workloads, facts.owners)
    priced = _price_pods(own_pods, facts)
    result = advance(
        previous.ledger,
        [pod.observation(facts.policy.gpu_resources) for pod in own_pods],
        priced.rates,
        now,
        spec.cost_model,
        deleted_at=facts.deleted_at,
    )
    sums = result.totals
    estimate = (
        None
        if spec.estimate is None
        else price_estimate(
            spec.estimate,
            estimate_gpus(spec, facts.workloads),
            facts.policy.pricing,
            facts.policy.contingency,
        )
    )
    refs = workload_refs(facts.workloads)
    conditions = previous.conditions
    findings = (
        _metrics_findings(conditions, facts.utilization),
        _pricing_findings(conditions, priced, facts.policy.pricing.fallback_gpu_hourly_price),
        _estimated_findings(result),
        _inheritance_findings(inheritance, facts.name),
        _attachment_findings(previous.workloads, refs),
        outcome_findings(conditions, spec.outcome, facts.outcome),
    )
    problems = (
        *(f"pod {pod.name}: {problem}" for pod in own_pods for problem in pod.problems),
        *(f"{w.kind} {w.name}: {problem}" for w in facts.workloads for problem in w.problems),
        *(f"{bad.workload}: {bad.error}" for bad in inheritance.bad),
    )
    spent = round(sums.spent, 6)
    status = previous.model_copy(
        update={
            "spent": spent,
            "burn_rate_per_hour": round(sums.burn_rate_per_hour, 6),
            "projected_spend": _projected_spend(spec, estimate, result, now),
            "estimate": estimate,
            "gpu_utilization": None
            if sums.gpu_utilization is None
            else round(sums.gpu_utilization, 4),
            "idle_spend": round(sums.idle_spend, 6),
            "gpu_hours": round(sums.gpu_seconds / 3600, 6),
            "placement": placement(own_pods, facts.nodes) or previous.placement,
            "periods": roll_marks(
                previous.periods,
                facts.period.periods,
                previous.spent,
                sums.spent,
                sums.burn_rate_per_hour,
                now,
            ),
            "outcome": outcome_status(spec.outcome, facts.outcome, previous.outcome, spent),
            # An outcome no longer asked for leaves no condition behind.
            "conditions": conditions
            if spec.outcome is not None
            else [c for c in conditions if c.type != ConditionType.OUTCOME_MEASURED],
            "workloads": refs,
            "last_accounted_at": now,
            "observed_generation": facts.generation,
            "ledger": result.ledger,
        }
    )
    return AccountingOutcome(
        status=status,
        findings=findings,
        pods=tuple(own_pods),
        utilization=priced.utilization,
        problems=problems,
    )


def _projected_spend(
    spec: TrainingBudgetSpec,
    estimate: EstimateStatus | None,
    result: AccountingResult,
    now: datetime,
) -> float | None:
    """Spend by the end of the estimated run: what was spent plus the burn for what is left."""
    if spec.estimate is None or estimate is None:
        return None
    first = result.ledger.first_started_at
    if first is None:
        return round(estimate.base_cost, 6)
    elapsed_hours = max(0.0, (now - first).total_seconds() / 3600)
    remaining_hours = max(0.0, spec.estimate.hours - elapsed_hours)
    sums = result.totals
    return round(sums.spent + sums.burn_rate_per_hour * remaining_hours, 6)


def _metrics_findings(conditions: list[Condition], utilization: UtilizationSnapshot) -> Findings:
    """MetricsAvailable, with an Event when metrics go or come back."""
    seen = find(conditions, ConditionType.METRICS_AVAILABLE)
    if utilization.available:
        recovered = seen is not None and seen.status != "True"
        return Findings(
            conditions=(
                ConditionChange(
                    type=ConditionType.METRICS_AVAILABLE,
                    status="True",
                    reason=Reason.PROMETHEUS_ANSWERED,
                    message="GPU utilisation is read from DCGM metrics in Prometheus.",
                ),
            ),
            events=(
                BudgetEvent(
                    type="Normal",
                    reason=Reason.METRICS_RECOVERED,
                    message="GPU metrics are back.",
                ),
            )
            if recovered
            else (),
        )
    lost = seen is None or seen.status == "True"
    return Findings(
        conditions=(
            ConditionChange(
                type=ConditionType.METRICS_AVAILABLE,
                status="False",
                reason=Reason.PROMETHEUS_UNREACHABLE,
                message=f"{utilization.error}",
            ),
        ),
        events=(
            BudgetEvent(
                type="Warning",
                reason=Reason.METRICS_UNAVAILABLE,
                message=f"Cannot read GPU metrics: {utilization.error}. "
                "Allocation spend continues; utilisation-based spend is charged in full.",
            ),
        )
        if lost
        else (),
    )


def _pricing_findings(
    conditions: list[Condition], priced: _PricedPods, fallback: float
) -> Findings:
    """Priced: False, with an Event when what is unpriced changes, while a price is guessed."""
    unpriced, claimed = priced.unpriced_nodes, priced.claimed_pods
    if not unpriced and not claimed:
        return Findings(
            conditions=(
                ConditionChange(
                    type=ConditionType.PRICED,
                    status="True",
                    reason=Reason.ALL_NODES_PRICED,
                    message="Every node the budget's pods run on has a known price.",
                ),
            )
        )
    parts = []
    if unpriced:
        parts.append(
            f"No known price for node(s) {', '.join(unpriced)}; charging the fallback "
            f"${fallback:g}/GPU-hour."
        )
    if claimed:
        parts.append(
            f"Pod(s) {', '.join(claimed)} hold devices through DRA resource claims, which the "
            f"operator cannot price; each claim is charged as one GPU at the fallback "
            f"${fallback:g}/GPU-hour."
        )
    message = " ".join(parts)
    seen = find(conditions, ConditionType.PRICED)
    changed = seen is None or seen.message != message
    return Findings(
        conditions=(
            ConditionChange(
                type=ConditionType.PRICED,
                status="False",
                reason=Reason.UNKNOWN_NODE_PRICE if unpriced else Reason.DEVICE_CLAIMS,
                message=message,
            ),
        ),
        events=(BudgetEvent(type="Warning", reason=Reason.UNKNOWN_NODE_PRICE, message=message),)
        if changed
        else (),
    )


def _estimated_findings(result: AccountingResult) -> Findings:
    """SpendEstimated, once a pod ended while the operator was not watching."""
    estimated = result.totals.estimated_pods
    if not estimated:
        return Findings()
    return Findings(
        conditions=(
            ConditionChange(
                type=ConditionType.SPEND_ESTIMATED,
                status="True",
                reason=Reason.POD_END_NOT_OBSERVED,
                message=f"{estimated} pod(s) ended unobserved and were charged up to when the "
                "operator noticed; spend may be slightly overstated.",
            ),
        ),
        events=(
            BudgetEvent(
                type="Warning",
                reason=Reason.SPEND_ESTIMATED,
                message="Pod(s) "
                + ", ".join(result.newly_estimated)
                + " disappeared while the operator was not watching; charged up to now.",
            ),
        )
        if result.newly_estimated
        else (),
    )


def _inheritance_findings(inheritance: Inheritance, name: str) -> Findings:
    """Inherited: the spend (and stop) of earlier budgets of this name, carried on."""
    if not inheritance.inherited:
        return Findings()
    ledger = inheritance.status.ledger
    return Findings(
        conditions=(
            ConditionChange(
                type=ConditionType.INHERITED,
                status="True",
                reason=Reason.EARLIER_BUDGET,
                message=f"Carries on the spend of {len(ledger.inherited_from)} earlier "
                f"budget(s) named {name}.",
            ),
        ),
        events=tuple(
            BudgetEvent(
                type="Warning",
                reason=Reason.INHERITED,
                message=f"An earlier TrainingBudget {name} (uid {record.budget_uid}) had "
                f"spent ${record.spent:,.2f}"
                + (f" and was stopped ({record.reason})" if record.reason else "")
                + "; this budget carries both on: deleting a budget does not reset it.",
            )
            for record in inheritance.inherited
        ),
    )


def _attachment_findings(known: list[WorkloadRef], refs: list[WorkloadRef]) -> Findings:
    """An Event for each workload that starts spending from the budget."""
    seen = {(ref.kind, ref.name) for ref in known}
    return Findings(
        events=tuple(
            BudgetEvent(
                type="Normal",
                reason=Reason.WORKLOAD_ATTACHED,
                message=f"{ref.kind} {ref.name} spends from this budget.",
            )
            for ref in refs
            if (ref.kind, ref.name) not in seen
        )
    )
