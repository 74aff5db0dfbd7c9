"""Enforcement decisions: thresholds, predicted stop time, suspend, kill, resume, idle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gpu_budget import enforcement
from gpu_budget.approval import ApprovalDecision
from gpu_budget.approval import decide as decide_approval
from gpu_budget.enforcement import (
    CAP_ALERT,
    STOP_REASONS,
    Desired,
    EnforcementDecision,
    Measured,
    Terms,
)
from gpu_budget.models import EnforcementAction, EnforcementStatus, IdleRule, Phase
from gpu_budget.reasons import Reason

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
CAP = 1_000.0
CEILING = 10_000.0


class Case(NamedTuple):
    """The arguments of one call of :func:`gpu_budget.enforcement.decide`."""

    phase: Phase
    previous: EnforcementStatus
    terms: Terms
    approval: ApprovalDecision
    measured: Measured
    now: datetime
    generation: int | None


def facts(**overrides: Any) -> Case:
    """A running $1,000 budget burning $1 a second, with what the test changes."""
    f: dict[str, Any] = {
        "now": NOW,
        "generation": 1,
        "cost_cap": CAP,
        "approval": decide_approval(CAP, None, 10_000, {}),
        "action": EnforcementAction.SUSPEND,
        "warn_at": (0.5, 0.8, 0.9),
        "checkpoint_lead_seconds": 300,
        "idle": None,
        "spent": 0.0,
        "burn_rate_per_hour": 3600.0,  # $1 per second
        "stop_grace_seconds": 30.0,
        "current_utilization": 0.9,
        "previous_phase": Phase.RUNNING,
        "previous_reason": None,
        "stopped_at_generation": None,
        "limit_at_stop": None,
        "warned": [],
        "idle_since": None,
        "idle_alerted_for": None,
    }
    unknown = set(overrides) - set(f)
    assert not unknown, f"no such fact: {unknown}"
    f.update(overrides)
    return Case(
        phase=f["previous_phase"],
        previous=EnforcementStatus(
            reason=f["previous_reason"],
            warned=list(f["warned"]),
            stopped_at_generation=f["stopped_at_generation"],
            limit_at_stop=f["limit_at_stop"],
            idle_since=f["idle_since"],
            idle_alerted_for=f["idle_alerted_for"],
        ),
        terms=Terms(
            cost_cap=f["cost_cap"],
            action=f["action"],
            warn_at=tuple(f["warn_at"]),
            checkpoint_lead_seconds=f["checkpoint_lead_seconds"],
            idle=f["idle"],
        ),
        approval=f["approval"],
        measured=Measured(
            spent=f["spent"],
            burn_rate_per_hour=f["burn_rate_per_hour"],
            stop_grace_seconds=f["stop_grace_seconds"],
            utilization=f["current_utilization"],
        ),
        now=f["now"],
        generation=f["generation"],
    )


def decide(case: Case) -> EnforcementDecision:
    return enforcement.decide(*case)


def test_thresholds_fire_once_each_in_order() -> None:
    d = decide(facts(spent=850))
    assert d.warnings == (0.5, 0.8)
    again = decide(facts(spent=860, warned=d.record.warned))
    assert again.warnings == ()
    later = decide(facts(spent=905, warned=d.record.warned))
    assert later.warnings == (0.9,)


def test_next_threshold_is_predicted_so_warnings_are_not_late() -> None:
    d = decide(facts(spent=450))
    assert d.next_threshold_at == NOW + timedelta(seconds=50)  # 0.5 x $1000 at $1/s
    assert decide(facts(spent=950, warned=[0.5, 0.8, 0.9])).next_threshold_at is None
    assert decide(facts(spent=450, burn_rate_per_hour=0)).next_threshold_at is None


def test_stop_is_planned_when_spend_reaches_cap_minus_grace() -> None:
    d = decide(facts(spent=400))
    # $600 left at $1/s is 600 s; pods keep costing for their 30 s grace period.
    assert d.record.stop_at == NOW + timedelta(seconds=570)
    assert d.desired == Desired.RUN
    assert not d.checkpoint


def test_checkpoint_annotation_is_due_within_the_lead() -> None:
    assert decide(facts(spent=800)).checkpoint  # stop in 170 s < 300 s lead
    assert not decide(facts(spent=800, checkpoint_lead_seconds=60)).checkpoint


def test_suspend_when_the_predicted_stop_has_come() -> None:
    d = decide(facts(spent=975))  # 25 s left < 30 s grace
    assert d.desired == Desired.HOLD
    assert d.phase == Phase.SUSPENDED
    assert d.acted and d.reason == "CapReached"


def test_kill_at_the_cap_is_final() -> None:
    d = decide(facts(spent=CAP, action=EnforcementAction.KILL))
    assert d.desired == Desired.KILL and d.phase == Phase.KILLED and d.acted
    raised = decide(
        facts(spent=CAP, cost_cap=5_000, previous_phase=Phase.KILLED, previous_reason="CapReached")
    )
    assert raised.desired == Desired.KILL and raised.phase == Phase.KILLED
    assert not raised.acted


def test_alert_only_keeps_running_and_alerts_once() -> None:
    d = decide(facts(spent=CAP + 1, action=EnforcementAction.ALERT))
    assert d.desired == Desired.RUN and d.acted and d.reason == "CapExceeded"
    assert CAP_ALERT in d.record.warned
    again = decide(facts(spent=CAP + 50, action=EnforcementAction.ALERT, warned=d.record.warned))
    assert not again.acted
    # No stop is planned at the cap; the only one is at the hard limit (here the ceiling).
    below = decide(facts(spent=500, action=EnforcementAction.ALERT))
    assert below.desired == Desired.RUN
    assert below.record.stop_at == NOW + timedelta(seconds=CEILING - 500 - 30)


def test_suspended_run_stays_suspended_until_the_cap_is_raised() -> None:
    stopped: dict[str, Any] = {
        "spent": CAP,
        "previous_phase": Phase.SUSPENDED,
        "previous_reason": "CapReached",
    }
    held = facts(**stopped)
    assert decide(held).desired == Desired.HOLD
    assert not decide(held).acted
    resumed = decide(
        facts(**stopped, cost_cap=2_000, approval=decide_approval(2_000, None, 10_000, {}))
    )
    assert resumed.desired == Desired.RUN
    assert resumed.phase == Phase.RUNNING


def test_the_grace_sliver_left_by_a_predictive_stop_does_not_resume() -> None:
    stopped = decide(facts(spent=975))
    assert stopped.record.limit_at_stop == CAP
    at_stop: dict[str, Any] = {
        "spent": 975,
        "burn_rate_per_hour": 0,
        "previous_phase": Phase.SUSPENDED,
        "previous_reason": "CapReached",
        "limit_at_stop": stopped.record.limit_at_stop,
    }
    assert decide(facts(**at_stop)).desired == Desired.HOLD
    raised = facts(**at_stop, cost_cap=1_200, approval=decide_approval(1_200, None, 10_000, {}))
    assert decide(raised).desired == Desired.RUN


def test_tiny_headroom_does_not_resume() -> None:
    held = facts(
        spent=CAP,
        cost_cap=CAP + 5,
        approval=decide_approval(CAP + 5, None, 10_000, {}),
        previous_phase=Phase.SUSPENDED,
        previous_reason="CapReached",
    )
    assert decide(held).desired == Desired.HOLD


def test_awaiting_approval_holds_everything() -> None:
    approval = decide_approval(50_000, None, 10_000, {})
    d = decide(facts(cost_cap=50_000, approval=approval, previous_phase=Phase.PENDING))
    assert d.desired == Desired.HOLD and d.phase == Phase.AWAITING_APPROVAL
    assert not d.acted


def test_raised_cap_without_approval_stops_at_the_approved_amount() -> None:
    approval = decide_approval(30_000, None, 10_000, {"gpubudget.dev/approved-amount": "20000"})
    running = decide(facts(cost_cap=30_000, approval=approval, spent=10_000))
    assert running.desired == Desired.RUN
    assert running.record.stop_at == NOW + timedelta(seconds=10_000 - 30)
    stopped = decide(facts(cost_cap=30_000, approval=approval, spent=20_000))
    assert stopped.desired == Desired.HOLD and stopped.reason == "ApprovalExhausted"
    still = decide(
        facts(
            cost_cap=30_000,
            approval=approval,
            spent=20_000,
            previous_phase=Phase.SUSPENDED,
            previous_reason="ApprovalExhausted",
        )
    )
    assert still.desired == Desired.HOLD
    approved = decide_approval(30_000, None, 10_000, {"gpubudget.dev/approved-amount": "30000"})
    resumed = decide(
        facts(
            cost_cap=30_000,
            approval=approved,
            spent=20_000,
            previous_phase=Phase.SUSPENDED,
            previous_reason="ApprovalExhausted",
        )
    )
    assert resumed.desired == Desired.RUN


def test_idle_rule_suspends_after_its_duration() -> None:
    rule = IdleRule(below_utilization=0.1, for_minutes=10, action="Suspend")
    first = decide(facts(idle=rule, current_utilization=0.02))
    assert first.record.idle_since == NOW and first.desired == Desired.RUN
    later = decide(
        facts(idle=rule, current_utilization=0.02, idle_since=NOW, now=NOW + timedelta(minutes=10))
    )
    assert later.desired == Desired.HOLD and later.reason == "IdleGPUs"
    busy = decide(facts(idle=rule, current_utilization=0.5, idle_since=NOW))
    assert busy.record.idle_since is None
    held = decide(
        facts(
            idle=rule,
            previous_phase=Phase.SUSPENDED,
            previous_reason="IdleGPUs",
            stopped_at_generation=1,
        )
    )
    assert held.desired == Desired.HOLD
    edited = decide(
        facts(
            idle=rule,
            previous_phase=Phase.SUSPENDED,
            previous_reason="IdleGPUs",
            stopped_at_generation=1,
            generation=2,
        )
    )
    assert edited.desired == Desired.RUN


def test_idle_alert_fires_once_per_idle_stretch() -> None:
    rule = IdleRule(below_utilization=0.1, for_minutes=5, action="Alert")
    at = NOW + timedelta(minutes=6)
    d = decide(facts(idle=rule, current_utilization=0.0, idle_since=NOW, now=at))
    assert d.idle_alert and d.desired == Desired.RUN
    again = decide(
        facts(
            idle=rule,
            current_utilization=0.0,
            idle_since=NOW,
            idle_alerted_for=d.record.idle_alerted_for,
            now=at,
        )
    )
    assert not again.idle_alert


def test_no_burn_no_stop_plan() -> None:
    d = decide(facts(spent=10, burn_rate_per_hour=0))
    assert d.record.stop_at is None and d.phase == Phase.PENDING


@settings(max_examples=300, deadline=None)
@given(
    spent=st.floats(min_value=0, max_value=CAP * 0.999),
    burn=st.floats(min_value=1, max_value=1e6),
    grace=st.floats(min_value=0, max_value=120),
)
def test_stopping_at_the_planned_moment_lands_on_the_cap(
    spent: float, burn: float, grace: float
) -> None:
    d = decide(facts(spent=spent, burn_rate_per_hour=burn, stop_grace_seconds=grace))
    if d.desired == Desired.HOLD:
        # Already within the grace period of the cap: stopping now overshoots by less than grace.
        assert spent + burn * grace / 3600 >= CAP - 1e-6
        return
    assert d.record.stop_at is not None
    seconds = (d.record.stop_at - NOW).total_seconds()
    landed = spent + burn * (seconds + grace) / 3600
    assert landed == pytest.approx(CAP, rel=1e-6)


# ---------------------------------------------------- Alert stops at the hard limit


def test_alert_without_approval_alerts_at_the_cap_once_and_stops_at_the_ceiling() -> None:
    alert = EnforcementAction.ALERT
    first = decide(facts(spent=CAP + 1, action=alert))
    assert first.desired == Desired.RUN and first.reason == "CapExceeded" and first.acted
    # The stop is planned at the ceiling, not at the cap.
    assert first.record.stop_at == NOW + timedelta(seconds=CEILING - (CAP + 1) - 30)
    assert f"${CEILING:,.2f}" in first.message
    second = decide(facts(spent=CAP + 100, action=alert, warned=first.record.warned))
    assert second.desired == Desired.RUN and second.reason == "CapExceeded"
    assert not second.acted
    stopped = decide(facts(spent=CEILING - 25, action=alert, warned=first.record.warned))
    assert stopped.desired == Desired.HOLD and stopped.phase == Phase.SUSPENDED
    assert stopped.reason == "ApprovalExhausted" and stopped.acted
    assert stopped.record.limit_at_stop == CEILING
    assert "approval ceiling" in stopped.message


def test_alert_with_an_approval_stops_at_the_approved_amount() -> None:
    # Finance approved $15k for a $15k cap; the cap was lowered to $11k since.
    cap = 11_000.0
    approval = decide_approval(
        cap,
        None,
        CEILING,
        {"gpubudget.dev/approved-amount": "15000", "gpubudget.dev/approved-cap": "15000"},
    )
    assert approval.spend_limit == cap and approval.hard_limit == 15_000
    alert = EnforcementAction.ALERT
    at_cap = decide(facts(cost_cap=cap, approval=approval, spent=cap, action=alert))
    assert at_cap.desired == Desired.RUN and at_cap.reason == "CapExceeded" and at_cap.acted
    assert at_cap.record.stop_at == NOW + timedelta(seconds=15_000 - cap - 30)
    past = decide(
        facts(
            cost_cap=cap, approval=approval, spent=14_000, action=alert, warned=at_cap.record.warned
        )
    )
    assert past.desired == Desired.RUN and not past.acted
    stopped = decide(
        facts(
            cost_cap=cap, approval=approval, spent=15_000, action=alert, warned=at_cap.record.warned
        )
    )
    assert stopped.desired == Desired.HOLD and stopped.reason == "ApprovalExhausted"
    assert stopped.record.limit_at_stop == 15_000
    assert "finance approved" in stopped.message
    # Held there: it does not resume on its own, whatever the action.
    held = decide(
        facts(
            cost_cap=cap,
            approval=approval,
            spent=15_000,
            action=alert,
            previous_phase=Phase.SUSPENDED,
            previous_reason="ApprovalExhausted",
            limit_at_stop=15_000,
        )
    )
    assert held.desired == Desired.HOLD and not held.acted
    # Suspend under the same approval stops at the cap instead.
    suspend = decide(facts(cost_cap=cap, approval=approval, spent=cap))
    assert suspend.desired == Desired.HOLD and suspend.reason == "CapReached"


def test_alert_with_approval_short_of_the_cap_stops_at_the_approved_amount() -> None:
    approval = decide_approval(30_000, None, CEILING, {"gpubudget.dev/approved-amount": "20000"})
    d = decide(
        facts(cost_cap=30_000, approval=approval, spent=20_000, action=EnforcementAction.ALERT)
    )
    assert d.desired == Desired.HOLD and d.reason == "ApprovalExhausted"
    assert "awaits finance's approval" in d.message


def test_stop_reasons_are_the_strings_records_carry() -> None:
    assert sorted(reason.value for reason in STOP_REASONS) == [
        "ApprovalExhausted",
        "BudgetDeleted",
        "BudgetNotFound",
        "CapReached",
        "IdleGPUs",
        "PeriodLimitReached",
    ]
    assert decide(facts(spent=975)).reason == Reason.CAP_REACHED


def test_internal_models_refuse_a_removed_field() -> None:
    """A caller still passing a field that no longer exists fails instead of being ignored."""
    with pytest.raises(ValidationError, match="has_workloads"):
        Measured(
            spent=0.0,
            burn_rate_per_hour=0.0,
            stop_grace_seconds=0.0,
            utilization=None,
            has_workloads=True,  # type: ignore[call-arg]
        )
