"""Which budgets need finance, and what an approval covers."""

from __future__ import annotations

import pytest

from gpu_budget import APPROVED_AMOUNT_ANNOTATION
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
