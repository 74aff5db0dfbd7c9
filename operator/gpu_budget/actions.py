"""Carrying out what the core decided: workload operations, pod writes, Events, notifications."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import kopf
import structlog

from gpu_budget import metrics
from gpu_budget.inheritance import SpendRecord, supersedes
from gpu_budget.plan import Plan
from gpu_budget.reasons import Reason
from gpu_budget.runtime import Runtime
from gpu_budget.workloads import ADAPTERS_BY_KIND, WorkloadFacts

log = structlog.get_logger("gpu_budget")

ACTION_EVENT_REASONS = frozenset(
    {Reason.THRESHOLD_REACHED, Reason.CAP_EXCEEDED, Reason.GPUS_IDLE, Reason.APPROVED}
)
"""Budget Events that count as enforcement actions besides workload operations."""


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


def reference(body: Mapping[str, Any]) -> kopf.Body:
    """An object as kopf posts Events about it."""
    meta = body.get("metadata") or {}
    return kopf.Body(
        {
            "apiVersion": str(body.get("apiVersion", "")),
            "kind": str(body.get("kind", "")),
            "metadata": {
                "name": str(meta.get("name", "")),
                "namespace": str(meta.get("namespace", "")),
                "uid": str(meta.get("uid", "")),
            },
        }
    )


def report_invalid(state: Runtime, obj: kopf.Body, problems: list[str]) -> None:
    """Count an object that cannot be fully read, and say so on it once."""
    uid = str((obj.get("metadata") or {}).get("uid", ""))
    if uid in state.reported_invalid:
        return
    state.reported_invalid.add(uid)
    metrics.INVALID_OBJECTS.labels(str(obj.get("kind", ""))).inc()
    log.warning("unreadable object", kind=obj.get("kind"), problems=problems)
    kopf.event(
        obj,
        type="Warning",
        reason=Reason.UNREADABLE,
        message="gpu-budget-operator cannot fully read this object and counts it "
        "conservatively: " + "; ".join(problems),
    )


async def carry_out(
    state: Runtime, plan: Plan, budget: kopf.Body, namespace: str, name: str
) -> None:
    bound = log.bind(namespace=namespace, budget=name)
    # Before the workloads are suspended: their controllers delete the pods with the
    # pods' own grace, and a deletion under way can only be shortened.
    for deletion in plan.pod_deletions:
        if await state.client.delete_pod(deletion.namespace, deletion.name, deletion.grace_seconds):
            bound.info(
                "pod deleted with bounded grace", pod=deletion.name, grace=deletion.grace_seconds
            )
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
        kopf.event(budget, type=event.type, reason=event.reason, message=event.message)
        bound.info("event", reason=event.reason, message=event.message)
    if plan.notify_url:
        # Queued, never awaited: a slow receiver must not delay the next stop.
        for payload in plan.notifications:
            state.notifier.submit(plan.notify_url, payload)


async def hold_and_record(
    state: Runtime,
    workloads: list[WorkloadFacts],
    record: SpendRecord | None,
    reason: str,
    message: str,
) -> None:
    """Hold a gone budget's workloads, and leave its spend record on each.

    The record is what a budget recreated under the same name inherits; an
    older record (a lower spend of the same budget) never replaces a newer one.
    """
    annotation = None if record is None else record.to_annotation()
    for workload in workloads:
        adapter = ADAPTERS_BY_KIND[workload.kind]
        if record is None or annotation is None or not supersedes(record, workload.spend_record):
            operation = adapter.suspend(workload, reason)
        else:
            operation = adapter.suspend(workload, reason, annotation) or adapter.record(
                workload, annotation
            )
        if operation is None:
            continue
        await state.client.apply(adapter, workload, operation)
        if operation.verb == "delete" or "suspend" in json.dumps(operation.patch):
            kopf.event(workload_reference(workload), type="Warning", reason=reason, message=message)
        log.info(
            "held workload of gone budget",
            namespace=workload.namespace,
            budget=workload.budget,
            workload=f"{workload.kind}/{workload.name}",
            reason=reason,
        )
