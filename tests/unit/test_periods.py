"""Limits per period: calendar periods, the fit that closes the split-below-the-ceiling gap,
the shared stop, deleted budgets' spend, and the rollover."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpu_budget.approval import decide as decide_approval
from gpu_budget.enforcement import Desired, Measured, Terms, decide
from gpu_budget.models import (
    DepartedSpend,
    EnforcementAction,
    EnforcementStatus,
    Owner,
    Period,
    PeriodLimit,
    PeriodMark,
    Phase,
)
from gpu_budget.periods import (
    BudgetShare,
    departures,
    keep_current,
    next_period_start,
    period_start,
    roll_marks,
    standings,
)
from gpu_budget.reasons import Reason

NOW = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)  # a Wednesday
DECEMBER = datetime(2026, 12, 1, tzinfo=UTC)
NLP = PeriodLimit(scope="Team", name="nlp", period="Monthly", amount=20_000)


def share(uid: str, minute: int, cap: float = 9_999, **overrides: object) -> BudgetShare:
    fields: dict[str, object] = {
        "uid": uid,
        "namespace": "ml-team",
        "owner": Owner(team="nlp"),
        "created": NOW - timedelta(hours=1) + timedelta(minutes=minute),
        "cost_cap": cap,
        "spent": 0.0,
        "burn_per_hour": 0.0,
        "accounted_at": NOW,
        "marks": (PeriodMark(period="Monthly", start=DECEMBER, spent_at_start=0.0),),
        "claims": True,
        "inherited_from": (),
    }
    fields.update(overrides)
    return BudgetShare.model_validate(fields)


def test_periods_are_utc_calendar_weeks_and_months() -> None:
    assert period_start(Period.MONTHLY, NOW) == DECEMBER
    assert next_period_start(Period.MONTHLY, NOW) == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_start(Period.WEEKLY, NOW) == datetime(2026, 11, 30, tzinfo=UTC)  # Monday
    assert next_period_start(Period.WEEKLY, NOW) == datetime(2026, 12, 7, tzinfo=UTC)


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)))
def test_every_instant_is_in_exactly_one_period(naive: datetime) -> None:
    at = naive.replace(tzinfo=UTC)
    for period in Period:
        start, end = period_start(period, at), next_period_start(period, at)
        assert start <= at < end
        assert period_start(period, end) == end


def test_four_budgets_just_below_the_ceiling_cannot_split_a_team_limit() -> None:
    """The attack: $40,000 as four $9,999 budgets under a $10,000 ceiling."""
    shares = [share(f"b{i}", i) for i in range(4)]
    terms, (standing,) = standings([NLP], shares, [], NOW)
    assert [terms[f"b{i}"].shortfall is None for i in range(4)] == [True, True, False, False]
    shortfall = terms["b2"].shortfall
    assert shortfall is not None and "team nlp's limit of $20,000.00 a month" in shortfall
    assert "$2.00 left" in shortfall
    # A waiting budget claims nothing, so a small later one still fits beside the first two.
    waiting = [*(share(f"b{i}", i, claims=i < 2) for i in range(4)), share("small", 9, cap=2)]
    terms, _ = standings([NLP], waiting, [], NOW)
    assert terms["small"].shortfall is None
    assert standing.claimed == pytest.approx(4 * 9_999)


def test_a_shortfall_needs_finance_like_a_cap_above_the_ceiling() -> None:
    why = "team nlp's limit of $20,000.00 a month has $2.00 left"
    waiting = decide_approval(9_999, None, 10_000, {}, why)
    assert waiting.required and waiting.awaiting and waiting.reason == Reason.AWAITING_APPROVAL
    assert why in waiting.message
    approved = decide_approval(9_999, None, 10_000, {"gpubudget.dev/approved-amount": "9999"}, why)
    assert approved.required and not approved.awaiting


def test_whats_left_is_shared_by_burn_so_the_scope_stops_at_once() -> None:
    fast = share("fast", 0, spent=5_000, burn_per_hour=3_600)
    slow = share("slow", 1, spent=5_000, burn_per_hour=1_800)
    terms, (standing,) = standings([NLP], [fast, slow], [], NOW)
    assert standing.spent == pytest.approx(10_000)
    room = 10_000.0
    hours = {uid: (terms[uid].spend_limit or 0) - 5_000 for uid in ("fast", "slow")}
    assert hours["fast"] / 3_600 == pytest.approx(hours["slow"] / 1_800)
    assert hours["fast"] + hours["slow"] == pytest.approx(room)
    # An idle budget may use all that is left: it resumes when there is room.
    idle = share("idle", 2, cap=1_000, spent=900)
    terms, _ = standings([NLP], [fast, slow, idle], [], NOW)
    assert terms["idle"].spend_limit == pytest.approx(900 + (20_000 - 10_900))


def test_deleted_budgets_spend_still_counts_once() -> None:
    gone = DepartedSpend(
        budget_uid="old",
        namespace="ml-team",
        team="nlp",
        period="Monthly",
        start=DECEMBER,
        spent=15_000,
    )
    terms, (standing,) = standings([NLP], [share("new", 0)], [gone], NOW)
    assert standing.spent == pytest.approx(15_000)
    assert terms["new"].shortfall is not None  # $5,000 left, less than its $9,999
    # A successor that carries the deleted budget's spend on counts it itself.
    heir = share("heir", 0, inherited_from=("old",))
    _, (standing,) = standings([NLP], [heir], [gone], NOW)
    assert standing.spent == 0
    last_month = gone.model_copy(update={"start": datetime(2026, 11, 1, tzinfo=UTC)})
    assert keep_current([gone, last_month], NOW) == [gone]


def test_a_departure_records_the_spend_in_each_current_period() -> None:
    marks = [PeriodMark(period="Monthly", start=DECEMBER, spent_at_start=100.0)]
    (left,) = departures("uid", "ml-team", Owner(team="nlp"), marks, 350.0, NOW)
    assert (left.spent, left.team, left.start) == (250.0, "nlp", DECEMBER)


def test_the_pass_after_a_rollover_puts_spend_before_the_boundary_in_the_old_period() -> None:
    november = PeriodMark(
        period="Monthly", start=datetime(2026, 11, 1, tzinfo=UTC), spent_at_start=0
    )
    just_after = DECEMBER + timedelta(minutes=6)
    (mark,) = roll_marks([november], [Period.MONTHLY], 990.0, 1_000.0, 100.0, just_after)
    assert mark.start == DECEMBER
    assert mark.spent_at_start == pytest.approx(990.0)  # $100/h for 6 minutes is $10
    (first,) = roll_marks([], [Period.MONTHLY], 40.0, 50.0, 100.0, NOW)
    assert first.spent_at_start == 40.0  # what it had before it was counted is not this period's
    assert roll_marks([mark], [], 0, 0, 0, NOW) == []


def test_the_period_limit_stops_every_action_and_resumes_in_the_next_period() -> None:
    approval = decide_approval(10_000, None, 10_000, {})
    terms = Terms(
        cost_cap=10_000,
        action=EnforcementAction.KILL,
        warn_at=(),
        checkpoint_lead_seconds=0,
        idle=None,
        period_limit=4_000,
        period_binding="team nlp's limit of $20,000.00 a month",
    )
    running = Measured(
        spent=3_990, burn_rate_per_hour=3_600, stop_grace_seconds=30, utilization=None
    )
    stop = decide(Phase.RUNNING, EnforcementStatus(), terms, approval, running, NOW, 1)
    assert (stop.desired, stop.phase, stop.reason) == (
        Desired.HOLD,
        Phase.SUSPENDED,
        Reason.PERIOD_LIMIT_REACHED,
    )
    assert stop.acted and stop.record.limit_at_stop == 4_000
    held = Measured(spent=4_005, burn_rate_per_hour=0, stop_grace_seconds=0, utilization=None)
    still = decide(Phase.SUSPENDED, stop.record, terms, approval, held, NOW, 1)
    assert still.desired == Desired.HOLD and "period starts afresh" in still.message
    next_month = terms.model_copy(update={"period_limit": 4_005 + 20_000})
    resumed = decide(Phase.SUSPENDED, stop.record, next_month, approval, held, NOW, 1)
    assert resumed.desired == Desired.RUN
