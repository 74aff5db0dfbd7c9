"""``approve``: finance's approval, written as finance's own ``kubectl annotate`` writes it.

The plugin sets ``gpubudget.dev/approved-amount`` (and the reason, in
``gpubudget.dev/approval-reason``) and nothing else: the operator's admission
webhook records who approved, when and for which cap (``approved-by``,
``approved-at``, ``approved-cap``), and the API server's approval guard decides
who may approve at all, so a Forbidden from it is the answer to show. The
write is conditional on the budget's resourceVersion, so finance approves the
budget it was shown: a cap raised in between fails the write instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpu_budget import APPROVED_AMOUNT_ANNOTATION, APPROVED_BY_ANNOTATION, GROUP
from gpu_budget.formats import FormatError, parse_usd
from gpu_budget.plugin.budgets import meta, number, section
from gpu_budget.plugin.errors import PluginError

APPROVAL_REASON_ANNOTATION = f"{GROUP}/approval-reason"
"""Why finance approved; the operator copies it into ``status.approval`` and the Event."""


@dataclass(frozen=True)
class Approval:
    annotations: dict[str, str]
    resource_version: str
    notes: list[str]
    """What finance should know: an amount short of the cap, an approval replaced."""


def plan_approval(
    body: Mapping[str, Any], amount_text: str, reason: str, overwrite: bool
) -> Approval:
    """The annotations that approve ``body`` for ``amount_text`` USD, or why not."""
    try:
        amount = parse_usd(amount_text)
    except FormatError as error:
        raise PluginError(f"--amount: {error}") from None
    if amount <= 0:
        raise PluginError("--amount must be more than $0 (remove the annotation to withdraw)")
    if not reason.strip():
        raise PluginError("--reason must say why (it is recorded with the approval)")
    annotations = meta(body).get("annotations") or {}
    name = meta(body).get("name")
    notes = []
    previous = annotations.get(APPROVED_AMOUNT_ANNOTATION)
    if previous is not None:
        by = annotations.get(APPROVED_BY_ANNOTATION, "someone")
        if not overwrite:
            raise PluginError(
                f"{name} is already approved for {previous} USD by {by}; "
                "pass --overwrite to replace that approval"
            )
        notes.append(f"replaces the approval of {previous} USD by {by}")
    cap = number(section(body, "spec").get("costCap"))
    if cap is not None and amount < cap:
        notes.append(
            f"${amount:,.2f} is below the cap of ${cap:,.2f}: the run stops at the approved amount"
        )
    return Approval(
        annotations={
            APPROVED_AMOUNT_ANNOTATION: usd_annotation(amount),
            APPROVAL_REASON_ANNOTATION: reason.strip(),
        },
        resource_version=str(meta(body).get("resourceVersion") or ""),
        notes=notes,
    )


def usd_annotation(amount: float) -> str:
    """A plain decimal (``50000``, ``1234.5``): what finance would type, to the cent."""
    return f"{amount:.2f}".rstrip("0").rstrip(".")
