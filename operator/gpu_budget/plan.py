"""One pass over a budget, planned: account, decide approval and enforcement, say what to change.

The loop gathers the facts, calls :func:`plan_pass` and carries the plan out:
it writes the status, posts the Events, sends the notifications, and sends
each workload operation. Nothing here touches the cluster.

The pass descends once: :func:`gpu_budget.accounting.account` charges the
ledger; :func:`gpu_budget.approval.decide` and
:func:`gpu_budget.enforcement.decide` decide; then each concern (validity,
approval, thresholds, idle GPUs, the cap) says what it found, and
:func:`gpu_budget.findings.fold` applies it all in one place. What to do to
workloads and pods comes last, from the decision alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gpu_budget import (
    APPROVAL_REASON_ANNOTATION,
    APPROVED_AT_ANNOTATION,
    APPROVED_BY_ANNOTATION,
    approval,
    notify,
)
from gpu_budget.accounting import AccountingInput, AccountingOutcome, account
from gpu_budget.approval import ApprovalDecision
from gpu_budget.conditions import find
from gpu_budget.enforcement import Desired, EnforcementDecision, Measured, Terms, decide
from gpu_budget.findings import BudgetEvent, ConditionChange, Findings, fold
from gpu_budget.formats import optional_time, rfc3339
from gpu_budget.inheritance import record_for
from gpu_budget.models import (
    ApprovalStatus,
    Condition,
    EnforcementAction,
    IdleRule,
    InternalModel,
    Phase,
    TrainingBudgetStatus,
)
from gpu_budget.periods import PeriodTerms
from gpu_budget.pods import STOP_AT_ANNOTATION, PodFacts
from gpu_budget.reasons import ConditionType, Reason, threshold_reason
from gpu_budget.workloads import ADAPTERS_BY_KIND, HELD_AT_ADMISSION, Operation, WorkloadFacts


class WorkloadAction(InternalModel):
    workload: WorkloadFacts
    operation: Operation
    reason: Reason
    message: str


class PodAnnotation(InternalModel):
    namespace: str
    name: str
    annotations: dict[str, str]


class PodDeletion(InternalModel):
    """Delete a stopped run's pod whose grace period exceeds the policy's bound, with the bound."""

    namespace: str
    name: str
    grace_seconds: int


class Plan(InternalModel):
    status: TrainingBudgetStatus
    events: list[BudgetEvent]
    notifications: list[dict[str, Any]]
    """Payloads for the policy's notification webhook, built with the plan."""
    workload_actions: list[WorkloadAction]
    pod_annotations: list[PodAnnotation]
    pod_deletions: list[PodDeletion]
    decision: EnforcementDecision
    notify_url: str | None
    """Where the policy wants notifications sent; None for none."""


def effective_action(
    chosen: EnforcementAction, allowed: list[EnforcementAction]
) -> EnforcementAction:
    """The action at the cap: the budget's, unless the policy no longer allows it.

    The API server refuses disallowed actions; a budget written before the policy
    changed falls back to Suspend, the action that keeps the cap hard.
    """
    return chosen if chosen in allowed else EnforcementAction.SUSPEND


def plan_pass(facts: AccountingInput, annotations: Mapping[str, str]) -> Plan:
    outcome = account(facts)
    # Accounting changes the ledger and what it measures, never the phase or
    # the enforcement record: those are still the previous pass's (or, for a
    # recreated budget, its predecessor's).
    status = outcome.status
    spec, policy, now = facts.spec, facts.policy, facts.now
    terms = _terms(facts)
    approval_decision = approval.decide(
        spec.cost_cap,
        None if status.estimate is None else status.estimate.total,
        policy.approval_ceiling,
        annotations,
        facts.period.shortfall,
    )
    running_pods = [pod for pod in outcome.pods if pod.holds_gpus]
    decision = decide(
        Phase(status.phase),
        status.enforcement,
        terms,
        approval_decision,
        _measured(status, outcome, running_pods, policy.max_grace_period_seconds),
        now,
        facts.generation,
    )
    conditions, events = fold(
        status.conditions,
        (
            *outcome.findings,
            _validity_findings(status.conditions, _problems(outcome, facts, terms)),
            _approval_findings(status, approval_decision, annotations),
            _threshold_findings(decision, status.spent, spec.cost_cap),
            _idle_findings(decision, spec.enforcement.idle),
            _cap_findings(status, decision),
            _period_findings(status, facts.period, decision),
        ),
        now,
        facts.generation,
    )
    final = status.model_copy(
        update={
            "phase": decision.phase,
            "approval": _approval_record(approval_decision, annotations),
            "enforcement": decision.record,
            "conditions": conditions,
        }
    )
    return Plan(
        status=final,
        events=events,
        notifications=[
            notify.payload(
                facts.namespace, facts.name, event.reason, event.message, final.spent, spec.cost_cap
            )
            for event in events
            if event.notify
        ],
        workload_actions=_workload_actions(facts, final, decision),
        pod_annotations=_checkpoint_annotations(running_pods, decision),
        pod_deletions=_bounded_grace(running_pods, decision, policy.max_grace_period_seconds),
        decision=decision,
        notify_url=policy.notification_webhook_url,
    )


def _terms(facts: AccountingInput) -> Terms:
    enforcement, policy = facts.spec.enforcement, facts.policy
    return Terms(
        cost_cap=facts.spec.cost_cap,
        action=effective_action(EnforcementAction(enforcement.action), policy.allowed_actions),
        warn_at=tuple(
            enforcement.warn_at if enforcement.warn_at is not None else policy.default_warn_at
        ),
        checkpoint_lead_seconds=enforcement.checkpoint_lead_seconds,
        idle=enforcement.idle,
        period_limit=facts.period.spend_limit,
        period_binding=facts.period.binding,
    )


def _measured(
    status: TrainingBudgetStatus,
    outcome: AccountingOutcome,
    running_pods: Sequence[PodFacts],
    max_grace: int,
) -> Measured:
    longest_grace = max((pod.termination_grace_seconds for pod in running_pods), default=0)
    return Measured(
        spent=status.spent,
        burn_rate_per_hour=status.burn_rate_per_hour,
        stop_grace_seconds=min(max_grace, longest_grace),
        utilization=outcome.utilization,
    )


def _problems(outcome: AccountingOutcome, facts: AccountingInput, terms: Terms) -> list[str]:
    """What the budget's objects say that cannot be read or cannot be honoured."""
    problems = list(outcome.problems)
    if terms.action != facts.spec.enforcement.action:
        problems.append(
            f"the BudgetPolicy allows only {', '.join(facts.policy.allowed_actions)} at the "
            f"cap, so this budget's {facts.spec.enforcement.action} is enforced as Suspend; "
            "choose an allowed action"
        )
    return problems


def _validity_findings(conditions: list[Condition], problems: Sequence[str]) -> Findings:
    """``Valid`` says what of the budget's objects could not be read, and that it was counted."""
    seen = find(conditions, ConditionType.VALID)
    if not problems:
        if seen is None:
            return Findings()
        return Findings(
            conditions=(
                ConditionChange(
                    type=ConditionType.VALID,
                    status="True",
                    reason=Reason.ALL_READABLE,
                    message="Every object reads well.",
                ),
            )
        )
    message = (
        "; ".join(problems[:10]) + ". Counted conservatively (an unreadable GPU quantity "
        "counts as one GPU); fix the objects."
    )
    return Findings(
        conditions=(
            ConditionChange(
                type=ConditionType.VALID,
                status="False",
                reason=Reason.UNREADABLE_OBJECTS,
                message=message,
            ),
        ),
        events=(BudgetEvent(type="Warning", reason=Reason.INVALID_OBJECTS, message=message),)
        if seen is None or seen.message != message
        else (),
    )


def _approval_record(
    decision: ApprovalDecision, annotations: Mapping[str, str]
) -> ApprovalStatus | None:
    """Finance's approval as status records it; None for a budget that never needed one."""
    if not decision.required and decision.approved_amount is None:
        return None
    return ApprovalStatus(
        required=decision.required,
        approved_amount=decision.approved_amount,
        approved_cap=decision.approved_cap,
        approved_by=annotations.get(APPROVED_BY_ANNOTATION),
        # The record is the API server's to check (approval guard); a value it
        # let through that still does not parse is shown as unknown, not fatal.
        approved_at=optional_time(annotations.get(APPROVED_AT_ANNOTATION)),
        reason=_approval_reason(annotations),
        spend_limit=decision.spend_limit,
        hard_limit=decision.hard_limit,
    )


def _approval_reason(annotations: Mapping[str, str]) -> str | None:
    """Finance's reason, as long as status keeps it (an Event message has room for it)."""
    reason = annotations.get(APPROVAL_REASON_ANNOTATION, "").strip()
    return reason[:1024] or None


def _approval_findings(
    previous: TrainingBudgetStatus, decision: ApprovalDecision, annotations: Mapping[str, str]
) -> Findings:
    """Approved: the condition while finance is needed; Events when finance approves or is
    asked."""
    events: list[BudgetEvent] = []
    previous_amount = None if previous.approval is None else previous.approval.approved_amount
    if decision.approved_amount is not None and decision.approved_amount != previous_amount:
        approved_by = annotations.get(APPROVED_BY_ANNOTATION)
        who = f" by {approved_by}" if approved_by else ""
        why = _approval_reason(annotations)
        because = f": {why}" if why else "."
        events.append(
            BudgetEvent(
                type="Normal",
                reason=Reason.APPROVED,
                message=f"Finance approved ${decision.approved_amount:,.2f}{who}{because}",
                notify=True,
            )
        )
    seen = find(previous.conditions, ConditionType.APPROVED)
    if not decision.required and seen is None:
        return Findings(events=tuple(events))
    awaiting = decision.required and decision.awaiting
    if awaiting and (seen is None or seen.reason != decision.reason):
        events.append(
            BudgetEvent(
                type="Normal", reason=decision.reason, message=decision.message, notify=True
            )
        )
    return Findings(
        conditions=(
            ConditionChange(
                type=ConditionType.APPROVED,
                status="False" if awaiting else "True",
                reason=decision.reason,
                message=decision.message,
            ),
        ),
        events=tuple(events),
    )


def _threshold_findings(decision: EnforcementDecision, spent: float, cost_cap: float) -> Findings:
    """A warning for each threshold crossed; ThresholdReached names the highest so far."""
    events = tuple(
        BudgetEvent(
            type="Warning",
            reason=Reason.THRESHOLD_REACHED,
            message=f"Spent ${spent:,.2f}, {fraction:.0%} of the ${cost_cap:,.2f} cap.",
            notify=True,
        )
        for fraction in decision.warnings
    )
    highest = max((f for f in decision.record.warned if f < 1.0), default=None)
    if highest is None:
        return Findings(events=events)
    return Findings(
        conditions=(
            ConditionChange(
                type=ConditionType.THRESHOLD_REACHED,
                status="True",
                reason=threshold_reason(highest),
                message=f"Spend passed {highest:.0%} of the cap.",
            ),
        ),
        events=events,
    )


def _idle_findings(decision: EnforcementDecision, rule: IdleRule | None) -> Findings:
    """With an idle rule: GPUsIdle, and the Alert-only rule's warning."""
    if rule is None:
        return Findings()
    since = decision.record.idle_since
    events = (
        (
            BudgetEvent(
                type="Warning",
                reason=Reason.GPUS_IDLE,
                message=f"GPUs below {rule.below_utilization:.0%} utilisation for "
                f"{rule.for_minutes:g} minutes.",
                notify=True,
            ),
        )
        if decision.idle_alert
        else ()
    )
    return Findings(
        conditions=(
            ConditionChange(
                type=ConditionType.IDLE,
                status="True" if since is not None else "False",
                reason=Reason.BELOW_THRESHOLD if since is not None else Reason.BUSY,
                message=f"Idle since {rfc3339(since)}."
                if since is not None
                else "GPUs are busy or not running.",
            ),
        ),
        events=events,
    )


def _cap_findings(previous: TrainingBudgetStatus, decision: EnforcementDecision) -> Findings:
    """CapReached while the run is stopped at (or alert-only past) its limit; the stop's
    Event, and the resume's."""
    events: list[BudgetEvent] = []
    if decision.acted:
        events.append(
            BudgetEvent(
                type="Warning", reason=decision.reason, message=decision.message, notify=True
            )
        )
    if previous.phase == Phase.SUSPENDED and decision.desired == Desired.RUN:
        events.append(
            BudgetEvent(
                type="Normal", reason=Reason.RESUMED, message="Budget has room again; resuming."
            )
        )
    change: ConditionChange | None = None
    if decision.stopped or decision.reason == Reason.CAP_EXCEEDED:
        change = ConditionChange(
            type=ConditionType.CAP_REACHED,
            status="True",
            reason=decision.reason,
            message=decision.message,
        )
    elif find(previous.conditions, ConditionType.CAP_REACHED) is not None:
        change = ConditionChange(
            type=ConditionType.CAP_REACHED,
            status="False",
            reason=Reason.WITHIN_BUDGET,
            message=decision.message,
        )
    return Findings(conditions=() if change is None else (change,), events=tuple(events))


def _period_findings(
    previous: TrainingBudgetStatus, period: PeriodTerms, decision: EnforcementDecision
) -> Findings:
    """PeriodLimit, for a budget a limit per period counts: where the limits stand."""
    if period.spend_limit is None:
        if find(previous.conditions, ConditionType.PERIOD_LIMIT) is None:
            return Findings()
        return Findings(
            conditions=(
                ConditionChange(
                    type=ConditionType.PERIOD_LIMIT,
                    status="True",
                    reason=Reason.WITHIN_PERIOD_LIMIT,
                    message="No limit per period counts this budget.",
                ),
            )
        )
    if decision.reason == Reason.PERIOD_LIMIT_REACHED:
        status, reason, message = "False", Reason.PERIOD_LIMIT_REACHED, decision.message
    elif period.shortfall is not None:
        status, reason = "False", Reason.DOES_NOT_FIT_PERIOD
        message = f"Needs finance: {period.shortfall}."
    else:
        status, reason = "True", Reason.WITHIN_PERIOD_LIMIT
        message = f"{period.summary}."
    return Findings(
        conditions=(
            ConditionChange(
                type=ConditionType.PERIOD_LIMIT, status=status, reason=reason, message=message
            ),
        )
    )


def _workload_actions(
    facts: AccountingInput, final: TrainingBudgetStatus, decision: EnforcementDecision
) -> list[WorkloadAction]:
    """Make each workload what the decision says; stops carry the budget's spend record."""
    record = record_for(final, facts.uid, facts.now).to_annotation()
    actions: list[WorkloadAction] = []
    for workload in facts.workloads:
        adapter = ADAPTERS_BY_KIND[workload.kind]
        op: Operation | None
        if decision.desired == Desired.RUN:
            op = adapter.resume(workload, facts.uid)
            if workload.held_reason == HELD_AT_ADMISSION:
                reason, message = Reason.ADMITTED, f"Budget {facts.name} allows it to start."
            else:
                reason, message = Reason.RESUMED, f"Budget {facts.name} allows it to run again."
        elif decision.desired == Desired.HOLD:
            op = adapter.suspend(workload, decision.reason, record)
            reason, message = Reason.SUSPENDED, f"Budget {facts.name}: {decision.message}"
        else:
            op = adapter.kill(workload, f"{decision.reason}: {decision.message}", record)
            reason, message = Reason.KILLED, f"Budget {facts.name}: {decision.message}"
        if op is not None:
            actions.append(
                WorkloadAction(workload=workload, operation=op, reason=reason, message=message)
            )
    return actions


def _checkpoint_annotations(
    running_pods: Sequence[PodFacts], decision: EnforcementDecision
) -> list[PodAnnotation]:
    """Within the checkpoint lead, each running pod learns when its run stops."""
    stop_at = decision.record.stop_at
    if not decision.checkpoint or stop_at is None:
        return []
    when = rfc3339(stop_at)
    return [
        PodAnnotation(
            namespace=pod.namespace, name=pod.name, annotations={STOP_AT_ANNOTATION: when}
        )
        for pod in running_pods
        if pod.stop_at != when
    ]


def _bounded_grace(
    running_pods: Sequence[PodFacts], decision: EnforcementDecision, max_grace: int
) -> list[PodDeletion]:
    """A stopped run's pods terminate within the policy's bound on grace."""
    if decision.desired == Desired.RUN:
        return []
    return [
        PodDeletion(namespace=pod.namespace, name=pod.name, grace_seconds=max_grace)
        for pod in running_pods
        if pod.termination_grace_seconds > max_grace
        and (pod.deletion_grace_seconds is None or pod.deletion_grace_seconds > max_grace)
    ]
