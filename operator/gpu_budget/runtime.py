"""Per-process state of the operator; everything in it can be rebuilt from the cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import ValidationError

from gpu_budget import metrics, notify
from gpu_budget.config import OperatorConfig
from gpu_budget.kube import ClusterClient
from gpu_budget.liveness import PassTracker
from gpu_budget.models import BudgetPolicySpec, TrainingBudgetStatus
from gpu_budget.outcomes import OutcomeReading, OutcomeSource
from gpu_budget.schedule import Schedule
from gpu_budget.utilization import UtilizationSnapshot
from gpu_budget.view import ClusterView

log = structlog.get_logger("gpu_budget")

STATUS_FIELDS = frozenset(
    field.alias or name for name, field in TrainingBudgetStatus.model_fields.items()
)


@dataclass
class Runtime:
    config: OperatorConfig
    view: ClusterView
    utilization: UtilizationSnapshot = field(
        default_factory=lambda: UtilizationSnapshot(available=False, error="not queried yet")
    )
    poller: asyncio.Task[None] | None = None
    outcome_source: OutcomeSource | None = None
    """Where outcome queries go; None without a Prometheus URL (they fail, and say so)."""
    outcomes: dict[str, OutcomeReading] = field(default_factory=dict)
    """Per budget uid, the latest answer to its outcome query."""
    outcome_queries: asyncio.Task[None] | None = None
    """The outcome queries in flight (one batch at a time, off the event loop)."""
    client: ClusterClient = field(default_factory=ClusterClient)
    notifier: notify.Notifier = field(default_factory=notify.Notifier)
    passes: PassTracker = field(default_factory=PassTracker)
    schedule: Schedule = field(default_factory=Schedule)
    writing: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    """Status writes in flight, per budget uid (one at a time per budget)."""
    write_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(8))
    """Status writes (and finalizer patches) in flight at once (on the event loop; stops
    use the client's threads)."""
    adding_finalizers: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    """Finalizer patches in flight, per budget uid (kept so the tasks are not collected)."""
    written: dict[str, TrainingBudgetStatus] = field(default_factory=dict)
    """The status last written per budget uid (newer than the cache's until it comes back)."""
    computed: dict[str, TrainingBudgetStatus] = field(default_factory=dict)
    """The status last computed per budget uid, written or not: the next pass starts there."""
    seen: dict[str, tuple[object, ...]] = field(default_factory=dict)
    """Per budget uid, what it looked like when last accounted (see loop.fingerprint)."""
    finalizing: dict[str, str] = field(default_factory=dict)
    """Per budget uid, the resourceVersion whose finalizers were last patched: one patch per
    version, while its watch event is on its way."""
    policy: BudgetPolicySpec | None = None
    """The last BudgetPolicy that parsed; a malformed edit does not unset it."""
    reported_invalid: set[str] = field(default_factory=set)
    """Uids of objects already given an Event saying what of them cannot be read."""
    reported_missing: set[str] = field(default_factory=set)
    """Workload uids already told that their budget does not exist."""

    @classmethod
    def for_config(cls, config: OperatorConfig) -> Runtime:
        return cls(config=config, view=ClusterView(config.namespaces))


def runtime(memo: Any) -> Runtime:
    value = memo["runtime"]
    assert isinstance(value, Runtime)
    return value


def current_policy(state: Runtime) -> BudgetPolicySpec:
    """The policy as last read well; a malformed edit keeps the previous one (and says so)."""
    spec = state.view.policy(state.config.policy_name)
    if spec is not None:
        try:
            state.policy = BudgetPolicySpec.model_validate(spec)
        except ValidationError as error:
            metrics.INVALID_OBJECTS.labels("BudgetPolicy").inc()
            log.error("unreadable BudgetPolicy; keeping the last one read", error=str(error))
    return state.policy or BudgetPolicySpec()


def parse_status(status: Mapping[str, Any]) -> TrainingBudgetStatus:
    return TrainingBudgetStatus.model_validate(
        {key: value for key, value in status.items() if key in STATUS_FIELDS}
    )


def newest_status(state: Runtime, uid: str, status: Mapping[str, Any]) -> TrainingBudgetStatus:
    """The status a pass starts from: the one this process computed last, else the cluster's.

    Only the operator writes status, so the later ``lastAccountedAt`` is the newer
    status; after a restart memory is empty and the cluster's written one is used,
    which charges the time since it was written exactly once.
    """
    stored = parse_status(status)
    computed = state.computed.get(uid)
    if computed is None or computed.last_accounted_at is None:
        return stored
    if (
        stored.last_accounted_at is not None
        and stored.last_accounted_at > computed.last_accounted_at
    ):
        return stored
    return computed
