"""The API of gpu-budget-operator as pydantic models: the one source of truth.

The CRDs in ``crds/`` are generated from these models by ``gpu_budget.crdgen``;
a unit test fails when the files and the models disagree. Field names are
snake_case in Python and camelCase on the wire (``by_alias=True``), as the
Kubernetes API conventions ask.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

USD = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]
Ratio = Annotated[float, Field(ge=0, le=1)]


class ApiModel(BaseModel):
    """Base for every API object: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
    )


class InternalModel(BaseModel):
    """Base for values that live only inside the operator: immutable, unknown fields rejected.

    Rejecting unknown fields is what makes a removed field fail loudly: a caller
    (or a test) still passing it is an error, not a value silently dropped.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")


class CapacityType(StrEnum):
    SPOT = "spot"
    ON_DEMAND = "on-demand"


class EnforcementAction(StrEnum):
    SUSPEND = "Suspend"
    KILL = "Kill"
    ALERT = "Alert"


class CostModel(StrEnum):
    ALLOCATION = "Allocation"
    """Pay for GPUs held, as clouds bill."""
    UTILIZATION = "Utilization"
    """Pay for GPU work done: rate x utilisation, for shared or on-prem GPUs."""


class Phase(StrEnum):
    PENDING = "Pending"
    AWAITING_APPROVAL = "AwaitingApproval"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    KILLED = "Killed"


DEFAULT_WARN_AT: tuple[float, ...] = (0.5, 0.8, 0.9)

MAX_WARN_AT = 10
"""Bound on warning thresholds; keeps the CEL uniqueness rule cheap for the API server."""


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, Any]:
    """One ``x-kubernetes-validations`` entry: a CEL rule the API server enforces.

    Every rule here has a pydantic validator that mirrors it, so the pure core
    rejects the same objects as the API server.
    """
    entry: dict[str, Any] = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


WARN_AT_UNIQUE_RULE = "self.all(x, self.exists_one(y, y == x))"


def _unique_thresholds(values: list[float], field: str) -> list[float]:
    """Mirror of :data:`WARN_AT_UNIQUE_RULE`."""
    if len(set(values)) != len(values):
        raise ValueError(f"{field} entries must be unique")
    return values


# --------------------------------------------------------------------------- spec


ESTIMATE_PRICE_KEYS_MESSAGE = (
    "estimate.instanceType and estimate.gpuProduct are mutually exclusive: set one of them"
)


class Estimate(ApiModel):
    """The engineer's pre-run estimate; priced from the catalog plus contingency.

    At most one of instanceType and gpuProduct may be set: both name the price, and
    accepting both would silently ignore one of them.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.instanceType) && has(self.gpuProduct))",
                    ESTIMATE_PRICE_KEYS_MESSAGE,
                    field_path=".gpuProduct",
                )
            ]
        }
    )

    gpus: int | None = Field(
        default=None,
        ge=1,
        description="GPUs the run uses. When absent, the sum of the attached workloads' "
        "nvidia.com/gpu requests.",
    )
    hours: float = Field(gt=0, description="Expected wall-clock duration of the run in hours.")
    instance_type: str | None = Field(
        default=None,
        min_length=1,
        description="Instance type to price the estimate with, e.g. p5.48xlarge.",
    )
    gpu_product: str | None = Field(
        default=None,
        min_length=1,
        description="GPU product (nvidia.com/gpu.product) to price the estimate with when "
        "no instance type is given, e.g. NVIDIA-H100-80GB-HBM3.",
    )
    capacity_type: CapacityType | None = Field(
        default=None, description="Price the estimate as spot or on-demand capacity."
    )

    @model_validator(mode="after")
    def _one_price_key(self) -> Estimate:
        if self.instance_type is not None and self.gpu_product is not None:
            raise ValueError(ESTIMATE_PRICE_KEYS_MESSAGE)
        return self


class IdleRule(ApiModel):
    """Act when the run's GPUs sit idle for too long."""

    below_utilization: Fraction = Field(
        default=0.1, description="Utilisation (0-1) under which the GPUs count as idle."
    )
    for_minutes: float = Field(
        default=30, gt=0, description="How long the GPUs must stay idle before acting."
    )
    action: Literal["Alert", "Suspend"] = Field(
        default="Alert", description="Alert only, or suspend the workloads."
    )


class Enforcement(ApiModel):
    """What happens as spend approaches and reaches the cap."""

    action: EnforcementAction = Field(
        default=EnforcementAction.SUSPEND,
        description="At the cap: Suspend the workloads (they can resume), Kill them for "
        "good, or Alert only.",
    )
    warn_at: list[Fraction] | None = Field(
        default=None,
        max_length=MAX_WARN_AT,
        description="Fractions of the cap (each in (0, 1), no duplicates) at which to warn. "
        "When absent, the BudgetPolicy's defaultWarnAt (0.5, 0.8, 0.9 unless changed).",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(WARN_AT_UNIQUE_RULE, "spec.enforcement.warnAt entries must be unique")
            ]
        },
    )
    checkpoint_lead_seconds: int = Field(
        default=300,
        ge=0,
        le=86400,
        description="Seconds before a planned stop at which pods get the "
        "gpubudget.dev/stop-at annotation, so training code can checkpoint.",
    )
    idle: IdleRule | None = Field(default=None, description="Optional idle-GPU rule.")

    @field_validator("warn_at")
    @classmethod
    def _unique_warn_at(cls, v: list[float] | None) -> list[float] | None:
        return None if v is None else _unique_thresholds(v, "spec.enforcement.warnAt")


class Owner(ApiModel):
    """Attribution for reports and metrics."""

    team: str | None = Field(default=None, max_length=63, description="Owning team.")
    cost_center: str | None = Field(default=None, max_length=63, description="Cost centre.")
    project: str | None = Field(default=None, max_length=63, description="Project.")


class Outcome(ApiModel):
    """What the run produces, as a PromQL expression its training job exports."""

    query: str = Field(
        min_length=1,
        max_length=4096,
        description="PromQL expression of the outcome so far, e.g. "
        'sum(train_tokens_total{namespace="ml-team",job_name="llm"}). Several series are '
        "summed. Evaluated at most every --outcome-interval seconds (30 by default) while "
        "the run holds GPUs, and once after; a query that fails or finds nothing is "
        "reported in the OutcomeMeasured condition.",
    )
    unit: str = Field(
        min_length=1,
        max_length=32,
        description="What one unit of the scaled value is, e.g. Mtokens, epoch, checkpoint.",
    )
    scale: float = Field(
        default=1.0,
        gt=0,
        description="Multiplies the query's value into units, e.g. 1e-6 for tokens to Mtokens.",
    )


class TrainingBudgetSpec(ApiModel):
    """A hard dollar budget on a GPU training run."""

    cost_cap: float = Field(gt=0, description="The most this run may spend, in USD.")
    estimate: Estimate | None = Field(default=None, description="The pre-run estimate.")
    enforcement: Enforcement = Field(
        default_factory=Enforcement, description="Warnings and the action at the cap."
    )
    owner: Owner | None = Field(default=None, description="Who pays: team, cost centre, project.")
    cost_model: CostModel = Field(
        default=CostModel.ALLOCATION,
        description="Allocation: pay for GPUs held (as clouds bill). Utilization: pay for GPU "
        "work done (rate x utilisation), for shared or on-prem GPUs.",
    )
    outcome: Outcome | None = Field(
        default=None,
        description="What the run produces (tokens, epochs, checkpoints), read from "
        "Prometheus; status.outcome then shows it and the cost per unit.",
    )


# ------------------------------------------------------------------------- status


class Condition(ApiModel):
    """A Kubernetes-style condition (metav1.Condition)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: datetime
    observed_generation: int | None = None


class EstimateStatus(ApiModel):
    """The estimate as the operator priced it."""

    gpus: float = Field(ge=0)
    hours: float = Field(gt=0)
    gpu_hourly_price: USD
    base_cost: USD
    contingency: float = Field(ge=0)
    total: USD
    priced_from: str = Field(description="Which price was used, e.g. 'catalog p5.48xlarge spot'.")


class WorkloadRef(ApiModel):
    kind: str
    name: str
    state: str = Field(description="Running, Pending, Suspended, Finished or Killed.")


class PodCharge(ApiModel):
    """The ledger line of one pod: what it has cost up to ``accounted_until``."""

    uid: str
    name: str
    node: str
    gpus: float = Field(ge=0, description="GPU-equivalents held (a MIG slice is a fraction).")
    gpu_hourly_price: USD
    started_at: datetime
    accounted_until: datetime
    open: bool = Field(description="Still holding GPUs and accruing.")
    estimated: bool = Field(
        default=False,
        description="The end time could not be observed (deleted while the operator was "
        "down), so it was charged up to when the operator noticed.",
    )
    spent: USD = 0.0
    idle_spend: USD = 0.0
    gpu_seconds: float = Field(default=0.0, ge=0)
    metered_gpu_seconds: float = Field(
        default=0.0, ge=0, description="GPU-seconds for which utilisation was known."
    )
    busy_gpu_seconds: float = Field(default=0.0, ge=0)


class LedgerTotals(ApiModel):
    """Sums folded in from pods that no longer exist."""

    pods: int = Field(default=0, ge=0)
    estimated_pods: int = Field(
        default=0, ge=0, description="Closed pods whose end was estimated, not observed."
    )
    spent: USD = 0.0
    idle_spend: USD = 0.0
    gpu_seconds: float = Field(default=0.0, ge=0)
    metered_gpu_seconds: float = Field(default=0.0, ge=0)
    busy_gpu_seconds: float = Field(default=0.0, ge=0)


class Ledger(ApiModel):
    first_started_at: datetime | None = Field(
        default=None, description="When the first pod of the run started holding GPUs."
    )
    closed: LedgerTotals = Field(default_factory=LedgerTotals)
    pods: list[PodCharge] = Field(default_factory=list)
    inherited_from: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Uids of deleted budgets of this name whose spend is folded into closed.",
    )
    folded_until: datetime | None = Field(
        default=None,
        description="Finished pods that ended by this instant are charged and folded into "
        "closed; their lines are not kept.",
    )
    inherited_until: datetime | None = Field(
        default=None,
        description="The predecessors charged their pods up to this instant; pods are "
        "charged from then on, never twice.",
    )


class Placement(ApiModel):
    """What the budget's GPUs ran on, as FinOps reports group it; ``mixed`` when several."""

    gpu_product: str | None = None
    capacity_type: str | None = Field(default=None, description="spot, on-demand or mixed.")
    instance_type: str | None = None
    region: str | None = None


class OutcomeStatus(ApiModel):
    """The outcome so far, and what each unit of it cost."""

    value: float = Field(description="The outcome query's value times its scale, in units.")
    unit: str
    cost_per_unit: USD | None = Field(
        default=None, description="spent / value; absent while the value is not above 0."
    )
    observed_at: datetime = Field(description="When Prometheus answered with the value.")


class TrainingBudgetStatus(ApiModel):
    phase: Phase = Phase.PENDING
    spent: USD = 0.0
    burn_rate_per_hour: USD = 0.0
    projected_spend: USD | None = None
    estimate: EstimateStatus | None = None
    gpu_utilization: Ratio | None = None
    idle_spend: USD = 0.0
    gpu_hours: float = Field(default=0.0, ge=0, description="GPU-hours held so far.")
    placement: Placement | None = Field(
        default=None, description="What the GPUs ran on (kept once the pods are gone)."
    )
    outcome: OutcomeStatus | None = Field(
        default=None,
        description="With spec.outcome: its last value and the cost per unit (kept when "
        "the query later finds nothing).",
    )
    periods: list[PeriodMark] = Field(
        default_factory=list,
        max_length=2,
        description="The spend when each period a limit counts began.",
    )
    workloads: list[WorkloadRef] = Field(default_factory=list)
    last_accounted_at: datetime | None = None
    observed_generation: int | None = None
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    approval: ApprovalStatus | None = Field(
        default=None, description="Finance approval, when the budget needs it."
    )
    enforcement: EnforcementStatus = Field(default_factory=lambda: EnforcementStatus())
    ledger: Ledger = Field(default_factory=Ledger)


class ApprovalStatus(ApiModel):
    """Finance's approval as the operator recorded it."""

    required: bool
    approved_amount: USD | None = None
    approved_cap: USD | None = Field(
        default=None,
        description="The cap when finance approved; the approval covers at most this cap.",
    )
    approved_by: str | None = Field(default=None, description="Who set the approved amount.")
    approved_at: datetime | None = None
    reason: str | None = Field(
        default=None, max_length=1024, description="Why finance approved, in its words."
    )
    spend_limit: USD = Field(description="The most that may be spent now.")
    hard_limit: USD = Field(
        default=0.0,
        description="The most that may ever be spent, whatever the action at the cap: the "
        "approved amount, or without an approval the ceiling.",
    )


class EnforcementStatus(ApiModel):
    """What enforcement has done and plans; kept so a restart decides the same."""

    reason: str | None = Field(default=None, description="Why the run is held or stopped.")
    warned: list[float] = Field(
        default_factory=list,
        max_length=20,
        description="Thresholds (fractions of the cap) already warned about.",
    )
    stop_at: datetime | None = Field(
        default=None, description="When the run will be stopped if the burn rate holds."
    )
    stopped_at: datetime | None = Field(default=None, description="When the run was stopped.")
    spent_at_stop: USD | None = None
    limit_at_stop: USD | None = Field(
        default=None,
        description="The spend limit when the run was stopped; it resumes only once the "
        "limit rises above it (cap raised, and approved when above the ceiling).",
    )
    stopped_at_generation: int | None = None
    idle_since: datetime | None = Field(
        default=None, description="Start of the current stretch of idle GPUs."
    )
    idle_alerted_for: datetime | None = None


# ------------------------------------------------------------------------- policy


class InstanceTypePrice(ApiModel):
    """Price of a whole instance type, overriding the built-in catalog."""

    instance_type: str = Field(min_length=1, description="Instance type, e.g. p5.48xlarge.")
    region: str | None = Field(default=None, description="Region; absent matches any region.")
    capacity_type: CapacityType | None = Field(
        default=None, description="spot or on-demand; absent matches both."
    )
    hourly_price: USD = Field(description="Price of the whole instance, USD per hour.")


class GpuProductPrice(ApiModel):
    """Price of one GPU of a product, for nodes that no instance price covers."""

    gpu_product: str = Field(min_length=1, description="Value of nvidia.com/gpu.product.")
    capacity_type: CapacityType | None = Field(
        default=None, description="spot or on-demand; absent matches both."
    )
    gpu_hourly_price: USD = Field(description="Price of one GPU, USD per hour.")


class PricingOverrides(ApiModel):
    """Prices that take precedence over the built-in catalog."""

    instance_types: list[InstanceTypePrice] = Field(
        default_factory=list, description="Prices of whole instance types."
    )
    gpu_products: list[GpuProductPrice] = Field(
        default_factory=list, description="Prices of single GPUs by product."
    )
    fallback_gpu_hourly_price: USD = Field(
        default=4.0,
        description="Per-GPU price for a GPU node no other price covers; the budget gets a "
        "condition naming the node.",
    )


class GpuShare(StrEnum):
    PER_UNIT = "PerUnit"
    """Each unit of the resource is ``gpusPerUnit`` GPUs."""
    MIG_SLICES = "MigComputeSlices"
    """A MIG profile (``mig-3g.20gb``): its compute slices over ``migSlicesPerGpu``."""


class GpuResource(ApiModel):
    """An extended resource that is (a share of) a GPU, and how much of a GPU one unit is."""

    resource: str = Field(
        min_length=1,
        pattern=r"^[A-Za-z0-9.\-]+/[A-Za-z0-9.\-_]*\*?$",
        description="Resource name, e.g. nvidia.com/gpu; a trailing * matches a prefix "
        "(nvidia.com/mig-*). The first matching entry applies.",
    )
    share: GpuShare = Field(
        default=GpuShare.PER_UNIT,
        description="PerUnit: one unit is gpusPerUnit GPUs. MigComputeSlices: a MIG "
        "profile is priced as its compute slices over migSlicesPerGpu.",
    )
    gpus_per_unit: float = Field(
        default=1.0, ge=0, description="GPUs one unit stands for (PerUnit only)."
    )
    mig_slices_per_gpu: int = Field(
        default=7, ge=1, le=64, description="Compute slices of the parent GPU (MIG only)."
    )


DEFAULT_GPU_RESOURCES: tuple[GpuResource, ...] = (
    GpuResource(resource="nvidia.com/gpu"),
    GpuResource(resource="nvidia.com/mig-*", share=GpuShare.MIG_SLICES),
    GpuResource(resource="nvidia.com/gpu.shared"),
    GpuResource(resource="amd.com/gpu"),
    GpuResource(resource="gpu.intel.com/millicores", gpus_per_unit=0.001),
    GpuResource(resource="gpu.intel.com/memory.max", gpus_per_unit=0.0),
    GpuResource(resource="gpu.intel.com/*"),
)
"""Every GPU resource the operator counts unless the policy says otherwise.

Time-sliced ``nvidia.com/gpu.shared`` replicas are priced as whole GPUs: the
operator cannot see how many replicas a GPU was cut into, and must not make GPU
time look cheaper than it may be (set ``gpusPerUnit`` to 1/replicas). Intel's
``memory.max`` is a companion of its GPU resources, not a GPU count.
"""


class PeriodScope(StrEnum):
    NAMESPACE = "Namespace"
    TEAM = "Team"
    COST_CENTER = "CostCenter"


class Period(StrEnum):
    """Calendar periods in UTC: weeks start on Monday, months on the 1st."""

    WEEKLY = "Weekly"
    MONTHLY = "Monthly"


class PeriodLimit(ApiModel):
    """A spending limit for a namespace, team or cost centre over a calendar period."""

    scope: PeriodScope = Field(description="What the limit counts: Namespace, Team or CostCenter.")
    name: str = Field(
        min_length=1, max_length=63, description="The namespace, team or cost centre."
    )
    period: Period = Field(description="Weekly (from Monday) or Monthly, in UTC.")
    amount: float = Field(gt=0, description="The most its budgets may spend in a period, in USD.")


class PeriodMark(ApiModel):
    """Where a budget's spend stood when a period began: spend in the period is the rest."""

    period: Period
    start: datetime
    spent_at_start: USD


class DepartedSpend(ApiModel):
    """A deleted budget's spend in a period, kept so deleting a budget frees no limit."""

    budget_uid: str
    namespace: str
    team: str | None = None
    cost_center: str | None = None
    period: Period
    start: datetime
    spent: USD


class BudgetPolicyStatus(ApiModel):
    departed: list[DepartedSpend] = Field(
        default_factory=list,
        description="Spend in the current periods of budgets deleted in them.",
    )


class BudgetPolicySpec(ApiModel):
    """Cluster-wide policy; the operator reads the object named ``default``."""

    approval_ceiling: USD = Field(
        default=10000, description="Budgets above this many USD need finance's approval."
    )
    contingency: float = Field(
        default=0.5, ge=0, le=10, description="Added to estimates: 0.5 means +50%."
    )
    finance_groups: list[str] = Field(
        default_factory=lambda: ["finance"],
        description="Groups whose members may set gpubudget.dev/approved-amount.",
    )
    default_warn_at: list[Fraction] = Field(
        default_factory=lambda: list(DEFAULT_WARN_AT),
        max_length=MAX_WARN_AT,
        description="Warning thresholds for budgets that set none (each in (0, 1), no duplicates).",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(WARN_AT_UNIQUE_RULE, "spec.defaultWarnAt entries must be unique")
            ]
        },
    )
    notification_webhook_url: str | None = Field(
        default=None, description="Slack-compatible webhook that receives warnings and actions."
    )
    pricing: PricingOverrides = Field(
        default_factory=PricingOverrides, description="Overrides of the built-in price catalog."
    )
    allowed_actions: list[EnforcementAction] = Field(
        default_factory=lambda: list(EnforcementAction),
        min_length=1,
        description="Actions at the cap engineers may choose; the API server refuses others.",
    )
    alert_above_ceiling: bool = Field(
        default=False,
        description="Whether a budget whose cap is above the approval ceiling may choose "
        "Alert. Either way an Alert-only budget stops at the approved amount (or, without "
        "an approval, at the ceiling): an approval is a limit whatever the action.",
    )
    max_grace_period_seconds: int = Field(
        default=300,
        ge=0,
        le=86400,
        description="Longest termination grace the operator grants a stopped pod; pods "
        "asking for more are deleted with this grace period.",
    )
    gpu_resources: list[GpuResource] = Field(
        default_factory=lambda: list(DEFAULT_GPU_RESOURCES),
        min_length=1,
        max_length=64,
        description="Extended resources that are GPUs, and how each is counted and priced. "
        "The first matching entry applies.",
    )
    period_limits: list[PeriodLimit] = Field(
        default_factory=list,
        max_length=200,
        description="Spending limits per namespace, team or cost centre over a week or a "
        "month. A budget that does not fit what is left waits for finance; running budgets "
        "stop when the period's spend reaches the limit; each period starts afresh.",
    )

    @field_validator("default_warn_at")
    @classmethod
    def _unique_default_warn_at(cls, v: list[float]) -> list[float]:
        return _unique_thresholds(v, "spec.defaultWarnAt")
