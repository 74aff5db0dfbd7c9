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
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import structlog
from pydantic import ValidationError

from gpu_budget import BUDGET_LABEL, FINALIZER, GROUP, VERSION, metrics, notify
from gpu_budget.accounting import AccountingInput
from gpu_budget.attribution import effective_owner
from gpu_budget.config import OperatorConfig
from gpu_budget.enforcement import Desired, StopReason
from gpu_budget.inheritance import SpendRecord, record_for, supersedes
from gpu_budget.kube import ClusterClient
from gpu_budget.liveness import PassTracker, stuck
from gpu_budget.models import BudgetPolicySpec, TrainingBudgetSpec, TrainingBudgetStatus
from gpu_budget.plan import Plan, plan_pass
from gpu_budget.pods import PodFacts, has_extended_resources
from gpu_budget.pricing import NodeFacts
from gpu_budget.utilization import PrometheusUtilizationSource, UtilizationSnapshot
from gpu_budget.workloads import ADAPTERS, ADAPTERS_BY_KIND, WorkloadAdapter, WorkloadFacts
from gpu_budget.workloads.base import controller_of

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
    reported_invalid: set[str] = field(default_factory=set)
    """Uids of objects already given an Event saying what of them cannot be read."""
    notifier: notify.Notifier = field(default_factory=notify.Notifier)
    passes: PassTracker = field(default_factory=PassTracker)
    written: dict[str, TrainingBudgetStatus] = field(default_factory=dict)
    """The status last written per budget uid: newer than the watch until it comes back."""
    policy: BudgetPolicySpec | None = None
    """The last BudgetPolicy that parsed; a malformed edit does not unset it."""


def runtime(memo: Any) -> Runtime:
    value = memo["runtime"]
    assert isinstance(value, Runtime)
    return value


def utcnow() -> datetime:
    return datetime.now(UTC)


# ----------------------------------------------------------------- lifecycle


async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Our own finalizer name: the finalizer guard policy lets only the operator
    # remove it, so a budget cannot be deleted without its workloads being held.
    settings.persistence.finalizer = FINALIZER
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
    await state.notifier.start()
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
    await state.notifier.stop()
    if state.poller is not None:
        state.poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await state.poller


async def poll_utilization(state: Runtime, source: PrometheusUtilizationSource) -> None:
    """Refresh the cluster-wide utilisation snapshot once per accounting interval."""
    was_available: bool | None = None
    while True:
        started = asyncio.get_running_loop().time()
        try:
            with metrics.QUERY_SECONDS.time():
                snapshot = await asyncio.to_thread(source.fetch)
        except Exception as error:  # a bad answer must not end the poller
            snapshot = UtilizationSnapshot(available=False, error=f"unreadable answer: {error}")
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


def pod_may_hold_gpus(body: kopf.Body, **_: Any) -> bool:
    return has_extended_resources(body)


def report_invalid(state: Runtime, kind: str, body: kopf.Body, problems: list[str]) -> None:
    """Count an object that cannot be fully read, and say so on it once."""
    uid = str((body.get("metadata") or {}).get("uid", ""))
    metrics.INVALID_OBJECTS.labels(kind).inc()
    if uid in state.reported_invalid:
        return
    state.reported_invalid.add(uid)
    log.warning(
        "unreadable object", kind=kind, name=body.get("metadata", {}).get("name"), problems=problems
    )
    kopf.event(
        body,
        type="Warning",
        reason="Unreadable",
        message="gpu-budget-operator cannot fully read this object and counts it "
        "conservatively: " + "; ".join(problems),
    )


def index_gpu_pods(
    body: kopf.Body, namespace: str | None, memo: kopf.Memo, **_: Any
) -> dict[str, PodFacts]:
    facts = PodFacts.from_pod(body, observed_at=utcnow())
    if facts.problems:
        report_invalid(runtime(memo), "Pod", body, list(facts.problems))
    return {namespace or "": facts}


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


def has_controller(body: kopf.Body, **_: Any) -> bool:
    return controller_of(body) is not None


def index_owners(body: kopf.Body, **_: Any) -> dict[str, str]:
    """A Job's controller (a JobSet): pods are followed through it to their workload."""
    controller = controller_of(body)
    return {} if controller is None else {str(body["metadata"]["uid"]): str(controller["uid"])}


def index_namespaces(name: str, labels: kopf.Labels, **_: Any) -> dict[str, dict[str, str]]:
    return {name: dict(labels)}


def workload_indexer(adapter: WorkloadAdapter) -> Any:
    def index_workloads(body: kopf.Body, namespace: str | None, memo: kopf.Memo, **_: Any) -> Any:
        try:
            facts = adapter.facts(body)
        except (KeyError, TypeError, ValueError, ValidationError) as error:
            # Unreadable, so not enforceable by its budget: say so loudly.
            report_invalid(runtime(memo), adapter.kind, body, [str(error)])
            return {}
        return {(namespace, facts.budget): facts}

    return index_workloads


def workload_filter(adapter: WorkloadAdapter) -> Any:
    def is_workload(body: kopf.Body, **_: Any) -> bool:
        return adapter.indexes(body)

    return is_workload


class FirstOf(Mapping[str, str]):
    """A kopf index of single values, read as a plain mapping without copying it."""

    def __init__(self, index: kopf.Index[str, str]) -> None:
        self._index = index

    def __getitem__(self, key: str) -> str:
        for value in self._index.get(key, []):
            return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


def workload_index_id(adapter: WorkloadAdapter) -> str:
    return f"workloads_{adapter.plural}"


# ---------------------------------------------------------------- accounting


def current_policy(state: Runtime, policies: Mapping[str, Any]) -> BudgetPolicySpec:
    """The policy as last read well; a malformed edit keeps the previous one (and says so)."""
    for spec in policies.get(state.config.policy_name, []):
        try:
            state.policy = BudgetPolicySpec.model_validate(spec)
        except ValidationError as error:
            metrics.INVALID_OBJECTS.labels("BudgetPolicy").inc()
            log.error("unreadable BudgetPolicy; keeping the last one read", error=str(error))
        break
    return state.policy or BudgetPolicySpec()


def parse_status(status: Mapping[str, Any]) -> TrainingBudgetStatus:
    return TrainingBudgetStatus.model_validate(
        {key: value for key, value in status.items() if key in STATUS_FIELDS}
    )


def newest_status(state: Runtime, uid: str, status: Mapping[str, Any]) -> TrainingBudgetStatus:
    """The cluster's status, unless the one this process last wrote is newer.

    Only the operator writes status, so the later ``lastAccountedAt`` is the
    newer status; after a restart memory is empty and the cluster's is used.
    """
    stored = parse_status(status)
    written = state.written.get(uid)
    if written is None or written.last_accounted_at is None:
        return stored
    if (
        stored.last_accounted_at is not None
        and stored.last_accounted_at >= written.last_accounted_at
    ):
        return stored
    return written


async def account_budget(
    *,
    name: str,
    namespace: str | None,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    body: kopf.Body,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """Charge one budget up to now, decide, act, and write its status.

    When the planned stop falls before the next pass, the handler waits for
    that instant and passes again, so the stop lands on time rather than up
    to one interval late. kopf passes each index as a keyword argument named
    after its handler id. A failure here is this budget's alone: it is
    counted, retried soon, and reported by the liveness probe if it persists.
    """
    assert namespace is not None, "TrainingBudget is namespaced"
    state = runtime(memo)
    uid = str(meta.get("uid"))
    state.passes.started(uid, utcnow())
    try:
        with metrics.RECONCILE_SECONDS.time():
            await reconcile_budget(
                state=state,
                name=name,
                namespace=namespace,
                spec=spec,
                status=status,
                meta=meta,
                body=body,
                indices=kwargs,
            )
    except Exception:
        state.passes.failed(uid, utcnow())
        metrics.RECONCILE_ERRORS.inc()
        raise
    state.passes.succeeded(uid, utcnow())


async def reconcile_budget(
    *,
    state: Runtime,
    name: str,
    namespace: str,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    body: kopf.Body,
    indices: Mapping[str, Any],
) -> None:
    budget_spec = TrainingBudgetSpec.model_validate(dict(spec))
    uid = str(meta.get("uid"))
    previous = newest_status(state, uid, status)
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
    await state.client.patch_status(
        namespace, name, previous.model_dump(mode="json", by_alias=True)
    )
    state.written[uid] = previous
    namespaces: kopf.Index[str, dict[str, str]] = indices["index_namespaces"]
    labels = next(iter(namespaces.get(namespace, [])), {})
    metrics.observe_budget(
        namespace, name, budget_spec, effective_owner(budget_spec.owner, labels), previous
    )


def workloads_of(indices: Mapping[str, Any], namespace: str, budget: str) -> list[WorkloadFacts]:
    workloads: list[WorkloadFacts] = []
    for adapter in ADAPTERS:
        index: kopf.Index[tuple[str, str], WorkloadFacts] = indices[workload_index_id(adapter)]
        workloads.extend(index.get((namespace, budget), []))
    return workloads


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
    return AccountingInput(
        namespace=namespace,
        name=name,
        uid=str(meta.get("uid")),
        generation=meta.get("generation"),
        spec=spec,
        status=previous,
        policy=current_policy(state, policies_index),
        pods=list(pods_index.get(namespace, [])),
        workloads=workloads_of(indices, namespace, name),
        owners=FirstOf(indices["index_owners"]),
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
    for deletion in plan.pod_deletions:
        await state.client.delete_pod(deletion.namespace, deletion.name, deletion.grace_seconds)
        bound.info(
            "pod deleted with bounded grace", pod=deletion.name, grace=deletion.grace_seconds
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
        # Queued, never awaited: a slow receiver must not delay the next stop.
        for payload in plan.notification_payloads(namespace, name, cost_cap):
            state.notifier.submit(plan.notify_url, payload)


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


async def hold_and_record(
    state: Runtime,
    workloads: list[WorkloadFacts],
    record: SpendRecord,
    reason: str,
    message: str,
) -> None:
    """Hold a gone budget's workloads, and leave its spend record on each.

    The record is what a budget recreated under the same name inherits; an
    older record (a lower spend of the same budget) never replaces a newer one.
    """
    annotation = record.to_annotation()
    for workload in workloads:
        adapter = ADAPTERS_BY_KIND[workload.kind]
        if not supersedes(record, workload.spend_record):
            operation = adapter.suspend(workload, reason)
        else:
            operation = adapter.suspend(workload, reason, annotation) or adapter.record(
                workload, annotation
            )
        if operation is None:
            continue
        await state.client.apply(adapter, workload, operation)
        if operation.verb == "delete" or "suspend" in json_text(operation.patch):
            kopf.event(workload_reference(workload), type="Warning", reason=reason, message=message)
        log.info(
            "held workload of gone budget",
            namespace=workload.namespace,
            budget=workload.budget,
            workload=f"{workload.kind}/{workload.name}",
            reason=reason,
        )


def json_text(value: object) -> str:
    return json.dumps(value, sort_keys=True)


async def hold_workloads_of_deleted_budget(
    *,
    name: str,
    namespace: str | None,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """A deleted budget leaves no workload unbudgeted, and no spend forgotten.

    A last pass charges the budget up to now; its workloads are held and carry
    its spend record, so a budget of the same name created later carries on
    from there (with the same stop, if it was stopped). Killed workloads stay
    killed. kopf removes the finalizer only once this has succeeded.
    """
    assert namespace is not None
    state = runtime(memo)
    metrics.forget_budget(namespace, name)
    budget_spec = TrainingBudgetSpec.model_validate(dict(spec))
    uid = str(meta.get("uid"))
    previous = newest_status(state, uid, status)
    plan = plan_pass(
        gather(state, name, namespace, budget_spec, meta, previous, kwargs), meta.annotations
    )
    await hold_and_record(
        state,
        workloads_of(kwargs, namespace, name),
        record_for(plan.status, uid, utcnow()),
        StopReason.BUDGET_DELETED,
        f"TrainingBudget {name} was deleted; held until a budget {name} allows it. What it "
        "spent stays on record: a new budget of that name carries it on.",
    )
    state.written.pop(uid, None)


async def hold_workloads_of_vanished_budget(
    *, event: kopf.RawEvent, memo: kopf.Memo, **kwargs: Any
) -> None:
    """A budget gone without its finalizer (forced by an admin) still leaves its workloads held.

    The DELETED event carries the budget's last status, so its spend is still
    recorded (as of its last pass) for a successor to inherit.
    """
    if event["type"] != "DELETED":
        return
    obj = event["object"]
    meta = obj.get("metadata") or {}
    namespace, name, uid = meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", "")
    state = runtime(memo)
    status = newest_status(state, uid, obj.get("status") or {})
    await hold_and_record(
        state,
        workloads_of(kwargs, namespace, name),
        record_for(status, uid, utcnow()),
        StopReason.BUDGET_DELETED,
        f"TrainingBudget {name} is gone; held until a budget {name} allows it.",
    )
    state.written.pop(uid, None)


def report_missing_budget(adapter: WorkloadAdapter) -> Any:
    async def on_workload_event(
        event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **kwargs: Any
    ) -> None:
        """A labelled workload whose budget does not exist is held, and told why."""
        if event["type"] not in (None, "ADDED", "MODIFIED"):
            return
        try:
            facts = adapter.facts(body)
        except (KeyError, TypeError, ValueError, ValidationError):
            return  # reported by the index
        budgets: kopf.Index[tuple[str, str], bool] = kwargs["index_budgets"]
        if (facts.namespace, facts.budget) in budgets:
            return
        state = runtime(memo)
        operation = adapter.suspend(facts, "BudgetNotFound")
        if operation is not None:
            await state.client.apply(adapter, facts, operation)
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


def probe_accounting(memo: kopf.Memo, **_: Any) -> str:
    """Liveness: fails while a pass is wedged or every pass keeps failing."""
    state = runtime(memo)
    reason = stuck(state.passes, utcnow(), state.config.accounting_interval)
    if reason is not None:
        raise RuntimeError(reason)
    return "ok"


# -------------------------------------------------------------- registration


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
    """Attach every handler to ``registry``; the accounting interval comes from config."""
    # A registry of our own does not inherit kopf's default login handlers.
    kopf.on.login(registry=registry)(kopf.login_via_client)
    kopf.on.startup(registry=registry)(start)
    kopf.on.cleanup(registry=registry)(stop)
    kopf.on.probe(id="accounting", registry=registry)(probe_accounting)
    kopf.index("", "v1", "pods", when=pod_may_hold_gpus, registry=registry)(index_gpu_pods)
    kopf.on.event("", "v1", "pods", when=pod_may_hold_gpus, registry=registry)(record_pod_deletion)
    kopf.index("", "v1", "nodes", registry=registry)(index_nodes)
    kopf.index("", "v1", "namespaces", registry=registry)(index_namespaces)
    kopf.index("batch", "v1", "jobs", when=has_controller, registry=registry)(index_owners)
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
    kopf.on.event(GROUP, VERSION, "trainingbudgets", registry=registry)(
        hold_workloads_of_vanished_budget
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
