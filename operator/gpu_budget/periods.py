"""Spending limits per period: a namespace, team or cost centre may spend so much a week or month.

A ceiling per budget can be split around (four $9,999 budgets under a $10,000
ceiling); a limit per period cannot. Two rules, both pure functions of the
budgets' statuses:

* **Fit.** Budgets claim what is left of a period in the order they were
  created: each claims what it spent in the period plus what its cap still
  allows. A budget whose claim does not fit beside the earlier ones' waits for
  finance like one above the ceiling (:func:`gpu_budget.approval.decide`). A
  budget waiting for finance claims nothing, so it never blocks a later one.
* **Stop.** When the period's spend (running budgets', finished ones', and
  deleted ones', kept in the BudgetPolicy's status) reaches the limit, every
  running budget in scope stops. What is left is shared by burn rate, so each
  budget's predicted stop falls on the same instant and the scope lands at the
  limit, not one budget's grace period past it per budget.

A period starts afresh on schedule: each budget keeps a mark of its spend when
the period began (:func:`roll_marks`), and spend in the period is the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from gpu_budget.models import (
    DepartedSpend,
    InternalModel,
    Owner,
    Period,
    PeriodLimit,
    PeriodMark,
    PeriodScope,
)

FIT_TOLERANCE = 0.005
"""USD: claims are compared to the cent, not to float noise."""


def period_start(period: Period, at: datetime) -> datetime:
    at = at.astimezone(UTC)
    if period == Period.MONTHLY:
        return datetime(at.year, at.month, 1, tzinfo=UTC)
    midnight = datetime(at.year, at.month, at.day, tzinfo=UTC)
    return midnight - timedelta(days=at.weekday())


def next_period_start(period: Period, at: datetime) -> datetime:
    start = period_start(period, at)
    if period == Period.WEEKLY:
        return start + timedelta(days=7)
    return datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)


def in_scope(limit: PeriodLimit, namespace: str, owner: Owner) -> bool:
    value = {
        PeriodScope.NAMESPACE: namespace,
        PeriodScope.TEAM: owner.team,
        PeriodScope.COST_CENTER: owner.cost_center,
    }[PeriodScope(limit.scope)]
    return value == limit.name


def describe(limit: PeriodLimit) -> str:
    scope = {"Namespace": "namespace", "Team": "team", "CostCenter": "cost centre"}[limit.scope]
    per = "week" if limit.period == Period.WEEKLY else "month"
    return f"{scope} {limit.name}'s limit of ${limit.amount:,.2f} a {per}"


def roll_marks(
    marks: Sequence[PeriodMark],
    periods: Iterable[Period],
    spent_before: float,
    spent_now: float,
    burn_per_hour: float,
    now: datetime,
) -> list[PeriodMark]:
    """The budget's marks for the periods its limits count, rolled over when one began.

    A budget first seen in a period marks what it had before this pass (its
    spend from earlier periods, or inherited and counted where its predecessor
    was). At a rollover the spend at the boundary is the spend now less the
    burn since the boundary: the pass after midnight does not put the minutes
    before it into the new period.
    """
    rolled: list[PeriodMark] = []
    for period in sorted(set(periods)):
        start = period_start(period, now)
        mark = next((m for m in marks if m.period == period), None)
        if mark is not None and mark.start == start:
            rolled.append(mark)
            continue
        if mark is None:
            at_start = spent_before
        else:
            since = max(0.0, (now - start).total_seconds() / 3600)
            at_start = min(spent_now, max(mark.spent_at_start, spent_now - burn_per_hour * since))
        rolled.append(PeriodMark(period=period, start=start, spent_at_start=round(at_start, 6)))
    return rolled


class BudgetShare(InternalModel):
    """What one budget brings to the period totals, from its newest status."""

    uid: str
    namespace: str
    owner: Owner
    created: datetime
    cost_cap: float
    spent: float
    burn_per_hour: float
    accounted_at: datetime | None
    marks: tuple[PeriodMark, ...]
    claims: bool
    """It claims its cap: not waiting for finance, not killed."""
    inherited_from: tuple[str, ...]


class LimitStanding(InternalModel):
    """Where a limit stands now: for /metrics and the Events."""

    limit: PeriodLimit
    start: datetime
    spent: float
    claimed: float


class PeriodTerms(InternalModel):
    """What the limits say for one budget this pass."""

    spend_limit: float | None = None
    """The spend at which the budget stops; None when no limit counts it."""
    binding: str | None = None
    """The limit that sets ``spend_limit``, in words."""
    shortfall: str | None = None
    """Why the budget's claim does not fit what is left (so it needs finance)."""
    periods: tuple[Period, ...] = ()
    """The periods its limits count, so its marks are kept for them."""
    summary: str | None = None
    """Where its limits stand, for its condition."""


def _spent_now(share: BudgetShare, now: datetime) -> float:
    if share.accounted_at is None or share.burn_per_hour <= 0:
        return share.spent
    hours = max(0.0, (now - share.accounted_at).total_seconds() / 3600)
    return share.spent + share.burn_per_hour * hours


def _spent_in(share: BudgetShare, period: Period, start: datetime, now: datetime) -> float:
    spent = _spent_now(share, now)
    mark = next((m for m in share.marks if m.period == period), None)
    if mark is not None and mark.start == start:
        return max(0.0, spent - mark.spent_at_start)
    if mark is None:
        return 0.0  # not yet accounted with this limit: nothing of it counted yet
    # Marked in an earlier period and not accounted since the rollover.
    since = max(0.0, (now - start).total_seconds() / 3600)
    return min(spent, share.burn_per_hour * since)


def standings(
    limits: Sequence[PeriodLimit],
    shares: Sequence[BudgetShare],
    departed: Sequence[DepartedSpend],
    now: datetime,
) -> tuple[dict[str, PeriodTerms], list[LimitStanding]]:
    """Each budget's terms under every limit that counts it, and each limit's standing."""
    carried_on = {uid for share in shares for uid in share.inherited_from}
    terms: dict[str, PeriodTerms] = {share.uid: PeriodTerms() for share in shares}
    standing: list[LimitStanding] = []
    ordered = sorted(shares, key=lambda share: (share.created, share.uid))
    for limit in limits:
        start = period_start(limit.period, now)
        members = [s for s in ordered if in_scope(limit, s.namespace, s.owner)]
        gone = sum(
            d.spent
            for d in departed
            if d.period == limit.period
            and d.start == start
            and d.budget_uid not in carried_on
            and in_scope(limit, d.namespace, Owner(team=d.team, cost_center=d.cost_center))
        )
        spent = {s.uid: _spent_in(s, limit.period, start, now) for s in members}
        total = gone + sum(spent.values())
        room = max(0.0, limit.amount - total)
        burn = sum(s.burn_per_hour for s in members)
        claimed = gone
        for share in members:
            claim = spent[share.uid] + max(0.0, share.cost_cap - _spent_now(share, now))
            fits = claimed + claim <= limit.amount + FIT_TOLERANCE
            shortfall = (
                None
                if fits
                else f"{describe(limit)} has ${max(0.0, limit.amount - claimed):,.2f} left "
                f"beside earlier budgets, less than this budget's ${claim:,.2f}"
            )
            if share.claims:
                claimed += claim
            # Shared by burn rate, so every running budget reaches the limit at once; a
            # budget not burning may use all that is left (and so resume when there is room).
            level = _spent_now(share, now) + (
                room * share.burn_per_hour / burn if share.burn_per_hour > 0 else room
            )
            terms[share.uid] = _tighter(
                terms[share.uid],
                limit,
                level,
                shortfall,
                f"{describe(limit)}: ${total:,.2f} spent this period",
            )
        standing.append(LimitStanding(limit=limit, start=start, spent=total, claimed=claimed))
    return terms, standing


def _tighter(
    terms: PeriodTerms, limit: PeriodLimit, level: float, shortfall: str | None, summary: str
) -> PeriodTerms:
    """Fold one more limit into a budget's terms: the lower stop, every shortfall."""
    lower = terms.spend_limit is None or level < terms.spend_limit
    return PeriodTerms(
        spend_limit=level if lower else terms.spend_limit,
        binding=describe(limit) if lower else terms.binding,
        shortfall="; ".join(s for s in (terms.shortfall, shortfall) if s) or None,
        periods=tuple(sorted({*terms.periods, Period(limit.period)})),
        summary="; ".join(s for s in (terms.summary, summary) if s),
    )


def departures(
    uid: str,
    namespace: str,
    owner: Owner,
    marks: Sequence[PeriodMark],
    spent: float,
    now: datetime,
) -> list[DepartedSpend]:
    """What a deleted budget spent in each current period, for the policy's status."""
    return [
        DepartedSpend(
            budget_uid=uid,
            namespace=namespace,
            team=owner.team,
            cost_center=owner.cost_center,
            period=mark.period,
            start=mark.start,
            spent=round(max(0.0, spent - mark.spent_at_start), 6),
        )
        for mark in marks
        if mark.start == period_start(mark.period, now)
    ]


def keep_current(departed: Sequence[DepartedSpend], now: datetime) -> list[DepartedSpend]:
    """Departures of past periods count for nothing: the policy's status forgets them."""
    return [d for d in departed if d.start == period_start(d.period, now)]
