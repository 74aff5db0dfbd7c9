"""Unit tests for gpu_budget.node_pricing: node facts, capacity types and node prices."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpu_budget import GPU_RESOURCE, NODE_PRICE_ANNOTATION
from gpu_budget.catalog import Catalog
from gpu_budget.models import (
    CapacityType,
    GpuProductPrice,
    InstanceTypePrice,
    PricingOverrides,
)
from gpu_budget.node_pricing import NodeFacts, NodePrice, capacity_type, price_node
from tests.unit.test_catalog import small_catalog

INSTANCE = "node.kubernetes.io/instance-type"
REGION = "topology.kubernetes.io/region"
PRODUCT = "nvidia.com/gpu.product"
COUNT = "nvidia.com/gpu.count"
KARPENTER = "karpenter.sh/capacity-type"

SPOT = CapacityType.SPOT
ON_DEMAND = CapacityType.ON_DEMAND


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
        # Read as Kubernetes quantities (gpus.parse_quantity), and only whole counts divide a price.
        ({"allocatable": {GPU_RESOURCE: "1e1"}}, 10),
        ({"allocatable": {GPU_RESOURCE: "2.5"}, "capacity": {GPU_RESOURCE: "4"}}, 4),
        ({"allocatable": {GPU_RESOURCE: "\u00b2"}, "capacity": {GPU_RESOURCE: "2"}}, 2),
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


def test_annotation_is_read_like_every_usd_amount() -> None:
    # formats.parse_usd, as for approvals: commas group thousands.
    n = node(annotations={NODE_PRICE_ANNOTATION: "$1,200"}, gpus=8)
    price = price_node(n, NO_OVERRIDES, Catalog())
    assert price.node_hourly_price == 1200.0
    assert price.gpu_hourly_price == 150.0


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


# ---------------------------------------------------------------------- properties

prices = st.floats(min_value=0, max_value=1e4, allow_nan=False, allow_infinity=False)


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
