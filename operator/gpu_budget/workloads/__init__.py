"""Workload adapters: one small class per workload kind behind one interface.

Modelled on Kueue's job framework: the operator never needs to know what a
JobSet or a PyTorchJob is beyond what its adapter answers.
"""

from gpu_budget.workloads.base import WorkloadAdapter, WorkloadFacts, WorkloadState
from gpu_budget.workloads.job import JobAdapter

ADAPTERS: tuple[WorkloadAdapter, ...] = (JobAdapter(),)
"""Every workload kind the operator budgets, in the order they are indexed."""

__all__ = ["ADAPTERS", "JobAdapter", "WorkloadAdapter", "WorkloadFacts", "WorkloadState"]
