"""A whole pass planned: approval, thresholds, stop, resume, checkpoint, notifications."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from gpu_budget import (
    ADMITTED_ANNOTATION,
    APPROVAL_REASON_ANNOTATION,
    APPROVED_AMOUNT_ANNOTATION,
    APPROVED_AT_ANNOTATION,
    APPROVED_BY_ANNOTATION,
    APPROVED_CAP_ANNOTATION,
    SPEND_RECORD_ANNOTATION,
)
from gpu_budget.accounting import AccountingInput
from gpu_budget.conditions import find
from gpu_budget.enforcement import Desired
from gpu_budget.inheritance import parse_record
from gpu_budget.models import (
    BudgetPolicySpec,
    EnforcementAction,
    InstanceTypePrice,
    Phase,
    PricingOverrides,
    TrainingBudgetSpec,
    TrainingBudgetStatus,
)
from gpu_budget.node_pricing import NodeFacts
from gpu_budget.plan import Plan, PodDeletion, effective_action, plan_pass
from gpu_budget.pods import STOP_AT_ANNOTATION, PodFacts
from gpu_budget.utilization import UtilizationSnapshot
from gpu_budget.workloads import HELD_ANNOTATION, KILLED_ANNOTATION, JobAdapter

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
NODE_PRICE = 3600.0  # $1 per second for the node
BUDGET_UID = "budget-uid"
POLICY = BudgetPolicySpec(
    approval_ceiling=10_000,
    notification_webhook_url="http://127.0.0.1:9/hook",
    pricing=PricingOverrides(
        instance_types=[InstanceTypePrice(instance_type="p5.48xlarge", hourly_price=NODE_PRICE)]
    ),
)
NODES = {
    "p5-spot-0": NodeFacts(
        name="p5-spot-0", labels={"node.kubernetes.io/instance-type": "p5.48xlarge"}, gpu_capacity=8
    )
}


def job_body(suspend: bool = False, **annotations: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "train",
            "namespace": "ml-team",
            "uid": "job-uid",
            "labels": {"gpubudget.dev/budget": "run"},
            "annotations": annotations,
        },
        "spec": {
            "suspend": suspend,
            "parallelism": 1,
            "template": {
                "spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": 8}}}]}
            },
        },
        "status": {} if suspend else {"active": 1},
    }


def pod(start: datetime = T0, stop_at: str | None = None) -> PodFacts:
    return PodFacts(
        uid="p1",
        name="train-0",
        namespace="ml-team",
        labels={"batch.kubernetes.io/controller-uid": "job-uid"},
        node="p5-spot-0",
        resources={"nvidia.com/gpu": 8},
        running_since=start,
        ended_at=None,
        termination_grace_seconds=0,
        controller_kind="Job",
        controller_uid="job-uid",
        stop_at=stop_at,
    )


def plan(
    now: datetime,
    spec: dict[str, Any],
    status: TrainingBudgetStatus | None = None,
    job: dict[str, Any] | None = None,
    pods: list[PodFacts] | None = None,
    annotations: dict[str, str] | None = None,
) -> Plan:
    return plan_pass(
        AccountingInput(
            namespace="ml-team",
            name="run",
            uid=BUDGET_UID,
            generation=1,
            spec=TrainingBudgetSpec.model_validate(spec),
            status=status or TrainingBudgetStatus(),
            policy=POLICY,
            pods=[pod()] if pods is None else pods,
            workloads=[JobAdapter().facts(job or job_body())],
            owners={},
            nodes=NODES,
            utilization=UtilizationSnapshot(by_pod={("ml-team", "train-0"): 0.9}),
            deleted_at={},
            now=now,
        ),
        annotations or {},
    )


def test_over_ceiling_without_approval_holds_and_asks_finance() -> None:
    held = job_body(suspend=True, **{HELD_ANNOTATION: "Admission"})
    p = plan(T0, {"costCap": 50_000}, job=held, pods=[])
    assert p.status.phase == Phase.AWAITING_APPROVAL
    assert p.workload_actions == []  # already held at admission
    approved = find(p.status.conditions, "Approved")
    assert approved is not None and approved.status == "False"
    assert [n["gpubudget"]["reason"] for n in p.notifications] == ["AwaitingApproval"]
    assert p.status.approval is not None and p.status.approval.spend_limit == 0


def test_approval_releases_the_held_job_and_records_the_approver() -> None:
    held = job_body(suspend=True, **{HELD_ANNOTATION: "Admission"})
    waiting = plan(T0, {"costCap": 50_000}, job=held, pods=[]).status
    p = plan(
        T0 + timedelta(seconds=5),
        {"costCap": 50_000},
        status=waiting,
        job=held,
        pods=[],
        annotations={APPROVED_AMOUNT_ANNOTATION: "50000", APPROVED_BY_ANNOTATION: "bob"},
    )
    assert [a.operation.patch for a in p.workload_actions] == [
        {
            "spec": {"suspend": False},
            "metadata": {"annotations": {HELD_ANNOTATION: None, ADMITTED_ANNOTATION: BUDGET_UID}},
        }
    ]
    assert [a.reason for a in p.workload_actions] == ["Admitted"]
    assert p.status.approval is not None and p.status.approval.approved_by == "bob"
    assert any(e.reason == "Approved" and "bob" in e.message for e in p.events)


def test_finance_reason_is_in_status_the_event_and_the_notification() -> None:
    why = "Q4 pretraining, ticket FIN-1234"
    p = plan(
        T0,
        {"costCap": 50_000},
        pods=[],
        annotations={
            APPROVED_AMOUNT_ANNOTATION: "50000",
            APPROVED_BY_ANNOTATION: "bob",
            APPROVAL_REASON_ANNOTATION: why,
        },
    )
    assert p.status.approval is not None and p.status.approval.reason == why
    (event,) = [e for e in p.events if e.reason == "Approved"]
    assert event.message == f"Finance approved $50,000.00 by bob: {why}"
    assert [n["gpubudget"]["reason"] for n in p.notifications] == ["Approved"]


def test_thresholds_warn_once_with_notification_payloads() -> None:
    p = plan(T0 + timedelta(seconds=55), {"costCap": 100})
    assert [e.reason for e in p.events if e.reason == "ThresholdReached"] == ["ThresholdReached"]
    payloads = p.notifications
    assert any("50%" in body["text"] for body in payloads)
    assert all(body["gpubudget"]["budget"] == "run" for body in payloads)
    again = plan(T0 + timedelta(seconds=60), {"costCap": 100}, status=p.status)
    assert "ThresholdReached" not in [e.reason for e in again.events]


def test_stop_is_planned_and_pods_get_the_checkpoint_annotation() -> None:
    p = plan(
        T0 + timedelta(seconds=40), {"costCap": 100, "enforcement": {"checkpointLeadSeconds": 120}}
    )
    assert p.decision.record.stop_at == T0 + timedelta(seconds=100)
    assert p.status.enforcement.stop_at == T0 + timedelta(seconds=100)
    assert p.pod_annotations[0].annotations == {STOP_AT_ANNOTATION: "2026-11-01T12:01:40Z"}
    same = plan(
        T0 + timedelta(seconds=41),
        {"costCap": 100, "enforcement": {"checkpointLeadSeconds": 120}},
        pods=[pod(stop_at="2026-11-01T12:01:40Z")],
    )
    assert same.pod_annotations == []


def test_cap_reached_suspends_the_job() -> None:
    p = plan(T0 + timedelta(seconds=100), {"costCap": 100})
    assert p.status.phase == Phase.SUSPENDED
    (action,) = p.workload_actions
    patch = action.operation.patch
    assert patch is not None
    record = parse_record(patch["metadata"]["annotations"].pop(SPEND_RECORD_ANNOTATION))
    assert patch == {
        "spec": {"suspend": True},
        "metadata": {"annotations": {HELD_ANNOTATION: "CapReached"}},
    }
    # The stopped workload carries the budget's spend and stop (for a recreated budget).
    assert (record.budget_uid, record.spent, record.phase, record.reason) == (
        BUDGET_UID,
        p.status.spent,
        Phase.SUSPENDED,
        "CapReached",
    )
    assert p.status.enforcement.spent_at_stop == p.status.spent
    assert any(e.reason == "CapReached" for e in p.events)
    capped = find(p.status.conditions, "CapReached")
    assert capped is not None and capped.status == "True"


def test_kill_marks_the_job_killed() -> None:
    p = plan(T0 + timedelta(seconds=100), {"costCap": 100, "enforcement": {"action": "Kill"}})
    assert p.status.phase == Phase.KILLED
    (action,) = p.workload_actions
    assert action.operation.patch is not None
    assert action.operation.patch["metadata"]["annotations"][KILLED_ANNOTATION].startswith(
        "CapReached"
    )


def test_raised_cap_resumes_a_suspended_job() -> None:
    stopped = plan(T0 + timedelta(seconds=100), {"costCap": 100}).status
    held = job_body(suspend=True, **{HELD_ANNOTATION: "CapReached"})
    still = plan(T0 + timedelta(seconds=110), {"costCap": 100}, status=stopped, job=held, pods=[])
    assert still.status.phase == Phase.SUSPENDED and still.workload_actions == []
    raised = plan(T0 + timedelta(seconds=120), {"costCap": 200}, status=stopped, job=held, pods=[])
    assert raised.status.phase == Phase.PENDING
    assert [a.reason for a in raised.workload_actions] == ["Resumed"]
    assert "Resumed" in [e.reason for e in raised.events]


def test_policy_default_thresholds_apply_when_the_budget_names_none() -> None:
    policy = POLICY.model_copy(update={"default_warn_at": [0.25]})
    facts = AccountingInput(
        namespace="ml-team",
        name="run",
        uid=BUDGET_UID,
        generation=1,
        spec=TrainingBudgetSpec.model_validate({"costCap": 100}),
        status=TrainingBudgetStatus(),
        policy=policy,
        pods=[pod()],
        workloads=[JobAdapter().facts(job_body())],
        owners={},
        nodes=NODES,
        utilization=UtilizationSnapshot(),
        deleted_at={},
        now=T0 + timedelta(seconds=30),
    )
    assert plan_pass(facts, {}).decision.warnings == (0.25,)


def test_running_pods_make_a_running_budget_and_none_a_pending_one() -> None:
    assert plan(T0 + timedelta(seconds=30), {"costCap": 100}).status.phase == Phase.RUNNING
    assert plan(T0 + timedelta(seconds=30), {"costCap": 100}, pods=[]).status.phase == Phase.PENDING


def test_kill_writes_the_spend_record_on_the_killed_job() -> None:
    p = plan(T0 + timedelta(seconds=100), {"costCap": 100, "enforcement": {"action": "Kill"}})
    (action,) = p.workload_actions
    assert action.operation.patch is not None
    raw = action.operation.patch["metadata"]["annotations"][SPEND_RECORD_ANNOTATION]
    record = parse_record(raw)
    assert (record.budget_uid, record.phase, record.spent) == (
        BUDGET_UID,
        Phase.KILLED,
        p.status.spent,
    )


def test_approval_status_shows_the_approved_cap_and_the_hard_limit() -> None:
    held = job_body(suspend=True, **{HELD_ANNOTATION: "Admission"})
    p = plan(
        T0,
        {"costCap": 25_000},
        job=held,
        pods=[],
        annotations={
            APPROVED_AMOUNT_ANNOTATION: "30000",
            APPROVED_CAP_ANNOTATION: "20000",
            APPROVED_AT_ANNOTATION: "not a time",
        },
    )
    assert p.status.approval is not None
    assert p.status.approval.approved_cap == 20_000
    assert p.status.approval.spend_limit == 20_000 and p.status.approval.hard_limit == 20_000
    assert p.status.approval.approved_at is None  # unreadable: shown as unknown, not fatal
    approved = find(p.status.conditions, "Approved")
    assert approved is not None and approved.reason == "ApprovalBelowCap"


# ------------------------------------------------------------ the action at the cap


def test_effective_action_falls_back_to_suspend_when_the_policy_disallows_it() -> None:
    everything = list(EnforcementAction)
    assert effective_action(EnforcementAction.ALERT, everything) == EnforcementAction.ALERT
    assert effective_action(EnforcementAction.KILL, everything) == EnforcementAction.KILL
    hard = [EnforcementAction.SUSPEND, EnforcementAction.KILL]
    assert effective_action(EnforcementAction.ALERT, hard) == EnforcementAction.SUSPEND
    assert effective_action(EnforcementAction.KILL, [EnforcementAction.SUSPEND]) == (
        EnforcementAction.SUSPEND
    )


def plan_with(
    policy: BudgetPolicySpec,
    now: datetime,
    spec: dict[str, Any],
    pods: list[PodFacts] | None = None,
    status: TrainingBudgetStatus | None = None,
) -> Plan:
    return plan_pass(
        AccountingInput(
            namespace="ml-team",
            name="run",
            uid=BUDGET_UID,
            generation=1,
            spec=TrainingBudgetSpec.model_validate(spec),
            status=status or TrainingBudgetStatus(),
            policy=policy,
            pods=[pod()] if pods is None else pods,
            workloads=[JobAdapter().facts(job_body())],
            owners={},
            nodes=NODES,
            utilization=UtilizationSnapshot(),
            deleted_at={},
            now=now,
        ),
        {},
    )


def test_a_disallowed_alert_is_enforced_as_suspend_and_said_so() -> None:
    strict = POLICY.model_copy(
        update={"allowed_actions": [EnforcementAction.SUSPEND, EnforcementAction.KILL]}
    )
    spec = {"costCap": 100, "enforcement": {"action": "Alert"}}
    p = plan_with(strict, T0 + timedelta(seconds=100), spec)
    assert p.status.phase == Phase.SUSPENDED
    assert p.decision.reason == "CapReached"
    assert [a.reason for a in p.workload_actions] == ["Suspended"]
    valid = find(p.status.conditions, "Valid")
    assert valid is not None and valid.status == "False"
    assert "allows only Suspend, Kill" in valid.message and "Alert" in valid.message
    assert [e.reason for e in p.events].count("InvalidObjects") == 1
    again = plan_with(strict, T0 + timedelta(seconds=110), spec, status=p.status)
    assert "InvalidObjects" not in [e.reason for e in again.events]
    # Allowed again: the condition says so.
    fixed = plan_with(POLICY, T0 + timedelta(seconds=120), spec, status=again.status)
    valid = find(fixed.status.conditions, "Valid")
    assert valid is not None and valid.status == "True"


def test_an_allowed_action_raises_no_validity_condition() -> None:
    p = plan_with(POLICY, T0 + timedelta(seconds=30), {"costCap": 100})
    assert find(p.status.conditions, "Valid") is None


def test_an_unreadable_pod_makes_the_budget_invalid_but_counted() -> None:
    broken = pod().model_copy(update={"problems": ("container t: nvidia.com/gpu='lots' bad",)})
    p = plan_with(POLICY, T0 + timedelta(seconds=30), {"costCap": 1000}, pods=[broken])
    valid = find(p.status.conditions, "Valid")
    assert valid is not None and valid.status == "False"
    assert "pod train-0: container t" in valid.message
    assert p.status.spent > 0


# ---------------------------------------------------------------- bounded grace


def long_grace_pod(
    name: str, grace: int, deletion_grace: int | None = None, deleting: bool = False
) -> PodFacts:
    return pod().model_copy(
        update={
            "uid": name,
            "name": name,
            "termination_grace_seconds": grace,
            "deleting": deleting,
            "deletion_grace_seconds": deletion_grace,
        }
    )


def test_a_huge_grace_period_is_bounded_by_the_policy_when_planning_the_stop() -> None:
    assert POLICY.max_grace_period_seconds == 300
    p = plan_with(
        POLICY,
        T0 + timedelta(seconds=100),
        {"costCap": 1000},
        pods=[long_grace_pod("train-0", grace=86_400)],
    )
    # $900 left at $1/s, stopped 300 s (the bound) ahead, not a day ahead (now).
    assert p.decision.desired == Desired.RUN
    assert p.decision.record.stop_at == T0 + timedelta(seconds=100 + 900 - 300)
    assert p.pod_deletions == []


def test_a_stopped_runs_pods_over_the_bound_are_deleted_with_the_bound() -> None:
    pods = [
        long_grace_pod("long", grace=3600),
        long_grace_pod("short", grace=30),
        long_grace_pod("at-bound", grace=300),
        long_grace_pod("deleting-bounded", grace=3600, deletion_grace=300, deleting=True),
        long_grace_pod("deleting-long", grace=3600, deletion_grace=3600, deleting=True),
    ]
    p = plan_with(POLICY, T0 + timedelta(seconds=100), {"costCap": 100}, pods=pods)
    assert p.decision.desired == Desired.HOLD
    assert p.pod_deletions == [
        PodDeletion(namespace="ml-team", name="long", grace_seconds=300),
        PodDeletion(namespace="ml-team", name="deleting-long", grace_seconds=300),
    ]
    killed = plan_with(
        POLICY,
        T0 + timedelta(seconds=100),
        {"costCap": 100, "enforcement": {"action": "Kill"}},
        pods=pods,
    )
    assert killed.decision.desired == Desired.KILL
    assert [d.name for d in killed.pod_deletions] == ["long", "deleting-long"]


def test_no_pod_is_deleted_while_the_run_may_go_on() -> None:
    pods = [long_grace_pod("long", grace=3600)]
    p = plan_with(POLICY, T0 + timedelta(seconds=10), {"costCap": 5_000}, pods=pods)
    assert p.decision.desired == Desired.RUN
    assert p.pod_deletions == []


def test_the_bound_comes_from_the_policy() -> None:
    tight = POLICY.model_copy(update={"max_grace_period_seconds": 10})
    pods = [long_grace_pod("long", grace=30)]
    p = plan_with(tight, T0 + timedelta(seconds=100), {"costCap": 100}, pods=pods)
    assert p.pod_deletions == [PodDeletion(namespace="ml-team", name="long", grace_seconds=10)]
    running = plan_with(tight, T0 + timedelta(seconds=10), {"costCap": 1000}, pods=pods)
    assert running.decision.record.stop_at == T0 + timedelta(seconds=10 + 990 - 10)
