"""Finance approval: which budgets need it, and how much spend an approval covers.

A budget needs finance's approval when its cap, or its estimate with
contingency, is above the organisation's ceiling. Finance approves an amount
(the ``gpubudget.dev/approved-amount`` annotation, which only finance may set:
the API server enforces that with a ValidatingAdmissionPolicy). The approval
covers spend up to that amount: raising the cap above it needs approval again,
and meanwhile the run may go on up to the amount already approved.
"""

from __future__ import annotations

from collections.abc import Mapping

from gpu_budget import APPROVED_AMOUNT_ANNOTATION, APPROVED_CAP_ANNOTATION
from gpu_budget.formats import FormatError, parse_usd
from gpu_budget.models import InternalModel
from gpu_budget.reasons import Reason


class ApprovalDecision(InternalModel):
    required: bool
    """The cap or the estimate is above the ceiling."""
    approved_amount: float | None
    """What finance approved; None when not approved (or the annotation is malformed)."""
    approved_cap: float | None
    """The cap the budget had when finance approved; None when not recorded."""
    spend_limit: float
    """The most that may be spent now: the cap, or less while approval is short."""
    hard_limit: float
    """The most that may ever be spent, whatever the action at the cap: what finance
    approved (and at most the cap finance saw), or without an approval the ceiling.
    An Alert-only budget runs past its cap, never past this."""
    awaiting: bool
    """Approval is required and does not cover the cap."""
    reason: Reason
    message: str


def approved_amount(annotations: Mapping[str, str]) -> tuple[float | None, str | None]:
    """The approved amount, or None with a complaint when the annotation is unusable."""
    return _usd_annotation(annotations, APPROVED_AMOUNT_ANNOTATION)


def _usd_annotation(annotations: Mapping[str, str], key: str) -> tuple[float | None, str | None]:
    raw = annotations.get(key)
    if raw is None:
        return None, None
    try:
        return parse_usd(raw), None
    except FormatError as error:
        return None, f"{key}: {error}"


def covered_amount(annotations: Mapping[str, str]) -> tuple[float | None, float | None, str | None]:
    """What an approval covers: the amount, bounded by the cap finance saw when approving.

    Returns (amount, approved cap, complaint). An approval whose recorded cap is
    unreadable covers nothing: the record is what binds it to what finance saw.
    """
    amount, complaint = approved_amount(annotations)
    if amount is None:
        return None, None, complaint
    cap, cap_complaint = _usd_annotation(annotations, APPROVED_CAP_ANNOTATION)
    if cap_complaint is not None:
        return None, None, cap_complaint
    return amount, cap, None


def decide(
    cost_cap: float,
    estimate_total: float | None,
    ceiling: float,
    annotations: Mapping[str, str],
    period_shortfall: str | None = None,
) -> ApprovalDecision:
    """What finance's approval allows. Needed above the ceiling, and for a budget that
    does not fit what is left of a period's limit (``period_shortfall`` says why)."""
    amount, approved_cap, complaint = covered_amount(annotations)
    covered = (
        None if amount is None else min(amount, amount if approved_cap is None else approved_cap)
    )
    over = [f"cap ${cost_cap:,.2f}"] if cost_cap > ceiling else []
    if estimate_total is not None and estimate_total > ceiling:
        over.append(f"estimate with contingency ${estimate_total:,.2f}")
    if not over and period_shortfall is None:
        return ApprovalDecision(
            required=False,
            approved_amount=amount,
            approved_cap=approved_cap,
            spend_limit=cost_cap,
            hard_limit=max(ceiling, covered or 0.0),
            awaiting=False,
            reason=Reason.BELOW_CEILING,
            message=f"Cap and estimate are within the approval ceiling of ${ceiling:,.2f}.",
        )
    needs = "; ".join(
        part
        for part in (
            " and ".join(over) + f" above the approval ceiling of ${ceiling:,.2f}" if over else "",
            period_shortfall or "",
        )
        if part
    )
    if amount is None or covered is None:
        suffix = f" ({complaint})" if complaint else ""
        return ApprovalDecision(
            required=True,
            approved_amount=None,
            approved_cap=None,
            spend_limit=0.0,
            hard_limit=0.0,
            awaiting=True,
            reason=Reason.AWAITING_APPROVAL,
            message=f"Finance approval needed: {needs}{suffix}. Finance approves with "
            f"`kubectl annotate tb <name> {APPROVED_AMOUNT_ANNOTATION}=<USD>`.",
        )
    if covered < cost_cap:
        if approved_cap is not None and approved_cap < cost_cap and amount >= cost_cap:
            why = (
                f"Finance approved ${amount:,.2f} for a cap of ${approved_cap:,.2f}; the cap was "
                f"raised to ${cost_cap:,.2f} since, which the approval does not cover"
            )
        else:
            why = f"Finance approved ${amount:,.2f} but the cap is ${cost_cap:,.2f}"
        return ApprovalDecision(
            required=True,
            approved_amount=amount,
            approved_cap=approved_cap,
            spend_limit=covered,
            hard_limit=covered,
            awaiting=True,
            reason=Reason.APPROVAL_BELOW_CAP,
            message=f"{why}; the run may spend up to ${covered:,.2f} until finance approves "
            "the cap.",
        )
    return ApprovalDecision(
        required=True,
        approved_amount=amount,
        approved_cap=approved_cap,
        spend_limit=cost_cap,
        hard_limit=covered,
        awaiting=False,
        reason=Reason.APPROVED,
        message=f"Finance approved ${amount:,.2f}, covering the cap of ${cost_cap:,.2f}.",
    )
