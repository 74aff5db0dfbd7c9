"""``export --format focus``: FOCUS 1.0 rows, one per budget per charge period.

FOCUS (the FinOps Open Cost and Usage Specification) is the format FinOps
tools ingest; the FinOps Foundation's ``focus-validator`` checks the output
against 1.0 (a unit test runs it). Costs are what the operator charged: the
list, contracted, effective and billed cost of a budget are the same figure
(the operator prices at the policy's and catalog's prices and knows no
discounts). The charge is GPU time, priced per GPU-hour. Spot capacity is
``PricingCategory`` ``Dynamic``; team, cost centre and budget are ``Tags``;
GPU product, utilisation, idle cost and the approval are ``x_`` columns, which
FOCUS reserves for the provider's own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from gpu_budget.formats import rfc3339
from gpu_budget.plugin.history import BudgetFacts, History, Usage
from gpu_budget.plugin.increments import Attribution
from gpu_budget.plugin.periods import Period, billing_month

COLUMNS = (
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "CommitmentDiscountCategory",
    "CommitmentDiscountId",
    "CommitmentDiscountName",
    "CommitmentDiscountStatus",
    "CommitmentDiscountType",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "ContractedUnitPrice",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "ListUnitPrice",
    "PricingCategory",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "SkuId",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "Tags",
)
"""The FOCUS 1.0 columns: every mandatory one, and the conditional ones a GPU charge has."""

VALIDATOR_ALIASES = {
    "ChargeType": "ChargeCategory",
    "InvoiceIssuer": "InvoiceIssuerName",
    "Provider": "ProviderName",
    "Publisher": "PublisherName",
    "ResourceID": "ResourceId",
}
"""Columns ``focus-validator`` 1.0.0 requires under their pre-release names, copied.

The only validator release checks "1.0" with the names of the 1.0 preview and
reads ``ChargeType`` in its SkuPriceId rule; the export carries those copies
after the FOCUS columns so the Foundation's own tool passes it (docs/reports.md).
"""

CUSTOM_COLUMNS = (
    "x_GpuProduct",
    "x_InstanceType",
    "x_CapacityType",
    "x_GpuUtilization",
    "x_IdleCost",
    "x_ApprovedAmount",
)

HEADER = (*COLUMNS, *VALIDATOR_ALIASES, *CUSTOM_COLUMNS)

PRICING_CATEGORY = {"spot": "Dynamic", "on-demand": "Standard"}
"""Spot is interruptible, priced by the market: FOCUS's Dynamic. Mixed capacity is Other."""

UNIT = "GPU-Hours"


@dataclass(frozen=True)
class Issuer:
    """Who the rows say bills and provides the GPU time (flags of ``export``)."""

    billing_account: str = "gpu-budget"
    invoice_issuer: str = "Platform team"
    provider: str = "Kubernetes"


def focus_rows(history: History, issuer: Issuer) -> list[dict[str, str]]:
    """The FOCUS rows of ``history``, by charge period then budget; empty usage is no row."""
    rows = []
    for (who, index), usage in sorted(
        history.usage.items(), key=lambda item: (item[0][1], item[0][0])
    ):
        if usage.spent <= 0 and usage.gpu_hours <= 0:
            continue
        facts = history.facts.get(who.key, BudgetFacts())
        rows.append(focus_row(who, history.periods[index], usage, facts, issuer))
    return rows


def focus_row(
    who: Attribution, period: Period, usage: Usage, facts: BudgetFacts, issuer: Issuer
) -> dict[str, str]:
    month = billing_month(period.start)
    cost = _decimal(usage.spent)
    hours = usage.gpu_hours if usage.gpu_hours > 0 else None
    unit_price = None if hours is None else _decimal(usage.spent / hours)
    sku = facts.instance_type or facts.gpu_product or "gpu"
    category = PRICING_CATEGORY.get(facts.capacity_type, "Other" if facts.capacity_type else "")
    tags = {"namespace": who.namespace, "budget": who.budget}
    if who.team:
        tags["team"] = who.team
    if who.cost_center:
        tags["cost-center"] = who.cost_center
    row = {
        "BilledCost": cost,
        "BillingAccountId": issuer.billing_account,
        "BillingAccountName": issuer.billing_account,
        "BillingCurrency": "USD",
        "BillingPeriodEnd": rfc3339(month.end),
        "BillingPeriodStart": rfc3339(month.start),
        "ChargeCategory": "Usage",
        "ChargeClass": "",
        "ChargeDescription": f"GPU time of TrainingBudget {who.namespace}/{who.budget}",
        "ChargeFrequency": "Usage-Based",
        "ChargePeriodEnd": rfc3339(period.end),
        "ChargePeriodStart": rfc3339(period.start),
        "ConsumedQuantity": "" if hours is None else _decimal(hours),
        "ConsumedUnit": "" if hours is None else UNIT,
        "ContractedCost": cost,
        "ContractedUnitPrice": unit_price or "",
        "EffectiveCost": cost,
        "InvoiceIssuerName": issuer.invoice_issuer,
        "ListCost": cost,
        "ListUnitPrice": unit_price or "",
        "PricingCategory": category,
        "PricingQuantity": "" if hours is None else _decimal(hours),
        "PricingUnit": "" if hours is None else UNIT,
        "ProviderName": issuer.provider,
        "PublisherName": issuer.provider,
        "RegionId": facts.region,
        "RegionName": facts.region,
        "ResourceId": f"{who.namespace}/{who.budget}",
        "ResourceName": who.budget,
        "ResourceType": "TrainingBudget",
        "ServiceCategory": "AI and Machine Learning",
        "ServiceName": "GPU training",
        "SkuId": sku,
        "SkuPriceId": f"{sku}/{facts.capacity_type or 'any'}/{facts.region or 'any'}",
        "SubAccountId": who.namespace,
        "SubAccountName": who.namespace,
        "Tags": json.dumps(tags, sort_keys=True),
        "x_GpuProduct": facts.gpu_product,
        "x_InstanceType": facts.instance_type,
        "x_CapacityType": facts.capacity_type,
        "x_GpuUtilization": "" if usage.utilization is None else f"{usage.utilization:.4f}",
        "x_IdleCost": _decimal(usage.idle),
        "x_ApprovedAmount": "" if facts.approved is None else _decimal(facts.approved),
    }
    row.update({alias: row[column] for alias, column in VALIDATOR_ALIASES.items()})
    return {column: row.get(column, "") for column in HEADER}


def _decimal(value: float) -> str:
    """A decimal to a millionth, point always written (FOCUS decimals, never exponent form)."""
    return f"{value:.6f}"
