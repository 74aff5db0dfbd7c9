"""One accounting pass: pricing, ledger, estimate, conditions and Events together."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gpu_budget import BUDGET_LABEL
from gpu_budget.accounting import AccountingInput, AccountingOutcome, account, budget_pods
from gpu_budget.conditions import find
from gpu_budget.models import (
    BudgetPolicySpec,
    InstanceTypePrice,
    PricingOverrides,
    TrainingBudgetSpec,
    TrainingBudgetStatus,
)
from gpu_budget.pods import PodFacts
from gpu_budget.pricing import NodeFacts
from gpu_budget.utilization import UtilizationSnapshot
from gpu_budget.workloads import WorkloadFacts, WorkloadState

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
NODE_PRICE = 36.0  # USD per hour for the whole 8-GPU node -> 4.5 per GPU-hour
POLICY = BudgetPolicySpec(
    pricing=PricingOverrides(
        instance_types=[InstanceTypePrice(instance_type="p5.48xlarge", hourly_price=NODE_PRICE)],
        fallback_gpu_hourly_price=10.0,
    )
)
NODES = {
    "p5-spot-0": NodeFacts(
        name="p5-spot-0",
        labels={
            "node.kubernetes.io/instance-type": "p5.48xlarge",
            "karpenter.sh/capacity-type": "spot",
        },
        gpu_capacity=8,
    )
}
JOB = WorkloadFacts(
    kind="Job",
    namespace="ml-team",
    name="train",
    uid="job-uid",
    budget="run",
    state=WorkloadState.RUNNING,
    suspended=False,
    held=False,
    killed=False,
    requested_gpus=16,
    pod_labels={"batch.kubernetes.io/controller-uid": "job-uid"},
)


def job_pod(uid: str = "p1", node: str = "p5-spot-0", start: datetime = T0) -> PodFacts:
    return PodFacts(
        uid=uid,
        name=f"train-{uid}",
        namespace="ml-team",
        labels={"batch.kubernetes.io/controller-uid": "job-uid"},
        node=node,
        gpus=8,
        running_since=start,
        ended_at=None,
        controller_kind="Job",
    )


def run(
    now: datetime,
    status: TrainingBudgetStatus | None = None,
    pods: list[PodFacts] | None = None,
    utilization: UtilizationSnapshot | None = None,
    spec: dict[str, object] | None = None,
) -> AccountingOutcome:
    return account(
        AccountingInput(
            namespace="ml-team",
            name="run",
            generation=1,
            spec=TrainingBudgetSpec.model_validate(spec or {"costCap": 100}),
            status=status or TrainingBudgetStatus(),
            policy=POLICY,
            pods=[job_pod()] if pods is None else pods,
            workloads=[JOB],
            nodes=NODES,
            utilization=utilization or UtilizationSnapshot(by_pod={("ml-team", "train-p1"): 0.25}),
            deleted_at={},
            now=now,
        )
    )


def test_spend_and_burn_rate_from_node_price() -> None:
    outcome = run(T0 + timedelta(minutes=30))
    assert outcome.status.burn_rate_per_hour == pytest.approx(NODE_PRICE)
    assert outcome.status.spent == pytest.approx(NODE_PRICE / 2)
    assert outcome.status.gpu_utilization == pytest.approx(0.25)
    assert outcome.status.idle_spend == pytest.approx(NODE_PRICE / 2 * 0.75)


def test_first_pass_announces_the_workload_once() -> None:
    first = run(T0 + timedelta(seconds=5))
    assert [e.reason for e in first.events] == ["WorkloadAttached"]
    assert first.status.workloads[0].model_dump() == {
        "kind": "Job",
        "name": "train",
        "state": "Running",
    }
    second = run(T0 + timedelta(seconds=10), status=first.status)
    assert second.events == []


def test_pods_of_other_budgets_and_unowned_pods_are_ignored() -> None:
    stranger = job_pod("x").model_copy(
        update={"labels": {"batch.kubernetes.io/controller-uid": "other"}}
    )
    labelled = job_pod("y").model_copy(
        update={"labels": {BUDGET_LABEL: "run"}, "controller_kind": None}
    )
    picked = budget_pods("run", [job_pod(), stranger, labelled], [JOB])
    assert [p.uid for p in picked] == ["p1", "y"]


def test_unknown_node_uses_fallback_price_and_says_so() -> None:
    outcome = run(T0 + timedelta(hours=1), pods=[job_pod(node="mystery-node")])
    assert outcome.status.spent == pytest.approx(8 * 10.0)
    priced = find(outcome.status.conditions, "Priced")
    assert priced is not None and priced.status == "False"
    assert "mystery-node" in priced.message
    assert "UnknownNodePrice" in [e.reason for e in outcome.events]
    again = run(T0 + timedelta(hours=2), status=outcome.status, pods=[job_pod(node="mystery-node")])
    assert "UnknownNodePrice" not in [e.reason for e in again.events]


def test_metrics_loss_and_recovery_are_conditions_and_events() -> None:
    up = run(T0 + timedelta(minutes=1))
    down = run(
        T0 + timedelta(minutes=2),
        status=up.status,
        utilization=UtilizationSnapshot(available=False, error="connection refused"),
    )
    metrics = find(down.status.conditions, "MetricsAvailable")
    assert metrics is not None and metrics.status == "False"
    assert "MetricsUnavailable" in [e.reason for e in down.events]
    # Allocation spend continues while metrics are gone.
    assert down.status.spent == pytest.approx(NODE_PRICE * 2 / 60)
    back = run(T0 + timedelta(minutes=3), status=down.status)
    assert "MetricsRecovered" in [e.reason for e in back.events]
    recovered = find(back.status.conditions, "MetricsAvailable")
    assert recovered is not None and recovered.status == "True"
    assert recovered.last_transition_time == T0 + timedelta(minutes=3)


def test_estimate_and_projection() -> None:
    spec = {"costCap": 1000, "estimate": {"hours": 2, "instanceType": "p5.48xlarge"}}
    outcome = run(T0 + timedelta(minutes=30), spec=spec)
    estimate = outcome.status.estimate
    assert estimate is not None
    assert estimate.gpus == 16  # from the Job's requests
    assert estimate.total == pytest.approx(estimate.base_cost * 1.5)
    # Spent so far plus the current burn for the remaining 1.5 hours.
    assert outcome.status.projected_spend == pytest.approx(NODE_PRICE / 2 + NODE_PRICE * 1.5)


def test_status_round_trips_through_json() -> None:
    outcome = run(T0 + timedelta(minutes=30))
    wire = outcome.status.model_dump(mode="json", by_alias=True)
    assert wire["burnRatePerHour"] == pytest.approx(NODE_PRICE)
    assert TrainingBudgetStatus.model_validate(wire) == outcome.status


def test_no_pods_means_pending_and_no_burn() -> None:
    outcome = run(T0 + timedelta(minutes=30), pods=[])
    assert outcome.status.burn_rate_per_hour == 0
    assert outcome.status.spent == 0
