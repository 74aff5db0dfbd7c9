"""Unit tests for gpu_budget.overrides: which policy price applies.

Precedence is exercised end to end in test_node_pricing and test_estimate;
these pin the matcher's own edges.
"""

from __future__ import annotations

from gpu_budget.models import CapacityType, GpuProductPrice, InstanceTypePrice
from gpu_budget.overrides import best_override, describe_override

SPOT = CapacityType.SPOT
ON_DEMAND = CapacityType.ON_DEMAND


def test_without_a_region_only_regionless_entries_match() -> None:
    overrides = [InstanceTypePrice(instance_type="x8.big", region="r1", hourly_price=1.0)]
    assert best_override(overrides, "x8.big", ON_DEMAND) is None
    assert best_override(overrides, "x8.big", ON_DEMAND, "R1") is overrides[0]


def test_gpu_products_are_not_per_region() -> None:
    overrides = [GpuProductPrice(gpu_product="NVIDIA-TEST", gpu_hourly_price=1.0)]
    assert best_override(overrides, "nvidia-test", SPOT, "r1") is overrides[0]


def test_capacity_as_the_policy_stores_it_matches() -> None:
    from_wire = InstanceTypePrice.model_validate(
        {"instanceType": "x8.big", "capacityType": "spot", "hourlyPrice": 1}
    )
    assert best_override([from_wire], "x8.big", SPOT) is from_wire
    assert best_override([from_wire], "x8.big", ON_DEMAND) is None


def test_describe_override_uses_the_policys_spelling() -> None:
    assert (
        describe_override(
            InstanceTypePrice(
                instance_type="X8.Big", region="R1", capacity_type=SPOT, hourly_price=1.0
            )
        )
        == "policy instanceType X8.Big R1 spot"
    )
    assert (
        describe_override(GpuProductPrice(gpu_product="NVIDIA-TEST", gpu_hourly_price=1.0))
        == "policy gpuProduct NVIDIA-TEST"
    )
