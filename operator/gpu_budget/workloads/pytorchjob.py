"""Kubeflow PyTorchJob (kubeflow.org/v1): ``spec.runPolicy.suspend``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpu_budget.workloads.base import (
    PodController,
    PodSet,
    PodTemplates,
    SuspendSwitch,
    WorkloadState,
    condition_true,
    mapping,
)


class PyTorchJobAdapter(SuspendSwitch, PodTemplates, PodController):
    kind = "PyTorchJob"
    group = "kubeflow.org"
    version = "v1"
    plural = "pytorchjobs"
    suspend_path = ("spec", "runPolicy", "suspend")
    pod_specs_cel = (
        "object.spec.?pytorchReplicaSpecs.orValue({}).map(k, "
        "object.spec.pytorchReplicaSpecs[k].?template.?spec.orValue({}))"
    )
    templates_cel = (
        "{o}.spec.?pytorchReplicaSpecs.orValue({}).map(k, "
        "{o}.spec.pytorchReplicaSpecs[k].?template.orValue({}))"
    )

    def state(self, body: Mapping[str, Any]) -> WorkloadState:
        if condition_true(body, "Succeeded", "Failed"):
            return WorkloadState.FINISHED
        if condition_true(body, "Running"):
            return WorkloadState.RUNNING
        return WorkloadState.PENDING

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
