"""Who pays: the team and cost centre a budget's spend is attributed to.

Platform teams can pin attribution to the namespace: a Namespace labelled
``gpubudget.dev/team`` (and/or ``gpubudget.dev/cost-center``) attributes every
budget in it to that value, whatever the budget says. The budget guard policy
refuses budgets that claim another value, so the spec and the label agree;
the label wins here as well, so a budget written before the label was set is
still reported where the platform team says.
"""

from __future__ import annotations

from collections.abc import Mapping

from gpu_budget import NAMESPACE_COST_CENTER_LABEL, NAMESPACE_TEAM_LABEL
from gpu_budget.models import Owner


def effective_owner(owner: Owner | None, namespace_labels: Mapping[str, str]) -> Owner:
    spec = owner or Owner()
    return spec.model_copy(
        update={
            "team": namespace_labels.get(NAMESPACE_TEAM_LABEL) or spec.team,
            "cost_center": namespace_labels.get(NAMESPACE_COST_CENTER_LABEL) or spec.cost_center,
        }
    )
