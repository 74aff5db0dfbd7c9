"""Workload adapters: one small class per workload kind behind one interface.

Modelled on Kueue's job framework: the operator never needs to know what a
JobSet or a PyTorchJob is beyond what its adapter answers.
"""

from gpu_budget.workloads.base import (
    HELD_ANNOTATION,
    HELD_AT_ADMISSION,
    KILLED_ANNOTATION,
    Operation,
    WorkloadAdapter,
    WorkloadFacts,
    WorkloadState,
)
from gpu_budget.workloads.job import JobAdapter
from gpu_budget.workloads.jobset import JobSetAdapter
from gpu_budget.workloads.pod import PodAdapter
from gpu_budget.workloads.pytorchjob import PyTorchJobAdapter

CONTROLLERS: tuple[WorkloadAdapter, ...] = (JobAdapter(), JobSetAdapter(), PyTorchJobAdapter())
"""Workload kinds with a suspend switch, which control their own pods."""

ADAPTERS: tuple[WorkloadAdapter, ...] = (
    *CONTROLLERS,
    PodAdapter(frozenset((adapter.group, adapter.kind) for adapter in CONTROLLERS)),
)
"""Every workload kind the operator budgets."""

ADAPTERS_BY_KIND = {adapter.kind: adapter for adapter in ADAPTERS}

__all__ = [
    "ADAPTERS",
    "ADAPTERS_BY_KIND",
    "CONTROLLERS",
    "HELD_ANNOTATION",
    "HELD_AT_ADMISSION",
    "KILLED_ANNOTATION",
    "JobAdapter",
    "JobSetAdapter",
    "Operation",
    "PodAdapter",
    "PyTorchJobAdapter",
    "WorkloadAdapter",
    "WorkloadFacts",
    "WorkloadState",
]
