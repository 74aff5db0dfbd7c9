"""What the operator needs to know of a pod, read from its raw Kubernetes object."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from gpu_budget import BUDGET_LABEL, GPU_RESOURCE, GROUP
from gpu_budget.ledger import PodObservation

TERMINAL_PHASES = ("Succeeded", "Failed")
STOP_AT_ANNOTATION = f"{GROUP}/stop-at"
"""RFC 3339 time at which the operator will stop the pod; training code reads it
through the downward API to checkpoint in time."""


class PodFacts(BaseModel):
    """A GPU pod as the indices keep it: small, immutable, enough to charge it."""

    model_config = ConfigDict(frozen=True)

    uid: str
    name: str
    namespace: str
    labels: dict[str, str]
    node: str | None
    gpus: int
    running_since: datetime | None
    ended_at: datetime | None
    termination_grace_seconds: int = 30
    controller_kind: str | None = None
    """Kind of the pod's controlling owner (Job, ...); None for a bare pod."""
    stop_at: str | None = None
    """The pod's ``gpubudget.dev/stop-at`` annotation, if the operator set one."""

    @property
    def holds_gpus(self) -> bool:
        return self.running_since is not None and self.ended_at is None

    @property
    def budget_label(self) -> str | None:
        return self.labels.get(BUDGET_LABEL)

    def observation(self) -> PodObservation:
        return PodObservation(
            uid=self.uid,
            name=self.name,
            node=self.node,
            gpus=self.gpus,
            running_since=self.running_since,
            ended_at=self.ended_at,
        )

    @classmethod
    def from_pod(cls, pod: Mapping[str, Any], observed_at: datetime) -> PodFacts:
        """Read a raw pod; ``observed_at`` dates a finish the pod itself does not date."""
        meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
        node = spec.get("nodeName") or None
        controller = next(
            (ref for ref in meta.get("ownerReferences") or [] if ref.get("controller")), None
        )
        return cls(
            uid=meta["uid"],
            name=meta["name"],
            namespace=meta.get("namespace", ""),
            labels=dict(meta.get("labels") or {}),
            node=node,
            gpus=requested_gpus(spec),
            running_since=_running_since(status) if node else None,
            ended_at=_ended_at(status, observed_at),
            termination_grace_seconds=int(spec.get("terminationGracePeriodSeconds", 30)),
            controller_kind=controller.get("kind") if controller else None,
            stop_at=(meta.get("annotations") or {}).get(STOP_AT_ANNOTATION),
        )


def requested_gpus(pod_spec: Mapping[str, Any]) -> int:
    """GPUs a pod holds: the larger of its containers' sum and any init container.

    Extended resources cannot be overcommitted, so the limit is the request
    when only one of them is given.
    """

    def gpus_of(container: Mapping[str, Any]) -> int:
        resources = container.get("resources") or {}
        for section in ("limits", "requests"):
            value = (resources.get(section) or {}).get(GPU_RESOURCE)
            if value is not None:
                return int(str(value))
        return 0

    main = sum(gpus_of(c) for c in pod_spec.get("containers") or [])
    init = max((gpus_of(c) for c in pod_spec.get("initContainers") or []), default=0)
    return max(main, init)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _container_states(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    statuses = [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]
    return [s.get("state") or {} for s in statuses]


def _running_since(status: Mapping[str, Any]) -> datetime | None:
    """When the pod began holding its GPUs.

    ``status.startTime`` is when the kubelet admitted the pod: from then on
    its devices are allocated (image pulls included), which is what a cloud
    bills. Container start times are the fallback for kubelets that omit it.
    """
    start = _parse_time(status.get("startTime"))
    if start is not None:
        return start
    starts = [
        _parse_time((state.get("running") or state.get("terminated") or {}).get("startedAt"))
        for state in _container_states(status)
    ]
    known = [s for s in starts if s is not None]
    return min(known) if known else None


def _ended_at(status: Mapping[str, Any], observed_at: datetime) -> datetime | None:
    """When a finished pod released its GPUs: its last container's finish time."""
    if status.get("phase") not in TERMINAL_PHASES:
        return None
    finishes = [
        _parse_time((state.get("terminated") or {}).get("finishedAt"))
        for state in _container_states(status)
    ]
    known = [f for f in finishes if f is not None]
    if known:
        return max(known)
    conditions = status.get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    return _parse_time((ready or {}).get("lastTransitionTime")) or observed_at
