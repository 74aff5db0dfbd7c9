"""One pass over a budget, planned: account, decide approval and enforcement, say what to change.

The kopf shell gathers the facts, calls :func:`plan_pass` and carries the
plan out: it writes the status, posts the Events, sends the notifications,
and sends each workload operation. Nothing here touches the cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from gpu_budget import APPROVED_AT_ANNOTATION, APPROVED_BY_ANNOTATION, approval, notify
from gpu_budget import conditions as cond
from gpu_budget.accounting import AccountingInput, BudgetEvent, account
from gpu_budget.enforcement import Desired, EnforcementDecision, EnforcementInput, decide
from gpu_budget.formats import optional_time, rfc3339
from gpu_budget.inheritance import record_for
from gpu_budget.models import (
    ApprovalStatus,
    Condition,
    EnforcementAction,
    EnforcementStatus,
    Phase,
    TrainingBudgetStatus,
)
from gpu_budget.pods import STOP_AT_ANNOTATION, PodFacts
from gpu_budget.workloads import ADAPTERS_BY_KIND, Operation, WorkloadFacts


class WorkloadAction(BaseModel):
    model_config = ConfigDict(frozen=True)

    workload: WorkloadFacts
    operation: Operation
    reason: str
    message: str


class PodAnnotation(BaseModel):
    model_config = ConfigDict(frozen=True)

    namespace: str
    name: str
    annotations: dict[str, str]


class PodDeletion(BaseModel):
    """Delete a stopped run's pod whose grace period exceeds the policy's bound, with the bound."""

    model_config = ConfigDict(frozen=True)

    namespace: str
    name: str
    grace_seconds: int


class Notification(BaseModel):
    model_config = ConfigDict(frozen=True)

    reason: str
    message: str


class Plan(BaseModel):
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


def _validity(
    conditions: list[Condition], problems: Sequence[str], now: datetime, generation: int | None
) -> list[Condition]:
    """``Valid`` says what of the budget's objects could not be read, and that it was counted."""
    if problems:
        return cond.set_condition(
            conditions,
            cond.VALID,
            "False",
            "UnreadableObjects",
            "; ".join(problems[:10]) + ". Counted conservatively (an unreadable GPU quantity "
            "counts as one GPU); fix the objects.",
            now,
            generation,
        )
    if cond.find(conditions, cond.VALID) is None:
        return conditions
    return cond.set_condition(
        conditions, cond.VALID, "True", "AllReadable", "Every object reads well.", now, generation
    )


def _enforcement_record(
    previous: TrainingBudgetStatus,
    status: TrainingBudgetStatus,
    decision: EnforcementDecision,
    stopped: bool,
    now: datetime,
) -> EnforcementStatus:
    """What enforcement did and plans; when a run is stopped, when and at what spend."""
    if not stopped:
        stopped_at, spent_at_stop = None, None
    elif decision.acted:
        stopped_at, spent_at_stop = now, status.spent
    else:
        stopped_at, spent_at_stop = (
            previous.enforcement.stopped_at,
            previous.enforcement.spent_at_stop,
        )
    return EnforcementStatus(
        reason=None if decision.desired == Desired.RUN else decision.reason,
        warned=decision.warned,
        stop_at=decision.stop_at,
        stopped_at=stopped_at,
        spent_at_stop=spent_at_stop,
        stopped_at_generation=decision.stopped_at_generation,
        limit_at_stop=decision.limit_at_stop if stopped else None,
        idle_since=decision.idle_since,
        idle_alerted_for=decision.idle_alerted_for,
    )


def _current_utilization(pods: list[PodFacts], facts: AccountingInput) -> float | None:
    if not facts.utilization.available:
        return None
    weighted = [
        (
            pod.gpus(facts.policy.gpu_resources),
            facts.utilization.for_pod(pod.namespace, pod.name, pod.node),
        )
        for pod in pods
        if pod.holds_gpus
    ]
    known = [(gpus, value) for gpus, value in weighted if value is not None]
    total = sum(gpus for gpus, _ in known)
    if not known or total == 0:
        return None
    return sum(gpus * value for gpus, value in known) / total


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
    previous = outcome.status
    status = outcome.status
    events = list(outcome.events)
    notifications: list[Notification] = []
    now, spec, generation = facts.now, facts.spec, facts.generation
    action = effective_action(
        EnforcementAction(spec.enforcement.action), facts.policy.allowed_actions
    )
    max_grace = facts.policy.max_grace_period_seconds

    approval_decision = approval.decide(
        spec.cost_cap,
        None if status.estimate is None else status.estimate.total,
        facts.policy.approval_ceiling,
        annotations,
    )
    running_pods = [pod for pod in outcome.pods if pod.holds_gpus]
    warn_at = (
        spec.enforcement.warn_at
        if spec.enforcement.warn_at is not None
        else facts.policy.default_warn_at
    )
    decision = decide(
        EnforcementInput(
            now=now,
            generation=generation,
            cost_cap=spec.cost_cap,
            approval=approval_decision,
            action=action,
            warn_at=list(warn_at),
            checkpoint_lead_seconds=spec.enforcement.checkpoint_lead_seconds,
            idle=spec.enforcement.idle,
            spent=status.spent,
            burn_rate_per_hour=status.burn_rate_per_hour,
            stop_grace_seconds=min(
                max_grace,
                max((pod.termination_grace_seconds for pod in running_pods), default=0),
            ),
            current_utilization=_current_utilization(outcome.pods, facts),
            previous_phase=Phase(previous.phase),
            previous_reason=previous.enforcement.reason,
            stopped_at_generation=previous.enforcement.stopped_at_generation,
            limit_at_stop=previous.enforcement.limit_at_stop,
            warned=previous.enforcement.warned,
            idle_since=previous.enforcement.idle_since,
            idle_alerted_for=previous.enforcement.idle_alerted_for,
        )
    )

    problems = list(outcome.problems)
    if action != spec.enforcement.action:
        problems.append(
            f"the BudgetPolicy allows only {', '.join(facts.policy.allowed_actions)} at the cap, "
            f"so this budget's {spec.enforcement.action} is enforced as Suspend; choose an "
            "allowed action"
        )
    previous_valid = cond.find(status.conditions, cond.VALID)
    conditions = _validity(list(status.conditions), problems, now, generation)
    valid = cond.find(conditions, cond.VALID)
    if (
        valid is not None
        and valid.status == "False"
        and (previous_valid is None or previous_valid.message != valid.message)
    ):
        events.append(BudgetEvent(type="Warning", reason="InvalidObjects", message=valid.message))

    # --- approval
    approval_status: ApprovalStatus | None = None
    if approval_decision.required or approval_decision.approved_amount is not None:
        approved_by = annotations.get(APPROVED_BY_ANNOTATION)
        approval_status = ApprovalStatus(
            required=approval_decision.required,
            approved_amount=approval_decision.approved_amount,
            approved_cap=approval_decision.approved_cap,
            approved_by=approved_by,
            # The record is the API server's to check (approval guard); a value it
            # let through that still does not parse is shown as unknown, not fatal.
            approved_at=optional_time(annotations.get(APPROVED_AT_ANNOTATION)),
            spend_limit=approval_decision.spend_limit,
            hard_limit=approval_decision.hard_limit,
        )
        previous_amount = None if previous.approval is None else previous.approval.approved_amount
        if approval_decision.approved_amount is not None and (
            approval_decision.approved_amount != previous_amount
        ):
            who = f" by {approved_by}" if approved_by else ""
            message = f"Finance approved ${approval_decision.approved_amount:,.2f}{who}."
            events.append(BudgetEvent(type="Normal", reason="Approved", message=message))
            notifications.append(Notification(reason="Approved", message=message))
    if approval_decision.required:
        was_awaiting = cond.find(conditions, cond.APPROVED)
        conditions = cond.set_condition(
            conditions,
            cond.APPROVED,
            "False" if approval_decision.awaiting else "True",
            approval_decision.reason,
            approval_decision.message,
            now,
            generation,
        )
        if approval_decision.awaiting and (
            was_awaiting is None or was_awaiting.reason != approval_decision.reason
        ):
            events.append(
                BudgetEvent(
                    type="Normal",
                    reason=approval_decision.reason,
                    message=approval_decision.message,
                )
            )
            notifications.append(
                Notification(reason=approval_decision.reason, message=approval_decision.message)
            )
    elif cond.find(conditions, cond.APPROVED) is not None:
        conditions = cond.set_condition(
            conditions,
            cond.APPROVED,
            "True",
            approval_decision.reason,
            approval_decision.message,
            now,
            generation,
        )

    # --- thresholds
    for fraction in decision.warnings:
        message = f"Spent ${status.spent:,.2f}, {fraction:.0%} of the ${spec.cost_cap:,.2f} cap."
        events.append(BudgetEvent(type="Warning", reason="ThresholdReached", message=message))
        notifications.append(Notification(reason="ThresholdReached", message=message))
    highest = max((f for f in decision.warned if f < 1.0), default=None)
    if highest is not None:
        conditions = cond.set_condition(
            conditions,
            cond.THRESHOLD_REACHED,
            "True",
            f"Above{round(highest * 100)}Percent",
            f"Spend passed {highest:.0%} of the cap.",
            now,
            generation,
        )

    # --- idle GPUs
    if decision.idle_alert and spec.enforcement.idle is not None:
        message = (
            f"GPUs below {spec.enforcement.idle.below_utilization:.0%} utilisation for "
            f"{spec.enforcement.idle.for_minutes:g} minutes."
        )
        events.append(BudgetEvent(type="Warning", reason="GPUsIdle", message=message))
        notifications.append(Notification(reason="GPUsIdle", message=message))
    if spec.enforcement.idle is not None:
        conditions = cond.set_condition(
            conditions,
            cond.IDLE,
            "True" if decision.idle_since is not None else "False",
            "BelowThreshold" if decision.idle_since is not None else "Busy",
            f"Idle since {rfc3339(decision.idle_since)}."
            if decision.idle_since is not None
            else "GPUs are busy or not running.",
            now,
            generation,
        )

    # --- cap
    stopped = decision.desired in (Desired.HOLD, Desired.KILL) and decision.phase in (
        Phase.SUSPENDED,
        Phase.KILLED,
    )
    if decision.acted:
        kind = "Warning"
        events.append(BudgetEvent(type=kind, reason=decision.reason, message=decision.message))
        notifications.append(Notification(reason=decision.reason, message=decision.message))
    if stopped or decision.reason == "CapExceeded":
        conditions = cond.set_condition(
            conditions, cond.CAP_REACHED, "True", decision.reason, decision.message, now, generation
        )
    elif cond.find(conditions, cond.CAP_REACHED) is not None:
        conditions = cond.set_condition(
            conditions, cond.CAP_REACHED, "False", "WithinBudget", decision.message, now, generation
        )
    if previous.phase == Phase.SUSPENDED and decision.desired == Desired.RUN:
        events.append(
            BudgetEvent(type="Normal", reason="Resumed", message="Budget has room again; resuming.")
        )

    # --- workloads
    enforcement = _enforcement_record(previous, status, decision, stopped, now)
    final = status.model_copy(
        update={
            "phase": decision.phase,
            "approval": approval_status,
            "enforcement": enforcement,
            "conditions": conditions,
        }
    )
    record = record_for(final, facts.uid, now).to_annotation()
    actions: list[WorkloadAction] = []
    for workload in facts.workloads:
        adapter = ADAPTERS_BY_KIND[workload.kind]
        op: Operation | None
        if decision.desired == Desired.RUN:
            op = adapter.resume(workload, facts.uid)
            if workload.held_reason == "Admission":
                reason, message = "Admitted", f"Budget {facts.name} allows it to start."
            else:
                reason, message = "Resumed", f"Budget {facts.name} allows it to run again."
        elif decision.desired == Desired.HOLD:
            op = adapter.suspend(workload, decision.reason, record)
            reason, message = "Suspended", f"Budget {facts.name}: {decision.message}"
        else:
            op = adapter.kill(workload, f"{decision.reason}: {decision.message}", record)
            reason, message = "Killed", f"Budget {facts.name}: {decision.message}"
        if op is not None:
            actions.append(
                WorkloadAction(workload=workload, operation=op, reason=reason, message=message)
            )

    # --- checkpoint warning
    pod_annotations: list[PodAnnotation] = []
    if decision.checkpoint and decision.stop_at is not None:
        stop_at = rfc3339(decision.stop_at)
        for pod in running_pods:
            if pod.stop_at != stop_at:
                pod_annotations.append(
                    PodAnnotation(
                        namespace=pod.namespace,
                        name=pod.name,
                        annotations={STOP_AT_ANNOTATION: stop_at},
                    )
                )

    # --- bounded grace: a stopped run's pods terminate within the policy's bound
    pod_deletions: list[PodDeletion] = []
    if decision.desired != Desired.RUN:
        pod_deletions = [
            PodDeletion(namespace=pod.namespace, name=pod.name, grace_seconds=max_grace)
            for pod in running_pods
            if pod.termination_grace_seconds > max_grace
            and (pod.deletion_grace_seconds is None or pod.deletion_grace_seconds > max_grace)
        ]

    return Plan(
        status=final,
        events=events,
        notifications=[
            notify.payload(
                facts.namespace, facts.name, note.reason, note.message, final.spent, spec.cost_cap
            )
            for note in notifications
        ],
        workload_actions=actions,
        pod_annotations=pod_annotations,
        pod_deletions=pod_deletions,
        decision=decision,
        notify_url=facts.policy.notification_webhook_url,
    )
