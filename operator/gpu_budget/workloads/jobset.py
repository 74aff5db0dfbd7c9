"""JobSet (jobset.x-k8s.io): ``spec.suspend``; the JobSet controller suspends its Jobs."""

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


class JobSetAdapter(SuspendSwitch, PodTemplates, PodController):
    kind = "JobSet"
    group = "jobset.x-k8s.io"
    version = "v1alpha2"
    plural = "jobsets"
    suspend_path = ("spec", "suspend")
    pod_specs_cel = (
        "object.spec.?replicatedJobs.orValue([])"
        ".map(r, r.?template.?spec.?template.?spec.orValue({}))"
    )
    # The Job templates (their labels become the child Jobs') and the pod templates.
    templates_cel = (
        "({o}.spec.?replicatedJobs.orValue([]).map(r, r.?template.orValue({})) + "
        "{o}.spec.?replicatedJobs.orValue([]).map(r, r.?template.?spec.?template.orValue({})))"
    )

    def state(self, body: Mapping[str, Any]) -> WorkloadState:
        if condition_true(body, "Completed", "Failed"):
            return WorkloadState.FINISHED
        jobs = (body.get("status") or {}).get("replicatedJobsStatus") or []
        if any(job.get("active") or job.get("ready") for job in jobs):
            return WorkloadState.RUNNING
        return WorkloadState.PENDING

    def pod_sets(self, body: Mapping[str, Any]) -> list[PodSet]:
        replicated_jobs = mapping(body.get("spec")).get("replicatedJobs")
        sets = []
        for index, replicated in enumerate(replicated_jobs or []):
            replicated = mapping(replicated)
            job = mapping(mapping(replicated.get("template")).get("spec"))
            sets.append(
                PodSet(
                    counts=(replicated.get("replicas"), job.get("parallelism")),
                    spec=mapping(mapping(job.get("template")).get("spec")),
                    where=f"spec.replicatedJobs[{replicated.get('name', index)}]",
                )
            )
        return sets
