"""Status conditions, the way Kubernetes API conventions describe them.

``lastTransitionTime`` moves only when a condition's status flips, so a reader
can tell how long a budget has been, say, without metrics.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from gpu_budget.models import Condition

ConditionStatus = Literal["True", "False", "Unknown"]

METRICS_AVAILABLE = "MetricsAvailable"
"""True while Prometheus answers the utilisation query."""
PRICED = "Priced"
"""False while a pod of the budget runs on a node with no known price."""
SPEND_ESTIMATED = "SpendEstimated"
"""True once any spend was estimated rather than observed (never goes back)."""
APPROVED = "Approved"
"""Present when the budget needs finance: False while approval is missing or short."""
CAP_REACHED = "CapReached"
"""True while the run is stopped at (or, alert-only, past) its limit."""
THRESHOLD_REACHED = "ThresholdReached"
"""True once spend passed a warning threshold; the reason names the highest."""
IDLE = "GPUsIdle"
"""With an idle rule: True while the GPUs are below its utilisation threshold."""


def set_condition(
    conditions: list[Condition],
    type_: str,
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


def find(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: list[Condition], type_: str) -> bool:
    condition = find(conditions, type_)
    return condition is not None and condition.status == "True"


INHERITED = "Inherited"
"""True once the budget took over the spend (and stop) of an earlier budget of its name."""
VALID = "Valid"
"""False while something the budget depends on cannot be read (a workload, an annotation,
the action at the cap); the message says what and how to fix it."""
