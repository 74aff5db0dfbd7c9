"""batch/v1 Job: ``spec.suspend``, which the job controller honours by deleting the pods."""

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


class JobAdapter(WorkloadAdapter):
    kind = "Job"
    group = "batch"
    version = "v1"
    plural = "jobs"

    def state(self, body: Mapping[str, Any]) -> WorkloadState:
        status = body.get("status") or {}
        if condition_true(body, "Complete", "Failed"):
            return WorkloadState.FINISHED
        if status.get("active") or status.get("ready"):
            return WorkloadState.RUNNING
        return WorkloadState.PENDING

    def is_suspended(self, body: Mapping[str, Any]) -> bool:
        return bool((body.get("spec") or {}).get("suspend"))

    def pod_sets(self, body: Mapping[str, Any]) -> list[PodSet]:
        spec = mapping(body.get("spec"))
        template = mapping(mapping(spec.get("template")).get("spec"))
        return [PodSet(counts=(spec.get("parallelism"),), spec=template, where="spec.template")]

    def suspend_fields(self, suspend: bool) -> dict[str, Any]:
        return {"spec": {"suspend": suspend}}
