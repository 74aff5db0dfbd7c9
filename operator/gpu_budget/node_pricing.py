"""What a running node's GPUs cost per hour, and the node facts that decide it.

Everything here is a pure function over plain data so the meter can be tested
without a cluster: callers hand in the Node as a dict (as kopf gives it) and
the ``BudgetPolicy`` pricing overrides.

A node is priced from the most specific source available, because a figure a
human wrote down for *this* node or *this* organisation is better than a list
price:

1. the node annotation ``gpubudget.dev/hourly-price`` (whole node, USD/h);
2. a policy ``instanceTypes`` override (whole node), region- and
   capacity-type-specific entries beating generic ones (see
   :mod:`gpu_budget.overrides`);
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

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gpu_budget import GPU_RESOURCE, NODE_PRICE_ANNOTATION
from gpu_budget.catalog import Catalog, load_catalog
from gpu_budget.formats import FormatError, parse_usd
from gpu_budget.gpus import QuantityError, parse_quantity
from gpu_budget.models import CapacityType, PricingOverrides
from gpu_budget.overrides import best_override, describe_override

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
        gpus = _whole_gpus(_mapping(status.get("allocatable")).get(GPU_RESOURCE))
        if gpus == 0:
            gpus = _whole_gpus(_mapping(status.get("capacity")).get(GPU_RESOURCE))
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
        try:
            value = parse_usd(raw)
        except FormatError:
            notes.append(f"ignored malformed annotation {NODE_PRICE_ANNOTATION}={raw!r}")
        else:
            return _whole_node(value, gpus, f"annotation {NODE_PRICE_ANNOTATION}", notes)

    # (2) A policy price for the instance type.
    if instance_type is not None:
        it_override = best_override(pricing.instance_types, instance_type, capacity, region)
        if it_override is not None:
            return _whole_node(
                it_override.hourly_price, gpus, describe_override(it_override), notes
            )

    # (3) A policy price for the GPU product (from the label, else the catalog).
    product = node.gpu_product
    product_note = ""
    if product is None and instance_type is not None:
        product = catalog.product_for(instance_type)
        product_note = " (product from catalog)"
    if product is not None:
        gp_override = best_override(pricing.gpu_products, product, capacity)
        if gp_override is not None:
            source = describe_override(gp_override) + product_note
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


def with_notes(source: str, notes: list[str]) -> str:
    """A price's source with what qualifies it in parentheses, as events and conditions show it.

    Shared with :mod:`gpu_budget.estimate`, so an estimate's ``pricedFrom``
    reads like a node price's source.
    """
    return f"{source} ({'; '.join(notes)})" if notes else source


def _whole_node(price: float, gpus: int, source: str, notes: list[str]) -> NodePrice:
    return NodePrice(
        node_hourly_price=price,
        gpu_hourly_price=price / gpus,
        gpus=gpus,
        source=with_notes(source, notes),
        known=True,
    )


def _per_gpu(
    gpu_price: float, gpus: int, source: str, notes: list[str], *, known: bool = True
) -> NodePrice:
    return NodePrice(
        node_hourly_price=gpu_price * gpus,
        gpu_hourly_price=gpu_price,
        gpus=gpus,
        source=with_notes(source, notes),
        known=known,
    )


def _node_gpus(node: NodeFacts, catalog: Catalog) -> int:
    """GPUs to divide the node price by: the resource, else the GFD label, else the catalog.

    The resource comes first because it is what pods are scheduled against
    (with MIG's single strategy it counts slices, so a slice pays its share).
    The label and the catalog cover a node whose device plugin is not up yet.
    """
    if node.gpu_capacity > 0:
        return node.gpu_capacity
    from_label = _whole_gpus(node.labels.get(GPU_COUNT_LABEL))
    if from_label > 0:
        return from_label
    instance_type = node.instance_type
    if instance_type is not None:
        return catalog.gpus_for(instance_type) or 0
    return 0


def _whole_gpus(raw: object) -> int:
    """A count of devices from a quantity or label value; 0 when missing, unreadable or fractional.

    0 makes the caller look further (capacity, the count label, the catalog)
    rather than divide a node's price by a count it could not read.
    """
    try:
        amount = parse_quantity(raw)
    except QuantityError:
        return 0
    return int(amount) if amount == amount.to_integral_value() else 0


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
