"""Budget identity: a budget recreated under the same name takes over what the old one spent.

Deleting a TrainingBudget must not be a way to reset its spend or lift its stop.
The facts that make this true live on the workloads, which outlive the budget:
whenever the operator stops a workload, and when a budget is deleted, it writes
a spend record (``gpubudget.dev/spend-record``) on each of the budget's
workloads: the budget's uid, what it had spent, and its stop. Only the operator
may write that annotation (the workload guard policy), and the budget label
that ties a workload to a budget name cannot change, so a budget that finds
records of *other* uids on its workloads is a successor of those budgets: it
folds their spend into its ledger once (by uid) and starts stopped if they were.

Everything here is pure.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gpu_budget import SPEND_RECORD_ANNOTATION
from gpu_budget.models import Ledger, Phase, TrainingBudgetStatus
from gpu_budget.reasons import Reason
from gpu_budget.workloads import WorkloadFacts

MAX_INHERITED = 50
"""Predecessor uids kept in the ledger; older ones fold into the totals only."""

INHERITED_STOPS = frozenset({Reason.CAP_REACHED, Reason.APPROVAL_EXHAUSTED})
"""Stops a successor keeps. An idle stop is lifted by editing the budget, and a
recreated budget is an edit; a deletion hold is lifted by the budget coming back."""


class SpendRecord(BaseModel):
    """What a budget had spent and how it stood when it last stopped one of its workloads."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    budget_uid: str = Field(alias="budgetUid", min_length=1)
    spent: float = Field(ge=0)
    phase: Phase
    reason: str | None = None
    limit_at_stop: float | None = Field(default=None, alias="limitAtStop", ge=0)
    at: datetime

    def to_annotation(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


class BadRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    workload: str
    error: str


def parse_record(raw: str) -> SpendRecord:
    """One parser for the annotation; raises ValueError with a readable message."""
    try:
        return SpendRecord.model_validate(json.loads(raw))
    except (json.JSONDecodeError, ValidationError) as error:
        raise ValueError(f"{SPEND_RECORD_ANNOTATION} is not a spend record: {error}") from None


def record_for(status: TrainingBudgetStatus, budget_uid: str, now: datetime) -> SpendRecord:
    """The record of a budget's spend and stop as of ``status``."""
    return SpendRecord(
        budget_uid=budget_uid,
        spent=status.spent,
        phase=Phase(status.phase),
        reason=status.enforcement.reason,
        limit_at_stop=status.enforcement.limit_at_stop,
        at=now,
    )


class Inheritance(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    status: TrainingBudgetStatus
    inherited: list[SpendRecord]
    """Records taken over in this pass (each predecessor once)."""
    bad: list[BadRecord]


def inherit(
    status: TrainingBudgetStatus, workloads: Sequence[WorkloadFacts], budget_uid: str
) -> Inheritance:
    """Fold the spend and stops of predecessors found on ``workloads`` into ``status``."""
    known = set(status.ledger.inherited_from)
    latest: dict[str, SpendRecord] = {}
    bad: list[BadRecord] = []
    for workload in workloads:
        if workload.spend_record is None:
            continue
        try:
            record = parse_record(workload.spend_record)
        except ValueError as error:
            bad.append(BadRecord(workload=f"{workload.kind}/{workload.name}", error=str(error)))
            continue
        if record.budget_uid == budget_uid or record.budget_uid in known:
            continue
        current = latest.get(record.budget_uid)
        if current is None or record.spent > current.spent:
            latest[record.budget_uid] = record
    if not latest:
        return Inheritance(status=status, inherited=[], bad=bad)
    records = sorted(latest.values(), key=lambda r: r.at)
    ledger = status.ledger
    closed = ledger.closed.model_copy(
        update={"spent": ledger.closed.spent + sum(r.spent for r in records)}
    )
    uids = [*ledger.inherited_from, *(r.budget_uid for r in records)][-MAX_INHERITED:]
    until = max(r.at for r in records)
    if ledger.inherited_until is not None:
        until = max(until, ledger.inherited_until)
    new_ledger: Ledger = ledger.model_copy(
        update={"closed": closed, "inherited_from": uids, "inherited_until": until}
    )
    update: dict[str, object] = {"ledger": new_ledger}
    stop = _strongest_stop(records)
    if stop is not None and status.phase not in (Phase.SUSPENDED, Phase.KILLED):
        update["phase"] = stop.phase
        update["enforcement"] = status.enforcement.model_copy(
            update={
                "reason": stop.reason,
                "limit_at_stop": stop.limit_at_stop,
                "stopped_at": stop.at,
                "spent_at_stop": stop.spent,
            }
        )
    return Inheritance(status=status.model_copy(update=update), inherited=records, bad=bad)


def _strongest_stop(records: Sequence[SpendRecord]) -> SpendRecord | None:
    """A kill outlives everything; otherwise the stop with the highest limit binds."""
    killed = [r for r in records if r.phase == Phase.KILLED]
    if killed:
        return killed[-1]
    stopped = [r for r in records if r.phase == Phase.SUSPENDED and r.reason in INHERITED_STOPS]
    return max(stopped, key=lambda r: r.limit_at_stop or 0.0, default=None)


def supersedes(record: SpendRecord, current: str | None) -> bool:
    """Whether ``record`` may replace a workload's current record.

    A record of the same budget with a lower spend is older and never replaces a
    newer one; a record of an earlier budget was inherited by this one, so this
    one's record replaces it; an unreadable record is replaced.
    """
    if current is None:
        return True
    try:
        existing = parse_record(current)
    except ValueError:
        return True
    return existing.budget_uid != record.budget_uid or record.spent >= existing.spent
