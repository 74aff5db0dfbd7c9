"""One accounting pass: pricing, ledger, estimate, conditions and Events together."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import pytest

from gpu_budget import BUDGET_LABEL
from gpu_budget.accounting import AccountingInput, account, budget_pods
from gpu_budget.conditions import find
from gpu_budget.findings import BudgetEvent, fold
from gpu_budget.inheritance import SpendRecord
from gpu_budget.models import (
    BudgetPolicySpec,
    GpuResource,
    InstanceTypePrice,
    Phase,
    PricingOverrides,
    TrainingBudgetSpec,
    TrainingBudgetStatus,
)
from gpu_budget.node_pricing import NodeFacts
from gpu_budget.pods import PodFacts
from gpu_budget.utilization import UtilizationSnapshot
from gpu_budget.workloads import WorkloadFacts, WorkloadState

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class Accounted(NamedTuple):
    """A pass's outcome with its findings folded, as the plan folds them."""

    status: TrainingBudgetStatus
    events: list[BudgetEvent]
    problems: tuple[str, ...]
    pods: tuple[PodFacts, ...]


def folded(facts: AccountingInput) -> Accounted:
    outcome = account(facts)
    conditions, events = fold(
        outcome.status.conditions, outcome.findings, facts.now, facts.generation
    )
    return Accounted(
        status=outcome.status.model_copy(update={"conditions": conditions}),
        events=events,
        problems=outcome.problems,
        pods=outcome.pods,
    )


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
)


def job_pod(uid: str = "p1", node: str = "p5-spot-0", start: datetime = T0) -> PodFacts:
    return PodFacts(
        uid=uid,
        name=f"train-{uid}",
        namespace="ml-team",
        labels={"batch.kubernetes.io/controller-uid": "job-uid"},
        node=node,
        resources={"nvidia.com/gpu": 8},
        running_since=start,
        ended_at=None,
        controller_kind="Job",
        controller_uid="job-uid",
    )


def run(
    now: datetime,
    status: TrainingBudgetStatus | None = None,
    pods: list[PodFacts] | None = None,
    utilization: UtilizationSnapshot | None = None,
    spec: dict[str, object] | None = None,
) -> Accounted:
    return folded(
        AccountingInput(
            namespace="ml-team",
            name="run",
            uid="budget-uid",
            generation=1,
            spec=TrainingBudgetSpec.model_validate(spec or {"costCap": 100}),
            status=status or TrainingBudgetStatus(),
            policy=POLICY,
            pods=[job_pod()] if pods is None else pods,
            workloads=[JOB],
            owners={},
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


def test_gpu_hours_and_placement_are_recorded_and_kept_once_pods_end() -> None:
    outcome = run(T0 + timedelta(minutes=30))
    assert outcome.status.gpu_hours == pytest.approx(4.0)  # 8 GPUs for half an hour
    placed = outcome.status.placement
    assert placed is not None
    assert (placed.capacity_type, placed.instance_type) == ("spot", "p5.48xlarge")
    ended = run(T0 + timedelta(minutes=40), status=outcome.status, pods=[])
    assert ended.status.placement == placed


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
        update={
            "labels": {"batch.kubernetes.io/controller-uid": "other"},
            "controller_uid": "other",
        }
    )
    labelled = job_pod("y").model_copy(
        update={"labels": {BUDGET_LABEL: "run"}, "controller_kind": None, "controller_uid": None}
    )
    unowned = job_pod("z").model_copy(update={"controller_kind": None, "controller_uid": None})
    # A labelled pod no adapted workload controls is a workload of its own (the Pod adapter).
    solo = JOB.model_copy(update={"kind": "Pod", "name": "train-y", "uid": "y", "pod_uid": "y"})
    picked = budget_pods([job_pod(), stranger, labelled, unowned], [JOB, solo], {})
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


# ------------------------------------------------------------- pods by owner uid


def account_with(
    pods: list[PodFacts],
    workloads: list[WorkloadFacts] | None = None,
    owners: dict[str, str] | None = None,
    now: datetime = T0 + timedelta(hours=1),
    policy: BudgetPolicySpec = POLICY,
    status: TrainingBudgetStatus | None = None,
) -> Accounted:
    return folded(
        AccountingInput(
            namespace="ml-team",
            name="run",
            uid="budget-uid",
            generation=1,
            spec=TrainingBudgetSpec.model_validate({"costCap": 10_000}),
            status=status or TrainingBudgetStatus(),
            policy=policy,
            pods=pods,
            workloads=[JOB] if workloads is None else workloads,
            owners=owners or {},
            nodes=NODES,
            utilization=UtilizationSnapshot(),
            deleted_at={},
            now=now,
        )
    )


def test_a_pod_labelled_as_another_jobs_is_matched_by_its_controller_not_its_label() -> None:
    """A label is copied as easily as written: only the controller reference counts."""
    impostor = job_pod("fake").model_copy(update={"controller_uid": "some-other-job-uid"})
    assert impostor.labels == {"batch.kubernetes.io/controller-uid": "job-uid"}
    outcome = account_with([job_pod(), impostor])
    assert [p.uid for p in outcome.pods] == ["p1"]
    assert outcome.status.spent == pytest.approx(NODE_PRICE)  # one 8-GPU pod for an hour
    unlabelled = job_pod("real").model_copy(update={"labels": {}})
    assert [p.uid for p in account_with([unlabelled]).pods] == ["real"]


def test_jobset_pods_are_followed_through_their_job() -> None:
    jobset = JOB.model_copy(update={"kind": "JobSet", "name": "js", "uid": "js-uid"})
    pod = job_pod("w0").model_copy(update={"controller_uid": "js-workers-0-uid"})
    owners = {"js-workers-0-uid": "js-uid"}
    assert [p.uid for p in account_with([pod], [jobset], owners).pods] == ["w0"]
    # Without the Job's owner known, the pod is nobody's.
    assert account_with([pod], [jobset], {}).pods == ()
    # A Job of another JobSet is not followed to this one.
    assert account_with([pod], [jobset], {"js-workers-0-uid": "other-js-uid"}).pods == ()


def test_a_looping_owner_chain_ends() -> None:
    jobset = JOB.model_copy(update={"kind": "JobSet", "name": "js", "uid": "js-uid"})
    pod = job_pod("w0").model_copy(update={"controller_uid": "a"})
    assert account_with([pod], [jobset], {"a": "b", "b": "a"}).pods == ()


# ------------------------------------------------------------------- DRA claims


def test_a_pod_with_device_claims_is_charged_at_the_fallback_and_flagged() -> None:
    claimed = job_pod("dra").model_copy(update={"resources": {}, "dra_claims": 1})
    outcome = account_with([claimed])
    # One GPU at the fallback ($10), though the node's GPUs cost $4.50.
    assert outcome.status.spent == pytest.approx(10.0)
    priced = find(outcome.status.conditions, "Priced")
    assert priced is not None and priced.status == "False"
    assert priced.reason == "DeviceClaims"
    assert "train-dra" in priced.message and "DRA" in priced.message
    assert "UnknownNodePrice" in [e.reason for e in outcome.events]


def test_device_claims_on_an_unknown_node_name_both() -> None:
    claimed = job_pod("dra", node="mystery-node").model_copy(
        update={"resources": {}, "dra_claims": 2}
    )
    outcome = account_with([claimed])
    assert outcome.status.spent == pytest.approx(2 * 10.0)
    priced = find(outcome.status.conditions, "Priced")
    assert priced is not None and priced.reason == "UnknownNodePrice"
    assert "mystery-node" in priced.message and "train-dra" in priced.message


# ----------------------------------------------------------- unreadable pods


def raw_pod(limits: dict[str, object]) -> dict[str, object]:
    return {
        "metadata": {
            "uid": "bad",
            "name": "train-bad",
            "namespace": "ml-team",
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "uid": "job-uid", "controller": True}
            ],
        },
        "spec": {
            "nodeName": "p5-spot-0",
            "containers": [{"name": "t", "resources": {"limits": limits}}],
        },
        "status": {"phase": "Running", "startTime": "2026-11-01T12:00:00Z"},
    }


def test_a_malformed_gpu_quantity_counts_as_one_gpu_and_is_a_problem() -> None:
    facts = PodFacts.from_pod(raw_pod({"nvidia.com/gpu": "lots"}), T0)
    outcome = account_with([facts])
    assert outcome.status.spent == pytest.approx(NODE_PRICE / 8)  # one GPU for an hour
    assert len(outcome.problems) == 1
    assert outcome.problems[0].startswith("pod train-bad: container t: nvidia.com/gpu=")
    assert "lots" in outcome.problems[0]
    assert account_with([job_pod()]).problems == ()


def test_the_policys_gpu_resources_decide_what_is_charged() -> None:
    policy = POLICY.model_copy(
        update={
            "gpu_resources": [
                GpuResource(resource="nvidia.com/gpu", gpus_per_unit=0.5),
                GpuResource(resource="example.com/accelerator"),
            ]
        }
    )
    pod = job_pod().model_copy(
        update={"resources": {"nvidia.com/gpu": 8, "example.com/accelerator": 2, "fpga.io/x": 4}}
    )
    outcome = account_with([pod], policy=policy)
    assert outcome.status.spent == pytest.approx((8 * 0.5 + 2) * NODE_PRICE / 8)


# ------------------------------------------------------------------ inheritance


def test_an_earlier_budgets_spend_is_carried_on_once_and_announced() -> None:
    previous = SpendRecord(
        budget_uid="old-uid", spent=500.0, phase=Phase.RUNNING, at=T0
    ).to_annotation()
    workload = JOB.model_copy(update={"spend_record": previous})
    first = account_with([job_pod()], [workload])
    assert first.status.spent == pytest.approx(500.0 + NODE_PRICE)
    (event,) = [e for e in first.events if e.reason == "Inherited"]
    assert "old-uid" in event.message and "$500.00" in event.message
    inherited = find(first.status.conditions, "Inherited")
    assert inherited is not None and inherited.status == "True"
    # The record is still on the workload next pass: it must not be folded in again.
    second = account_with([job_pod()], [workload], now=T0 + timedelta(hours=2), status=first.status)
    assert second.status.spent == pytest.approx(500.0 + 2 * NODE_PRICE)
    assert "Inherited" not in [e.reason for e in second.events]
    assert first.status.ledger.inherited_from == ["old-uid"]


def test_a_malformed_spend_record_is_a_problem_not_a_failure() -> None:
    workload = JOB.model_copy(update={"spend_record": "{nope"})
    outcome = account_with([job_pod()], [workload])
    assert outcome.status.spent == pytest.approx(NODE_PRICE)
    assert len(outcome.problems) == 1 and outcome.problems[0].startswith("Job/train: ")
