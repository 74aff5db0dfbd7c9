"""Unit tests for gpu_budget.estimate: the pre-run estimate and how it is priced."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpu_budget.catalog import Catalog
from gpu_budget.estimate import price_estimate
from gpu_budget.models import (
    BudgetPolicySpec,
    CapacityType,
    Estimate,
    GpuProductPrice,
    InstanceTypePrice,
    PricingOverrides,
)
from gpu_budget.node_pricing import NodeFacts, price_node
from tests.unit.test_catalog import entry, small_catalog

SPOT = CapacityType.SPOT

NO_OVERRIDES = PricingOverrides()


def test_estimate_from_catalog_instance_type_with_contingency() -> None:
    status = price_estimate(
        Estimate(hours=10, instance_type="x8.big"), 16, NO_OVERRIDES, 0.5, small_catalog()
    )
    assert status.gpu_hourly_price == 10.0  # cheapest region: 80 / 8
    assert status.base_cost == 1600.0
    assert status.total == 2400.0
    assert status.contingency == 0.5
    assert status.gpus == 16
    assert status.hours == 10
    assert status.priced_from == "catalog aws x8.big r1 on-demand / 8 GPUs (cheapest listed)"


def test_estimate_zero_contingency() -> None:
    status = price_estimate(
        Estimate(hours=2, instance_type="x1.small"), 1, NO_OVERRIDES, 0.0, small_catalog()
    )
    assert status.total == status.base_cost == 4.0


def test_estimate_spot_uses_spot_price() -> None:
    status = price_estimate(
        Estimate(hours=1, instance_type="x8.big", capacity_type=SPOT),
        8,
        NO_OVERRIDES,
        0,
        small_catalog(),
    )
    assert status.gpu_hourly_price == 5.0
    assert "spot" in status.priced_from


def test_estimate_spot_without_spot_price_says_on_demand() -> None:
    catalog = Catalog(entries=[entry("x8.big", "r2", on_demand=96.0, spot=None)])
    status = price_estimate(
        Estimate(hours=1, instance_type="x8.big", capacity_type=SPOT), 8, NO_OVERRIDES, 0, catalog
    )
    assert status.gpu_hourly_price == 12.0
    assert "no spot price in catalog, on-demand used" in status.priced_from


def test_estimate_policy_instance_type_override_wins() -> None:
    pricing = PricingOverrides(
        instance_types=[
            InstanceTypePrice(instance_type="x8.big", region="r1", hourly_price=40.0),
            InstanceTypePrice(instance_type="x8.big", hourly_price=64.0),
        ],
        gpu_products=[GpuProductPrice(gpu_product="NVIDIA-TEST", gpu_hourly_price=1.0)],
    )
    status = price_estimate(
        Estimate(hours=1, instance_type="x8.big"), 8, pricing, 0, small_catalog()
    )
    assert status.gpu_hourly_price == 8.0  # the region-less entry: 64 / 8
    assert status.priced_from == "policy instanceType x8.big / 8 GPUs"


def test_estimate_policy_instance_type_cheapest_region_specific() -> None:
    pricing = PricingOverrides(
        instance_types=[
            InstanceTypePrice(instance_type="x8.big", region="r1", hourly_price=40.0),
            InstanceTypePrice(instance_type="x8.big", region="r2", hourly_price=32.0),
        ]
    )
    status = price_estimate(
        Estimate(hours=1, instance_type="x8.big"), 8, pricing, 0, small_catalog()
    )
    assert status.gpu_hourly_price == 4.0
    assert status.priced_from == "policy instanceType x8.big r2 / 8 GPUs"


def test_estimate_policy_instance_type_is_the_one_a_node_in_the_cheapest_region_gets() -> None:
    # In r1 the spot entry is the most specific, as on a spot node there; r2's
    # generic entry is what a spot node in r2 pays, and it is cheaper.
    pricing = PricingOverrides(
        instance_types=[
            InstanceTypePrice(instance_type="x8.big", region="r1", hourly_price=16.0),
            InstanceTypePrice(
                instance_type="x8.big", region="r1", capacity_type=SPOT, hourly_price=40.0
            ),
            InstanceTypePrice(instance_type="x8.big", region="r2", hourly_price=24.0),
        ]
    )
    status = price_estimate(
        Estimate(hours=1, instance_type="x8.big", capacity_type=SPOT),
        8,
        pricing,
        0,
        small_catalog(),
    )
    assert status.gpu_hourly_price == 3.0
    assert status.priced_from == "policy instanceType x8.big r2 / 8 GPUs"


@pytest.mark.parametrize("region", [None, "r1"])
def test_estimate_and_node_agree_on_equally_specific_entries(region: str | None) -> None:
    # The first listed wins, as a policy reads top to bottom, not the cheapest.
    pricing = PricingOverrides(
        instance_types=[
            InstanceTypePrice(instance_type="x8.big", region=region, hourly_price=96.0),
            InstanceTypePrice(instance_type="x8.big", region=region, hourly_price=64.0),
        ]
    )
    status = price_estimate(
        Estimate(hours=1, instance_type="x8.big"), 8, pricing, 0, small_catalog()
    )
    labels = {"node.kubernetes.io/instance-type": "x8.big"}
    if region is not None:
        labels["topology.kubernetes.io/region"] = region
    node = price_node(NodeFacts(name="n", labels=labels, gpu_capacity=8), pricing, small_catalog())
    assert status.gpu_hourly_price == node.gpu_hourly_price == 12.0


def test_estimate_policy_instance_type_respects_capacity() -> None:
    pricing = PricingOverrides(
        instance_types=[
            InstanceTypePrice(instance_type="x8.big", capacity_type=SPOT, hourly_price=16.0),
            InstanceTypePrice(instance_type="x8.big", hourly_price=64.0),
        ]
    )
    spot = price_estimate(
        Estimate(hours=1, instance_type="x8.big", capacity_type=SPOT),
        8,
        pricing,
        0,
        small_catalog(),
    )
    assert spot.gpu_hourly_price == 2.0
    on_demand = price_estimate(
        Estimate(hours=1, instance_type="x8.big"), 8, pricing, 0, small_catalog()
    )
    assert on_demand.gpu_hourly_price == 8.0


def test_estimate_policy_instance_type_unknown_gpu_count_is_skipped_and_said() -> None:
    pricing = PricingOverrides(
        instance_types=[InstanceTypePrice(instance_type="onprem", hourly_price=10.0)],
        fallback_gpu_hourly_price=3.0,
    )
    status = price_estimate(Estimate(hours=1, instance_type="onprem"), 2, pricing, 0, Catalog())
    assert status.gpu_hourly_price == 3.0
    assert status.priced_from.startswith("fallback 3 USD per GPU-hour")
    assert "GPUs per onprem unknown" in status.priced_from


def test_estimate_policy_gpu_product_for_instance_types_product() -> None:
    pricing = PricingOverrides(
        gpu_products=[GpuProductPrice(gpu_product="NVIDIA-TEST", gpu_hourly_price=2.0)]
    )
    status = price_estimate(
        Estimate(hours=3, instance_type="x8.big"), 8, pricing, 0, small_catalog()
    )
    assert status.gpu_hourly_price == 2.0
    assert status.base_cost == 48.0
    assert status.priced_from == "policy gpuProduct NVIDIA-TEST"


def test_estimate_policy_gpu_product() -> None:
    pricing = PricingOverrides(
        gpu_products=[
            GpuProductPrice(gpu_product="NVIDIA-H100-80GB-HBM3", gpu_hourly_price=2.0),
            GpuProductPrice(
                gpu_product="NVIDIA-H100-80GB-HBM3", capacity_type=SPOT, gpu_hourly_price=1.0
            ),
        ]
    )
    status = price_estimate(Estimate(hours=5, gpu_product="NVIDIA-H100-80GB-HBM3"), 4, pricing, 1.0)
    assert status.gpu_hourly_price == 2.0
    assert status.total == 80.0


def test_estimate_catalog_gpu_product_cheapest_per_gpu() -> None:
    status = price_estimate(
        Estimate(hours=1, gpu_product="NVIDIA-TEST"), 8, NO_OVERRIDES, 0, small_catalog()
    )
    # x8.big r1 (10/GPU) beats x8.big r2 (12/GPU) and g9.huge (20/GPU).
    assert status.gpu_hourly_price == 10.0
    assert status.priced_from.endswith("for NVIDIA-TEST")


def test_estimate_builtin_catalog_h100() -> None:
    status = price_estimate(
        Estimate(hours=10, gpu_product="NVIDIA-H100-80GB-HBM3"), 16, NO_OVERRIDES, 0.5
    )
    assert status.gpu_hourly_price == pytest.approx(6.88)  # p5.48xlarge: 55.04 / 8
    assert status.total == pytest.approx(16 * 10 * 6.88 * 1.5)
    assert "p5.48xlarge" in status.priced_from


def test_estimate_unknown_instance_type_falls_back_and_says_why() -> None:
    status = price_estimate(
        Estimate(hours=1, instance_type="nope"), 2, NO_OVERRIDES, 0, small_catalog()
    )
    assert status.gpu_hourly_price == 4.0
    assert status.priced_from == ("fallback 4 USD per GPU-hour (instance type nope not in catalog)")


def test_estimate_nothing_matches_uses_fallback_and_says_so() -> None:
    pricing = PricingOverrides(fallback_gpu_hourly_price=4.0)
    status = price_estimate(
        Estimate(hours=2, gpu_product="NVIDIA-UNKNOWN"), 3, pricing, 0.25, small_catalog()
    )
    assert status.gpu_hourly_price == 4.0
    assert status.base_cost == 24.0
    assert status.total == 30.0
    assert status.priced_from.startswith("fallback 4 USD per GPU-hour")
    assert "GPU product NVIDIA-UNKNOWN not in catalog" in status.priced_from


def test_estimate_with_no_hints_uses_fallback() -> None:
    status = price_estimate(Estimate(hours=1), 2, NO_OVERRIDES, 0.5, Catalog())
    assert status.priced_from == "fallback 4 USD per GPU-hour"
    assert status.total == 12.0


def test_estimate_zero_gpus_costs_nothing() -> None:
    status = price_estimate(Estimate(hours=1, instance_type="x8.big"), 0, NO_OVERRIDES, 0.5)
    assert status.total == 0.0


def test_estimate_from_policy_spec_round_trip() -> None:
    spec = BudgetPolicySpec.model_validate(
        {
            "contingency": 0.2,
            "pricing": {
                "instanceTypes": [{"instanceType": "p5.48xlarge", "hourlyPrice": 40}],
                "fallbackGpuHourlyPrice": 3,
            },
        }
    )
    estimate = Estimate.model_validate(
        {"hours": 1, "instanceType": "p5.48xlarge", "capacityType": "spot"}
    )
    status = price_estimate(estimate, 8, spec.pricing, spec.contingency)
    assert status.gpu_hourly_price == 5.0
    assert status.total == pytest.approx(48.0)
    dumped = status.model_dump(by_alias=True)
    assert dumped["pricedFrom"] == "policy instanceType p5.48xlarge / 8 GPUs"


@pytest.mark.parametrize(("gpus", "contingency"), [(-1, 0.5), (1, -0.1)])
def test_estimate_rejects_negative_inputs(gpus: int, contingency: float) -> None:
    with pytest.raises(ValueError, match=r"must be|cannot"):
        price_estimate(Estimate(hours=1), gpus, NO_OVERRIDES, contingency, Catalog())


# ---------------------------------------------------------------------- properties


@given(
    hours=st.floats(min_value=0.01, max_value=1e4, allow_nan=False, allow_infinity=False),
    gpus=st.integers(min_value=0, max_value=1024),
    contingency=st.floats(min_value=0, max_value=10, allow_nan=False, allow_infinity=False),
)
def test_estimate_total_is_base_times_one_plus_contingency(
    hours: float, gpus: int, contingency: float
) -> None:
    status = price_estimate(
        Estimate(hours=hours, instance_type="x8.big"),
        gpus,
        NO_OVERRIDES,
        contingency,
        small_catalog(),
    )
    assert math.isclose(status.base_cost, gpus * hours * status.gpu_hourly_price, rel_tol=1e-9)
    assert math.isclose(status.total, status.base_cost * (1 + contingency), rel_tol=1e-9)
    assert status.total >= status.base_cost
