"""JobSet (jobset.x-k8s.io): ``spec.suspend``; the JobSet controller suspends its Jobs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpu_budget.workloads.base import WorkloadAdapter, WorkloadState, condition_true, count
from gpu_budget.workloads.job import job_gpus


class JobSetAdapter(WorkloadAdapter):
    kind = "JobSet"
    group = "jobset.x-k8s.io"
    version = "v1alpha2"
    plural = "jobsets"

    def state(self, body: Mapping[str, Any]) -> WorkloadState:
        if condition_true(body, "Completed", "Failed"):
            return WorkloadState.FINISHED
        jobs = (body.get("status") or {}).get("replicatedJobsStatus") or []
        if any(job.get("active") or job.get("ready") for job in jobs):
            return WorkloadState.RUNNING
        return WorkloadState.PENDING

    def is_suspended(self, body: Mapping[str, Any]) -> bool:
        return bool((body.get("spec") or {}).get("suspend"))

    def requested_gpus(self, body: Mapping[str, Any]) -> float:
        total = 0.0
        for replicated in (body.get("spec") or {}).get("replicatedJobs") or []:
            job_spec = (replicated.get("template") or {}).get("spec") or {}
            total += count(replicated.get("replicas")) * job_gpus(job_spec)
        return total

    def suspend_fields(self, suspend: bool) -> dict[str, Any]:
        return {"spec": {"suspend": suspend}}
