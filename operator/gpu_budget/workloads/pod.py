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
    Operation,
    PodSet,
    WorkloadAdapter,
    WorkloadFacts,
    WorkloadState,
    controller_of,
    mapping,
)

SCHEDULING_GATE = f"{GROUP}/budget"
"""Added by the admission webhook; the pod is not scheduled while it is there."""


class PodAdapter(WorkloadAdapter):
    kind = "Pod"
    group = ""
    version = "v1"
    plural = "pods"

    def __init__(self, workload_kinds: frozenset[tuple[str, str]] = frozenset()) -> None:
        self.workload_kinds = workload_kinds
        """(API group, kind) of the workloads adapted elsewhere: their pods are theirs."""

    def indexes(self, body: Mapping[str, Any]) -> bool:
        """A labelled pod no adapted workload controls: a bare pod, or a ReplicaSet's, ...

        A pod that carries a budget label its controller (a ReplicaSet, a
        StatefulSet, a custom controller) knows nothing of is charged to that
        budget and, since its controller cannot be suspended, stopped by deletion.
        """
        controller = controller_of(body)
        if controller is None:
            return True
        group = str(controller.get("apiVersion", "")).rpartition("/")[0]
        return (group, controller.get("kind")) not in self.workload_kinds

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

    def pod_sets(self, body: Mapping[str, Any]) -> list[PodSet]:
        return [PodSet(counts=(), spec=mapping(body.get("spec")), where="spec")]

    def other_scheduling_gates(self, body: Mapping[str, Any]) -> tuple[str, ...]:
        gates = (body.get("spec") or {}).get("schedulingGates") or []
        return tuple(g["name"] for g in gates if g.get("name") != SCHEDULING_GATE)

    def suspend_fields(self, suspend: bool) -> dict[str, Any]:
        raise NotImplementedError("a pod has no suspend switch; see suspend() and resume()")

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
