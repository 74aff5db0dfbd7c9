"""Unit tests for ``kubectl gpubudget estimate``: the operator's pricing, side by side."""

from __future__ import annotations

import pytest

from gpu_budget.catalog import load_catalog
from gpu_budget.estimate import price_estimate
from gpu_budget.models import BudgetPolicySpec, CapacityType, Estimate, PricingOverrides
from gpu_budget.plugin.errors import PluginError
from gpu_budget.plugin.estimate import Request, gpus_for, quote, summary
from gpu_budget.plugin.manifest import read_manifest

CATALOG = load_catalog()
DEFAULT = BudgetPolicySpec()


def test_the_headline_is_the_operators_own_estimate() -> None:
    estimate = Estimate(hours=10, instance_type="p5.48xlarge", capacity_type=CapacityType.SPOT)
    q = quote(Request(estimate, 16), DEFAULT, CATALOG)
    assert q.estimate == price_estimate(estimate, 16, DEFAULT.pricing, 0.5, CATALOG)
    assert not q.needs_finance
    assert "contingency" in summary(q, "defaults") and "no finance approval" in summary(q, "x")


def test_options_cover_every_cloud_with_the_gpu_product_on_demand_and_spot() -> None:
    q = quote(Request(Estimate(hours=10, instance_type="p5.48xlarge"), 16), DEFAULT, CATALOG)
    by_place = {(r["cloud"], r["region"]): r for r in q.options}
    assert set(by_place) == {("aws", "us-east-1"), ("aws", "us-west-2"), ("azure", "eastus")}
    east = by_place[("aws", "us-east-1")]
    assert east["on_demand_total"] == round(16 * 10 * 55.04 / 8 * 1.5, 2)
    assert east["spot_total"] == round(16 * 10 * 21.69 / 8 * 1.5, 2)
    # No published spot price: shown as none, not as the on-demand fallback.
    assert by_place[("aws", "us-west-2")]["spot_total"] is None


def test_region_filter_and_policy_overrides_apply_in_their_region_only() -> None:
    policy = BudgetPolicySpec.model_validate(
        {
            "contingency": 0,
            "approvalCeiling": 1000,
            "pricing": {
                "instanceTypes": [
                    {"instanceType": "p5.48xlarge", "region": "us-west-2", "hourlyPrice": 8}
                ]
            },
        }
    )
    estimate = Estimate(hours=10, instance_type="p5.48xlarge")
    west = quote(Request(estimate, 8, region="us-west-2"), policy, CATALOG)
    assert [(r["region"], r["on_demand_total"]) for r in west.options] == [("us-west-2", 80.0)]
    east = quote(Request(estimate, 8, region="us-east-1"), policy, CATALOG)
    assert east.options[0]["on_demand_total"] == 550.4
    assert east.options[0]["finance"] == "no"


def test_finance_is_needed_above_the_policy_ceiling_for_the_cap_or_the_estimate() -> None:
    estimate = Estimate(hours=200, instance_type="p5.48xlarge")
    q = quote(Request(estimate, 16), DEFAULT, CATALOG)
    assert q.needs_finance and "needs finance" in summary(q, "x")
    assert q.options[0]["finance"] == "on-demand, spot"
    small = quote(
        Request(Estimate(hours=1, gpu_product="NVIDIA-L4"), 1, cap=20_000), DEFAULT, CATALOG
    )
    assert small.needs_finance


def test_gpus_default_to_one_instance_and_are_asked_for_otherwise() -> None:
    assert gpus_for(Estimate(hours=1, instance_type="p5.48xlarge"), None, CATALOG) == 8
    assert gpus_for(Estimate(hours=1, gpus=3, instance_type="p5.48xlarge"), None, CATALOG) == 3
    with pytest.raises(PluginError, match="--gpus"):
        gpus_for(Estimate(hours=1, gpu_product="NVIDIA-L4"), None, CATALOG)


def test_an_unknown_product_prices_at_the_fallback_with_no_options() -> None:
    q = quote(Request(Estimate(hours=2, gpu_product="Nope"), 2), DEFAULT, CATALOG)
    assert q.options == [] and q.estimate.total == 2 * 2 * 4 * 1.5
    assert PricingOverrides().fallback_gpu_hourly_price == 4


MANIFEST = """
apiVersion: gpubudget.dev/v1alpha1
kind: TrainingBudget
metadata: {name: run, namespace: ml}
spec:
  costCap: 500
  estimate: {hours: 2, gpuProduct: NVIDIA-A10G}
---
apiVersion: batch/v1
kind: Job
metadata: {name: run, namespace: ml, labels: {gpubudget.dev/budget: run}}
spec:
  parallelism: 3
  template:
    spec:
      containers:
        - name: t
          resources: {limits: {nvidia.com/gpu: 2}}
"""


def test_a_manifest_gives_the_budget_and_its_workloads_gpus() -> None:
    manifest = read_manifest(MANIFEST, "job.yaml")
    assert (manifest.budget, manifest.namespace, manifest.workload_gpus) == ("run", "ml", 6)
    assert manifest.spec is not None and manifest.spec.cost_cap == 500


def test_a_workload_alone_names_its_budget() -> None:
    manifest = read_manifest(MANIFEST.split("---")[1], "job.yaml")
    assert manifest.spec is None and manifest.budget == "run" and manifest.workload_gpus == 6


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: ConfigMap\n", "neither a TrainingBudget"),
        (": [", "not YAML"),
        (MANIFEST.replace("costCap: 500", "costCap: -1"), "spec.costCap"),
    ],
)
def test_bad_manifests_are_refused_with_why(text: str, message: str) -> None:
    with pytest.raises(PluginError, match=message):
        read_manifest(text, "job.yaml")
