"""Per-budget series: labelled with the effective owner, moved (not doubled) when it changes."""

from __future__ import annotations

from prometheus_client import REGISTRY

from gpu_budget.metrics import forget_budget, observe_budget
from gpu_budget.models import (
    ApprovalStatus,
    Owner,
    Placement,
    TrainingBudgetSpec,
    TrainingBudgetStatus,
)

SPEC = TrainingBudgetSpec.model_validate({"costCap": 100})
NAMESPACE = "metrics-test"


def spent(name: str, team: str, cost_center: str = "") -> float | None:
    return REGISTRY.get_sample_value(
        "gpubudget_spent_usd",
        {"namespace": NAMESPACE, "budget": name, "team": team, "cost_center": cost_center},
    )


def test_series_carry_the_owner_labels() -> None:
    observe_budget(
        NAMESPACE, "a", SPEC, Owner(team="ml", cost_center="cc"), TrainingBudgetStatus(spent=12.0)
    )
    assert spent("a", "ml", "cc") == 12.0
    forget_budget(NAMESPACE, "a")
    assert spent("a", "ml", "cc") is None


def test_a_changed_owner_moves_the_series_so_nothing_counts_twice() -> None:
    observe_budget(NAMESPACE, "b", SPEC, Owner(team="ml"), TrainingBudgetStatus(spent=10.0))
    observe_budget(NAMESPACE, "b", SPEC, Owner(team="platform"), TrainingBudgetStatus(spent=11.0))
    assert spent("b", "ml") is None
    assert spent("b", "platform") == 11.0
    cap = REGISTRY.get_sample_value(
        "gpubudget_cap_usd",
        {"namespace": NAMESPACE, "budget": "b", "team": "ml", "cost_center": ""},
    )
    assert cap is None
    forget_budget(NAMESPACE, "b")
    assert spent("b", "platform") is None


def test_other_budgets_keep_their_series() -> None:
    observe_budget(NAMESPACE, "c", SPEC, Owner(team="ml"), TrainingBudgetStatus(spent=1.0))
    observe_budget(NAMESPACE, "d", SPEC, Owner(team="ml"), TrainingBudgetStatus(spent=2.0))
    observe_budget(NAMESPACE, "c", SPEC, Owner(team="x"), TrainingBudgetStatus(spent=3.0))
    assert spent("d", "ml") == 2.0
    forget_budget(NAMESPACE, "c")
    forget_budget(NAMESPACE, "d")
    assert spent("d", "ml") is None


def test_forgetting_an_unknown_budget_is_harmless() -> None:
    forget_budget(NAMESPACE, "never-seen")


def test_gpu_hours_approval_and_placement_are_exported_and_follow_the_budget() -> None:
    """What reports and the FOCUS export read: GPU-hours, the approval, where GPUs ran."""
    labels = {"namespace": NAMESPACE, "budget": "e", "team": "ml", "cost_center": ""}
    on_spot = Placement(
        gpu_product="NVIDIA-H100-80GB-HBM3",
        capacity_type="spot",
        instance_type="p5.48xlarge",
        region="us-east-1",
    )
    status = TrainingBudgetStatus(
        spent=5.0,
        gpu_hours=16.0,
        placement=on_spot,
        approval=ApprovalStatus(required=True, approved_amount=50_000, spend_limit=100),
    )
    observe_budget(NAMESPACE, "e", SPEC, Owner(team="ml"), status)
    assert REGISTRY.get_sample_value("gpubudget_gpu_hours", labels) == 16.0
    assert REGISTRY.get_sample_value("gpubudget_approved_usd", labels) == 50_000
    spot = {**labels, **on_spot.model_dump(), "capacity_type": "spot"}
    assert REGISTRY.get_sample_value("gpubudget_budget_info", spot) == 1
    moved = on_spot.model_copy(update={"capacity_type": "mixed"})
    observe_budget(
        NAMESPACE, "e", SPEC, Owner(team="ml"), status.model_copy(update={"placement": moved})
    )
    assert REGISTRY.get_sample_value("gpubudget_budget_info", spot) is None
    assert REGISTRY.get_sample_value("gpubudget_budget_info", {**spot, "capacity_type": "mixed"})
    forget_budget(NAMESPACE, "e")
    assert REGISTRY.get_sample_value("gpubudget_gpu_hours", labels) is None
    assert (
        REGISTRY.get_sample_value("gpubudget_budget_info", {**spot, "capacity_type": "mixed"})
        is None
    )
