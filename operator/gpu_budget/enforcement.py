"""Enforcement decisions: warn at thresholds, and stop a run so it lands at its cap.

The operator knows the burn rate, so it does not wait to discover an overrun
on a later poll: it predicts the instant spend reaches the limit and plans the
stop for that instant minus the pods' termination grace period (pods keep
their GPUs, and keep costing, while they terminate). Pods get a
``gpubudget.dev/stop-at`` annotation a configurable lead time before, so
training code can checkpoint.

The decision is level-based: from the budget's state it says what the
workloads should be (run, hold or kill) and the shell makes it so. Run again
after a restart it decides the same.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from gpu_budget.approval import ApprovalDecision
from gpu_budget.models import EnforcementAction, IdleRule, Phase

RESUME_HEADROOM = 0.01
"""A suspended run resumes only with at least this fraction of its cap left to spend."""
CAP_ALERT = 1.0
"""Recorded among the warned thresholds once an Alert-only budget has passed its cap."""


class StopReason(StrEnum):
    """Why a run is held or stopped: the reasons a stop record carries."""

    CAP_REACHED = "CapReached"
    APPROVAL_EXHAUSTED = "ApprovalExhausted"
    IDLE_GPUS = "IdleGPUs"
    BUDGET_DELETED = "BudgetDeleted"
    BUDGET_NOT_FOUND = "BudgetNotFound"


class Desired(StrEnum):
    RUN = "run"
    HOLD = "hold"
    KILL = "kill"


class EnforcementInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    now: datetime
    generation: int | None
    cost_cap: float
    approval: ApprovalDecision
    action: EnforcementAction
    warn_at: list[float]
    checkpoint_lead_seconds: int
    idle: IdleRule | None
    spent: float
    burn_rate_per_hour: float
    stop_grace_seconds: float
    """Longest termination grace period among the running pods."""
    current_utilization: float | None
    """Average utilisation of the running pods right now; None when unknown."""
    previous_phase: Phase
    previous_reason: str | None
    """Why the budget was last stopped, if it was."""
    stopped_at_generation: int | None
    limit_at_stop: float | None
    """The spend limit when the run was stopped, if it was."""
    warned: list[float]
    idle_since: datetime | None
    idle_alerted_for: datetime | None
    """The idle stretch (by its start) that an Alert-only idle rule already reported."""


class EnforcementDecision(BaseModel):
    model_config = ConfigDict(frozen=True)

    desired: Desired
    phase: Phase
    reason: str
    message: str
    warnings: list[float]
    """Thresholds crossed since the last pass (fractions of the cap)."""
    warned: list[float]
    stop_at: datetime | None
    """When the run will be stopped if the burn rate holds; None when it is not heading there."""
    checkpoint: bool
    """The stop is within the checkpoint lead: annotate pods with ``stop_at``."""
    checkpoint_at: datetime | None = None
    """When the stop comes within the checkpoint lead (the loop wakes then to warn)."""
    acted: bool
    """This pass stops the run (suspend or kill), or raises the cap alert."""
    idle_since: datetime | None
    idle_alert: bool
    """An Alert-only idle rule fires now (once per idle stretch)."""
    idle_alerted_for: datetime | None
    stopped_at_generation: int | None
    limit_at_stop: float | None
    next_threshold_at: datetime | None = None
    """When spend will cross the next warning threshold if the burn rate holds."""


def _seconds_to_limit(limit: float, spent: float, burn_per_hour: float) -> float | None:
    if burn_per_hour <= 0:
        return None
    return max(0.0, (limit - spent) / burn_per_hour * 3600.0)


def decide(facts: EnforcementInput) -> EnforcementDecision:
    now = facts.now
    warned = sorted(set(facts.warned))
    warnings = [
        fraction
        for fraction in sorted(facts.warn_at)
        if fraction not in warned and facts.spent >= fraction * facts.cost_cap
    ]
    warned = sorted(set(warned) | set(warnings))
    pending = [f for f in sorted(facts.warn_at) if f not in warned]
    next_threshold_at = None
    if pending and facts.burn_rate_per_hour > 0:
        seconds = (pending[0] * facts.cost_cap - facts.spent) / facts.burn_rate_per_hour * 3600
        next_threshold_at = now + timedelta(seconds=max(0.0, seconds))

    idle_since = _idle_since(facts)
    idle_alerted_for = facts.idle_alerted_for
    idle_alert = False
    if (
        facts.idle is not None
        and facts.idle.action == "Alert"
        and idle_since is not None
        and now - idle_since >= timedelta(minutes=facts.idle.for_minutes)
        and idle_alerted_for != idle_since
    ):
        idle_alert, idle_alerted_for = True, idle_since

    def decision(
        desired: Desired,
        phase: Phase,
        reason: str,
        message: str,
        *,
        stop_at: datetime | None = None,
        checkpoint: bool = False,
        checkpoint_at: datetime | None = None,
        acted: bool = False,
        stopped_at_generation: int | None = None,
        warned_now: list[float] | None = None,
        limit_at_stop: float | None = None,
        idle_since_now: datetime | None = None,
    ) -> EnforcementDecision:
        return EnforcementDecision(
            desired=desired,
            phase=phase,
            reason=reason,
            message=message,
            warnings=warnings,
            warned=warned_now if warned_now is not None else warned,
            stop_at=stop_at,
            checkpoint=checkpoint,
            checkpoint_at=checkpoint_at,
            acted=acted,
            idle_since=idle_since_now or idle_since,
            idle_alert=idle_alert,
            idle_alerted_for=idle_alerted_for,
            stopped_at_generation=stopped_at_generation,
            limit_at_stop=limit_at_stop,
            next_threshold_at=next_threshold_at if desired == Desired.RUN else None,
        )

    # A killed run stays killed whatever happens to the budget afterwards.
    if facts.previous_phase == Phase.KILLED:
        return decision(
            Desired.KILL,
            Phase.KILLED,
            facts.previous_reason or StopReason.CAP_REACHED,
            "The run was killed; its workloads cannot restart. Create a new budget and workload.",
            stopped_at_generation=facts.stopped_at_generation,
            limit_at_stop=facts.limit_at_stop,
        )

    approval = facts.approval
    if approval.awaiting and approval.approved_amount is None:
        return decision(Desired.HOLD, Phase.AWAITING_APPROVAL, approval.reason, approval.message)

    # Where the run stops. Suspend and Kill stop at the cap (or less while
    # finance's approval is short); Alert lets the cap pass but is stopped at the
    # hard limit: an approval is a limit whatever the action.
    alert_only = facts.action == EnforcementAction.ALERT
    limit = approval.hard_limit if alert_only else approval.spend_limit
    limited_by_approval = alert_only or limit < facts.cost_cap
    seconds_left = _seconds_to_limit(limit, facts.spent, facts.burn_rate_per_hour)
    stop_at = (
        None
        if seconds_left is None
        else now + timedelta(seconds=max(0.0, seconds_left - facts.stop_grace_seconds))
    )
    reached = facts.spent >= limit or (stop_at is not None and stop_at <= now)

    # Stopped earlier: stay stopped until there is room to run again.
    if facts.previous_phase == Phase.SUSPENDED:
        if facts.previous_reason == StopReason.IDLE_GPUS:
            if facts.generation == facts.stopped_at_generation:
                return decision(
                    Desired.HOLD,
                    Phase.SUSPENDED,
                    StopReason.IDLE_GPUS,
                    "Suspended because its GPUs were idle; edit the budget to resume.",
                    stopped_at_generation=facts.stopped_at_generation,
                    limit_at_stop=facts.limit_at_stop,
                    # The idle stretch that caused the stop stays on record while it holds.
                    idle_since_now=facts.idle_since,
                )
        elif (
            facts.limit_at_stop is not None and limit <= facts.limit_at_stop
        ) or limit - facts.spent < RESUME_HEADROOM * facts.cost_cap:
            # A predictive stop leaves a sliver of the cap unspent (the grace
            # period's worth); that sliver is no reason to start again. Only a
            # higher limit is.
            if limited_by_approval:
                message = (
                    f"Suspended at the approved ${limit:,.2f}; the cap of ${facts.cost_cap:,.2f} "
                    "needs finance's approval to resume."
                )
            else:
                message = (
                    f"Suspended at its cap of ${facts.cost_cap:,.2f}; raise the cap (and have it "
                    "approved if above the ceiling) to resume."
                )
            return decision(
                Desired.HOLD,
                Phase.SUSPENDED,
                facts.previous_reason or StopReason.CAP_REACHED,
                message,
                stopped_at_generation=facts.stopped_at_generation,
                limit_at_stop=facts.limit_at_stop,
            )

    if reached:
        if limited_by_approval:
            return decision(
                Desired.HOLD,
                Phase.SUSPENDED,
                StopReason.APPROVAL_EXHAUSTED,
                _exhausted_message(facts, limit),
                acted=True,
                stopped_at_generation=facts.generation,
                limit_at_stop=limit,
            )
        if facts.action == EnforcementAction.SUSPEND:
            return decision(
                Desired.HOLD,
                Phase.SUSPENDED,
                StopReason.CAP_REACHED,
                f"Spend reached the cap of ${facts.cost_cap:,.2f}; workloads suspended.",
                acted=True,
                stopped_at_generation=facts.generation,
                limit_at_stop=limit,
            )
        return decision(
            Desired.KILL,
            Phase.KILLED,
            StopReason.CAP_REACHED,
            f"Spend reached the cap of ${facts.cost_cap:,.2f}; workloads killed.",
            acted=True,
            stopped_at_generation=facts.generation,
            limit_at_stop=limit,
        )

    if alert_only and facts.spent >= facts.cost_cap:
        first_alert = CAP_ALERT not in warned
        return decision(
            Desired.RUN,
            _running_phase(facts),
            "CapExceeded",
            f"Spend passed the cap of ${facts.cost_cap:,.2f}; the budget only alerts, and "
            f"stops at ${limit:,.2f}.",
            acted=first_alert,
            warned_now=sorted({*warned, CAP_ALERT}),
            stop_at=stop_at,
        )

    if (
        facts.idle is not None
        and facts.idle.action == "Suspend"
        and idle_since is not None
        and now - idle_since >= timedelta(minutes=facts.idle.for_minutes)
    ):
        return decision(
            Desired.HOLD,
            Phase.SUSPENDED,
            StopReason.IDLE_GPUS,
            f"GPUs below {facts.idle.below_utilization:.0%} utilisation for "
            f"{facts.idle.for_minutes:g} minutes; workloads suspended.",
            acted=True,
            stopped_at_generation=facts.generation,
            limit_at_stop=limit,
        )

    checkpoint_at = (
        None if stop_at is None else stop_at - timedelta(seconds=facts.checkpoint_lead_seconds)
    )
    return decision(
        Desired.RUN,
        _running_phase(facts),
        "WithinBudget",
        f"Spent ${facts.spent:,.2f} of ${limit:,.2f}.",
        stop_at=stop_at,
        checkpoint=checkpoint_at is not None and checkpoint_at <= now,
        checkpoint_at=checkpoint_at,
    )


def _exhausted_message(facts: EnforcementInput, limit: float) -> str:
    if facts.approval.required:
        return (
            f"Spend reached the ${limit:,.2f} finance approved; the cap of "
            f"${facts.cost_cap:,.2f} awaits finance's approval."
            if limit < facts.cost_cap
            else f"Spend reached the ${limit:,.2f} finance approved, which no action at the "
            "cap may exceed; finance approves more to resume."
        )
    return (
        f"Spend reached the approval ceiling of ${limit:,.2f}, which an Alert-only budget "
        "may not pass without finance's approval; finance approves more to resume."
    )


def _running_phase(facts: EnforcementInput) -> Phase:
    return Phase.RUNNING if facts.burn_rate_per_hour > 0 else Phase.PENDING


def _idle_since(facts: EnforcementInput) -> datetime | None:
    """When the current idle stretch began; None while the GPUs are busy or not running."""
    rule = facts.idle
    if rule is None or facts.burn_rate_per_hour <= 0 or facts.current_utilization is None:
        return None
    if facts.current_utilization >= rule.below_utilization:
        return None
    return facts.idle_since or facts.now
