"""What each concern of a pass has to say: condition changes and Events, folded in one place.

Accounting, approval, thresholds, idle GPUs and the cap each look at the pass
and return :class:`Findings`; :func:`fold` applies every condition change with
the pass's instant and generation, and keeps the Events in order. So no concern
edits another's conditions, and none needs the clock to say what it found.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from gpu_budget.conditions import ConditionStatus, set_condition
from gpu_budget.models import Condition, InternalModel
from gpu_budget.reasons import ConditionType, Reason


class BudgetEvent(InternalModel):
    """A Kubernetes Event to post on the budget."""

    type: Literal["Normal", "Warning"]
    reason: Reason
    message: str
    notify: bool = False
    """Also sent to the policy's notification webhook: what someone acts on."""


class ConditionChange(InternalModel):
    type: ConditionType
    status: ConditionStatus
    reason: str
    """A :class:`Reason`, or the threshold reason that names a percentage."""
    message: str


class Findings(InternalModel):
    conditions: tuple[ConditionChange, ...] = ()
    events: tuple[BudgetEvent, ...] = ()


def fold(
    conditions: list[Condition],
    findings: Iterable[Findings],
    now: datetime,
    generation: int | None,
) -> tuple[list[Condition], list[BudgetEvent]]:
    """Apply every concern's condition changes, in order, and gather their Events."""
    events: list[BudgetEvent] = []
    for found in findings:
        for change in found.conditions:
            conditions = set_condition(
                conditions,
                change.type,
                change.status,
                change.reason,
                change.message,
                now,
                generation,
            )
        events.extend(found.events)
    return conditions, events
