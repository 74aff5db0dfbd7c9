"""``pending``: budgets waiting for finance, with what they ask and how long they have waited.

A budget waits from the moment its ``Approved`` condition turned False (the
instant the alert "awaiting approval for more than a day" measures from too).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from gpu_budget.models import Phase
from gpu_budget.plugin.budgets import condition_since, meta, number, owner, section
from gpu_budget.plugin.output import Cell, Column, text, usd
from gpu_budget.plugin.periods import human_duration

APPROVED = "Approved"

COLUMNS = (
    Column("namespace", "namespace"),
    Column("name", "name"),
    Column("cap", "cap", usd),
    Column("estimate", "estimate", usd),
    Column("approved", "approved", usd),
    Column("waiting", "waiting", text),
    Column("team", "team", text),
    Column("cost_center", "cost center", text),
    Column("reason", "why", text),
)


def pending_rows(budgets: Iterable[Mapping[str, Any]], now: datetime) -> list[dict[str, Cell]]:
    """Budgets in phase AwaitingApproval, the longest waiting first."""
    rows = [
        _row(b, now)
        for b in budgets
        if section(b, "status").get("phase") == Phase.AWAITING_APPROVAL
    ]
    rows.sort(key=lambda r: -float(r["waiting_seconds"] or 0))
    return rows


def _row(body: Mapping[str, Any], now: datetime) -> dict[str, Cell]:
    status = section(body, "status")
    since = condition_since(body, APPROVED, "False")
    waited = None if since is None else (now - since).total_seconds()
    team, cost_center = owner(body)
    return {
        "namespace": meta(body).get("namespace"),
        "name": meta(body).get("name"),
        "cap": number(section(body, "spec").get("costCap")),
        "estimate": number(section(body, "status", "estimate").get("total")),
        "approved": number(section(body, "status", "approval").get("approvedAmount")),
        "waiting_since": None if since is None else since.isoformat(),
        "waiting_seconds": waited,
        "waiting": None if waited is None else human_duration(waited),
        "team": team,
        "cost_center": cost_center,
        "reason": section(status, "enforcement").get("reason"),
    }
