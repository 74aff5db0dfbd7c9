"""A bare Pod labelled for a budget: held with a scheduling gate, stopped by deletion.

A running pod cannot be paused, so suspending and killing both delete it.
Pods created by a controller are their controller's business, not this adapter's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpu_budget import GROUP
from gpu_budget.pods import requested_gpus
from gpu_budget.workloads.base import Operation, WorkloadAdapter, WorkloadFacts, WorkloadState

SCHEDULING_GATE = f"{GROUP}/budget"
"""Added by the admission webhook; the pod is not scheduled while it is there."""


class PodAdapter(WorkloadAdapter):
    kind = "Pod"
    group = ""
    version = "v1"
    plural = "pods"

    def indexes(self, body: Mapping[str, Any]) -> bool:
        owners = (body.get("metadata") or {}).get("ownerReferences") or []
        return not any(owner.get("controller") for owner in owners)

    def own_pod_uid(self, body: Mapping[str, Any]) -> str | None:
        return str(body["metadata"]["uid"])

    def state(self, body: Mapping[str, Any]) -> WorkloadState:
        phase = (body.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return WorkloadState.FINISHED
        if phase == "Running":
            return WorkloadState.RUNNING
        return WorkloadState.PENDING

    def is_suspended(self, body: Mapping[str, Any]) -> bool:
        gates = (body.get("spec") or {}).get("schedulingGates") or []
        return any(gate.get("name") == SCHEDULING_GATE for gate in gates)

    def requested_gpus(self, body: Mapping[str, Any]) -> int:
        return requested_gpus(body.get("spec") or {})

    def pod_labels(self, body: Mapping[str, Any]) -> dict[str, str]:
        return {}

    def other_scheduling_gates(self, body: Mapping[str, Any]) -> tuple[str, ...]:
        gates = (body.get("spec") or {}).get("schedulingGates") or []
        return tuple(g["name"] for g in gates if g.get("name") != SCHEDULING_GATE)

    def suspend_fields(self, suspend: bool) -> dict[str, Any]:
        raise NotImplementedError("a pod has no suspend switch; see suspend() and resume()")

    def suspend(self, workload: WorkloadFacts, reason: str) -> Operation | None:
        # Gates can be removed after creation, never added: a pod that is
        # gated stays held, one that is not can only be stopped by deletion.
        if workload.suspended or workload.state == WorkloadState.FINISHED:
            return None
        return Operation(verb="delete")

    def resume(self, workload: WorkloadFacts) -> Operation | None:
        if not workload.suspended:
            return None
        # A merge patch replaces the whole list: keep other controllers' gates.
        gates = [{"name": name} for name in workload.other_scheduling_gates]
        return Operation(verb="patch", patch={"spec": {"schedulingGates": gates or None}})

    def kill(self, workload: WorkloadFacts, reason: str) -> Operation | None:
        if workload.state == WorkloadState.FINISHED:
            return None
        return Operation(verb="delete")
