"""What the operator needs to know of a pod, read from its raw Kubernetes object."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from gpu_budget import BUDGET_LABEL, GROUP
from gpu_budget.formats import optional_time
from gpu_budget.gpus import dra_claims, gpu_count, pod_resources
from gpu_budget.ledger import PodObservation
from gpu_budget.models import GpuResource

TERMINAL_PHASES = ("Succeeded", "Failed")
STOP_AT_ANNOTATION = f"{GROUP}/stop-at"
"""RFC 3339 time at which the operator will stop the pod; training code reads it
through the downward API to checkpoint in time."""


class PodFacts(BaseModel):
    """A pod with extended resources as the indices keep it: small, immutable, enough to charge it.

    Reading a pod never raises: what cannot be read is kept in ``problems`` and
    counted conservatively (a GPU whose quantity is unreadable counts as one), so
    one malformed pod can neither stop accounting nor run for free.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    uid: str
    name: str
    namespace: str
    labels: dict[str, str]
    node: str | None
    resources: dict[str, float]
    """Effective quantity of each extended resource (Kubernetes' init/sidecar rules)."""
    dra_claims: int = 0
    """Pod-level DRA resource claims: the device is not visible, so each is charged as a GPU."""
    running_since: datetime | None
    ended_at: datetime | None
    termination_grace_seconds: int = 30
    controller_kind: str | None = None
    """Kind of the pod's controlling owner (Job, ...); None for a bare pod."""
    controller_uid: str | None = None
    """Uid of the controlling owner: pods are matched to workloads by it, never by labels."""
    stop_at: str | None = None
    """The pod's ``gpubudget.dev/stop-at`` annotation, if the operator set one."""
    deleting: bool = False
    deletion_grace_seconds: int | None = None
    """The grace period of a deletion under way (metadata.deletionGracePeriodSeconds)."""
    problems: tuple[str, ...] = ()

    @property
    def holds_gpus(self) -> bool:
        return self.running_since is not None and self.ended_at is None

    @property
    def budget_label(self) -> str | None:
        return self.labels.get(BUDGET_LABEL)

    def gpus(self, rules: Sequence[GpuResource]) -> float:
        """GPU-equivalents the pod holds under the policy's GPU resources, DRA claims included."""
        return gpu_count(self.resources, rules) + self.dra_claims

    def observation(self, rules: Sequence[GpuResource]) -> PodObservation:
        return PodObservation(
            uid=self.uid,
            name=self.name,
            node=self.node,
            gpus=self.gpus(rules),
            running_since=self.running_since,
            ended_at=self.ended_at,
        )

    @classmethod
    def from_pod(cls, pod: Mapping[str, Any], observed_at: datetime) -> PodFacts:
        """Read a raw pod; ``observed_at`` dates a finish the pod itself does not date."""
        meta, spec, status = (_mapping(pod.get(key)) for key in ("metadata", "spec", "status"))
        node = spec.get("nodeName") or None
        owners = meta.get("ownerReferences") or []
        controller = next(
            (ref for ref in owners if isinstance(ref, Mapping) and ref.get("controller")), None
        )
        resources, problems = pod_resources(spec)
        grace, grace_problem = _grace_seconds(spec.get("terminationGracePeriodSeconds"))
        if grace_problem:
            problems.append(grace_problem)
        return cls(
            uid=str(meta.get("uid", "")),
            name=str(meta.get("name", "")),
            namespace=str(meta.get("namespace", "")),
            labels={str(k): str(v) for k, v in _mapping(meta.get("labels")).items()},
            node=str(node) if node else None,
            resources={name: float(quantity) for name, quantity in resources.items()},
            dra_claims=dra_claims(spec),
            running_since=_running_since(status) if node else None,
            ended_at=_ended_at(status, observed_at),
            termination_grace_seconds=grace,
            controller_kind=str(controller.get("kind")) if controller else None,
            controller_uid=str(controller.get("uid")) if controller else None,
            stop_at=_mapping(meta.get("annotations")).get(STOP_AT_ANNOTATION),
            deleting=bool(meta.get("deletionTimestamp")),
            deletion_grace_seconds=_grace_seconds(meta.get("deletionGracePeriodSeconds"))[0]
            if meta.get("deletionGracePeriodSeconds") is not None
            else None,
            problems=tuple(problems),
        )


def has_extended_resources(pod: Mapping[str, Any]) -> bool:
    """Whether a pod may hold a GPU: any extended resource or DRA claim (the policy decides)."""
    spec = _mapping(pod.get("spec"))
    resources, _ = pod_resources(spec)
    return any(quantity > 0 for quantity in resources.values()) or dra_claims(spec) > 0


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _grace_seconds(value: object) -> tuple[int, str | None]:
    if value is None:
        return 30, None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value, None
    return 30, f"terminationGracePeriodSeconds={value!r} is not a number of seconds"


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
    start = optional_time(status.get("startTime"))
    if start is not None:
        return start
    starts = [
        optional_time((state.get("running") or state.get("terminated") or {}).get("startedAt"))
        for state in _container_states(status)
    ]
    known = [s for s in starts if s is not None]
    return min(known) if known else None


def _ended_at(status: Mapping[str, Any], observed_at: datetime) -> datetime | None:
    """When a finished pod released its GPUs: its last container's finish time."""
    if status.get("phase") not in TERMINAL_PHASES:
        return None
    finishes = [
        optional_time((state.get("terminated") or {}).get("finishedAt"))
        for state in _container_states(status)
    ]
    known = [f for f in finishes if f is not None]
    if known:
        return max(known)
    conditions = status.get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    return optional_time((ready or {}).get("lastTransitionTime")) or observed_at
