"""Workload adapters: one module per workload kind behind one interface.

Modelled on Kueue's job framework: the operator never needs to know what a
JobSet or a PyTorchJob is beyond what its adapter answers, and what only some
kinds can do is a capability (:mod:`gpu_budget.workloads.base`) its callers
test for with ``isinstance``. Adding a kind is its module and one line in
:data:`KINDS`.
"""

from gpu_budget.workloads.base import (
    HELD_ANNOTATION,
    HELD_AT_ADMISSION,
    KILLED_ANNOTATION,
    ChildOfControllers,
    Operation,
    PodController,
    PodTemplates,
    SchedulingGated,
    SuspendSwitch,
    WorkloadAdapter,
    WorkloadFacts,
    WorkloadState,
)
from gpu_budget.workloads.job import JobAdapter
from gpu_budget.workloads.jobset import JobSetAdapter
from gpu_budget.workloads.pod import PodAdapter
from gpu_budget.workloads.pytorchjob import PyTorchJobAdapter

KINDS: tuple[WorkloadAdapter, ...] = (JobAdapter(), JobSetAdapter(), PyTorchJobAdapter())
"""The registration: every workload kind but bare pods, in the order policies and webhooks
are rendered."""

CONTROLLERS: tuple[PodController, ...] = tuple(a for a in KINDS if isinstance(a, PodController))
"""Workload kinds other objects point at as their controller: their pods are theirs."""

ADAPTERS: tuple[WorkloadAdapter, ...] = (
    *KINDS,
    # Last: a labelled pod is a workload of its own only if none of the above controls it.
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
    "KINDS",
    "ChildOfControllers",
    "JobAdapter",
    "JobSetAdapter",
    "Operation",
    "PodAdapter",
    "PodController",
    "PodTemplates",
    "PyTorchJobAdapter",
    "SchedulingGated",
    "SuspendSwitch",
    "WorkloadAdapter",
    "WorkloadFacts",
    "WorkloadState",
]
