"""Enforcement decisions: warn at thresholds, and stop a run so it lands at its cap.

The operator knows the burn rate, so it does not wait to discover an overrun
on a later poll: it predicts the instant spend reaches the limit and plans the
stop for that instant minus the pods' termination grace period (pods keep
their GPUs, and keep costing, while they terminate). Pods get a
``gpubudget.dev/stop-at`` annotation a configurable lead time before, so
training code can checkpoint.

The decision is level-based: from the budget's enforcement record and this
pass's measurements it says what the workloads should be (run, hold or kill),
and returns the new record; the shell makes it so. Run again after a restart it
decides the same. It descends in three steps: thresholds, idle GPUs, then the
verdict on the run (:func:`_verdict`), each step one rule after another.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from gpu_budget.approval import ApprovalDecision
from gpu_budget.models import EnforcementAction, EnforcementStatus, IdleRule, InternalModel, Phase
from gpu_budget.reasons import Reason

RESUME_HEADROOM = 0.01
"""A suspended run resumes only with at least this fraction of its cap left to spend."""
CAP_ALERT = 1.0
"""Recorded among the warned thresholds once an Alert-only budget has passed its cap."""
STOP_REASONS = frozenset(
    {
        Reason.CAP_REACHED,
        Reason.APPROVAL_EXHAUSTED,
        Reason.IDLE_GPUS,
        Reason.BUDGET_DELETED,
        Reason.BUDGET_NOT_FOUND,
        Reason.PERIOD_LIMIT_REACHED,
    }
)
"""Why a run is held or stopped: the reasons a stop record carries."""


class Desired(StrEnum):
    RUN = "run"
    HOLD = "hold"
    KILL = "kill"


class Terms(InternalModel):
    """What the budget and the policy set for enforcement, resolved for this pass."""

    cost_cap: float
    action: EnforcementAction
    """The action at the cap the policy allows (see :func:`gpu_budget.plan.effective_action`)."""
    warn_at: tuple[float, ...]
    checkpoint_lead_seconds: int
    idle: IdleRule | None
    period_limit: float | None = None
    """The spend at which a limit per period stops the run (see :mod:`gpu_budget.periods`)."""
    period_binding: str | None = None
    """That limit, in words."""


class Measured(InternalModel):
    """What this pass measured of the run."""

    spent: float
    burn_rate_per_hour: float
    stop_grace_seconds: float
    """Longest termination grace period among the running pods (bounded by the policy)."""
    utilization: float | None
    """Average utilisation of the running pods right now; None when unknown."""


class EnforcementDecision(InternalModel):
    desired: Desired
    phase: Phase
    reason: Reason
    message: str
    record: EnforcementStatus
    """The budget's new enforcement status."""
    warnings: tuple[float, ...]
    """Thresholds crossed since the last pass (fractions of the cap)."""
    acted: bool
    """This pass stops the run (suspend or kill), or raises the cap alert."""
    stopped: bool
    """The run is stopped (suspended or killed), by this pass or an earlier one."""
    idle_alert: bool
    """An Alert-only idle rule fires now (once per idle stretch)."""
    checkpoint: bool
    """The stop is within the checkpoint lead: annotate pods with ``stop_at``."""
    checkpoint_at: datetime | None
    """When the stop comes within the checkpoint lead (the loop wakes then to warn)."""
    next_threshold_at: datetime | None
    """When spend will cross the next warning threshold if the burn rate holds."""


class _Thresholds(InternalModel):
    crossed: tuple[float, ...]
    warned: tuple[float, ...]
    next_at: datetime | None


class _Idle(InternalModel):
    since: datetime | None
    alert: bool
    alerted_for: datetime | None


class _Limit(InternalModel):
    """Where the run stops: the cap, or what finance approved, and when spend gets there."""

    amount: float
    by_approval: bool
    by_period: bool
    """A limit per period is lower than the cap and the approval: it sets ``amount``."""
    stop_at: datetime | None
    reached: bool


class _Verdict(InternalModel):
    desired: Desired
    phase: Phase
    reason: Reason
    message: str
    acted: bool = False
    stop_at: datetime | None = None
    stopped_at_generation: int | None = None
    limit_at_stop: float | None = None
    cap_alerted: bool = False
    """Spend passed an Alert-only cap: the cap goes on record among the warned thresholds."""
    keeps_idle_stretch: bool = False
    """An idle stop holds: the stretch that caused it stays on record."""


def decide(
    phase: Phase,
    previous: EnforcementStatus,
    terms: Terms,
    approval: ApprovalDecision,
    measured: Measured,
    now: datetime,
    generation: int | None,
) -> EnforcementDecision:
    """Decide from the budget's phase and enforcement record, and this pass's measurements."""
    thresholds = _thresholds(previous.warned, terms, measured, now)
    idle = _idle(previous, terms.idle, measured, now)
    verdict = _verdict(phase, previous, terms, approval, measured, idle, now, generation)
    running = verdict.desired == Desired.RUN
    stopped = not running and verdict.phase in (Phase.SUSPENDED, Phase.KILLED)
    checkpoint_at = (
        None
        if verdict.stop_at is None
        else verdict.stop_at - timedelta(seconds=terms.checkpoint_lead_seconds)
    )
    return EnforcementDecision(
        desired=verdict.desired,
        phase=verdict.phase,
        reason=verdict.reason,
        message=verdict.message,
        record=_record(previous, verdict, thresholds, idle, stopped, measured.spent, now),
        warnings=thresholds.crossed,
        acted=verdict.acted,
        stopped=stopped,
        idle_alert=idle.alert,
        checkpoint=running and checkpoint_at is not None and checkpoint_at <= now,
        checkpoint_at=checkpoint_at if running else None,
        next_threshold_at=thresholds.next_at if running else None,
    )


def _thresholds(
    warned_before: list[float], terms: Terms, measured: Measured, now: datetime
) -> _Thresholds:
    """Thresholds crossed since the last pass, and when the next one will be."""
    levels = sorted(terms.warn_at)
    crossed = tuple(
        f for f in levels if f not in warned_before and measured.spent >= f * terms.cost_cap
    )
    warned = tuple(sorted({*warned_before, *crossed}))
    pending = [f for f in levels if f not in warned]
    next_at = None
    if pending and measured.burn_rate_per_hour > 0:
        seconds = (pending[0] * terms.cost_cap - measured.spent) / measured.burn_rate_per_hour
        next_at = now + timedelta(seconds=max(0.0, seconds * 3600))
    return _Thresholds(crossed=crossed, warned=warned, next_at=next_at)


def _idle(
    previous: EnforcementStatus, rule: IdleRule | None, measured: Measured, now: datetime
) -> _Idle:
    """The current idle stretch, and whether an Alert-only idle rule reports it now."""
    since = _idle_since(previous, rule, measured, now)
    due = (
        rule is not None
        and since is not None
        and now - since >= timedelta(minutes=rule.for_minutes)
    )
    if rule is not None and rule.action == "Alert" and due and previous.idle_alerted_for != since:
        return _Idle(since=since, alert=True, alerted_for=since)
    return _Idle(since=since, alert=False, alerted_for=previous.idle_alerted_for)


def _idle_since(
    previous: EnforcementStatus, rule: IdleRule | None, measured: Measured, now: datetime
) -> datetime | None:
    """When the current idle stretch began; None while the GPUs are busy or not running."""
    if rule is None or measured.burn_rate_per_hour <= 0 or measured.utilization is None:
        return None
    if measured.utilization >= rule.below_utilization:
        return None
    return previous.idle_since or now


def _limit(terms: Terms, approval: ApprovalDecision, measured: Measured, now: datetime) -> _Limit:
    """Suspend and Kill stop at the cap (or less while finance's approval is short);
    Alert lets the cap pass but is stopped at the hard limit: an approval is a limit
    whatever the action."""
    alert_only = terms.action == EnforcementAction.ALERT
    amount = approval.hard_limit if alert_only else approval.spend_limit
    # A limit per period stops every action, Alert too: it is the team's, not the run's.
    by_period = terms.period_limit is not None and terms.period_limit < amount
    if terms.period_limit is not None and by_period:
        amount = terms.period_limit
    stop_at = None
    if measured.burn_rate_per_hour > 0:
        seconds_left = max(0.0, (amount - measured.spent) / measured.burn_rate_per_hour * 3600)
        stop_at = now + timedelta(seconds=max(0.0, seconds_left - measured.stop_grace_seconds))
    return _Limit(
        amount=amount,
        by_approval=not by_period and (alert_only or amount < terms.cost_cap),
        by_period=by_period,
        stop_at=stop_at,
        reached=measured.spent >= amount or (stop_at is not None and stop_at <= now),
    )


def _verdict(
    phase: Phase,
    previous: EnforcementStatus,
    terms: Terms,
    approval: ApprovalDecision,
    measured: Measured,
    idle: _Idle,
    now: datetime,
    generation: int | None,
) -> _Verdict:
    """What the workloads should be: the first rule that applies, in order of precedence."""
    if phase == Phase.KILLED:
        # A killed run stays killed whatever happens to the budget afterwards.
        return _Verdict(
            desired=Desired.KILL,
            phase=Phase.KILLED,
            reason=_stop_reason(previous),
            message="The run was killed; its workloads cannot restart. Create a new budget "
            "and workload.",
            stopped_at_generation=previous.stopped_at_generation,
            limit_at_stop=previous.limit_at_stop,
        )
    if approval.awaiting and approval.approved_amount is None:
        return _Verdict(
            desired=Desired.HOLD,
            phase=Phase.AWAITING_APPROVAL,
            reason=approval.reason,
            message=approval.message,
        )
    limit = _limit(terms, approval, measured, now)
    if phase == Phase.SUSPENDED:
        held = _still_held(previous, terms, limit, measured, generation)
        if held is not None:
            return held
    if limit.reached:
        return _stop(terms, approval, limit, generation)
    if terms.action == EnforcementAction.ALERT and measured.spent >= terms.cost_cap:
        return _Verdict(
            desired=Desired.RUN,
            phase=_running_phase(measured),
            reason=Reason.CAP_EXCEEDED,
            message=f"Spend passed the cap of ${terms.cost_cap:,.2f}; the budget only alerts, "
            f"and stops at ${limit.amount:,.2f}.",
            acted=CAP_ALERT not in previous.warned,
            cap_alerted=True,
            stop_at=limit.stop_at,
        )
    rule = terms.idle
    if (
        rule is not None
        and rule.action == "Suspend"
        and idle.since is not None
        and now - idle.since >= timedelta(minutes=rule.for_minutes)
    ):
        return _Verdict(
            desired=Desired.HOLD,
            phase=Phase.SUSPENDED,
            reason=Reason.IDLE_GPUS,
            message=f"GPUs below {rule.below_utilization:.0%} utilisation for "
            f"{rule.for_minutes:g} minutes; workloads suspended.",
            acted=True,
            stopped_at_generation=generation,
            limit_at_stop=limit.amount,
        )
    return _Verdict(
        desired=Desired.RUN,
        phase=_running_phase(measured),
        reason=Reason.WITHIN_BUDGET,
        message=f"Spent ${measured.spent:,.2f} of ${limit.amount:,.2f}.",
        stop_at=limit.stop_at,
    )


def _still_held(
    previous: EnforcementStatus,
    terms: Terms,
    limit: _Limit,
    measured: Measured,
    generation: int | None,
) -> _Verdict | None:
    """A suspended run stays suspended until there is room to run again; None when there is."""
    if previous.reason == Reason.IDLE_GPUS:
        if generation != previous.stopped_at_generation:
            return None  # the budget was edited: that lifts an idle stop
        return _Verdict(
            desired=Desired.HOLD,
            phase=Phase.SUSPENDED,
            reason=Reason.IDLE_GPUS,
            message="Suspended because its GPUs were idle; edit the budget to resume.",
            stopped_at_generation=previous.stopped_at_generation,
            limit_at_stop=previous.limit_at_stop,
            keeps_idle_stretch=True,
        )
    # A predictive stop leaves a sliver of the cap unspent (the grace period's
    # worth); that sliver is no reason to start again. Only a higher limit is.
    raised = previous.limit_at_stop is None or limit.amount > previous.limit_at_stop
    if raised and limit.amount - measured.spent >= RESUME_HEADROOM * terms.cost_cap:
        return None
    if previous.reason == Reason.PERIOD_LIMIT_REACHED:
        message = (
            f"Suspended at {terms.period_binding or 'a limit per period'}; resumes when the "
            "period starts afresh or the limit is raised."
        )
    elif limit.by_approval:
        message = (
            f"Suspended at the approved ${limit.amount:,.2f}; the cap of "
            f"${terms.cost_cap:,.2f} needs finance's approval to resume."
        )
    else:
        message = (
            f"Suspended at its cap of ${terms.cost_cap:,.2f}; raise the cap (and have it "
            "approved if above the ceiling) to resume."
        )
    return _Verdict(
        desired=Desired.HOLD,
        phase=Phase.SUSPENDED,
        reason=_stop_reason(previous),
        message=message,
        stopped_at_generation=previous.stopped_at_generation,
        limit_at_stop=previous.limit_at_stop,
    )


def _stop(
    terms: Terms, approval: ApprovalDecision, limit: _Limit, generation: int | None
) -> _Verdict:
    """Spend reached the limit (or will, within the pods' grace period): stop now."""
    if limit.by_period:
        # Never killed: the next period gives the run room again.
        reason = Reason.PERIOD_LIMIT_REACHED
        message = (
            f"Spend in the period reached {terms.period_binding or 'a limit per period'}; "
            "workloads suspended until the period starts afresh or the limit is raised."
        )
    elif limit.by_approval:
        reason, message = Reason.APPROVAL_EXHAUSTED, _exhausted_message(terms, approval, limit)
    elif terms.action == EnforcementAction.SUSPEND:
        reason = Reason.CAP_REACHED
        message = f"Spend reached the cap of ${terms.cost_cap:,.2f}; workloads suspended."
    else:
        return _Verdict(
            desired=Desired.KILL,
            phase=Phase.KILLED,
            reason=Reason.CAP_REACHED,
            message=f"Spend reached the cap of ${terms.cost_cap:,.2f}; workloads killed.",
            acted=True,
            stopped_at_generation=generation,
            limit_at_stop=limit.amount,
        )
    return _Verdict(
        desired=Desired.HOLD,
        phase=Phase.SUSPENDED,
        reason=reason,
        message=message,
        acted=True,
        stopped_at_generation=generation,
        limit_at_stop=limit.amount,
    )


def _exhausted_message(terms: Terms, approval: ApprovalDecision, limit: _Limit) -> str:
    if approval.required:
        return (
            f"Spend reached the ${limit.amount:,.2f} finance approved; the cap of "
            f"${terms.cost_cap:,.2f} awaits finance's approval."
            if limit.amount < terms.cost_cap
            else f"Spend reached the ${limit.amount:,.2f} finance approved, which no action "
            "at the cap may exceed; finance approves more to resume."
        )
    return (
        f"Spend reached the approval ceiling of ${limit.amount:,.2f}, which an Alert-only "
        "budget may not pass without finance's approval; finance approves more to resume."
    )


def _record(
    previous: EnforcementStatus,
    verdict: _Verdict,
    thresholds: _Thresholds,
    idle: _Idle,
    stopped: bool,
    spent: float,
    now: datetime,
) -> EnforcementStatus:
    """The new enforcement record; when a run is stopped, when and at what spend."""
    if not stopped:
        stopped_at, spent_at_stop = None, None
    elif verdict.acted:
        stopped_at, spent_at_stop = now, spent
    else:
        stopped_at, spent_at_stop = previous.stopped_at, previous.spent_at_stop
    warned = {*thresholds.warned, CAP_ALERT} if verdict.cap_alerted else set(thresholds.warned)
    return EnforcementStatus(
        reason=None if verdict.desired == Desired.RUN else verdict.reason,
        warned=sorted(warned),
        stop_at=verdict.stop_at,
        stopped_at=stopped_at,
        spent_at_stop=spent_at_stop,
        stopped_at_generation=verdict.stopped_at_generation,
        limit_at_stop=verdict.limit_at_stop if stopped else None,
        idle_since=previous.idle_since if verdict.keeps_idle_stretch else idle.since,
        idle_alerted_for=idle.alerted_for,
    )


def _stop_reason(previous: EnforcementStatus) -> Reason:
    """The recorded stop reason; a record from an unknown version counts as the cap."""
    reason = previous.reason
    return Reason(reason) if reason in STOP_REASONS else Reason.CAP_REACHED


def _running_phase(measured: Measured) -> Phase:
    return Phase.RUNNING if measured.burn_rate_per_hour > 0 else Phase.PENDING
