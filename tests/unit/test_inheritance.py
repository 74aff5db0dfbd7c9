"""A budget recreated under the same name carries on the old one's spend and stop."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu_budget import SPEND_RECORD_ANNOTATION
from gpu_budget.accounting import AccountingInput
from gpu_budget.inheritance import (
    MAX_INHERITED,
    SpendRecord,
    inherit,
    parse_record,
    record_for,
    supersedes,
)
from gpu_budget.ledger import totals
from gpu_budget.models import (
    BudgetPolicySpec,
    EnforcementStatus,
    InstanceTypePrice,
    Ledger,
    LedgerTotals,
    Phase,
    PricingOverrides,
    TrainingBudgetSpec,
    TrainingBudgetStatus,
)
from gpu_budget.node_pricing import NodeFacts
from gpu_budget.plan import Plan, plan_pass
from gpu_budget.pods import PodFacts
from gpu_budget.reasons import Reason
from gpu_budget.utilization import UtilizationSnapshot
from gpu_budget.workloads import WorkloadFacts, WorkloadState

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
UID = "new-uid"


def record(
    budget_uid: str = "old-uid",
    spent: float = 50.0,
    phase: Phase = Phase.RUNNING,
    reason: str | None = None,
    limit_at_stop: float | None = None,
    at: datetime = T0,
) -> str:
    return SpendRecord(
        budget_uid=budget_uid,
        spent=spent,
        phase=phase,
        reason=reason,
        limit_at_stop=limit_at_stop,
        at=at,
    ).to_annotation()


def workload(name: str = "train", spend_record: str | None = None) -> WorkloadFacts:
    return WorkloadFacts(
        kind="Job",
        namespace="ml-team",
        name=name,
        uid=f"{name}-uid",
        budget="run",
        state=WorkloadState.SUSPENDED,
        suspended=True,
        held=True,
        killed=False,
        requested_gpus=8,
        spend_record=spend_record,
    )


# ------------------------------------------------------------------- the record


def test_a_record_round_trips_through_its_annotation() -> None:
    raw = record(spent=12.5, phase=Phase.SUSPENDED, reason="CapReached", limit_at_stop=100)
    assert json.loads(raw) == {
        "budgetUid": "old-uid",
        "spent": 12.5,
        "phase": "Suspended",
        "reason": "CapReached",
        "limitAtStop": 100.0,
        "at": "2026-11-01T12:00:00Z",
    }
    parsed = parse_record(raw)
    assert parsed.budget_uid == "old-uid" and parsed.spent == 12.5
    assert parsed.to_annotation() == raw


def test_record_for_takes_spend_and_stop_from_the_status() -> None:
    status = TrainingBudgetStatus(
        phase=Phase.SUSPENDED,
        spent=75.0,
        ledger=Ledger(closed=LedgerTotals(spent=75.0)),
        enforcement=EnforcementStatus(reason="CapReached", limit_at_stop=100.0),
    )
    made = record_for(status, "b-uid", T0)
    assert (made.budget_uid, made.spent, made.phase, made.reason, made.limit_at_stop) == (
        "b-uid",
        75.0,
        Phase.SUSPENDED,
        "CapReached",
        100.0,
    )
    assert parse_record(made.to_annotation()) == made


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[]",
        "{}",
        json.dumps({"budgetUid": "", "spent": 1, "phase": "Running", "at": "2026-11-01T12:00:00Z"}),
        json.dumps(
            {"budgetUid": "u", "spent": -1, "phase": "Running", "at": "2026-11-01T12:00:00Z"}
        ),
        json.dumps({"budgetUid": "u", "spent": 1, "phase": "Broke", "at": "2026-11-01T12:00:00Z"}),
        json.dumps(
            {"budgetUid": "u", "spent": 1, "phase": "Running", "at": "2026-11-01T12:00:00Z", "x": 1}
        ),
    ],
)
def test_a_malformed_record_is_refused_with_a_value_error(raw: str) -> None:
    with pytest.raises(ValueError, match=SPEND_RECORD_ANNOTATION):
        parse_record(raw)


# ------------------------------------------------------------------ inheriting


def ledger_spent(status: TrainingBudgetStatus) -> float:
    """What the ledger holds; accounting turns it into ``status.spent`` in the same pass."""
    return totals(status.ledger).spent


def test_no_records_change_nothing() -> None:
    status = TrainingBudgetStatus()
    result = inherit(status, [workload(), workload("eval")], UID)
    assert result.status == status
    assert result.inherited == [] and result.bad == []


def test_spend_is_folded_once_per_predecessor_even_from_several_workloads() -> None:
    workloads = [
        workload("a", record("old-uid", spent=40.0)),
        workload("b", record("old-uid", spent=50.0, at=T0 + timedelta(minutes=1))),
        workload("c", record("older-uid", spent=7.0)),
    ]
    result = inherit(TrainingBudgetStatus(), workloads, UID)
    # The newest (highest) record of each predecessor, each once.
    assert ledger_spent(result.status) == pytest.approx(57.0)
    assert sorted(result.status.ledger.inherited_from) == ["old-uid", "older-uid"]
    assert sorted(r.budget_uid for r in result.inherited) == ["old-uid", "older-uid"]
    # The next pass finds the same records again and folds nothing more.
    again = inherit(result.status, workloads, UID)
    assert ledger_spent(again.status) == pytest.approx(57.0)
    assert again.inherited == []


def test_inherited_spend_adds_to_what_the_budget_spent_itself() -> None:
    own = TrainingBudgetStatus(ledger=Ledger(closed=LedgerTotals(spent=10.0, pods=1)))
    result = inherit(own, [workload(spend_record=record(spent=50.0))], UID)
    assert ledger_spent(result.status) == pytest.approx(60.0)
    assert result.status.ledger.closed.pods == 1


def test_the_budgets_own_records_are_ignored() -> None:
    result = inherit(
        TrainingBudgetStatus(),
        [workload(spend_record=record(UID, spent=90.0, phase=Phase.KILLED, reason="CapReached"))],
        UID,
    )
    assert result.status == TrainingBudgetStatus()
    assert result.inherited == []


def test_a_malformed_record_is_reported_and_the_others_still_count() -> None:
    result = inherit(
        TrainingBudgetStatus(),
        [workload("a", "{broken"), workload("b", record(spent=5.0))],
        UID,
    )
    assert [bad.workload for bad in result.bad] == ["Job/a"]
    assert SPEND_RECORD_ANNOTATION in result.bad[0].error
    assert ledger_spent(result.status) == pytest.approx(5.0)


@pytest.mark.parametrize("reason", [Reason.CAP_REACHED, Reason.APPROVAL_EXHAUSTED])
def test_a_stop_at_a_limit_is_inherited(reason: Reason) -> None:
    stopped = record(spent=100.0, phase=Phase.SUSPENDED, reason=reason, limit_at_stop=100.0, at=T0)
    result = inherit(TrainingBudgetStatus(), [workload(spend_record=stopped)], UID)
    assert result.status.phase == Phase.SUSPENDED
    enforcement = result.status.enforcement
    assert (enforcement.reason, enforcement.limit_at_stop) == (reason, 100.0)
    assert (enforcement.stopped_at, enforcement.spent_at_stop) == (T0, 100.0)


def test_a_kill_is_inherited() -> None:
    killed = record(spent=100.0, phase=Phase.KILLED, reason="CapReached", limit_at_stop=100.0)
    result = inherit(TrainingBudgetStatus(), [workload(spend_record=killed)], UID)
    assert result.status.phase == Phase.KILLED
    assert result.status.enforcement.reason == "CapReached"


def test_a_kill_outlives_a_suspension_of_another_predecessor() -> None:
    workloads = [
        workload("a", record("u1", 10.0, Phase.KILLED, "CapReached", 10.0, T0)),
        workload("b", record("u2", 200.0, Phase.SUSPENDED, "CapReached", 200.0, T0)),
    ]
    assert inherit(TrainingBudgetStatus(), workloads, UID).status.phase == Phase.KILLED


def test_the_highest_stopped_limit_binds_among_predecessors() -> None:
    workloads = [
        workload("a", record("u1", 100.0, Phase.SUSPENDED, "CapReached", 100.0, T0)),
        workload("b", record("u2", 300.0, Phase.SUSPENDED, "ApprovalExhausted", 300.0, T0)),
    ]
    enforcement = inherit(TrainingBudgetStatus(), workloads, UID).status.enforcement
    assert (enforcement.reason, enforcement.limit_at_stop) == ("ApprovalExhausted", 300.0)


@pytest.mark.parametrize("reason", [Reason.IDLE_GPUS, Reason.BUDGET_DELETED])
def test_idle_and_deletion_holds_are_not_inherited_but_their_spend_is(reason: Reason) -> None:
    held = record(spent=40.0, phase=Phase.SUSPENDED, reason=reason, limit_at_stop=100.0)
    result = inherit(TrainingBudgetStatus(), [workload(spend_record=held)], UID)
    assert result.status.phase == Phase.PENDING
    assert result.status.enforcement == EnforcementStatus()
    assert ledger_spent(result.status) == pytest.approx(40.0)


def test_a_budget_already_stopped_keeps_its_own_stop() -> None:
    own = TrainingBudgetStatus(
        phase=Phase.SUSPENDED,
        enforcement=EnforcementStatus(reason="IdleGPUs", limit_at_stop=50.0),
    )
    killed = record(spent=10.0, phase=Phase.KILLED, reason="CapReached")
    result = inherit(own, [workload(spend_record=killed)], UID)
    assert result.status.phase == Phase.SUSPENDED
    assert result.status.enforcement.reason == "IdleGPUs"
    assert ledger_spent(result.status) == pytest.approx(10.0)


def test_the_list_of_predecessors_is_bounded_but_their_spend_is_not() -> None:
    workloads = [
        workload(f"w{i}", record(f"u{i}", 1.0, at=T0 + timedelta(seconds=i)))
        for i in range(MAX_INHERITED + 5)
    ]
    result = inherit(TrainingBudgetStatus(), workloads, UID)
    assert len(result.status.ledger.inherited_from) == MAX_INHERITED
    assert result.status.ledger.inherited_from[-1] == f"u{MAX_INHERITED + 4}"
    assert ledger_spent(result.status) == pytest.approx(MAX_INHERITED + 5)
    # The status still validates (the CRD bounds the list too).
    TrainingBudgetStatus.model_validate(result.status.model_dump(mode="json", by_alias=True))


# ------------------------------------------------------------------ superseding


def test_supersedes() -> None:
    mine = parse_record(record("b", spent=50.0))
    assert supersedes(mine, None)
    assert supersedes(mine, "{unreadable")
    assert supersedes(mine, record("b", spent=50.0))  # the same spend: rewriting is harmless
    assert supersedes(mine, record("b", spent=40.0))  # newer spend of the same budget
    assert not supersedes(mine, record("b", spent=60.0))  # an older record never wins
    # A predecessor's record was inherited by this budget, so this one's replaces it.
    assert supersedes(mine, record("a", spent=500.0))


# ------------------------------------------------------------ whole passes


NODE_PRICE = 3600.0  # $1 per second for the 8-GPU node
POLICY = BudgetPolicySpec(
    pricing=PricingOverrides(
        instance_types=[InstanceTypePrice(instance_type="p5.48xlarge", hourly_price=NODE_PRICE)]
    )
)
NODES = {
    "n0": NodeFacts(
        name="n0", labels={"node.kubernetes.io/instance-type": "p5.48xlarge"}, gpu_capacity=8
    )
}


def job(spend_record: str | None = None, name: str = "train") -> WorkloadFacts:
    return WorkloadFacts(
        kind="Job",
        namespace="ml-team",
        name=name,
        uid=f"{name}-uid",
        budget="run",
        state=WorkloadState.RUNNING,
        suspended=False,
        held=False,
        killed=False,
        requested_gpus=8,
        spend_record=spend_record,
    )


def gpu_pod(uid: str, owner: str, start: datetime, ended: datetime | None = None) -> PodFacts:
    return PodFacts(
        uid=uid,
        name=uid,
        namespace="ml-team",
        labels={},
        node="n0",
        resources={"nvidia.com/gpu": 8},
        running_since=start,
        ended_at=ended,
        termination_grace_seconds=0,
        controller_kind="Job",
        controller_uid=f"{owner}-uid",
    )


def one_pass(
    uid: str,
    now: datetime,
    cap: float,
    status: TrainingBudgetStatus,
    workloads: list[WorkloadFacts],
    pods: list[PodFacts],
    action: str = "Suspend",
) -> Plan:
    return plan_pass(
        AccountingInput(
            namespace="ml-team",
            name="run",
            uid=uid,
            generation=1,
            spec=TrainingBudgetSpec.model_validate(
                {"costCap": cap, "enforcement": {"action": action}}
            ),
            status=status,
            policy=POLICY,
            pods=pods,
            workloads=workloads,
            owners={},
            nodes=NODES,
            utilization=UtilizationSnapshot(),
            deleted_at={},
            now=now,
        ),
        {},
    )


def written_records(plan: Plan, workloads: list[WorkloadFacts]) -> list[WorkloadFacts]:
    """The workloads as they are once the plan's operations wrote their spend records."""
    by_name = {action.workload.name: action.operation for action in plan.workload_actions}
    out = []
    for w in workloads:
        operation = by_name.get(w.name)
        annotations: dict[str, Any] = (
            ((operation.patch or {}).get("metadata") or {}).get("annotations") or {}
            if operation is not None
            else {}
        )
        if SPEND_RECORD_ANNOTATION in annotations:
            w = w.model_copy(update={"spend_record": annotations[SPEND_RECORD_ANNOTATION]})
        out.append(w)
    return out


def test_a_recreated_budget_stays_stopped_until_its_cap_is_raised() -> None:
    workloads = [job()]
    pods = [gpu_pod("p0", "train", T0)]
    stopped = one_pass(
        "old-uid", T0 + timedelta(seconds=100), 100, TrainingBudgetStatus(), workloads, pods
    )
    assert stopped.status.phase == Phase.SUSPENDED
    workloads = written_records(stopped, workloads)
    assert workloads[0].spend_record is not None
    # Deleted, and recreated under the same name with the same cap: still stopped.
    pods = [gpu_pod("p0", "train", T0, ended=T0 + timedelta(seconds=100))]
    again = one_pass(
        "new-uid", T0 + timedelta(seconds=200), 100, TrainingBudgetStatus(), workloads, pods
    )
    assert again.status.phase == Phase.SUSPENDED
    assert again.status.spent >= stopped.status.spent
    assert not any(a.reason == "Resumed" for a in again.workload_actions)
    assert "Inherited" in [e.reason for e in again.events]
    # Only a higher cap lets it run again.
    raised = one_pass("new-uid", T0 + timedelta(seconds=210), 1_000, again.status, workloads, pods)
    assert raised.status.phase != Phase.SUSPENDED


@settings(max_examples=60, deadline=None)
@given(
    lifetimes=st.lists(
        st.tuples(
            st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=4),
            st.sampled_from([50.0, 100.0, 500.0, 5_000.0]),
            st.sampled_from(["Suspend", "Kill", "Alert"]),
        ),
        min_size=2,
        max_size=4,
    ),
    keep_pods=st.booleans(),
)
def test_recreating_a_budget_never_lowers_its_spend(
    lifetimes: list[tuple[list[int], float, str]], keep_pods: bool
) -> None:
    """Whatever a budget spent, a budget recreated under its name starts at least there."""
    workloads = [job(name="a"), job(name="b")]
    now = T0
    previous_spent = 0.0
    for generation, (steps, cap, action) in enumerate(lifetimes):
        uid = f"uid-{generation}"
        start = now
        pods = [gpu_pod(f"p{generation}", "a", start)]
        status = TrainingBudgetStatus()  # recreated: a fresh status
        for index, step in enumerate(steps):
            now += timedelta(seconds=step)
            plan = one_pass(uid, now, cap, status, workloads, pods, action)
            if index == 0:
                assert plan.status.spent >= previous_spent - 1e-6
            status = plan.status
            workloads = written_records(plan, workloads)
        # Deleted: its last record goes on every workload unless a newer one is there.
        last = record_for(status, uid, now)
        workloads = [
            w.model_copy(update={"spend_record": last.to_annotation()})
            if supersedes(last, w.spend_record)
            else w
            for w in workloads
        ]
        previous_spent = status.spent
        pods = [gpu_pod(f"p{generation}", "a", start, ended=now)] if keep_pods else []
    # And one more budget after the last deletion.
    final = one_pass(
        "uid-last", now + timedelta(seconds=1), 1_000_000, TrainingBudgetStatus(), workloads, []
    )
    assert final.status.spent >= previous_spent - 1e-6
