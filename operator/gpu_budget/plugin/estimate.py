"""``estimate``: what a run would cost, on every instance type that has its GPUs.

Every figure is :func:`gpu_budget.estimate.price_estimate`, the operator's own
pricing: the headline is the estimate exactly as the operator would put it in
the budget's status, and each comparison row prices the same run on one
catalog entry (one cloud, instance type and region) by handing
``price_estimate`` a catalog of that entry alone and the policy's overrides
that could apply in its region. Whether the run needs finance is
:func:`gpu_budget.approval.decide` against the policy's ceiling.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpu_budget.approval import decide
from gpu_budget.catalog import Catalog, CatalogEntry, name_key
from gpu_budget.estimate import price_estimate
from gpu_budget.models import (
    BudgetPolicySpec,
    CapacityType,
    Estimate,
    EstimateStatus,
    PricingOverrides,
)
from gpu_budget.plugin.errors import PluginError
from gpu_budget.plugin.output import Cell, Column, text, usd


@dataclass(frozen=True)
class Request:
    """A run to price: from flags, or from a budget's ``spec.estimate`` and workloads."""

    estimate: Estimate
    gpus: float
    cap: float | None = None
    region: str | None = None


@dataclass(frozen=True)
class Quote:
    """The headline estimate and the side-by-side options."""

    request: Request
    estimate: EstimateStatus
    needs_finance: bool
    ceiling: float
    options: list[dict[str, Cell]]


COLUMNS = (
    Column("cloud", "cloud"),
    Column("instance_type", "instance type"),
    Column("region", "region"),
    Column("gpus_per_instance", "gpus/inst"),
    Column("on_demand_gpu_hour", "on-demand $/gpu-h", usd),
    Column("on_demand_total", "on-demand total", usd),
    Column("spot_gpu_hour", "spot $/gpu-h", usd),
    Column("spot_total", "spot total", usd),
    Column("finance", "finance", text),
)


def gpus_for(estimate: Estimate, gpus: float | None, catalog: Catalog) -> float:
    """The GPUs to price: given, else the estimate's, else one instance of its type."""
    if gpus is not None:
        return gpus
    if estimate.gpus is not None:
        return float(estimate.gpus)
    if estimate.instance_type is not None:
        per_instance = catalog.gpus_for(estimate.instance_type)
        if per_instance is not None:
            return float(per_instance)
    raise PluginError("say how many GPUs the run uses (--gpus)")


def quote(request: Request, policy: BudgetPolicySpec, catalog: Catalog) -> Quote:
    """Price ``request`` under ``policy``: the headline and one row per matching catalog entry."""
    headline = price_estimate(
        request.estimate, request.gpus, policy.pricing, policy.contingency, catalog
    )
    options = [
        _option(entry, request, policy)
        for entry in _matching(request, catalog)
        if request.region is None or name_key(entry.region) == name_key(request.region)
    ]
    return Quote(
        request=request,
        estimate=headline,
        needs_finance=_needs_finance(request.cap, headline.total, policy),
        ceiling=policy.approval_ceiling,
        options=options,
    )


def _matching(request: Request, catalog: Catalog) -> list[CatalogEntry]:
    """Entries with the run's GPUs: the product named, or the instance type's product."""
    product = request.estimate.gpu_product
    instance_type = request.estimate.instance_type
    if product is None and instance_type is not None:
        product = catalog.product_for(instance_type)
    if product is None:
        return []
    return catalog.for_gpu_product(product)


def _option(entry: CatalogEntry, request: Request, policy: BudgetPolicySpec) -> dict[str, Cell]:
    one = Catalog(entries=[entry])
    pricing = _overrides_in(policy.pricing, entry.region)
    row: dict[str, Cell] = {
        "cloud": entry.cloud,
        "instance_type": entry.instance_type,
        "region": entry.region,
        "gpus_per_instance": entry.gpus,
    }
    finance = []
    for capacity, key in ((CapacityType.ON_DEMAND, "on_demand"), (CapacityType.SPOT, "spot")):
        estimate = Estimate(
            hours=request.estimate.hours, instance_type=entry.instance_type, capacity_type=capacity
        )
        priced = price_estimate(estimate, request.gpus, pricing, policy.contingency, one)
        if capacity == CapacityType.SPOT and "no spot price" in priced.priced_from:
            row[f"{key}_gpu_hour"] = row[f"{key}_total"] = None  # the cloud publishes none
            continue
        row[f"{key}_gpu_hour"] = round(priced.gpu_hourly_price, 4)
        row[f"{key}_total"] = round(priced.total, 2)
        if _needs_finance(request.cap, priced.total, policy):
            finance.append(capacity.value)
    row["finance"] = ", ".join(finance) or "no"
    return row


def _overrides_in(pricing: PricingOverrides, region: str) -> PricingOverrides:
    """The policy's overrides a node in ``region`` could get (region-less ones and its own)."""
    return pricing.model_copy(
        update={
            "instance_types": [
                o
                for o in pricing.instance_types
                if o.region is None or name_key(o.region) == name_key(region)
            ]
        }
    )


def _needs_finance(cap: float | None, total: float, policy: BudgetPolicySpec) -> bool:
    return decide(cap or 0.0, total, policy.approval_ceiling, {}).required


def summary(quote: Quote, policy_source: str) -> str:
    """The lines above the table: the headline estimate, as the budget's status would say."""
    e = quote.estimate
    capacity = quote.request.estimate.capacity_type or CapacityType.ON_DEMAND
    finance = (
        f"needs finance approval (above the ${quote.ceiling:,.2f} ceiling)"
        if quote.needs_finance
        else f"within the ${quote.ceiling:,.2f} approval ceiling: no finance approval needed"
    )
    cap = "" if quote.request.cap is None else f", cap ${quote.request.cap:,.2f}"
    return (
        f"Policy: {policy_source}\n"
        f"Estimate: {e.gpus:g} GPUs x {e.hours:g} h x ${e.gpu_hourly_price:,.4f}/GPU-h "
        f"({CapacityType(capacity).value}) = ${e.base_cost:,.2f}, "
        f"+{e.contingency:.0%} contingency = ${e.total:,.2f}{cap}\n"
        f"Priced from: {e.priced_from}\n"
        f"Finance: {finance}\n"
    )
