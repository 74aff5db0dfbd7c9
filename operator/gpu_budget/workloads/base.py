"""The interface every workload adapter implements.

An adapter answers, for one workload kind: which pods are its own, what state
it is in, how many GPUs it asks for, and the patches that suspend, resume and
kill it. Patches are plain JSON merge patches so the decision stays testable;
the shell sends them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from gpu_budget import BUDGET_LABEL, GROUP
from gpu_budget.pods import PodFacts

HELD_ANNOTATION = f"{GROUP}/held"
"""On a workload the operator (or its admission webhook) suspended: why."""
KILLED_ANNOTATION = f"{GROUP}/killed"
"""On a workload the operator killed: why. Killed workloads never run again."""


class WorkloadState(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    FINISHED = "Finished"
    KILLED = "Killed"


class WorkloadFacts(BaseModel):
    """A labelled workload as the indices keep it."""

    model_config = ConfigDict(frozen=True)

    kind: str
    namespace: str
    name: str
    uid: str
    budget: str
    state: WorkloadState
    suspended: bool
    held: bool
    """Suspended by the operator, so the operator may resume it."""
    held_reason: str | None = None
    """Why it is held (the annotation's value), e.g. Admission or CapReached."""
    killed: bool
    requested_gpus: int
    """GPUs the workload asks for when all its pods run."""
    pod_labels: dict[str, str]
    """Labels every pod of this workload carries, and only its pods."""
    pod_uid: str | None = None
    """For a bare pod: the pod itself."""
    other_scheduling_gates: tuple[str, ...] = ()
    """For a bare pod: scheduling gates that are not ours, to keep when releasing it."""

    def owns(self, pod: PodFacts) -> bool:
        if self.pod_uid is not None:
            return pod.uid == self.pod_uid
        return all(pod.labels.get(key) == value for key, value in self.pod_labels.items())


class WorkloadAdapter(ABC):
    """What the operator asks of a workload kind."""

    kind: str
    group: str
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def indexes(self, body: Mapping[str, Any]) -> bool:
        """Whether this labelled object is a workload of this adapter (bare pods filter)."""
        return True

    def facts(self, body: Mapping[str, Any]) -> WorkloadFacts:
        meta = body["metadata"]
        annotations = meta.get("annotations") or {}
        killed = KILLED_ANNOTATION in annotations
        suspended = self.is_suspended(body)
        state = self.state(body)
        if killed:
            state = WorkloadState.KILLED
        elif suspended and state != WorkloadState.FINISHED:
            state = WorkloadState.SUSPENDED
        return WorkloadFacts(
            kind=self.kind,
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            budget=(meta.get("labels") or {})[BUDGET_LABEL],
            state=state,
            suspended=suspended,
            held=HELD_ANNOTATION in annotations,
            held_reason=annotations.get(HELD_ANNOTATION),
            killed=killed,
            requested_gpus=self.requested_gpus(body),
            pod_labels=self.pod_labels(body),
            pod_uid=self.own_pod_uid(body),
            other_scheduling_gates=self.other_scheduling_gates(body),
        )

    def own_pod_uid(self, body: Mapping[str, Any]) -> str | None:
        return None

    def other_scheduling_gates(self, body: Mapping[str, Any]) -> tuple[str, ...]:
        return ()

    @abstractmethod
    def state(self, body: Mapping[str, Any]) -> WorkloadState:
        """Running, Pending or Finished; suspension and kills are read generically."""

    @abstractmethod
    def is_suspended(self, body: Mapping[str, Any]) -> bool: ...

    @abstractmethod
    def requested_gpus(self, body: Mapping[str, Any]) -> int: ...

    @abstractmethod
    def pod_labels(self, body: Mapping[str, Any]) -> dict[str, str]: ...

    @abstractmethod
    def suspend_fields(self, suspend: bool) -> dict[str, Any]:
        """The merge patch of the workload's own suspend switch."""

    def suspend(self, workload: WorkloadFacts, reason: str) -> Operation | None:
        """Stop the workload's pods in a way it can come back from; None if already so."""
        if workload.suspended or workload.state == WorkloadState.FINISHED:
            return None
        return Operation(
            verb="patch",
            patch=_merge(self.suspend_fields(True), _annotate({HELD_ANNOTATION: reason})),
        )

    def resume(self, workload: WorkloadFacts) -> Operation | None:
        """Let a workload the operator held run again; never one the user suspended."""
        if not (workload.suspended and workload.held) or workload.killed:
            return None
        return Operation(
            verb="patch",
            patch=_merge(self.suspend_fields(False), _annotate({HELD_ANNOTATION: None})),
        )

    def kill(self, workload: WorkloadFacts, reason: str) -> Operation | None:
        """Stop the workload for good: suspended, marked killed, never resumed."""
        if workload.killed or workload.state == WorkloadState.FINISHED:
            return None
        return Operation(
            verb="patch",
            patch=_merge(self.suspend_fields(True), _annotate({KILLED_ANNOTATION: reason})),
        )


class Operation(BaseModel):
    """One API call on a workload: a JSON merge patch, or a deletion."""

    model_config = ConfigDict(frozen=True)

    verb: Literal["patch", "delete"]
    patch: dict[str, Any] | None = None


def _annotate(annotations: dict[str, str | None]) -> dict[str, Any]:
    return {"metadata": {"annotations": annotations}}


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    result = dict(a)
    for key, value in b.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge(result[key], value)
        else:
            result[key] = value
    return result


def condition_true(body: Mapping[str, Any], *types: str) -> bool:
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c.get("type") in types and c.get("status") == "True" for c in conditions)
