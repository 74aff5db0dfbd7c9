"""Which budgets need finance, and what an approval covers."""

from __future__ import annotations

import pytest

from gpu_budget import APPROVED_AMOUNT_ANNOTATION, APPROVED_CAP_ANNOTATION
from gpu_budget.approval import approved_amount, decide

CEILING = 10_000.0


def approved(value: str) -> dict[str, str]:
    return {APPROVED_AMOUNT_ANNOTATION: value}


def test_below_ceiling_needs_no_approval() -> None:
    d = decide(5_000, 7_000, CEILING, {})
    assert not d.required and not d.awaiting
    assert d.spend_limit == 5_000


def test_cap_at_the_ceiling_is_not_above_it() -> None:
    assert not decide(CEILING, None, CEILING, {}).required


@pytest.mark.parametrize(("cap", "estimate"), [(20_000, None), (5_000, 12_000.5), (20_000, 30_000)])
def test_cap_or_estimate_above_ceiling_needs_approval(cap: float, estimate: float | None) -> None:
    d = decide(cap, estimate, CEILING, {})
    assert d.required and d.awaiting
    assert d.approved_amount is None
    assert d.spend_limit == 0
    assert "kubectl annotate" in d.message


def test_approval_covering_the_cap_lets_it_run_to_the_cap() -> None:
    d = decide(20_000, 15_000, CEILING, approved("20000"))
    assert d.required and not d.awaiting
    assert d.spend_limit == 20_000
    assert d.reason == "Approved"


def test_cap_raised_above_approval_runs_only_up_to_the_approved_amount() -> None:
    d = decide(30_000, None, CEILING, approved("20000"))
    assert d.awaiting
    assert d.spend_limit == 20_000
    assert d.reason == "ApprovalBelowCap"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("20000", 20000.0), ("$20,000", 20000.0), (" 1_000.50 ", 1000.5), ("0", 0.0)],
)
def test_approved_amount_formats(raw: str, expected: float) -> None:
    assert approved_amount(approved(raw)) == (expected, None)


@pytest.mark.parametrize("raw", ["lots", "-5", "nan", "inf", ""])
def test_malformed_approval_is_not_an_approval(raw: str) -> None:
    value, complaint = approved_amount(approved(raw))
    assert value is None and complaint is not None
    d = decide(20_000, None, CEILING, approved(raw))
    assert d.awaiting and d.spend_limit == 0
    assert "not" in d.message


# ------------------------------------------------------------ approval bound to a cap


def approved_for(amount: str, cap: str) -> dict[str, str]:
    return {APPROVED_AMOUNT_ANNOTATION: amount, APPROVED_CAP_ANNOTATION: cap}


def test_the_approval_records_the_cap_and_limits() -> None:
    d = decide(20_000, None, CEILING, approved_for("20000", "20000"))
    assert d.reason == "Approved" and not d.awaiting
    assert (d.approved_amount, d.approved_cap) == (20_000, 20_000)
    assert d.spend_limit == 20_000 and d.hard_limit == 20_000


def test_raising_the_cap_after_approval_is_not_covered_by_a_larger_amount() -> None:
    """Finance approved $30k for a $20k cap; the cap raised to $25k stays limited to $20k."""
    d = decide(25_000, None, CEILING, approved_for("30000", "20000"))
    assert d.required and d.awaiting
    assert d.reason == "ApprovalBelowCap"
    assert d.spend_limit == 20_000 and d.hard_limit == 20_000
    assert d.approved_amount == 30_000 and d.approved_cap == 20_000
    assert "raised" in d.message and "$20,000.00" in d.message and "$25,000.00" in d.message


def test_a_cap_raised_to_exactly_the_approved_amount_is_still_bound_to_the_old_cap() -> None:
    d = decide(30_000, None, CEILING, approved_for("30000", "20000"))
    assert d.reason == "ApprovalBelowCap" and d.spend_limit == 20_000


def test_lowering_the_cap_after_approval_stays_approved() -> None:
    d = decide(15_000, None, CEILING, approved_for("20000", "20000"))
    assert d.reason == "Approved" and not d.awaiting
    assert d.spend_limit == 15_000  # the cap
    assert d.hard_limit == 20_000  # what finance approved


def test_an_amount_below_the_approved_cap_covers_only_the_amount() -> None:
    d = decide(20_000, None, CEILING, approved_for("15000", "20000"))
    assert d.reason == "ApprovalBelowCap" and d.spend_limit == 15_000 and d.hard_limit == 15_000
    assert "raised" not in d.message


@pytest.mark.parametrize("raw", ["lots", "-1", "nan", ""])
def test_an_unreadable_approved_cap_means_no_approval(raw: str) -> None:
    d = decide(20_000, None, CEILING, approved_for("20000", raw))
    assert d.awaiting and d.reason == "AwaitingApproval"
    assert d.approved_amount is None and d.approved_cap is None
    assert d.spend_limit == 0 and d.hard_limit == 0
    assert APPROVED_CAP_ANNOTATION in d.message


def test_an_approval_without_a_recorded_cap_covers_its_amount() -> None:
    """Approvals recorded before the cap was: the amount alone binds."""
    d = decide(20_000, None, CEILING, approved("25000"))
    assert d.reason == "Approved" and d.approved_cap is None
    assert d.spend_limit == 20_000 and d.hard_limit == 25_000


def test_hard_limit_without_approval_is_the_ceiling() -> None:
    d = decide(5_000, None, CEILING, {})
    assert not d.required and d.hard_limit == CEILING
    assert decide(50_000, None, CEILING, {}).hard_limit == 0


def test_an_approval_above_the_ceiling_lifts_the_hard_limit_of_a_budget_below_it() -> None:
    d = decide(5_000, None, CEILING, approved_for("15000", "15000"))
    assert not d.required and d.hard_limit == 15_000
    assert decide(5_000, None, CEILING, approved_for("5000", "5000")).hard_limit == CEILING
