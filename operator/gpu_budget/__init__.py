"""gpu-budget-operator: a hard dollar budget on GPU training runs, metered while they run."""

GROUP = "gpubudget.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

BUDGET_LABEL = f"{GROUP}/budget"
"""Workloads (and their pods) name the budget they spend from with this label."""

APPROVED_AMOUNT_ANNOTATION = f"{GROUP}/approved-amount"
"""Set by finance on a TrainingBudget: spend up to this many USD is approved."""

APPROVED_BY_ANNOTATION = f"{GROUP}/approved-by"
APPROVED_AT_ANNOTATION = f"{GROUP}/approved-at"
APPROVED_CAP_ANNOTATION = f"{GROUP}/approved-cap"
"""Who set the approved amount, when, and the cap the budget had at that moment:
recorded by the admission webhook. The approval covers at most that cap, so raising
the cap afterwards does not widen it."""

APPROVAL_REASON_ANNOTATION = f"{GROUP}/approval-reason"
"""Set by finance with the amount: why it was approved. It goes with the amount (the
webhook keeps it unchanged unless the amount changes), and status and the Event
carry it."""

ADMITTED_ANNOTATION = f"{GROUP}/admitted"
"""On a workload: the uid of the budget that admitted it (set by the operator only)."""

SPEND_RECORD_ANNOTATION = f"{GROUP}/spend-record"
"""On a workload: JSON record of its budget's spend and stop, written by the operator
when it stops the workload or its budget is deleted, so a budget recreated under the
same name inherits both (see :mod:`gpu_budget.inheritance`)."""

FINALIZER = f"{GROUP}/finalizer"
"""The operator's finalizer on TrainingBudgets; only the operator may remove it."""

NAMESPACE_TEAM_LABEL = f"{GROUP}/team"
NAMESPACE_COST_CENTER_LABEL = f"{GROUP}/cost-center"
"""On a Namespace: the team and cost centre every budget in it is attributed to."""

NODE_PRICE_ANNOTATION = f"{GROUP}/hourly-price"
"""Set by a platform team on a Node: the whole node's price in USD per hour."""

GPU_RESOURCE = "nvidia.com/gpu"
"""The whole-GPU resource; the policy's ``gpuResources`` name every GPU resource."""
