"""batch/v1 Job: ``spec.suspend``, which the job controller honours by deleting the pods."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpu_budget.pods import requested_gpus
from gpu_budget.workloads.base import WorkloadAdapter, WorkloadState, condition_true, count


def job_gpus(job_spec: Mapping[str, Any]) -> float:
    per_pod = requested_gpus((job_spec.get("template") or {}).get("spec") or {})
    parallelism = job_spec.get("parallelism")
    return per_pod * (1 if parallelism is None else count(parallelism))


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

    def requested_gpus(self, body: Mapping[str, Any]) -> float:
        return job_gpus(body.get("spec") or {})

    def suspend_fields(self, suspend: bool) -> dict[str, Any]:
        return {"spec": {"suspend": suspend}}
