"""One accounting pass over one budget: facts in, new status and Events out.

This is the function the kopf timer calls. It prices each pod from its node,
charges the ledger up to ``now``, prices the estimate, and says in conditions
and Events what changed. It is pure, so every rule here is unit-tested without
a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from gpu_budget import conditions as cond
from gpu_budget.estimate import price_estimate
from gpu_budget.gpus import gpu_count
from gpu_budget.inheritance import inherit
from gpu_budget.ledger import ChargeRates, advance
from gpu_budget.models import (
    BudgetPolicySpec,
    EstimateStatus,
    TrainingBudgetSpec,
    TrainingBudgetStatus,
    WorkloadRef,
)
from gpu_budget.node_pricing import NodeFacts, NodePrice, price_node
from gpu_budget.pods import PodFacts
from gpu_budget.utilization import UtilizationSnapshot
from gpu_budget.workloads import WorkloadFacts


class BudgetEvent(BaseModel):
    """A Kubernetes Event to post on the budget."""

    model_config = ConfigDict(frozen=True)

    type: str  # Normal | Warning
    reason: str
    message: str


class AccountingInput(BaseModel):
    """Everything one accounting pass looks at."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

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
    now: datetime


class AccountingOutcome(BaseModel):
    status: TrainingBudgetStatus
    events: list[BudgetEvent]
    pods: list[PodFacts]
    """The budget's own pods, for the enforcement step."""
    problems: list[str]
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


def account(facts: AccountingInput) -> AccountingOutcome:
    now, spec = facts.now, facts.spec
    inheritance = inherit(facts.status, facts.workloads, facts.uid)
    previous = inheritance.status
    own_pods = budget_pods(facts.pods, facts.workloads, facts.owners)
    rules = facts.policy.gpu_resources
    fallback_price = facts.policy.pricing.fallback_gpu_hourly_price

    prices: dict[str, NodePrice] = {}
    rates: dict[str, ChargeRates] = {}
    unpriced: set[str] = set()
    claimed: list[str] = []
    for pod in own_pods:
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
        utilization = (
            facts.utilization.for_pod(pod.namespace, pod.name, pod.node)
            if facts.utilization.available
            else None
        )
        rates[pod.uid] = ChargeRates(gpu_hourly_price=gpu_hourly_price, utilization=utilization)

    result = advance(
        previous.ledger,
        [pod.observation(rules) for pod in own_pods],
        rates,
        now,
        spec.cost_model,
        deleted_at=facts.deleted_at,
    )
    sums = result.totals

    estimate: EstimateStatus | None = None
    projected: float | None = None
    if spec.estimate is not None:
        estimate = price_estimate(
            spec.estimate,
            estimate_gpus(spec, facts.workloads),
            facts.policy.pricing,
            facts.policy.contingency,
        )
        first = result.ledger.first_started_at
        if first is None:
            projected = estimate.base_cost
        else:
            elapsed_hours = max(0.0, (now - first).total_seconds() / 3600)
            remaining_hours = max(0.0, spec.estimate.hours - elapsed_hours)
            projected = sums.spent + sums.burn_rate_per_hour * remaining_hours

    events: list[BudgetEvent] = []
    conditions = list(previous.conditions)
    generation = facts.generation

    if facts.utilization.available:
        if cond.find(conditions, cond.METRICS_AVAILABLE) and not cond.is_true(
            conditions, cond.METRICS_AVAILABLE
        ):
            events.append(
                BudgetEvent(
                    type="Normal", reason="MetricsRecovered", message="GPU metrics are back."
                )
            )
        conditions = cond.set_condition(
            conditions,
            cond.METRICS_AVAILABLE,
            "True",
            "PrometheusAnswered",
            "GPU utilisation is read from DCGM metrics in Prometheus.",
            now,
            generation,
        )
    else:
        if cond.is_true(conditions, cond.METRICS_AVAILABLE) or not cond.find(
            conditions, cond.METRICS_AVAILABLE
        ):
            events.append(
                BudgetEvent(
                    type="Warning",
                    reason="MetricsUnavailable",
                    message=f"Cannot read GPU metrics: {facts.utilization.error}. "
                    "Allocation spend continues; utilisation-based spend is charged in full.",
                )
            )
        conditions = cond.set_condition(
            conditions,
            cond.METRICS_AVAILABLE,
            "False",
            "PrometheusUnreachable",
            f"{facts.utilization.error}",
            now,
            generation,
        )

    if unpriced or claimed:
        fallback = fallback_price
        message = " ".join(
            part
            for part in (
                f"No known price for node(s) {', '.join(sorted(unpriced))}; charging the "
                f"fallback ${fallback:g}/GPU-hour."
                if unpriced
                else "",
                f"Pod(s) {', '.join(sorted(claimed))} hold devices through DRA resource "
                f"claims, which the operator cannot price; each claim is charged as one GPU "
                f"at the fallback ${fallback:g}/GPU-hour."
                if claimed
                else "",
            )
            if part
        )
        previous_priced = cond.find(conditions, cond.PRICED)
        if previous_priced is None or previous_priced.message != message:
            events.append(BudgetEvent(type="Warning", reason="UnknownNodePrice", message=message))
        conditions = cond.set_condition(
            conditions,
            cond.PRICED,
            "False",
            "UnknownNodePrice" if unpriced else "DeviceClaims",
            message,
            now,
            generation,
        )
    else:
        conditions = cond.set_condition(
            conditions,
            cond.PRICED,
            "True",
            "AllNodesPriced",
            "Every node the budget's pods run on has a known price.",
            now,
            generation,
        )

    if sums.estimated_pods:
        if result.newly_estimated:
            events.append(
                BudgetEvent(
                    type="Warning",
                    reason="SpendEstimated",
                    message="Pod(s) "
                    + ", ".join(result.newly_estimated)
                    + " disappeared while the operator was not watching; charged up to now.",
                )
            )
        conditions = cond.set_condition(
            conditions,
            cond.SPEND_ESTIMATED,
            "True",
            "PodEndNotObserved",
            f"{sums.estimated_pods} pod(s) ended unobserved and were charged up to when the "
            "operator noticed; spend may be slightly overstated.",
            now,
            generation,
        )

    for record in inheritance.inherited:
        events.append(
            BudgetEvent(
                type="Warning",
                reason="Inherited",
                message=f"An earlier TrainingBudget {facts.name} (uid {record.budget_uid}) had "
                f"spent ${record.spent:,.2f}"
                + (f" and was stopped ({record.reason})" if record.reason else "")
                + "; this budget carries both on: deleting a budget does not reset it.",
            )
        )
    if inheritance.inherited:
        conditions = cond.set_condition(
            conditions,
            cond.INHERITED,
            "True",
            "EarlierBudget",
            f"Carries on the spend of {len(previous.ledger.inherited_from)} earlier budget(s) "
            f"named {facts.name}.",
            now,
            generation,
        )
    problems = [
        *(f"pod {pod.name}: {problem}" for pod in own_pods for problem in pod.problems),
        *(f"{w.kind} {w.name}: {problem}" for w in facts.workloads for problem in w.problems),
        *(f"{bad.workload}: {bad.error}" for bad in inheritance.bad),
    ]

    refs = workload_refs(facts.workloads)
    known = {(ref.kind, ref.name) for ref in previous.workloads}
    for ref in refs:
        if (ref.kind, ref.name) not in known:
            events.append(
                BudgetEvent(
                    type="Normal",
                    reason="WorkloadAttached",
                    message=f"{ref.kind} {ref.name} spends from this budget.",
                )
            )

    status = previous.model_copy(
        update={
            "spent": round(sums.spent, 6),
            "burn_rate_per_hour": round(sums.burn_rate_per_hour, 6),
            "projected_spend": None if projected is None else round(projected, 6),
            "estimate": estimate,
            "gpu_utilization": None
            if sums.gpu_utilization is None
            else round(sums.gpu_utilization, 4),
            "idle_spend": round(sums.idle_spend, 6),
            "workloads": refs,
            "last_accounted_at": now,
            "observed_generation": generation,
            "conditions": conditions,
            "ledger": result.ledger,
        }
    )
    return AccountingOutcome(status=status, events=events, pods=own_pods, problems=problems)
