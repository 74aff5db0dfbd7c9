"""Status conditions, the way Kubernetes API conventions describe them.

``lastTransitionTime`` moves only when a condition's status flips, so a reader
can tell how long a budget has been, say, without metrics. The types are
:class:`gpu_budget.reasons.ConditionType`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from gpu_budget.models import Condition
from gpu_budget.reasons import ConditionType

ConditionStatus = Literal["True", "False", "Unknown"]


def set_condition(
    conditions: list[Condition],
    type_: ConditionType,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """Return ``conditions`` with ``type_`` set, keeping the others in order."""
    previous = find(conditions, type_)
    transitioned = previous is None or previous.status != status
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=now
        if transitioned or previous is None
        else previous.last_transition_time,
        observed_generation=generation,
    )
    result = [c for c in conditions if c.type != type_]
    index = next((i for i, c in enumerate(conditions) if c.type == type_), len(result))
    result.insert(index, updated)
    return result


def find(conditions: list[Condition], type_: ConditionType) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: list[Condition], type_: ConditionType) -> bool:
    condition = find(conditions, type_)
    return condition is not None and condition.status == "True"
