"""The interface every workload adapter implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from gpu_budget import BUDGET_LABEL
from gpu_budget.pods import PodFacts


class WorkloadState(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    FINISHED = "Finished"


class WorkloadFacts(BaseModel):
    """A labelled workload as the indices keep it."""

    model_config = ConfigDict(frozen=True)

    kind: str
    namespace: str
    name: str
    uid: str
    budget: str
    state: WorkloadState
    requested_gpus: int
    """GPUs the workload asks for when all its pods run."""
    pod_labels: dict[str, str]
    """Labels every pod of this workload carries, and only its pods."""

    def owns(self, pod: PodFacts) -> bool:
        return all(pod.labels.get(key) == value for key, value in self.pod_labels.items())


class WorkloadAdapter(ABC):
    """What the operator asks of a workload kind: find its pods, its state, its GPUs."""

    kind: str
    group: str
    version: str
    plural: str

    def facts(self, body: Mapping[str, Any]) -> WorkloadFacts:
        meta = body["metadata"]
        return WorkloadFacts(
            kind=self.kind,
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            budget=(meta.get("labels") or {})[BUDGET_LABEL],
            state=self.state(body),
            requested_gpus=self.requested_gpus(body),
            pod_labels=self.pod_labels(body),
        )

    @abstractmethod
    def state(self, body: Mapping[str, Any]) -> WorkloadState: ...

    @abstractmethod
    def requested_gpus(self, body: Mapping[str, Any]) -> int: ...

    @abstractmethod
    def pod_labels(self, body: Mapping[str, Any]) -> dict[str, str]: ...


def condition_true(body: Mapping[str, Any], *types: str) -> bool:
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c.get("type") in types and c.get("status") == "True" for c in conditions)
