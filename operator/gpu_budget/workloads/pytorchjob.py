"""Kubeflow PyTorchJob (kubeflow.org/v1): ``spec.runPolicy.suspend``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpu_budget.pods import requested_gpus
from gpu_budget.workloads.base import WorkloadAdapter, WorkloadState, condition_true, count


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

    def requested_gpus(self, body: Mapping[str, Any]) -> float:
        replicas = (body.get("spec") or {}).get("pytorchReplicaSpecs") or {}
        return sum(
            count(spec.get("replicas"))
            * requested_gpus((spec.get("template") or {}).get("spec") or {})
            for spec in replicas.values()
        )

    def suspend_fields(self, suspend: bool) -> dict[str, Any]:
        return {"spec": {"runPolicy": {"suspend": suspend}}}
