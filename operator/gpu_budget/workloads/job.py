"""batch/v1 Job: suspended with ``spec.suspend``, which the job controller honours
by deleting the Job's pods."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpu_budget.pods import requested_gpus
from gpu_budget.workloads.base import WorkloadAdapter, WorkloadState, condition_true


class JobAdapter(WorkloadAdapter):
    kind = "Job"
    group = "batch"
    version = "v1"
    plural = "jobs"

    def state(self, body: Mapping[str, Any]) -> WorkloadState:
        spec, status = body.get("spec") or {}, body.get("status") or {}
        if condition_true(body, "Complete", "Failed"):
            return WorkloadState.FINISHED
        if spec.get("suspend"):
            return WorkloadState.SUSPENDED
        if status.get("active") or status.get("ready"):
            return WorkloadState.RUNNING
        return WorkloadState.PENDING

    def requested_gpus(self, body: Mapping[str, Any]) -> int:
        spec = body.get("spec") or {}
        per_pod = requested_gpus((spec.get("template") or {}).get("spec") or {})
        parallelism = spec.get("parallelism")
        return per_pod * (1 if parallelism is None else int(parallelism))

    def pod_labels(self, body: Mapping[str, Any]) -> dict[str, str]:
        # Set by the job controller on every pod it creates (Kubernetes >= 1.27).
        return {"batch.kubernetes.io/controller-uid": body["metadata"]["uid"]}
