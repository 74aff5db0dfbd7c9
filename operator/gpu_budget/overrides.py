"""Which of the policy's price overrides applies: one rule for nodes and estimates.

``BudgetPolicySpec.pricing`` lists whole-instance prices (``instanceTypes``,
optionally for one ``region`` and/or ``capacityType``) and per-GPU prices
(``gpuProducts``, optionally for one ``capacityType``). A node and a pre-run
estimate must agree on which entry a given instance type or product gets, so
both ask :func:`best_override`:

* an entry matches when it names the instance type or product (compared with
  :func:`~gpu_budget.catalog.name_key`), its ``capacityType`` is absent or
  the one asked for, and its ``region`` is absent or the one asked for (with
  no region asked for, only region-less entries match);
* of the matches the most specific wins: a region beats no region, then a
  capacity type beats none;
* among equally specific matches the first listed wins, so a policy reads top
  to bottom.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from gpu_budget.catalog import name_key
from gpu_budget.models import CapacityType, GpuProductPrice, InstanceTypePrice

Override = TypeVar("Override", InstanceTypePrice, GpuProductPrice)


def best_override(
    overrides: Iterable[Override],
    name: str,
    capacity: CapacityType,
    region: str | None = None,
) -> Override | None:
    """The entry of ``overrides`` that prices ``name`` (see the module docstring), if any.

    ``name`` is an instance type for ``instanceTypes`` entries and a GPU product
    for ``gpuProducts`` entries; ``region`` only ever matters to the former,
    as GPU-product prices are not per region.
    """
    wanted = name_key(name)
    wanted_region = name_key(region) if region is not None else None
    best: Override | None = None
    best_score = (-1, -1)
    for override in overrides:
        if name_key(_name(override)) != wanted:
            continue
        own_region = _region(override)
        if own_region is not None and name_key(own_region) != wanted_region:
            continue
        # Policy models keep enum *values* (use_enum_values), so normalise before comparing.
        if override.capacity_type is not None and CapacityType(override.capacity_type) != capacity:
            continue
        score = (int(own_region is not None), int(override.capacity_type is not None))
        if score > best_score:
            best, best_score = override, score
    return best


def describe_override(override: InstanceTypePrice | GpuProductPrice) -> str:
    """How a price's source names the entry, in the policy's own words and spelling."""
    if isinstance(override, InstanceTypePrice):
        parts = ["policy instanceType", override.instance_type]
        if override.region is not None:
            parts.append(override.region)
    else:
        parts = ["policy gpuProduct", override.gpu_product]
    if override.capacity_type is not None:
        parts.append(CapacityType(override.capacity_type).value)
    return " ".join(parts)


def _name(override: InstanceTypePrice | GpuProductPrice) -> str:
    if isinstance(override, InstanceTypePrice):
        return override.instance_type
    return override.gpu_product


def _region(override: InstanceTypePrice | GpuProductPrice) -> str | None:
    return override.region if isinstance(override, InstanceTypePrice) else None
