"""What a run will cost before it runs: the estimate a budget's cap is checked against.

The region (and often the node) is unknown before the run is scheduled, so an
estimate is priced the way a node would be, minus the node: the policy's
overrides through the same matcher (:mod:`gpu_budget.overrides`), then the
built-in catalog (:mod:`gpu_budget.catalog`), then the fallback. Where a node
would know its region, an estimate quotes the cheapest one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gpu_budget.catalog import Catalog, CatalogEntry, load_catalog, name_key
from gpu_budget.models import (
    CapacityType,
    Estimate,
    EstimateStatus,
    InstanceTypePrice,
    PricingOverrides,
)
from gpu_budget.node_pricing import with_notes
from gpu_budget.overrides import best_override, describe_override


def price_estimate(
    estimate: Estimate,
    gpus: float,
    pricing: PricingOverrides,
    contingency: float,
    catalog: Catalog | None = None,
) -> EstimateStatus:
    """Price a pre-run estimate: ``gpus x hours x per-GPU price x (1 + contingency)``.

    The region is unknown before the run is scheduled, so prices are chosen
    without one, mirroring the order nodes are priced in:

    1. a policy ``instanceTypes`` override for ``estimate.instance_type``
       (the one a node of unknown region would get, else the one a node would
       get in the cheapest region the policy names); its GPUs per instance
       come from the catalog;
    2. a policy ``gpuProducts`` override for ``estimate.gpu_product``, or for
       the product the catalog records for the instance type;
    3. the catalog's entries for the instance type, cheapest region;
    4. the catalog's entries for the GPU product, cheapest per GPU;
    5. the policy fallback, said so in ``priced_from``.

    Cheapest is the price a planner would quote (US list prices are usually
    equal across regions); uncertainty is what ``contingency`` is for, and a
    platform team that knows its cloud sets a policy override, which always
    wins. Capacity type defaults to on-demand. ``Estimate`` allows only one of
    instanceType and gpuProduct; the code tolerates both (instance type first).
    ``gpus`` is the caller's resolved count (``estimate.gpus`` or the
    workloads' requests).
    """
    if gpus < 0:
        raise ValueError(f"an estimate cannot use {gpus} GPUs")
    if contingency < 0:
        raise ValueError(f"contingency must be >= 0, got {contingency}")
    catalog = load_catalog() if catalog is None else catalog
    capacity = CapacityType(estimate.capacity_type or CapacityType.ON_DEMAND)
    gpu_price, priced_from = _gpu_price(estimate, pricing, capacity, catalog)
    base = gpus * estimate.hours * gpu_price
    return EstimateStatus(
        gpus=gpus,
        hours=estimate.hours,
        gpu_hourly_price=gpu_price,
        base_cost=base,
        contingency=contingency,
        total=base * (1 + contingency),
        priced_from=priced_from,
    )


def _gpu_price(
    estimate: Estimate, pricing: PricingOverrides, capacity: CapacityType, catalog: Catalog
) -> tuple[float, str]:
    instance_type = estimate.instance_type
    product = estimate.gpu_product
    notes: list[str] = []

    if instance_type is not None:
        # (1) Policy instance-type override; needs the catalog's GPU count to go per GPU.
        override = _instance_override(pricing.instance_types, instance_type, capacity)
        if override is not None:
            per_instance = catalog.gpus_for(instance_type)
            if per_instance is not None:
                return (
                    override.hourly_price / per_instance,
                    f"{describe_override(override)} / {per_instance} GPUs",
                )
            notes.append(f"GPUs per {instance_type} unknown, policy instanceType price unused")
        if product is None:
            product = catalog.product_for(instance_type)

    # (2) Policy GPU-product override.
    if product is not None:
        gp_override = best_override(pricing.gpu_products, product, capacity)
        if gp_override is not None:
            return gp_override.gpu_hourly_price, with_notes(describe_override(gp_override), notes)

    # (3) Catalog by instance type.
    if instance_type is not None:
        best = _cheapest_per_gpu(catalog.for_instance_type(instance_type), capacity)
        if best is not None:
            price, entry, fell_back = best
            return price, with_notes(_describe_catalog(entry, capacity, fell_back), notes)
        notes.append(f"instance type {instance_type} not in catalog")

    # (4) Catalog by GPU product.
    if product is not None:
        best = _cheapest_per_gpu(catalog.for_gpu_product(product), capacity)
        if best is not None:
            price, entry, fell_back = best
            source = f"{_describe_catalog(entry, capacity, fell_back)} for {product}"
            return price, with_notes(source, notes)
        notes.append(f"GPU product {product} not in catalog")

    # (5) Fallback.
    fallback = pricing.fallback_gpu_hourly_price
    return fallback, with_notes(f"fallback {fallback:g} USD per GPU-hour", notes)


def _instance_override(
    overrides: Sequence[InstanceTypePrice], instance_type: str, capacity: CapacityType
) -> InstanceTypePrice | None:
    """The entry a node of unknown region would get, else the cheapest a node would get anywhere.

    A region-less entry is meant for any region, so it wins as it would on a
    node. Without one, each region the policy names is priced as a node there
    would be priced, and the cheapest is quoted, as for the catalog (ties go
    to the region listed first).
    """
    anywhere = best_override(overrides, instance_type, capacity)
    if anywhere is not None:
        return anywhere
    regions = dict.fromkeys(name_key(o.region) for o in overrides if o.region is not None)
    in_region = (best_override(overrides, instance_type, capacity, region) for region in regions)
    return min(
        (override for override in in_region if override is not None),
        key=lambda override: override.hourly_price,
        default=None,
    )


def _cheapest_per_gpu(
    entries: Iterable[CatalogEntry], capacity: CapacityType
) -> tuple[float, CatalogEntry, bool] | None:
    best: tuple[float, CatalogEntry, bool] | None = None
    for entry in entries:
        price, fell_back = entry.hourly_price(capacity)
        per_gpu = price / entry.gpus
        if best is None or per_gpu < best[0]:
            best = (per_gpu, entry, fell_back)
    return best


def _describe_catalog(entry: CatalogEntry, capacity: CapacityType, fell_back: bool) -> str:
    used = CapacityType.ON_DEMAND if fell_back else capacity
    text = f"catalog {entry.label()} {used.value} / {entry.gpus} GPUs (cheapest listed)"
    if fell_back:
        text += ", no spot price in catalog, on-demand used"
    return text
