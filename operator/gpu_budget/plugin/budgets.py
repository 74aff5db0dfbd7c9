"""The few facts the plugin reads off a TrainingBudget object.

Read field by field rather than through the operator's status model: that
model forbids unknown fields, and a plugin one release older or newer than the
operator should still show what it understands.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gpu_budget.formats import optional_time


def meta(body: Mapping[str, Any]) -> Mapping[str, Any]:
    value = body.get("metadata")
    return value if isinstance(value, Mapping) else {}


def section(body: Mapping[str, Any], *path: str) -> Mapping[str, Any]:
    value: Any = body
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def owner(body: Mapping[str, Any]) -> tuple[str, str]:
    """(team, cost centre) as the budget names them; blank when it names none."""
    own = section(body, "spec", "owner")
    return str(own.get("team") or ""), str(own.get("costCenter") or "")


def condition_since(body: Mapping[str, Any], type_: str, status: str) -> datetime | None:
    """When condition ``type_`` last turned ``status``, if it has that status now."""
    for condition in section(body, "status").get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == type_:
            if condition.get("status") == status:
                return optional_time(condition.get("lastTransitionTime"))
            return None
    return None
