"""A bare Pod labelled for a budget: held with a scheduling gate, stopped by deletion.

A running pod cannot be paused, so suspending and killing both delete it.
Pods of an adapted workload (a Job's, ...) are their workload's business, not this
adapter's; a labelled pod of any other controller is adapted here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpu_budget import ADMITTED_ANNOTATION, GROUP
from gpu_budget.workloads.base import (
    ChildOfControllers,
    Operation,
    PodSet,
    SchedulingGated,
    WorkloadFacts,
    WorkloadState,
    mapping,
)

SCHEDULING_GATE = f"{GROUP}/budget"
"""Added by the admission webhook; the pod is not scheduled while it is there."""


class PodAdapter(SchedulingGated, ChildOfControllers):
    kind = "Pod"
    group = ""
    version = "v1"
    plural = "pods"
    scheduling_gate = SCHEDULING_GATE
    pod_specs_cel = "[object.spec]"

    def own_pod_uid(self, body: Mapping[str, Any]) -> str | None:
        return str(body["metadata"]["uid"])

    def state(self, body: Mapping[str, Any]) -> WorkloadState:
        phase = (body.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return WorkloadState.FINISHED
        if phase == "Running":
            return WorkloadState.RUNNING
        return WorkloadState.PENDING

    def pod_sets(self, body: Mapping[str, Any]) -> list[PodSet]:
        return [PodSet(counts=(), spec=mapping(body.get("spec")), where="spec")]

    def suspend(
        self, workload: WorkloadFacts, reason: str, record: str | None = None
    ) -> Operation | None:
        # Gates can be removed after creation, never added: a pod that is gated
        # stays held, one that is not can only be stopped by deletion. A deleted
        # pod needs no spend record: a pod is its own workload only once.
        if workload.suspended or workload.state == WorkloadState.FINISHED:
            return None
        return Operation(verb="delete")

    def resume(self, workload: WorkloadFacts, budget_uid: str) -> Operation | None:
        if not workload.suspended:
            return None
        # A merge patch replaces the whole list: keep other controllers' gates.
        gates = [{"name": name} for name in workload.other_scheduling_gates]
        return Operation(
            verb="patch",
            patch={
                "metadata": {"annotations": {ADMITTED_ANNOTATION: budget_uid}},
                "spec": {"schedulingGates": gates or None},
            },
        )

    def kill(
        self, workload: WorkloadFacts, reason: str, record: str | None = None
    ) -> Operation | None:
        if workload.state == WorkloadState.FINISHED:
            return None
        return Operation(verb="delete")
