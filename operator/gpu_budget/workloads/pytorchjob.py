"""Kubeflow PyTorchJob (kubeflow.org/v1): ``spec.runPolicy.suspend``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpu_budget.workloads.base import (
    PodSet,
    WorkloadAdapter,
    WorkloadState,
    condition_true,
    mapping,
)


class PyTorchJobAdapter(WorkloadAdapter):
    kind = "PyTorchJob"
    group = "kubeflow.org"
    version = "v1"
    plural = "pytorchjobs"

    def state(self, body: Mapping[str, Any]) -> WorkloadState:
        if condition_true(body, "Succeeded", "Failed"):
            return WorkloadState.FINISHED
        if condition_true(body, "Running"):
            return WorkloadState.RUNNING
        return WorkloadState.PENDING

    def is_suspended(self, body: Mapping[str, Any]) -> bool:
        return bool(((body.get("spec") or {}).get("runPolicy") or {}).get("suspend"))

    def pod_sets(self, body: Mapping[str, Any]) -> list[PodSet]:
        replicas = mapping(mapping(body.get("spec")).get("pytorchReplicaSpecs"))
        return [
            PodSet(
                counts=(mapping(spec).get("replicas"),),
                spec=mapping(mapping(mapping(spec).get("template")).get("spec")),
                where=f"spec.pytorchReplicaSpecs.{name}",
            )
            for name, spec in replicas.items()
        ]

    def suspend_fields(self, suspend: bool) -> dict[str, Any]:
        return {"spec": {"runPolicy": {"suspend": suspend}}}
