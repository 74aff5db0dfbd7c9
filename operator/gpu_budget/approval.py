"""Finance approval: which budgets need it, and how much spend an approval covers.

A budget needs finance's approval when its cap, or its estimate with
contingency, is above the organisation's ceiling. Finance approves an amount
(the ``gpubudget.dev/approved-amount`` annotation, which only finance may set:
the API server enforces that with a ValidatingAdmissionPolicy). The approval
covers spend up to that amount: raising the cap above it needs approval again,
and meanwhile the run may go on up to the amount already approved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

from gpu_budget import APPROVED_AMOUNT_ANNOTATION


class ApprovalDecision(BaseModel):
    model_config = ConfigDict(frozen=True)

    required: bool
    """The cap or the estimate is above the ceiling."""
    approved_amount: float | None
    """What finance approved; None when not approved (or the annotation is malformed)."""
    spend_limit: float
    """The most that may be spent now: the cap, or less while approval is short."""
    awaiting: bool
    """Approval is required and does not cover the cap."""
    reason: str
    message: str


def approved_amount(annotations: Mapping[str, str]) -> tuple[float | None, str | None]:
    """The approved amount, or None with a complaint when the annotation is unusable."""
    raw = annotations.get(APPROVED_AMOUNT_ANNOTATION)
    if raw is None:
        return None, None
    text = raw.strip().removeprefix("$").replace(",", "").replace("_", "")
    try:
        value = float(text)
    except ValueError:
        return None, f"{APPROVED_AMOUNT_ANNOTATION}={raw!r} is not a number of USD"
    if not math.isfinite(value) or value < 0:
        return None, f"{APPROVED_AMOUNT_ANNOTATION}={raw!r} is not a non-negative amount"
    return value, None


def decide(
    cost_cap: float,
    estimate_total: float | None,
    ceiling: float,
    annotations: Mapping[str, str],
) -> ApprovalDecision:
    amount, complaint = approved_amount(annotations)
    over = [f"cap ${cost_cap:,.2f}"] if cost_cap > ceiling else []
    if estimate_total is not None and estimate_total > ceiling:
        over.append(f"estimate with contingency ${estimate_total:,.2f}")
    if not over:
        return ApprovalDecision(
            required=False,
            approved_amount=amount,
            spend_limit=cost_cap,
            awaiting=False,
            reason="BelowCeiling",
            message=f"Cap and estimate are within the approval ceiling of ${ceiling:,.2f}.",
        )
    needs = " and ".join(over) + f" above the approval ceiling of ${ceiling:,.2f}"
    if amount is None:
        suffix = f" ({complaint})" if complaint else ""
        return ApprovalDecision(
            required=True,
            approved_amount=None,
            spend_limit=0.0,
            awaiting=True,
            reason="AwaitingApproval",
            message=f"Finance approval needed: {needs}{suffix}. Finance approves with "
            f"`kubectl annotate tb <name> {APPROVED_AMOUNT_ANNOTATION}=<USD>`.",
        )
    if amount < cost_cap:
        return ApprovalDecision(
            required=True,
            approved_amount=amount,
            spend_limit=amount,
            awaiting=True,
            reason="ApprovalBelowCap",
            message=f"Finance approved ${amount:,.2f} but the cap is ${cost_cap:,.2f}; the run "
            f"may spend up to the approved amount until finance approves the cap.",
        )
    return ApprovalDecision(
        required=True,
        approved_amount=amount,
        spend_limit=cost_cap,
        awaiting=False,
        reason="Approved",
        message=f"Finance approved ${amount:,.2f}, covering the cap of ${cost_cap:,.2f}.",
    )
