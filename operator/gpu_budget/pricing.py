"""What a GPU costs per hour: node prices, pod rates and pre-run estimates.

Everything here is a pure function over plain data so the meter can be tested
without a cluster: callers hand in the Node as a dict (as kopf gives it) and the
``BudgetPolicy`` pricing overrides; the only I/O is reading the packaged
catalog once.

A node is priced from the most specific source available, because a figure a
human wrote down for *this* node or *this* organisation is better than a list
price:

1. the node annotation ``gpubudget.dev/hourly-price`` (whole node, USD/h);
2. a policy ``instanceTypes`` override (whole node), region- and
   capacity-type-specific entries beating generic ones;
3. a policy ``gpuProducts`` override (per GPU) for the node's GPU product;
4. the built-in catalog for the instance type (same region, else another
   region), spot falling back to on-demand when no spot figure is recorded;
5. the policy's ``fallbackGpuHourlyPrice`` per GPU, marked ``known=False`` so
   the budget can raise a condition naming the node.

Per-GPU price = node price / GPUs on the node, so a pod pays its share of the
node whatever the node's size. ``NodePrice.source`` says in words where the
price came from; it ends up in events and conditions, so it is written for a
human reading ``kubectl describe``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import date
from functools import cache
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gpu_budget import GPU_RESOURCE, NODE_PRICE_ANNOTATION
from gpu_budget.models import (
    ApiModel,
    CapacityType,
    Estimate,
    EstimateStatus,
    GpuProductPrice,
    InstanceTypePrice,
    PricingOverrides,
)

# Labels clouds and GPU feature discovery put on nodes. The legacy beta labels
# are still set by some older node images, so they are read as a second choice.
INSTANCE_TYPE_LABELS = ("node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type")
REGION_LABELS = ("topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region")
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_COUNT_LABEL = "nvidia.com/gpu.count"

# Capacity-type labels, read in this order; the first one with a recognised
# value decides. Values are compared case-insensitively.
_CAPACITY_LABELS: tuple[tuple[str, Mapping[str, CapacityType]], ...] = (
    (
        "karpenter.sh/capacity-type",
        # "reserved" is an on-demand capacity reservation, billed at on-demand rates.
        {
            "spot": CapacityType.SPOT,
            "on-demand": CapacityType.ON_DEMAND,
            "reserved": CapacityType.ON_DEMAND,
        },
    ),
    (
        "eks.amazonaws.com/capacityType",
        # Capacity blocks are priced separately by AWS; on-demand is the closest
        # catalog figure, and a platform team can override it in the policy.
        {
            "spot": CapacityType.SPOT,
            "on_demand": CapacityType.ON_DEMAND,
            "capacity_block": CapacityType.ON_DEMAND,
        },
    ),
    ("lifecycle", {"ec2spot": CapacityType.SPOT}),
    ("cloud.google.com/gke-spot", {"true": CapacityType.SPOT}),
    ("cloud.google.com/gke-preemptible", {"true": CapacityType.SPOT}),
    ("kubernetes.azure.com/scalesetpriority", {"spot": CapacityType.SPOT}),
)

CATALOG_RESOURCE = "data/catalog.json"


# --------------------------------------------------------------------------- catalog


class CatalogEntry(ApiModel):
    """One instance type in one region, as published by its cloud."""

    cloud: Literal["aws", "gcp", "azure"]
    instance_type: str = Field(min_length=1)
    region: str = Field(min_length=1)
    gpus: int = Field(ge=1, description="GPUs in one instance.")
    gpu_product: str = Field(min_length=1, description="nvidia.com/gpu.product of the GPUs.")
    on_demand: float = Field(gt=0, description="Whole instance, USD per hour.")
    spot: float | None = Field(default=None, gt=0, description="Whole instance, USD per hour.")
    source: str = Field(min_length=1)
    as_of: date

    def hourly_price(self, capacity: CapacityType) -> tuple[float, bool]:
        """Instance price for ``capacity`` and whether spot fell back to on-demand.

        A spot node with no recorded spot figure is charged on-demand: that
        over-states spend rather than under-states it, which is the safe side
        for a hard budget.
        """
        if capacity == CapacityType.SPOT:
            if self.spot is not None:
                return self.spot, False
            return self.on_demand, True
        return self.on_demand, False

    def label(self) -> str:
        return f"{self.cloud} {self.instance_type} {self.region}"


class Catalog(ApiModel):
    """The built-in price list: a description and entries, with lookups.

    The catalog is small (tens of entries), so lookups are linear scans; names
    are compared case-insensitively because clouds are not consistent about
    the case of instance types and regions in node labels.
    """

    description: str = ""
    entries: list[CatalogEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> Catalog:
        """Two prices for the same instance in the same region would make lookups ambiguous."""
        seen: set[tuple[str, str, str]] = set()
        for entry in self.entries:
            key = (entry.cloud, _fold(entry.instance_type), _fold(entry.region))
            if key in seen:
                raise ValueError(f"duplicate catalog entry {entry.label()}")
            seen.add(key)
        return self

    def for_instance_type(self, instance_type: str) -> list[CatalogEntry]:
        """All regions of ``instance_type``, in catalog order (reference region first)."""
        wanted = _fold(instance_type)
        return [e for e in self.entries if _fold(e.instance_type) == wanted]

    def lookup(self, instance_type: str, region: str | None) -> CatalogEntry | None:
        """The entry for exactly this instance type and region, if any."""
        if region is None:
            return None
        wanted = _fold(region)
        for entry in self.for_instance_type(instance_type):
            if _fold(entry.region) == wanted:
                return entry
        return None

    def find(self, instance_type: str, region: str | None) -> tuple[CatalogEntry, bool] | None:
        """The entry for this instance type, preferring ``region``.

        Returns the entry and whether it is from the requested region. When the
        region is missing or unknown, the first-listed region of the instance
        type stands in: a list price from another region is a better guess
        than the generic fallback.
        """
        exact = self.lookup(instance_type, region)
        if exact is not None:
            return exact, True
        candidates = self.for_instance_type(instance_type)
        if candidates:
            return candidates[0], False
        return None

    def gpus_for(self, instance_type: str) -> int | None:
        """GPUs in one ``instance_type``, or ``None`` when the catalog does not know it."""
        candidates = self.for_instance_type(instance_type)
        return candidates[0].gpus if candidates else None

    def product_for(self, instance_type: str) -> str | None:
        """The GPU product of ``instance_type``, or ``None`` when unknown."""
        candidates = self.for_instance_type(instance_type)
        return candidates[0].gpu_product if candidates else None

    def for_gpu_product(self, gpu_product: str) -> list[CatalogEntry]:
        """All entries whose GPUs are ``gpu_product``."""
        wanted = _fold(gpu_product)
        return [e for e in self.entries if _fold(e.gpu_product) == wanted]


@cache
def load_catalog() -> Catalog:
    """The catalog shipped in the package, read and validated once per process."""
    text = resources.files("gpu_budget").joinpath(CATALOG_RESOURCE).read_text(encoding="utf-8")
    return Catalog.model_validate_json(text)


# ----------------------------------------------------------------------------- nodes


class NodeFacts(BaseModel):
    """The parts of a Node that pricing needs, so pricing never sees a client object."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    gpu_capacity: int = Field(
        default=0,
        ge=0,
        description="nvidia.com/gpu from status.allocatable, else status.capacity.",
    )

    @classmethod
    def from_node(cls, node: Mapping[str, Any]) -> NodeFacts:
        """Build from a raw Node dict (camelCase JSON, as kopf and the API give it).

        Allocatable is preferred over capacity because it counts the GPUs pods
        can actually be given: with an unhealthy GPU the node's price is spread
        over the GPUs that are sold. Missing or malformed parts become empty
        values rather than errors: a node the meter cannot read still has to be
        priced (at worst by the fallback).
        """
        metadata = _mapping(node.get("metadata"))
        status = _mapping(node.get("status"))
        gpus = _parse_count(_mapping(status.get("allocatable")).get(GPU_RESOURCE))
        if gpus == 0:
            gpus = _parse_count(_mapping(status.get("capacity")).get(GPU_RESOURCE))
        return cls(
            name=str(metadata.get("name") or ""),
            labels=_str_dict(metadata.get("labels")),
            annotations=_str_dict(metadata.get("annotations")),
            gpu_capacity=gpus,
        )

    @property
    def instance_type(self) -> str | None:
        return _first_label(self.labels, INSTANCE_TYPE_LABELS)

    @property
    def region(self) -> str | None:
        return _first_label(self.labels, REGION_LABELS)

    @property
    def gpu_product(self) -> str | None:
        return _first_label(self.labels, (GPU_PRODUCT_LABEL,))

    @property
    def capacity_type(self) -> CapacityType:
        return capacity_type(self.labels)


def capacity_type(labels: Mapping[str, str]) -> CapacityType:
    """Spot or on-demand, from the labels Karpenter, EKS, GKE and AKS set.

    The first label (in the order of ``_CAPACITY_LABELS``) with a recognised
    value decides; a node with none of them is on-demand, the price that
    over-states rather than under-states spend.
    """
    for key, values in _CAPACITY_LABELS:
        value = labels.get(key)
        if value is None:
            continue
        decided = values.get(value.strip().lower())
        if decided is not None:
            return decided
    return CapacityType.ON_DEMAND


class NodePrice(BaseModel):
    """A node's hourly price, per node and per GPU, and where it came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node_hourly_price: float = Field(ge=0)
    gpu_hourly_price: float = Field(ge=0)
    gpus: int = Field(ge=0, description="GPUs the node price is divided by.")
    source: str = Field(description="Human-readable origin of the price.")
    known: bool = Field(description="False when the fallback price was used.")


def price_node(
    node: NodeFacts, pricing: PricingOverrides, catalog: Catalog | None = None
) -> NodePrice:
    """Price ``node`` from the most specific source available (see the module docstring).

    ``catalog`` defaults to the built-in catalog; pass ``Catalog()`` to price
    without one. Never raises for odd node data: a malformed annotation is
    ignored and the fact is appended to ``source``, so it shows up wherever the
    price is reported.
    """
    catalog = load_catalog() if catalog is None else catalog
    capacity = node.capacity_type
    instance_type = node.instance_type
    region = node.region

    gpus = _node_gpus(node, catalog)
    if gpus == 0:
        return NodePrice(
            node_hourly_price=0.0,
            gpu_hourly_price=0.0,
            gpus=0,
            source="no GPUs on node",
            known=True,
        )

    notes: list[str] = []

    # (1) The node's own annotation: someone priced this very node.
    raw = node.annotations.get(NODE_PRICE_ANNOTATION)
    if raw is not None:
        value = _parse_price(raw)
        if value is not None:
            return _whole_node(value, gpus, f"annotation {NODE_PRICE_ANNOTATION}", notes)
        notes.append(f"ignored malformed annotation {NODE_PRICE_ANNOTATION}={raw!r}")

    # (2) A policy price for the instance type.
    if instance_type is not None:
        it_override = _best_instance_override(
            pricing.instance_types, instance_type, region, capacity
        )
        if it_override is not None:
            return _whole_node(
                it_override.hourly_price, gpus, _describe_it_override(it_override), notes
            )

    # (3) A policy price for the GPU product (from the label, else the catalog).
    product = node.gpu_product
    product_note = ""
    if product is None and instance_type is not None:
        product = catalog.product_for(instance_type)
        product_note = " (product from catalog)"
    if product is not None:
        gp_override = _best_product_override(pricing.gpu_products, product, capacity)
        if gp_override is not None:
            source = _describe_gp_override(gp_override) + product_note
            return _per_gpu(gp_override.gpu_hourly_price, gpus, source, notes)

    # (4) The built-in catalog.
    if instance_type is not None:
        found = catalog.find(instance_type, region)
        if found is not None:
            entry, same_region = found
            price, spot_fell_back = entry.hourly_price(capacity)
            used = CapacityType.ON_DEMAND if spot_fell_back else capacity
            source = f"catalog {entry.label()} {used.value}"
            if not same_region:
                notes.append(
                    f"node region {region or 'unknown'} not in catalog, {entry.region} price used"
                )
            if spot_fell_back:
                notes.append("no spot price in catalog, on-demand used")
            return _whole_node(price, gpus, source, notes)

    # (5) Nothing knows this node: the policy's fallback, flagged as unknown.
    fallback = pricing.fallback_gpu_hourly_price
    what = f"instance type {instance_type}" if instance_type else "node without instance type"
    return _per_gpu(fallback, gpus, f"fallback: no price for {what}", notes, known=False)


def pod_hourly_rate(gpus: int, price: NodePrice) -> float:
    """What a pod holding ``gpus`` GPUs on a node priced at ``price`` costs per hour."""
    if gpus < 0:
        raise ValueError(f"a pod cannot hold {gpus} GPUs")
    return gpus * price.gpu_hourly_price


# ------------------------------------------------------------------------- estimates


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
       (a region-less entry first, else the cheapest region-specific one);
       its GPUs per instance come from the catalog;
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
    gpu_price, priced_from = _estimate_gpu_price(estimate, pricing, capacity, catalog)
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


def _estimate_gpu_price(
    estimate: Estimate, pricing: PricingOverrides, capacity: CapacityType, catalog: Catalog
) -> tuple[float, str]:
    instance_type = estimate.instance_type
    product = estimate.gpu_product
    notes: list[str] = []

    if instance_type is not None:
        # (1) Policy instance-type override; needs the catalog's GPU count to go per GPU.
        override = _estimate_instance_override(pricing.instance_types, instance_type, capacity)
        if override is not None:
            per_instance = catalog.gpus_for(instance_type)
            if per_instance is not None:
                return (
                    override.hourly_price / per_instance,
                    f"{_describe_it_override(override)} / {per_instance} GPUs",
                )
            notes.append(f"GPUs per {instance_type} unknown, policy instanceType price unused")
        if product is None:
            product = catalog.product_for(instance_type)

    # (2) Policy GPU-product override.
    if product is not None:
        gp_override = _best_product_override(pricing.gpu_products, product, capacity)
        if gp_override is not None:
            return gp_override.gpu_hourly_price, _with_notes(
                _describe_gp_override(gp_override), notes
            )

    # (3) Catalog by instance type.
    if instance_type is not None:
        best = _cheapest_per_gpu(catalog.for_instance_type(instance_type), capacity)
        if best is not None:
            price, entry, fell_back = best
            return price, _with_notes(_describe_catalog_estimate(entry, capacity, fell_back), notes)
        notes.append(f"instance type {instance_type} not in catalog")

    # (4) Catalog by GPU product.
    if product is not None:
        best = _cheapest_per_gpu(catalog.for_gpu_product(product), capacity)
        if best is not None:
            price, entry, fell_back = best
            source = f"{_describe_catalog_estimate(entry, capacity, fell_back)} for {product}"
            return price, _with_notes(source, notes)
        notes.append(f"GPU product {product} not in catalog")

    # (5) Fallback.
    fallback = pricing.fallback_gpu_hourly_price
    return fallback, _with_notes(f"fallback {fallback:g} USD per GPU-hour", notes)


def _estimate_instance_override(
    overrides: Iterable[InstanceTypePrice], instance_type: str, capacity: CapacityType
) -> InstanceTypePrice | None:
    """Region-less entries first (they are meant for any region), else the cheapest one."""
    wanted = _fold(instance_type)
    matching = [
        o
        for o in overrides
        if _fold(o.instance_type) == wanted and _capacity_matches(o.capacity_type, capacity)
    ]
    if not matching:
        return None
    return min(
        matching,
        key=lambda o: (o.region is not None, o.capacity_type is None, o.hourly_price),
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


def _describe_catalog_estimate(entry: CatalogEntry, capacity: CapacityType, fell_back: bool) -> str:
    used = CapacityType.ON_DEMAND if fell_back else capacity
    text = f"catalog {entry.label()} {used.value} / {entry.gpus} GPUs (cheapest listed)"
    if fell_back:
        text += ", no spot price in catalog, on-demand used"
    return text


# --------------------------------------------------------------------------- helpers


def _best_instance_override(
    overrides: Iterable[InstanceTypePrice],
    instance_type: str,
    region: str | None,
    capacity: CapacityType,
) -> InstanceTypePrice | None:
    """The most specific matching override: region beats no region, then capacity beats none.

    Among equally specific entries the first listed wins, so a policy reads
    top to bottom.
    """
    wanted_type = _fold(instance_type)
    wanted_region = _fold(region) if region is not None else None
    best: InstanceTypePrice | None = None
    best_score = (-1, -1)
    for override in overrides:
        if _fold(override.instance_type) != wanted_type:
            continue
        if override.region is not None and _fold(override.region) != wanted_region:
            continue
        if not _capacity_matches(override.capacity_type, capacity):
            continue
        score = (int(override.region is not None), int(override.capacity_type is not None))
        if score > best_score:
            best, best_score = override, score
    return best


def _best_product_override(
    overrides: Iterable[GpuProductPrice], product: str, capacity: CapacityType
) -> GpuProductPrice | None:
    """The matching GPU-product override, a capacity-specific one beating a generic one."""
    wanted = _fold(product)
    best: GpuProductPrice | None = None
    for override in overrides:
        if _fold(override.gpu_product) != wanted:
            continue
        if not _capacity_matches(override.capacity_type, capacity):
            continue
        if override.capacity_type is not None:
            return override
        if best is None:
            best = override
    return best


def _capacity_matches(entry: CapacityType | str | None, capacity: CapacityType) -> bool:
    # Policy models keep enum *values* (use_enum_values), so normalise before comparing.
    return entry is None or CapacityType(entry) == capacity


def _describe_it_override(override: InstanceTypePrice) -> str:
    parts = ["policy instanceType", override.instance_type]
    if override.region is not None:
        parts.append(override.region)
    if override.capacity_type is not None:
        parts.append(CapacityType(override.capacity_type).value)
    return " ".join(parts)


def _describe_gp_override(override: GpuProductPrice) -> str:
    parts = ["policy gpuProduct", override.gpu_product]
    if override.capacity_type is not None:
        parts.append(CapacityType(override.capacity_type).value)
    return " ".join(parts)


def _whole_node(price: float, gpus: int, source: str, notes: list[str]) -> NodePrice:
    return NodePrice(
        node_hourly_price=price,
        gpu_hourly_price=price / gpus,
        gpus=gpus,
        source=_with_notes(source, notes),
        known=True,
    )


def _per_gpu(
    gpu_price: float, gpus: int, source: str, notes: list[str], *, known: bool = True
) -> NodePrice:
    return NodePrice(
        node_hourly_price=gpu_price * gpus,
        gpu_hourly_price=gpu_price,
        gpus=gpus,
        source=_with_notes(source, notes),
        known=known,
    )


def _with_notes(source: str, notes: list[str]) -> str:
    return f"{source} ({'; '.join(notes)})" if notes else source


def _node_gpus(node: NodeFacts, catalog: Catalog) -> int:
    """GPUs to divide the node price by: the resource, else the GFD label, else the catalog.

    The resource comes first because it is what pods are scheduled against
    (with MIG's single strategy it counts slices, so a slice pays its share).
    The label and the catalog cover a node whose device plugin is not up yet.
    """
    if node.gpu_capacity > 0:
        return node.gpu_capacity
    from_label = _parse_count(node.labels.get(GPU_COUNT_LABEL))
    if from_label > 0:
        return from_label
    instance_type = node.instance_type
    if instance_type is not None:
        return catalog.gpus_for(instance_type) or 0
    return 0


def _parse_price(raw: str) -> float | None:
    """A non-negative, finite USD amount, or ``None`` when ``raw`` is not one.

    A leading ``$`` is tolerated because people write prices that way.
    """
    text = raw.strip().removeprefix("$").strip()
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return value


def _parse_count(raw: object) -> int:
    """A non-negative integer count from a quantity or label value; 0 when unreadable."""
    if isinstance(raw, bool):
        return 0
    if isinstance(raw, int):
        return max(raw, 0)
    if isinstance(raw, float):
        return int(raw) if math.isfinite(raw) and raw.is_integer() and raw > 0 else 0
    if isinstance(raw, str):
        text = raw.strip()
        if text.isdigit():
            return int(text)
        try:
            value = float(text)
        except ValueError:
            return 0
        return int(value) if math.isfinite(value) and value.is_integer() and value > 0 else 0
    return 0


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str_dict(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items() if v is not None}


def _first_label(labels: Mapping[str, str], keys: Iterable[str]) -> str | None:
    for key in keys:
        value = labels.get(key)
        if value:
            return value
    return None


def _fold(value: str) -> str:
    return value.strip().casefold()
