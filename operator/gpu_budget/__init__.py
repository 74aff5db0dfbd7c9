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
"""Who set the approved amount, and when: recorded by the admission webhook."""

NODE_PRICE_ANNOTATION = f"{GROUP}/hourly-price"
"""Set by a platform team on a Node: the whole node's price in USD per hour."""

GPU_RESOURCE = "nvidia.com/gpu"
