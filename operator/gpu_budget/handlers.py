"""The kopf shell: watch the cluster, call the core, apply what it decides.

Facts arrive through kopf indices, which are filled from watch streams: an
accounting pass reads memory, never lists the API server. What the operator
knows that must outlive it is written to the TrainingBudget's status; the
in-memory state here (indices, the utilisation snapshot, deletion times) is
rebuilt from the cluster on start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import structlog

from gpu_budget import BUDGET_LABEL, GROUP, VERSION
from gpu_budget.accounting import AccountingInput, account
from gpu_budget.config import OperatorConfig
from gpu_budget.models import BudgetPolicySpec, TrainingBudgetSpec, TrainingBudgetStatus
from gpu_budget.pods import PodFacts, requested_gpus
from gpu_budget.pricing import NodeFacts
from gpu_budget.utilization import PrometheusUtilizationSource, UtilizationSnapshot
from gpu_budget.workloads import ADAPTERS, WorkloadAdapter, WorkloadFacts

log = structlog.get_logger("gpu_budget")

TOMBSTONE_TTL = timedelta(hours=1)
STATUS_FIELDS = frozenset(
    field.alias or name for name, field in TrainingBudgetStatus.model_fields.items()
)


@dataclass
class Runtime:
    """Per-process state; everything in it can be rebuilt from the cluster."""

    config: OperatorConfig
    utilization: UtilizationSnapshot = field(
        default_factory=lambda: UtilizationSnapshot(available=False, error="not queried yet")
    )
    deleted_at: dict[str, datetime] = field(default_factory=dict)
    poller: asyncio.Task[None] | None = None


def runtime(memo: Any) -> Runtime:
    value = memo["runtime"]
    assert isinstance(value, Runtime)
    return value


def utcnow() -> datetime:
    return datetime.now(UTC)


# ----------------------------------------------------------------- lifecycle


async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Keep status for the API (our status fields) and kopf's bookkeeping in
    # annotations, so status has one owner.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Our own Events say what was decided; kopf's per-handler Events would drown them.
    settings.posting.level = logging.WARNING
    state = runtime(memo)
    if state.config.prometheus_url is None:
        state.utilization = UtilizationSnapshot(
            available=False, error="no Prometheus URL configured (--prometheus-url)"
        )
    else:
        source = PrometheusUtilizationSource(state.config.prometheus_url)
        state.poller = asyncio.create_task(poll_utilization(state, source))
    log.info("operator started", config=state.config.model_dump())


async def stop(memo: kopf.Memo, **_: Any) -> None:
    state = runtime(memo)
    if state.poller is not None:
        state.poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await state.poller


async def poll_utilization(state: Runtime, source: PrometheusUtilizationSource) -> None:
    """Refresh the cluster-wide utilisation snapshot once per accounting interval."""
    was_available: bool | None = None
    while True:
        started = asyncio.get_running_loop().time()
        snapshot = await asyncio.to_thread(source.fetch)
        state.utilization = snapshot
        if snapshot.available != was_available:
            log.info(
                "metrics source",
                available=snapshot.available,
                error=snapshot.error,
                pods=len(snapshot.by_pod),
            )
            was_available = snapshot.available
        elapsed = asyncio.get_running_loop().time() - started
        await asyncio.sleep(max(0.0, state.config.accounting_interval - elapsed))


# ------------------------------------------------------------------- indices


def pod_has_gpus(spec: kopf.Spec, **_: Any) -> bool:
    return requested_gpus(spec) > 0


def index_gpu_pods(body: kopf.Body, namespace: str | None, **_: Any) -> dict[str, PodFacts]:
    return {namespace or "": PodFacts.from_pod(body, observed_at=utcnow())}


def record_pod_deletion(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Remember when a GPU pod vanished, so its last interval ends there, not later."""
    if event["type"] != "DELETED":
        return
    state = runtime(memo)
    now = utcnow()
    state.deleted_at[event["object"]["metadata"]["uid"]] = now
    for uid, when in list(state.deleted_at.items()):
        if now - when > TOMBSTONE_TTL:
            del state.deleted_at[uid]


def index_nodes(body: kopf.Body, name: str, **_: Any) -> dict[str, NodeFacts]:
    return {name: NodeFacts.from_node(body)}


def index_policies(name: str, spec: kopf.Spec, **_: Any) -> dict[str, dict[str, Any]]:
    return {name: dict(spec)}


def workload_indexer(adapter: WorkloadAdapter) -> Any:
    def index_workloads(body: kopf.Body, namespace: str | None, **_: Any) -> Any:
        facts = adapter.facts(body)
        return {(namespace, facts.budget): facts}

    return index_workloads


def workload_filter(adapter: WorkloadAdapter) -> Any:
    def is_workload(body: kopf.Body, **_: Any) -> bool:
        return adapter.indexes(body)

    return is_workload


def workload_index_id(adapter: WorkloadAdapter) -> str:
    return f"workloads_{adapter.plural}"


# ---------------------------------------------------------------- accounting


def current_policy(policies: Mapping[str, Any], name: str) -> BudgetPolicySpec:
    for spec in policies.get(name, []):
        return BudgetPolicySpec.model_validate(spec)
    return BudgetPolicySpec()


def parse_status(status: Mapping[str, Any]) -> TrainingBudgetStatus:
    return TrainingBudgetStatus.model_validate(
        {key: value for key, value in status.items() if key in STATUS_FIELDS}
    )


async def account_budget(
    *,
    name: str,
    namespace: str | None,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    body: kopf.Body,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """Charge one budget up to now and write its status.

    kopf passes each index as a keyword argument named after its handler id.
    """
    pods_index: kopf.Index[str, PodFacts] = kwargs["index_gpu_pods"]
    nodes_index: kopf.Index[str, NodeFacts] = kwargs["index_nodes"]
    policies_index: kopf.Index[str, dict[str, Any]] = kwargs["index_policies"]
    assert namespace is not None, "TrainingBudget is namespaced"
    state = runtime(memo)
    bound = log.bind(namespace=namespace, budget=name)
    workloads: list[WorkloadFacts] = []
    for adapter in ADAPTERS:
        index: kopf.Index[tuple[str, str], WorkloadFacts] = kwargs[workload_index_id(adapter)]
        workloads.extend(index.get((namespace, name), []))
    nodes = {node_name: facts for node_name, store in nodes_index.items() for facts in store}
    outcome = account(
        AccountingInput(
            namespace=namespace,
            name=name,
            generation=meta.get("generation"),
            spec=TrainingBudgetSpec.model_validate(dict(spec)),
            status=parse_status(status),
            policy=current_policy(policies_index, state.config.policy_name),
            pods=list(pods_index.get(namespace, [])),
            workloads=workloads,
            nodes=nodes,
            utilization=state.utilization,
            deleted_at=state.deleted_at,
            now=utcnow(),
        )
    )
    patch.status.update(outcome.status.model_dump(mode="json", by_alias=True))
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        bound.info("event", reason=event.reason, message=event.message)


# -------------------------------------------------------------- registration


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
    """Attach every handler to ``registry``; the accounting interval comes from config."""
    kopf.on.startup(registry=registry)(start)
    kopf.on.cleanup(registry=registry)(stop)
    kopf.index("", "v1", "pods", when=pod_has_gpus, registry=registry)(index_gpu_pods)
    kopf.on.event("", "v1", "pods", when=pod_has_gpus, registry=registry)(record_pod_deletion)
    kopf.index("", "v1", "nodes", registry=registry)(index_nodes)
    kopf.index(GROUP, VERSION, "budgetpolicies", registry=registry)(index_policies)
    for adapter in ADAPTERS:
        kopf.index(
            adapter.group,
            adapter.version,
            adapter.plural,
            labels={BUDGET_LABEL: kopf.PRESENT},
            when=workload_filter(adapter),
            id=workload_index_id(adapter),
            registry=registry,
        )(workload_indexer(adapter))
    kopf.timer(
        GROUP,
        VERSION,
        "trainingbudgets",
        interval=config.accounting_interval,
        registry=registry,
    )(account_budget)
