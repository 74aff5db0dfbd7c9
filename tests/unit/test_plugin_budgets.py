"""Unit tests for ``top``, ``pending`` and ``approve``: rows and annotations from budget objects."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpu_budget import APPROVED_AMOUNT_ANNOTATION
from gpu_budget.formats import parse_usd
from gpu_budget.plugin.approve import APPROVAL_REASON_ANNOTATION, plan_approval, usd_annotation
from gpu_budget.plugin.errors import PluginError
from gpu_budget.plugin.output import render
from gpu_budget.plugin.pending import COLUMNS as PENDING_COLUMNS
from gpu_budget.plugin.pending import pending_rows
from gpu_budget.plugin.top import COLUMNS, time_left_seconds, top_rows

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def budget(name: str, spent: float, cap: float, burn: float, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ml", "resourceVersion": "7", "annotations": {}},
        "spec": {"costCap": cap, "owner": {"team": "nlp", "costCenter": "cc1"}},
        "status": {"phase": "Running", "spent": spent, "burnRatePerHour": burn, **status},
    }


def test_top_sorts_by_spend_and_computes_time_left() -> None:
    rows = top_rows([budget("small", 10, 100, 0), budget("big", 50, 100, 100)])
    assert [r["name"] for r in rows] == ["big", "small"]
    assert rows[0]["time_left"] == "30m" and rows[1]["time_left"] is None
    table = render(rows, COLUMNS, "table")
    assert table.splitlines()[0].split()[:3] == ["NAMESPACE", "NAME", "PHASE"]
    assert "$50.00" in table


def test_top_says_where_each_budget_stands_under_the_limits_per_period() -> None:
    def period(reason: str, message: str) -> list[dict[str, str]]:
        return [{"type": "PeriodLimit", "status": "False", "reason": reason, "message": message}]

    rows = top_rows(
        [
            budget("free", 3, 100, 0),
            budget("waits", 2, 100, 0, conditions=period("DoesNotFitPeriod", "Needs finance")),
            budget("stopped", 1, 100, 0, conditions=period("PeriodLimitReached", "at the limit")),
        ]
    )
    assert [(r["name"], r["period"]) for r in rows] == [
        ("free", None),
        ("waits", "no room"),
        ("stopped", "at limit"),
    ]
    assert rows[1]["period_detail"] == "Needs finance"
    assert "PERIOD" in render(rows, COLUMNS, "table").splitlines()[0]


@given(st.floats(1, 1e6), st.floats(0, 1e6), st.floats(0.01, 1e5))
def test_time_left_is_what_the_burn_needs_to_reach_the_cap(
    cap: float, spent: float, burn: float
) -> None:
    left = time_left_seconds(cap, spent, burn)
    assert left is not None
    assert left == 0 if spent >= cap else abs(spent + burn * left / 3600 - cap) < 1e-6 * cap


def test_pending_lists_awaiting_budgets_longest_waiting_first() -> None:
    def waiting(name: str, since: str) -> dict[str, Any]:
        return budget(
            name,
            0,
            50_000,
            0,
            phase="AwaitingApproval",
            estimate={"total": 42_000},
            conditions=[{"type": "Approved", "status": "False", "lastTransitionTime": since}],
        )

    rows = pending_rows(
        [
            waiting("new", "2026-06-15T11:00:00Z"),
            budget("run", 1, 2, 3),
            waiting("old", "2026-06-13T12:00:00Z"),
        ],
        NOW,
    )
    assert [(r["name"], r["waiting"]) for r in rows] == [("old", "2d0h"), ("new", "1h00m")]
    assert rows[0]["estimate"] == 42_000
    assert render(rows, PENDING_COLUMNS, "csv").splitlines()[0].startswith("namespace,")


def test_approve_sets_the_amount_and_the_reason_at_the_version_seen() -> None:
    plan = plan_approval(budget("big", 0, 50_000, 0), "$50,000", " Q3 pretraining ", False)
    assert plan.annotations == {
        APPROVED_AMOUNT_ANNOTATION: "50000",
        APPROVAL_REASON_ANNOTATION: "Q3 pretraining",
    }
    assert plan.resource_version == "7" and plan.notes == []


def test_approve_below_the_cap_says_where_the_run_stops() -> None:
    plan = plan_approval(budget("big", 0, 50_000, 0), "20000", "half for now", False)
    assert "stops at the approved amount" in plan.notes[0]


def test_approve_does_not_replace_an_approval_unless_asked() -> None:
    body = budget("big", 0, 50_000, 0)
    body["metadata"]["annotations"] = {
        APPROVED_AMOUNT_ANNOTATION: "10000",
        "gpubudget.dev/approved-by": "bob",
    }
    with pytest.raises(PluginError, match="--overwrite"):
        plan_approval(body, "50000", "more", False)
    assert (
        "replaces the approval of 10000 USD by bob"
        in plan_approval(body, "50000", "more", True).notes
    )


@pytest.mark.parametrize(
    ("amount", "reason", "message"),
    [("1,5", "x", "--amount"), ("0", "x", "more than"), ("100", "  ", "--reason")],
)
def test_approve_refuses_what_the_operator_could_not_read(
    amount: str, reason: str, message: str
) -> None:
    with pytest.raises(PluginError, match=message):
        plan_approval(budget("b", 0, 1, 0), amount, reason, False)


@given(st.floats(0.01, 1e9))
def test_the_annotation_reads_back_as_the_amount_to_the_cent(amount: float) -> None:
    assert abs(parse_usd(usd_annotation(amount)) - amount) <= 0.005 + 1e-9 * amount
