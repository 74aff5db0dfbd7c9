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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import structlog

from gpu_budget import BUDGET_LABEL, GROUP, VERSION, metrics, notify
from gpu_budget.accounting import AccountingInput
from gpu_budget.config import OperatorConfig
from gpu_budget.enforcement import Desired
from gpu_budget.kube import ClusterClient
from gpu_budget.models import BudgetPolicySpec, TrainingBudgetSpec, TrainingBudgetStatus
from gpu_budget.plan import Plan, plan_pass
from gpu_budget.pods import PodFacts, requested_gpus
from gpu_budget.pricing import NodeFacts
from gpu_budget.utilization import PrometheusUtilizationSource, UtilizationSnapshot
from gpu_budget.workloads import ADAPTERS, ADAPTERS_BY_KIND, WorkloadAdapter, WorkloadFacts

log = structlog.get_logger("gpu_budget")

TOMBSTONE_TTL = timedelta(hours=1)
MAX_PASSES_PER_TICK = 5
"""Passes one timer tick may make to hit warnings and the stop on time."""
ACTION_EVENT_REASONS = frozenset({"ThresholdReached", "CapExceeded", "GPUsIdle", "Approved"})
"""Budget Events that count as enforcement actions besides workload operations."""
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
    client: ClusterClient = field(default_factory=ClusterClient)
    reported_missing: set[str] = field(default_factory=set)
    """Workload uids already told that their budget does not exist."""
    background: set[asyncio.Task[None]] = field(default_factory=set)
    """Notification sends in flight; held so they are not garbage-collected."""


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
    # Two active replicas would enforce twice: without --standalone, run only
    # when peering works, and notice a dead peer within the configured lifetime.
    state = runtime(memo)
    settings.peering.mandatory = not state.config.standalone
    settings.peering.lifetime = state.config.peering_lifetime
    if state.config.metrics_port is not None:
        metrics.serve(state.config.metrics_port)
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
        with metrics.QUERY_SECONDS.time():
            snapshot = await asyncio.to_thread(source.fetch)
        state.utilization = snapshot
        metrics.METRICS_SOURCE_UP.set(1 if snapshot.available else 0)
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
    """Charge one budget up to now, decide, act, and write its status.

    When the planned stop falls before the next pass, the handler waits for
    that instant and passes again, so the stop lands on time rather than up
    to one interval late. kopf passes each index as a keyword argument named
    after its handler id.
    """
    assert namespace is not None, "TrainingBudget is namespaced"
    with metrics.RECONCILE_SECONDS.time(), count_errors():
        await reconcile_budget(
            state=runtime(memo),
            name=name,
            namespace=namespace,
            spec=spec,
            status=status,
            meta=meta,
            body=body,
            patch=patch,
            indices=kwargs,
        )


@contextlib.contextmanager
def count_errors() -> Iterator[None]:
    try:
        yield
    except Exception:
        metrics.RECONCILE_ERRORS.inc()
        raise


async def reconcile_budget(
    *,
    state: Runtime,
    name: str,
    namespace: str,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    body: kopf.Body,
    patch: kopf.Patch,
    indices: Mapping[str, Any],
) -> None:
    budget_spec = TrainingBudgetSpec.model_validate(dict(spec))
    previous = parse_status(status)
    # A stop or a warning due before the next pass is not left to it: the
    # handler waits for that instant and passes again (a few times at most).
    for _ in range(MAX_PASSES_PER_TICK):
        plan = plan_pass(
            gather(state, name, namespace, budget_spec, meta, previous, indices), meta.annotations
        )
        await carry_out(state, plan, body, namespace, name, budget_spec.cost_cap)
        previous = plan.status
        due = [
            moment
            for moment in (plan.decision.stop_at, plan.decision.next_threshold_at)
            if moment is not None
        ]
        if plan.decision.desired != Desired.RUN or not due:
            break
        wait = (min(due) - utcnow()).total_seconds()
        if wait > state.config.accounting_interval:
            break
        await asyncio.sleep(max(0.0, wait))
    patch.status.update(previous.model_dump(mode="json", by_alias=True))
    metrics.observe_budget(namespace, name, budget_spec, previous)


def gather(
    state: Runtime,
    name: str,
    namespace: str,
    spec: TrainingBudgetSpec,
    meta: kopf.Meta,
    previous: TrainingBudgetStatus,
    indices: Mapping[str, Any],
) -> AccountingInput:
    pods_index: kopf.Index[str, PodFacts] = indices["index_gpu_pods"]
    nodes_index: kopf.Index[str, NodeFacts] = indices["index_nodes"]
    policies_index: kopf.Index[str, dict[str, Any]] = indices["index_policies"]
    workloads: list[WorkloadFacts] = []
    for adapter in ADAPTERS:
        index: kopf.Index[tuple[str, str], WorkloadFacts] = indices[workload_index_id(adapter)]
        workloads.extend(index.get((namespace, name), []))
    return AccountingInput(
        namespace=namespace,
        name=name,
        generation=meta.get("generation"),
        spec=spec,
        status=previous,
        policy=current_policy(policies_index, state.config.policy_name),
        pods=list(pods_index.get(namespace, [])),
        workloads=workloads,
        nodes={node: facts for node, store in nodes_index.items() for facts in store},
        utilization=state.utilization,
        deleted_at=state.deleted_at,
        now=utcnow(),
    )


async def carry_out(
    state: Runtime, plan: Plan, body: kopf.Body, namespace: str, name: str, cost_cap: float
) -> None:
    bound = log.bind(namespace=namespace, budget=name)
    for action in plan.workload_actions:
        workload = action.workload
        await state.client.apply(ADAPTERS_BY_KIND[workload.kind], workload, action.operation)
        metrics.ACTIONS.labels(action.reason).inc()
        kopf.event(
            workload_reference(workload),
            type="Normal",
            reason=action.reason,
            message=action.message,
        )
        bound.info(
            "workload action",
            workload=f"{workload.kind}/{workload.name}",
            verb=action.operation.verb,
            reason=action.reason,
        )
    for annotation in plan.pod_annotations:
        await state.client.annotate_pod(
            annotation.namespace, annotation.name, annotation.annotations
        )
    for event in plan.events:
        if event.reason in ACTION_EVENT_REASONS:
            metrics.ACTIONS.labels(event.reason).inc()
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        bound.info("event", reason=event.reason, message=event.message)
    if plan.notify_url:
        for payload in plan.notification_payloads(namespace, name, cost_cap):
            # Fire and forget: a slow receiver must not delay the next stop.
            state.background.add(
                asyncio.create_task(send_notification(state, plan.notify_url, payload))
            )


async def send_notification(state: Runtime, url: str, payload: dict[str, Any]) -> None:
    try:
        await asyncio.to_thread(notify.send, url, payload)
    finally:
        state.background.discard(asyncio.current_task())


def workload_reference(workload: WorkloadFacts) -> kopf.Body:
    """Enough of a workload for kopf to post an Event about it."""
    adapter = ADAPTERS_BY_KIND[workload.kind]
    return kopf.Body(
        {
            "apiVersion": adapter.api_version,
            "kind": workload.kind,
            "metadata": {
                "name": workload.name,
                "namespace": workload.namespace,
                "uid": workload.uid,
            },
        }
    )


def index_budgets(name: str, namespace: str | None, **_: Any) -> dict[tuple[str, str], bool]:
    return {(namespace or "", name): True}


async def hold_workloads_of_deleted_budget(
    *, name: str, namespace: str | None, spec: kopf.Spec, memo: kopf.Memo, **kwargs: Any
) -> None:
    """A deleted budget leaves no workload unbudgeted: its workloads are held.

    They resume only if a budget of the same name comes back and allows them
    (the hold annotation is the operator's, so the new budget may lift it).
    Killed workloads stay killed.
    """
    assert namespace is not None
    state = runtime(memo)
    metrics.forget_budget(namespace, name, TrainingBudgetSpec.model_validate(dict(spec)))
    for adapter in ADAPTERS:
        index: kopf.Index[tuple[str, str], WorkloadFacts] = kwargs[workload_index_id(adapter)]
        for workload in index.get((namespace, name), []):
            operation = adapter.suspend(workload, "BudgetDeleted")
            if operation is None:
                continue
            await state.client.apply(adapter, workload, operation)
            kopf.event(
                workload_reference(workload),
                type="Warning",
                reason="BudgetDeleted",
                message=f"TrainingBudget {name} was deleted; held until a budget {name} allows it.",
            )
            log.info(
                "held workload of deleted budget",
                namespace=namespace,
                budget=name,
                workload=f"{workload.kind}/{workload.name}",
            )


def report_missing_budget(adapter: WorkloadAdapter) -> Any:
    def on_workload_event(
        event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **kwargs: Any
    ) -> None:
        """Say why a held workload does not start when its budget does not exist."""
        if event["type"] not in (None, "ADDED"):
            return
        facts = adapter.facts(body)
        budgets: kopf.Index[tuple[str, str], bool] = kwargs["index_budgets"]
        if not facts.held or (facts.namespace, facts.budget) in budgets:
            return
        state = runtime(memo)
        if facts.uid in state.reported_missing:
            return
        state.reported_missing.add(facts.uid)
        kopf.event(
            body,
            type="Warning",
            reason="BudgetNotFound",
            message=f"No TrainingBudget {facts.budget} in namespace {facts.namespace}; held "
            f"until one exists. Create it, or fix the {BUDGET_LABEL} label.",
        )

    return on_workload_event


# -------------------------------------------------------------- registration


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
    """Attach every handler to ``registry``; the accounting interval comes from config."""
    # A registry of our own does not inherit kopf's default login handlers.
    kopf.on.login(registry=registry)(kopf.login_via_client)
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
        kopf.on.event(
            adapter.group,
            adapter.version,
            adapter.plural,
            labels={BUDGET_LABEL: kopf.PRESENT},
            when=workload_filter(adapter),
            id=f"missing_budget_{adapter.plural}",
            registry=registry,
        )(report_missing_budget(adapter))
    kopf.index(GROUP, VERSION, "trainingbudgets", registry=registry)(index_budgets)
    kopf.on.delete(GROUP, VERSION, "trainingbudgets", registry=registry)(
        hold_workloads_of_deleted_budget
    )
    kopf.timer(
        GROUP,
        VERSION,
        "trainingbudgets",
        interval=config.accounting_interval,
        # A failed pass (API error, a refused write) is retried soon, not after
        # kopf's default minute: spend must not go unwatched that long.
        backoff=max(config.accounting_interval, 5.0),
        registry=registry,
    )(account_budget)
