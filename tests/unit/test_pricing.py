"""Unit tests for gpu_budget.pricing: node prices, pod rates, estimates and the catalog."""

from __future__ import annotations

import json
import math
from datetime import date
from importlib import resources
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from gpu_budget import GPU_RESOURCE, NODE_PRICE_ANNOTATION
from gpu_budget.models import (
    BudgetPolicySpec,
    CapacityType,
    Estimate,
    GpuProductPrice,
    InstanceTypePrice,
    PricingOverrides,
)
from gpu_budget.pricing import (
    Catalog,
    CatalogEntry,
    NodeFacts,
    NodePrice,
    capacity_type,
    load_catalog,
    pod_hourly_rate,
    price_estimate,
    price_node,
)

INSTANCE = "node.kubernetes.io/instance-type"
REGION = "topology.kubernetes.io/region"
PRODUCT = "nvidia.com/gpu.product"
COUNT = "nvidia.com/gpu.count"
KARPENTER = "karpenter.sh/capacity-type"

SPOT = CapacityType.SPOT
ON_DEMAND = CapacityType.ON_DEMAND


def entry(
    instance_type: str = "x8.big",
    region: str = "r1",
    *,
    gpus: int = 8,
    product: str = "NVIDIA-TEST",
    on_demand: float = 80.0,
    spot: float | None = 40.0,
    cloud: str = "aws",
) -> CatalogEntry:
    return CatalogEntry.model_validate(
        {
            "cloud": cloud,
            "instanceType": instance_type,
            "region": region,
            "gpus": gpus,
            "gpuProduct": product,
            "onDemand": on_demand,
            "spot": spot,
            "source": "test",
            "asOf": "2026-01-01",
        }
    )


def small_catalog() -> Catalog:
    """A tiny catalog with round numbers, so expected prices are easy to read."""
    return Catalog(
        description="test",
        entries=[
            entry("x8.big", "r1", on_demand=80.0, spot=40.0),
            entry("x8.big", "r2", on_demand=96.0, spot=None),
            entry("x1.small", "r1", gpus=1, product="NVIDIA-SMALL", on_demand=2.0, spot=1.0),
            entry("g9.huge", "east", gpus=8, product="NVIDIA-TEST", on_demand=160.0, cloud="azure"),
        ],
    )


def node(
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    gpus: int = 8,
    name: str = "n1",
) -> NodeFacts:
    return NodeFacts(
        name=name, labels=labels or {}, annotations=annotations or {}, gpu_capacity=gpus
    )


def typed(instance_type: str = "x8.big", region: str | None = "r1", **extra: str) -> dict[str, str]:
    labels = {INSTANCE: instance_type, **extra}
    if region is not None:
        labels[REGION] = region
    return labels


def raw_node(
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "gpu-1", "labels": labels or {}, "annotations": annotations or {}},
        "status": status if status is not None else {},
    }


NO_OVERRIDES = PricingOverrides()


# ------------------------------------------------------------------- capacity type


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({}, ON_DEMAND),
        ({KARPENTER: "spot"}, SPOT),
        ({KARPENTER: "on-demand"}, ON_DEMAND),
        ({KARPENTER: "reserved"}, ON_DEMAND),
        ({KARPENTER: "SPOT"}, SPOT),
        ({"eks.amazonaws.com/capacityType": "SPOT"}, SPOT),
        ({"eks.amazonaws.com/capacityType": "ON_DEMAND"}, ON_DEMAND),
        ({"eks.amazonaws.com/capacityType": "CAPACITY_BLOCK"}, ON_DEMAND),
        ({"lifecycle": "EC2Spot"}, SPOT),
        ({"lifecycle": "something-else"}, ON_DEMAND),
        ({"cloud.google.com/gke-spot": "true"}, SPOT),
        ({"cloud.google.com/gke-spot": "false"}, ON_DEMAND),
        ({"cloud.google.com/gke-preemptible": "true"}, SPOT),
        ({"kubernetes.azure.com/scalesetpriority": "spot"}, SPOT),
        ({"kubernetes.azure.com/scalesetpriority": "regular"}, ON_DEMAND),
        ({"unrelated": "spot"}, ON_DEMAND),
    ],
)
def test_capacity_type_from_labels(labels: dict[str, str], expected: CapacityType) -> None:
    assert capacity_type(labels) == expected


def test_capacity_type_unrecognised_value_falls_through_to_next_label() -> None:
    labels = {KARPENTER: "weird", "cloud.google.com/gke-spot": "true"}
    assert capacity_type(labels) == SPOT


def test_capacity_type_first_recognised_label_decides() -> None:
    # Karpenter is read before the legacy lifecycle label.
    labels = {KARPENTER: "on-demand", "lifecycle": "EC2Spot"}
    assert capacity_type(labels) == ON_DEMAND


def test_node_facts_capacity_type_property() -> None:
    assert node(labels={KARPENTER: "spot"}).capacity_type == SPOT


# ---------------------------------------------------------------------- NodeFacts


def test_from_node_reads_name_labels_annotations_and_allocatable() -> None:
    facts = NodeFacts.from_node(
        raw_node(
            labels={INSTANCE: "p5.48xlarge", REGION: "us-east-1", PRODUCT: "NVIDIA-H100-80GB-HBM3"},
            annotations={NODE_PRICE_ANNOTATION: "50"},
            status={"allocatable": {GPU_RESOURCE: "7"}, "capacity": {GPU_RESOURCE: "8"}},
        )
    )
    assert facts.name == "gpu-1"
    assert facts.gpu_capacity == 7
    assert facts.instance_type == "p5.48xlarge"
    assert facts.region == "us-east-1"
    assert facts.gpu_product == "NVIDIA-H100-80GB-HBM3"
    assert facts.annotations == {NODE_PRICE_ANNOTATION: "50"}


def test_from_node_falls_back_to_capacity() -> None:
    facts = NodeFacts.from_node(raw_node(status={"capacity": {GPU_RESOURCE: "4"}}))
    assert facts.gpu_capacity == 4


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({}, 0),
        ({"allocatable": {"cpu": "8"}}, 0),
        ({"allocatable": {GPU_RESOURCE: "lots"}}, 0),
        ({"allocatable": {GPU_RESOURCE: "-1"}}, 0),
        ({"allocatable": {GPU_RESOURCE: 2}}, 2),
        ({"allocatable": {GPU_RESOURCE: "2.0"}}, 2),
        ({"allocatable": None, "capacity": {GPU_RESOURCE: "3"}}, 3),
        ({"allocatable": {GPU_RESOURCE: "0"}, "capacity": {GPU_RESOURCE: "8"}}, 8),
    ],
)
def test_from_node_gpu_quantity_parsing(status: dict[str, Any], expected: int) -> None:
    assert NodeFacts.from_node(raw_node(status=status)).gpu_capacity == expected


def test_from_node_tolerates_missing_and_null_parts() -> None:
    facts = NodeFacts.from_node({"metadata": {"name": "bare", "labels": None}})
    assert facts == NodeFacts(name="bare")
    assert NodeFacts.from_node({}).name == ""


def test_from_node_legacy_beta_labels() -> None:
    facts = NodeFacts.from_node(
        raw_node(
            labels={
                "beta.kubernetes.io/instance-type": "g5.xlarge",
                "failure-domain.beta.kubernetes.io/region": "us-east-1",
            }
        )
    )
    assert facts.instance_type == "g5.xlarge"
    assert facts.region == "us-east-1"


def test_from_node_then_price_end_to_end_with_builtin_catalog() -> None:
    facts = NodeFacts.from_node(
        raw_node(
            labels={INSTANCE: "p5.48xlarge", REGION: "us-east-1", KARPENTER: "on-demand"},
            status={"capacity": {GPU_RESOURCE: "8"}, "allocatable": {GPU_RESOURCE: "8"}},
        )
    )
    price = price_node(facts, NO_OVERRIDES)
    assert price.known
    assert price.node_hourly_price == pytest.approx(55.04)
    assert price.gpu_hourly_price == pytest.approx(6.88)
    assert price.source == "catalog aws p5.48xlarge us-east-1 on-demand"


# ---------------------------------------------------------------- (1) annotation


def test_annotation_wins_over_everything() -> None:
    pricing = PricingOverrides(
        instance_types=[InstanceTypePrice(instance_type="x8.big", hourly_price=1.0)],
        gpu_products=[GpuProductPrice(gpu_product="NVIDIA-TEST", gpu_hourly_price=1.0)],
    )
    n = node(labels=typed(**{PRODUCT: "NVIDIA-TEST"}), annotations={NODE_PRICE_ANNOTATION: "24"})
    price = price_node(n, pricing, small_catalog())
    assert price == NodePrice(
        node_hourly_price=24.0,
        gpu_hourly_price=3.0,
        gpus=8,
        source=f"annotation {NODE_PRICE_ANNOTATION}",
        known=True,
    )


@pytest.mark.parametrize("raw", ["12.5", " 12.5 ", "$12.5", "1.25e1"])
def test_annotation_accepted_forms(raw: str) -> None:
    n = node(annotations={NODE_PRICE_ANNOTATION: raw}, gpus=5)
    price = price_node(n, NO_OVERRIDES, Catalog())
    assert price.node_hourly_price == 12.5
    assert price.gpu_hourly_price == 2.5


def test_annotation_zero_means_free_and_known() -> None:
    price = price_node(node(annotations={NODE_PRICE_ANNOTATION: "0"}), NO_OVERRIDES, Catalog())
    assert price.known
    assert price.node_hourly_price == 0.0


@pytest.mark.parametrize("raw", ["", "abc", "-3", "nan", "inf", "12 USD", "1,5"])
def test_malformed_annotation_is_ignored_and_reported(raw: str) -> None:
    n = node(labels=typed(), annotations={NODE_PRICE_ANNOTATION: raw})
    price = price_node(n, NO_OVERRIDES, small_catalog())
    assert price.node_hourly_price == 80.0
    assert price.source.startswith("catalog aws x8.big r1 on-demand")
    assert f"ignored malformed annotation {NODE_PRICE_ANNOTATION}" in price.source
    assert repr(raw) in price.source


def test_malformed_annotation_on_unknown_node_still_falls_back() -> None:
    n = node(annotations={NODE_PRICE_ANNOTATION: "??"}, gpus=2)
    price = price_node(n, NO_OVERRIDES, Catalog())
    assert not price.known
    assert price.source.startswith("fallback")
    assert "ignored malformed annotation" in price.source


# ------------------------------------------------------- (2) policy instance types


def test_policy_instance_type_beats_product_override_and_catalog() -> None:
    pricing = PricingOverrides(
        instance_types=[InstanceTypePrice(instance_type="x8.big", hourly_price=16.0)],
        gpu_products=[GpuProductPrice(gpu_product="NVIDIA-TEST", gpu_hourly_price=1.0)],
    )
    price = price_node(node(labels=typed(**{PRODUCT: "NVIDIA-TEST"})), pricing, small_catalog())
    assert price.node_hourly_price == 16.0
    assert price.gpu_hourly_price == 2.0
    assert price.source == "policy instanceType x8.big"


def test_policy_instance_type_region_specific_beats_regionless() -> None:
    pricing = PricingOverrides(
        instance_types=[
            InstanceTypePrice(instance_type="x8.big", hourly_price=10.0),
            InstanceTypePrice(instance_type="x8.big", region="r1", hourly_price=20.0),
        ]
    )
    price = price_node(node(labels=typed()), pricing, small_catalog())
    assert price.node_hourly_price == 20.0
    assert price.source == "policy instanceType x8.big r1"


def test_policy_instance_type_other_region_does_not_match() -> None:
    pricing = PricingOverrides(
        instance_types=[InstanceTypePrice(instance_type="x8.big", region="r2", hourly_price=20.0)]
    )
    price = price_node(node(labels=typed(region="r1")), pricing, small_catalog())
    assert price.source.startswith("catalog")


def test_policy_instance_type_with_region_needs_node_region() -> None:
    pricing = PricingOverrides(
        instance_types=[InstanceTypePrice(instance_type="x8.big", region="r1", hourly_price=20.0)]
    )
    price = price_node(node(labels=typed(region=None)), pricing, small_catalog())
    assert not price.source.startswith("policy")


def test_policy_instance_type_capacity_specific_beats_generic() -> None:
    pricing = PricingOverrides(
        instance_types=[
            InstanceTypePrice(instance_type="x8.big", hourly_price=10.0),
            InstanceTypePrice(instance_type="x8.big", capacity_type=SPOT, hourly_price=4.0),
            InstanceTypePrice(instance_type="x8.big", capacity_type=ON_DEMAND, hourly_price=12.0),
        ]
    )
    spot = price_node(node(labels=typed(**{KARPENTER: "spot"})), pricing, small_catalog())
    assert spot.node_hourly_price == 4.0
    assert spot.source == "policy instanceType x8.big spot"
    on_demand = price_node(node(labels=typed()), pricing, small_catalog())
    assert on_demand.node_hourly_price == 12.0


def test_policy_instance_type_wrong_capacity_does_not_match() -> None:
    pricing = PricingOverrides(
        instance_types=[
            InstanceTypePrice(instance_type="x8.big", capacity_type=SPOT, hourly_price=4.0)
        ]
    )
    price = price_node(node(labels=typed()), pricing, small_catalog())
    assert price.source == "catalog aws x8.big r1 on-demand"


def test_policy_instance_type_region_outranks_capacity() -> None:
    pricing = PricingOverrides(
        instance_types=[
            InstanceTypePrice(instance_type="x8.big", capacity_type=SPOT, hourly_price=4.0),
            InstanceTypePrice(instance_type="x8.big", region="r1", hourly_price=30.0),
        ]
    )
    price = price_node(node(labels=typed(**{KARPENTER: "spot"})), pricing, small_catalog())
    assert price.node_hourly_price == 30.0


def test_policy_instance_type_most_specific_of_all() -> None:
    pricing = PricingOverrides(
        instance_types=[
            InstanceTypePrice(instance_type="x8.big", region="r1", hourly_price=30.0),
            InstanceTypePrice(
                instance_type="x8.big", region="r1", capacity_type=SPOT, hourly_price=8.0
            ),
        ]
    )
    price = price_node(node(labels=typed(**{KARPENTER: "spot"})), pricing, small_catalog())
    assert price.node_hourly_price == 8.0
    assert price.source == "policy instanceType x8.big r1 spot"


def test_policy_instance_type_ties_go_to_first_listed() -> None:
    pricing = PricingOverrides(
        instance_types=[
            InstanceTypePrice(instance_type="x8.big", hourly_price=11.0),
            InstanceTypePrice(instance_type="x8.big", hourly_price=99.0),
        ]
    )
    assert price_node(node(labels=typed()), pricing).node_hourly_price == 11.0


def test_policy_instance_type_match_is_case_insensitive() -> None:
    pricing = PricingOverrides(
        instance_types=[
            InstanceTypePrice(instance_type="standard_nd96asr_v4", region="EastUS", hourly_price=8)
        ]
    )
    labels = typed("Standard_ND96asr_v4", "eastus")
    assert price_node(node(labels=labels), pricing).node_hourly_price == 8.0


def test_policy_instance_type_for_type_missing_from_catalog() -> None:
    pricing = PricingOverrides(
        instance_types=[InstanceTypePrice(instance_type="onprem-dgx", hourly_price=20.0)]
    )
    price = price_node(node(labels=typed("onprem-dgx", None)), pricing, Catalog())
    assert price.known
    assert price.gpu_hourly_price == 2.5


# -------------------------------------------------------- (3) policy GPU products


def test_policy_gpu_product_beats_catalog() -> None:
    pricing = PricingOverrides(
        gpu_products=[GpuProductPrice(gpu_product="NVIDIA-TEST", gpu_hourly_price=3.0)]
    )
    price = price_node(node(labels=typed(**{PRODUCT: "NVIDIA-TEST"})), pricing, small_catalog())
    assert price.gpu_hourly_price == 3.0
    assert price.node_hourly_price == 24.0
    assert price.source == "policy gpuProduct NVIDIA-TEST"
    assert price.known


def test_policy_gpu_product_capacity_specific_beats_generic() -> None:
    pricing = PricingOverrides(
        gpu_products=[
            GpuProductPrice(gpu_product="NVIDIA-TEST", gpu_hourly_price=3.0),
            GpuProductPrice(gpu_product="NVIDIA-TEST", capacity_type=SPOT, gpu_hourly_price=1.0),
        ]
    )
    labels = typed(**{PRODUCT: "NVIDIA-TEST", "cloud.google.com/gke-spot": "true"})
    price = price_node(node(labels=labels), pricing, small_catalog())
    assert price.gpu_hourly_price == 1.0
    assert price.source == "policy gpuProduct NVIDIA-TEST spot"
    on_demand = price_node(node(labels=typed(**{PRODUCT: "NVIDIA-TEST"})), pricing)
    assert on_demand.gpu_hourly_price == 3.0


def test_policy_gpu_product_wrong_capacity_does_not_match() -> None:
    pricing = PricingOverrides(
        gpu_products=[
            GpuProductPrice(gpu_product="NVIDIA-TEST", capacity_type=SPOT, gpu_hourly_price=1.0)
        ]
    )
    price = price_node(node(labels=typed(**{PRODUCT: "NVIDIA-TEST"})), pricing, small_catalog())
    assert price.source.startswith("catalog")


def test_policy_gpu_product_without_instance_type() -> None:
    pricing = PricingOverrides(
        gpu_products=[GpuProductPrice(gpu_product="NVIDIA-L4", gpu_hourly_price=0.5)]
    )
    price = price_node(node(labels={PRODUCT: "NVIDIA-L4"}, gpus=4), pricing, Catalog())
    assert price.node_hourly_price == 2.0
    assert price.known


def test_policy_gpu_product_inferred_from_catalog_when_label_missing() -> None:
    pricing = PricingOverrides(
        gpu_products=[GpuProductPrice(gpu_product="NVIDIA-TEST", gpu_hourly_price=3.0)]
    )
    price = price_node(node(labels=typed()), pricing, small_catalog())
    assert price.gpu_hourly_price == 3.0
    assert price.source == "policy gpuProduct NVIDIA-TEST (product from catalog)"


# ----------------------------------------------------------------- (4) catalog


def test_catalog_same_region_on_demand() -> None:
    price = price_node(node(labels=typed()), NO_OVERRIDES, small_catalog())
    assert price == NodePrice(
        node_hourly_price=80.0,
        gpu_hourly_price=10.0,
        gpus=8,
        source="catalog aws x8.big r1 on-demand",
        known=True,
    )


def test_catalog_same_region_spot() -> None:
    price = price_node(node(labels=typed(**{KARPENTER: "spot"})), NO_OVERRIDES, small_catalog())
    assert price.node_hourly_price == 40.0
    assert price.source == "catalog aws x8.big r1 spot"


def test_catalog_spot_without_spot_price_falls_back_to_on_demand() -> None:
    labels = typed(region="r2", **{KARPENTER: "spot"})
    price = price_node(node(labels=labels), NO_OVERRIDES, small_catalog())
    assert price.node_hourly_price == 96.0
    assert price.known
    assert price.source == (
        "catalog aws x8.big r2 on-demand (no spot price in catalog, on-demand used)"
    )


def test_catalog_other_region_is_used_and_said() -> None:
    price = price_node(node(labels=typed(region="r9")), NO_OVERRIDES, small_catalog())
    assert price.node_hourly_price == 80.0
    assert price.known
    assert price.source == (
        "catalog aws x8.big r1 on-demand (node region r9 not in catalog, r1 price used)"
    )


def test_catalog_missing_region_label_uses_reference_region() -> None:
    price = price_node(node(labels=typed(region=None)), NO_OVERRIDES, small_catalog())
    assert price.node_hourly_price == 80.0
    assert "node region unknown not in catalog" in price.source


def test_catalog_builtin_spot_and_region_fallback() -> None:
    labels = {INSTANCE: "g5.xlarge", REGION: "us-west-2", "lifecycle": "EC2Spot"}
    price = price_node(node(labels=labels, gpus=1), NO_OVERRIDES)
    assert price.node_hourly_price == pytest.approx(1.006)
    assert "no spot price in catalog, on-demand used" in price.source


def test_catalog_builtin_spot_price() -> None:
    labels = {INSTANCE: "p4d.24xlarge", REGION: "us-east-1", KARPENTER: "spot"}
    price = price_node(node(labels=labels), NO_OVERRIDES)
    assert price.node_hourly_price == pytest.approx(5.33)
    assert price.source == "catalog aws p4d.24xlarge us-east-1 spot"


def test_catalog_builtin_gcp_spot() -> None:
    labels = {
        INSTANCE: "a2-highgpu-8g",
        REGION: "us-central1",
        "cloud.google.com/gke-spot": "true",
    }
    price = price_node(node(labels=labels), NO_OVERRIDES)
    assert price.node_hourly_price == pytest.approx(14.43)


def test_catalog_builtin_azure() -> None:
    labels = {INSTANCE: "Standard_ND96isr_H100_v5", REGION: "eastus"}
    price = price_node(node(labels=labels), NO_OVERRIDES)
    assert price.gpu_hourly_price == pytest.approx(98.32 / 8)


# ---------------------------------------------------------------- (5) fallback


def test_unknown_node_uses_fallback_and_is_not_known() -> None:
    pricing = PricingOverrides(fallback_gpu_hourly_price=2.5)
    price = price_node(node(labels=typed("mystery.type", "r1"), gpus=4), pricing, small_catalog())
    assert price == NodePrice(
        node_hourly_price=10.0,
        gpu_hourly_price=2.5,
        gpus=4,
        source="fallback: no price for instance type mystery.type",
        known=False,
    )


def test_node_without_any_labels_uses_fallback() -> None:
    price = price_node(node(gpus=2), NO_OVERRIDES, small_catalog())
    assert not price.known
    assert price.gpu_hourly_price == 4.0  # the model's default fallback
    assert price.source == "fallback: no price for node without instance type"


def test_unmatched_product_override_falls_through_to_fallback() -> None:
    pricing = PricingOverrides(
        gpu_products=[GpuProductPrice(gpu_product="NVIDIA-OTHER", gpu_hourly_price=1.0)]
    )
    price = price_node(node(labels={PRODUCT: "NVIDIA-TEST"}), pricing, Catalog())
    assert not price.known


# ------------------------------------------------------------------- GPU count


def test_zero_gpu_node_costs_nothing_and_is_known() -> None:
    n = node(labels={INSTANCE: "m5.large"}, annotations={NODE_PRICE_ANNOTATION: "0.1"}, gpus=0)
    price = price_node(n, NO_OVERRIDES, small_catalog())
    assert price == NodePrice(
        node_hourly_price=0.0, gpu_hourly_price=0.0, gpus=0, source="no GPUs on node", known=True
    )


def test_gpu_count_from_resource_first() -> None:
    labels = typed(**{COUNT: "4"})
    price = price_node(node(labels=labels, gpus=2), NO_OVERRIDES, small_catalog())
    assert price.gpus == 2
    assert price.gpu_hourly_price == 40.0


def test_gpu_count_from_label_when_resource_missing() -> None:
    labels = typed(**{COUNT: "4"})
    price = price_node(node(labels=labels, gpus=0), NO_OVERRIDES, small_catalog())
    assert price.gpus == 4
    assert price.gpu_hourly_price == 20.0


def test_gpu_count_from_catalog_when_resource_and_label_missing() -> None:
    price = price_node(node(labels=typed(), gpus=0), NO_OVERRIDES, small_catalog())
    assert price.gpus == 8
    assert price.gpu_hourly_price == 10.0


def test_gpu_count_malformed_label_is_skipped() -> None:
    labels = typed(**{COUNT: "eight"})
    price = price_node(node(labels=labels, gpus=0), NO_OVERRIDES, small_catalog())
    assert price.gpus == 8


def test_gpu_count_mig_slices_share_the_node_price() -> None:
    # With MIG's single strategy nvidia.com/gpu counts slices: 8 GPUs x 7 slices.
    price = price_node(node(labels=typed(), gpus=56), NO_OVERRIDES, small_catalog())
    assert price.gpu_hourly_price == pytest.approx(80.0 / 56)


def test_default_catalog_is_the_builtin_one() -> None:
    labels = {INSTANCE: "g6.xlarge", REGION: "us-east-1"}
    assert price_node(node(labels=labels, gpus=1), NO_OVERRIDES).node_hourly_price == 0.8048


# -------------------------------------------------------------------- pod rate


def test_pod_hourly_rate() -> None:
    price = NodePrice(node_hourly_price=80.0, gpu_hourly_price=10.0, gpus=8, source="x", known=True)
    assert pod_hourly_rate(0, price) == 0.0
    assert pod_hourly_rate(3, price) == 30.0


def test_pod_hourly_rate_rejects_negative_gpus() -> None:
    price = NodePrice(node_hourly_price=1, gpu_hourly_price=1, gpus=1, source="x", known=True)
    with pytest.raises(ValueError, match="cannot hold"):
        pod_hourly_rate(-1, price)


# ------------------------------------------------------------------- estimates


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


# ------------------------------------------------------------------ the catalog


REQUIRED = [
    ("aws", "p4d.24xlarge", "us-east-1"),
    ("aws", "p4de.24xlarge", "us-east-1"),
    ("aws", "p5.48xlarge", "us-east-1"),
    ("aws", "g5.xlarge", "us-east-1"),
    ("aws", "g5.48xlarge", "us-east-1"),
    ("aws", "g6.xlarge", "us-east-1"),
    ("gcp", "a2-highgpu-1g", "us-central1"),
    ("gcp", "a2-highgpu-8g", "us-central1"),
    ("azure", "Standard_ND96asr_v4", "eastus"),
    ("azure", "Standard_ND96isr_H100_v5", "eastus"),
]

KNOWN_PRODUCTS = {
    "NVIDIA-H100-80GB-HBM3",
    "NVIDIA-A100-SXM4-40GB",
    "NVIDIA-A100-SXM4-80GB",
    "NVIDIA-A10G",
    "NVIDIA-L4",
}


def test_catalog_file_is_plain_json_with_description_and_entries() -> None:
    text = resources.files("gpu_budget").joinpath("data/catalog.json").read_text("utf-8")
    data = json.loads(text)
    assert set(data) == {"description", "entries"}
    assert data["description"].strip()
    assert isinstance(data["entries"], list)
    fields = {
        "cloud",
        "instanceType",
        "region",
        "gpus",
        "gpuProduct",
        "onDemand",
        "spot",
        "source",
        "asOf",
    }
    for raw in data["entries"]:
        assert set(raw) == fields, raw.get("instanceType")


def test_catalog_loads_and_is_cached() -> None:
    assert load_catalog() is load_catalog()
    assert load_catalog().entries


@pytest.mark.parametrize(("cloud", "instance_type", "region"), REQUIRED)
def test_catalog_has_required_entries(cloud: str, instance_type: str, region: str) -> None:
    found = load_catalog().lookup(instance_type, region)
    assert found is not None
    assert found.cloud == cloud


def test_catalog_entries_are_sane() -> None:
    for e in load_catalog().entries:
        assert e.source.strip(), e.label()
        assert date(2025, 1, 1) <= e.as_of <= date(2027, 1, 1), e.label()
        assert e.on_demand > 0, e.label()
        assert e.spot is None or 0 < e.spot < e.on_demand, e.label()
        assert e.gpus >= 1, e.label()
        assert e.gpu_product in KNOWN_PRODUCTS, e.label()
        # Spot figures are ranges in reality; the source must say how one was chosen.
        if e.spot is not None:
            assert "spot" in e.source.lower(), e.label()


def test_catalog_has_no_duplicate_keys() -> None:
    keys = [(e.cloud, e.instance_type, e.region) for e in load_catalog().entries]
    assert len(keys) == len(set(keys))


def test_catalog_instance_types_have_one_gpu_shape() -> None:
    # GPU count and product are properties of the instance type, not the region.
    shapes: dict[str, tuple[int, str]] = {}
    for e in load_catalog().entries:
        shape = (e.gpus, e.gpu_product)
        assert shapes.setdefault(e.instance_type, shape) == shape, e.instance_type


def test_catalog_model_rejects_duplicates() -> None:
    with pytest.raises(ValidationError, match="duplicate"):
        Catalog(entries=[entry("x", "r"), entry("X", "R")])


def test_catalog_entry_rejects_bad_values() -> None:
    with pytest.raises(ValidationError):
        entry(gpus=0)
    with pytest.raises(ValidationError):
        entry(on_demand=0)
    with pytest.raises(ValidationError):
        entry(spot=-1.0)


def test_catalog_lookups() -> None:
    catalog = small_catalog()
    assert catalog.lookup("x8.big", "r2") is not None
    assert catalog.lookup("x8.big", None) is None
    assert catalog.lookup("x8.big", "r9") is None
    found = catalog.find("X8.BIG", "R2")
    assert found is not None
    assert (found[0].region, found[1]) == ("r2", True)
    assert catalog.find("nope", "r1") is None
    assert catalog.gpus_for("x1.small") == 1
    assert catalog.gpus_for("nope") is None
    assert catalog.product_for("g9.huge") == "NVIDIA-TEST"
    assert {e.instance_type for e in catalog.for_gpu_product("nvidia-test")} == {
        "x8.big",
        "g9.huge",
    }


def test_catalog_entry_hourly_price() -> None:
    assert entry(spot=40.0).hourly_price(SPOT) == (40.0, False)
    assert entry(spot=None).hourly_price(SPOT) == (80.0, True)
    assert entry(spot=40.0).hourly_price(ON_DEMAND) == (80.0, False)


# ---------------------------------------------------------------------- properties

prices = st.floats(min_value=0, max_value=1e4, allow_nan=False, allow_infinity=False)
gpu_counts = st.integers(min_value=0, max_value=64)


@given(gpu_price=prices, a=gpu_counts, b=gpu_counts)
def test_pod_rate_is_linear_in_gpus(gpu_price: float, a: int, b: int) -> None:
    price = NodePrice(
        node_hourly_price=gpu_price * 8, gpu_hourly_price=gpu_price, gpus=8, source="x", known=True
    )
    combined = pod_hourly_rate(a + b, price)
    assert math.isclose(
        combined, pod_hourly_rate(a, price) + pod_hourly_rate(b, price), rel_tol=1e-9, abs_tol=1e-9
    )
    assert pod_hourly_rate(a, price) >= 0


node_inputs = st.fixed_dictionaries(
    {
        "gpus": st.integers(min_value=0, max_value=64),
        "annotation": st.one_of(
            st.none(),
            prices.map(str),
            st.text(max_size=8),
        ),
        "instance_type": st.sampled_from([None, "x8.big", "x1.small", "g9.huge", "unknown"]),
        "region": st.sampled_from([None, "r1", "r2", "east", "elsewhere"]),
        "spot": st.booleans(),
        "product": st.sampled_from([None, "NVIDIA-TEST", "NVIDIA-SMALL", "NVIDIA-OTHER"]),
        "count_label": st.one_of(st.none(), st.integers(min_value=-2, max_value=16).map(str)),
        "fallback": prices,
        "override": st.booleans(),
    }
)


@given(inputs=node_inputs)
def test_node_price_is_gpu_price_times_gpus(inputs: dict[str, Any]) -> None:
    labels: dict[str, str] = {}
    if inputs["instance_type"] is not None:
        labels[INSTANCE] = inputs["instance_type"]
    if inputs["region"] is not None:
        labels[REGION] = inputs["region"]
    if inputs["spot"]:
        labels[KARPENTER] = "spot"
    if inputs["product"] is not None:
        labels[PRODUCT] = inputs["product"]
    if inputs["count_label"] is not None:
        labels[COUNT] = inputs["count_label"]
    annotations = {}
    if inputs["annotation"] is not None:
        annotations[NODE_PRICE_ANNOTATION] = inputs["annotation"]
    pricing = PricingOverrides(
        instance_types=(
            [InstanceTypePrice(instance_type="x1.small", region="r1", hourly_price=3.0)]
            if inputs["override"]
            else []
        ),
        gpu_products=(
            [GpuProductPrice(gpu_product="NVIDIA-OTHER", gpu_hourly_price=0.7)]
            if inputs["override"]
            else []
        ),
        fallback_gpu_hourly_price=inputs["fallback"],
    )
    n = node(labels=labels, annotations=annotations, gpus=inputs["gpus"])

    price = price_node(n, pricing, small_catalog())

    assert math.isclose(
        price.node_hourly_price, price.gpu_hourly_price * price.gpus, rel_tol=1e-9, abs_tol=1e-9
    )
    assert price.node_hourly_price >= 0
    assert price.source
    if price.gpus == 0:
        assert price.node_hourly_price == 0
        assert price.known
    if inputs["gpus"] > 0:
        assert price.gpus == inputs["gpus"]
    assert price.known == (not price.source.startswith("fallback"))


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
