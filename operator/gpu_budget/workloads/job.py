"""batch/v1 Job: ``spec.suspend``, which the job controller honours by deleting the pods."""

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


class JobAdapter(SuspendSwitch, PodTemplates, PodController):
    kind = "Job"
    group = "batch"
    version = "v1"
    plural = "jobs"
    suspend_path = ("spec", "suspend")
    pod_specs_cel = "[object.spec.template.?spec.orValue({})]"
    templates_cel = "[{o}.spec.?template.orValue({})]"

    def state(self, body: Mapping[str, Any]) -> WorkloadState:
        status = body.get("status") or {}
        if condition_true(body, "Complete", "Failed"):
            return WorkloadState.FINISHED
        if status.get("active") or status.get("ready"):
            return WorkloadState.RUNNING
        return WorkloadState.PENDING

    def pod_sets(self, body: Mapping[str, Any]) -> list[PodSet]:
        spec = mapping(body.get("spec"))
        template = mapping(mapping(spec.get("template")).get("spec"))
        return [PodSet(counts=(spec.get("parallelism"),), spec=template, where="spec.template")]
