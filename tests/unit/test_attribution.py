"""Who pays: a namespace's team and cost-centre labels win over the budget's own."""

from __future__ import annotations

from gpu_budget import NAMESPACE_COST_CENTER_LABEL, NAMESPACE_TEAM_LABEL
from gpu_budget.attribution import effective_owner
from gpu_budget.models import Owner

SPEC_OWNER = Owner(team="research", cost_center="cc-1", project="llm")


def test_without_namespace_labels_the_budget_says() -> None:
    assert effective_owner(SPEC_OWNER, {}) == SPEC_OWNER
    assert effective_owner(SPEC_OWNER, {"unrelated": "x"}) == SPEC_OWNER


def test_namespace_labels_win_over_the_budget() -> None:
    labels = {NAMESPACE_TEAM_LABEL: "platform", NAMESPACE_COST_CENTER_LABEL: "cc-9"}
    assert effective_owner(SPEC_OWNER, labels) == Owner(
        team="platform", cost_center="cc-9", project="llm"
    )


def test_each_label_pins_only_its_own_field() -> None:
    assert effective_owner(SPEC_OWNER, {NAMESPACE_TEAM_LABEL: "platform"}) == Owner(
        team="platform", cost_center="cc-1", project="llm"
    )
    assert effective_owner(SPEC_OWNER, {NAMESPACE_COST_CENTER_LABEL: "cc-9"}) == Owner(
        team="research", cost_center="cc-9", project="llm"
    )


def test_an_empty_label_does_not_erase_the_budgets_value() -> None:
    assert effective_owner(SPEC_OWNER, {NAMESPACE_TEAM_LABEL: ""}) == SPEC_OWNER


def test_a_budget_without_owner_is_attributed_to_its_namespace() -> None:
    assert effective_owner(None, {}) == Owner()
    assert effective_owner(None, {NAMESPACE_TEAM_LABEL: "platform"}) == Owner(team="platform")


def test_the_budgets_owner_is_not_modified() -> None:
    effective_owner(SPEC_OWNER, {NAMESPACE_TEAM_LABEL: "platform"})
    assert SPEC_OWNER.team == "research"
