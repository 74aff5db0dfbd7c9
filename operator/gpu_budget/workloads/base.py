"""The interface every workload adapter implements.

An adapter answers, for one workload kind: which pods are its own, what state
it is in, how many GPUs it asks for, and the patches that suspend, resume and
kill it. Patches are plain JSON merge patches so the decision stays testable;
the shell sends them. What only some kinds have (a suspend switch, pod
templates, children that point at it, a scheduling gate) is an optional
capability, a small ABC a kind's adapter also derives from, as in Kueue's job
framework.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from gpu_budget import ADMITTED_ANNOTATION, BUDGET_LABEL, GROUP, SPEND_RECORD_ANNOTATION
from gpu_budget.gpus import dra_claims, gpu_count, pod_resources
from gpu_budget.models import DEFAULT_GPU_RESOURCES
from gpu_budget.pods import PodFacts

HELD_ANNOTATION = f"{GROUP}/held"
"""On a workload the operator (or its admission webhook) suspended: why."""
HELD_AT_ADMISSION = "Admission"
"""Value of ``gpubudget.dev/held`` on a workload the webhook suspended at creation."""
KILLED_ANNOTATION = f"{GROUP}/killed"
"""On a workload the operator killed: why. Killed workloads never run again."""


MAX_OWNER_DEPTH = 4
"""Owner chains are short (pod, Job, JobSet); a bound keeps a malformed chain from looping."""


class WorkloadState(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    FINISHED = "Finished"
    KILLED = "Killed"


class WorkloadFacts(BaseModel):
    """A labelled workload as the indices keep it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

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
    requested_gpus: float
    """GPUs the workload asks for when all its pods run."""
    pod_uid: str | None = None
    """For a pod adapted as its own workload: the pod itself."""
    other_scheduling_gates: tuple[str, ...] = ()
    """For a bare pod: scheduling gates that are not ours, to keep when releasing it."""
    admitted_by: str | None = None
    """Uid of the budget that admitted it (``gpubudget.dev/admitted``)."""
    spend_record: str | None = None
    """The raw ``gpubudget.dev/spend-record`` annotation; parsed by gpu_budget.inheritance."""
    problems: tuple[str, ...] = ()
    """What of it could not be read (a count, a quantity): counted conservatively."""

    def owns(self, pod: PodFacts, owners: Mapping[str, str]) -> bool:
        """Whether ``pod`` is this workload's, by owner references, never by labels.

        ``owners`` maps the uid of an intermediate controller (a JobSet's Job) to
        the uid of its own controller, so a pod is followed up to its workload.
        """
        if self.pod_uid is not None:
            return pod.uid == self.pod_uid
        uid = pod.controller_uid
        for _ in range(MAX_OWNER_DEPTH):
            if uid is None:
                return False
            if uid == self.uid:
                return True
            uid = owners.get(uid)
        return False


class WorkloadAdapter(ABC):
    """What the operator asks of a workload kind, and what the admission policies need of it.

    Everything a kind is lives in its own module: its facts, how it is stopped
    and resumed, and the CEL fragments the policies render for it. What only
    some kinds can do is a capability below (:class:`SuspendSwitch`,
    :class:`PodTemplates`, :class:`PodController`, :class:`SchedulingGated`),
    which callers test with ``isinstance``, never by naming a kind.
    """

    kind: str
    group: str
    version: str
    plural: str
    pod_specs_cel: str
    """CEL over ``object``: the list of its pod specs (templates), for the GPU checks."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    @abstractmethod
    def switch(self) -> str:
        """How the kind is held, for messages: ``spec.suspend``, a scheduling gate, ..."""

    @abstractmethod
    def held(self, obj: str) -> str:
        """CEL: the object ``obj`` (``object``, ``oldObject``) is suspended or gated right now."""

    def indexes(self, body: Mapping[str, Any]) -> bool:
        """Whether this labelled object is a workload of this adapter (bare pods filter)."""
        return True

    def facts(self, body: Mapping[str, Any]) -> WorkloadFacts:
        meta = body["metadata"]
        annotations = meta.get("annotations") or {}
        killed = KILLED_ANNOTATION in annotations
        gpus, problems = requested(self.pod_sets(body))
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
            requested_gpus=gpus,
            problems=tuple(problems),
            pod_uid=self.own_pod_uid(body),
            other_scheduling_gates=self.other_scheduling_gates(body),
            admitted_by=annotations.get(ADMITTED_ANNOTATION),
            spend_record=annotations.get(SPEND_RECORD_ANNOTATION),
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
    def pod_sets(self, body: Mapping[str, Any]) -> list[PodSet]:
        """The workload's pod templates and how many pods of each it runs."""

    @abstractmethod
    def suspend(
        self, workload: WorkloadFacts, reason: str, record: str | None = None
    ) -> Operation | None:
        """Stop the workload's pods in a way it can come back from; None if already so.

        ``record`` is the budget's spend record, written in the same patch so a
        stopped workload always carries what its budget had spent.
        """

    @abstractmethod
    def resume(self, workload: WorkloadFacts, budget_uid: str) -> Operation | None:
        """Let a workload the operator held run again; never one the user suspended."""

    @abstractmethod
    def kill(
        self, workload: WorkloadFacts, reason: str, record: str | None = None
    ) -> Operation | None:
        """Stop the workload for good: marked killed, never resumed."""

    def record(self, workload: WorkloadFacts, record: str) -> Operation | None:
        """Write the budget's spend record on a workload that is already stopped."""
        if workload.spend_record == record:
            return None
        return Operation(verb="patch", patch=_annotate(_record(record)))


# -------------------------------------------------------------------- capabilities


class SuspendSwitch(WorkloadAdapter):
    """A kind with a suspend field in its spec, which its controller honours.

    The field is the kind's one fact (``suspend_path``); reading it, the merge
    patches that flip it, and the CEL and messages of the policies all follow
    from it. The admission webhook holds such a kind at creation, and on a
    user's unsuspend, by patching the field (:meth:`admission_hold`).
    """

    suspend_path: tuple[str, ...]
    """Where the switch is, e.g. ``("spec", "runPolicy", "suspend")``."""

    @property
    def switch(self) -> str:
        return ".".join(self.suspend_path)

    def held(self, obj: str) -> str:
        first, *rest = self.suspend_path
        return f"{obj}.{first}" + "".join(f".?{part}" for part in rest) + ".orValue(false) == true"

    def is_suspended(self, body: Mapping[str, Any]) -> bool:
        *parents, field = self.suspend_path
        value: Mapping[str, Any] = body
        for part in parents:
            value = value.get(part) or {}
        return bool(value.get(field))

    def suspend_fields(self, suspend: bool) -> dict[str, Any]:
        """The merge patch of the workload's own suspend switch."""
        patch: dict[str, Any] = {self.suspend_path[-1]: suspend}
        for part in reversed(self.suspend_path[:-1]):
            patch = {part: patch}
        return patch

    def admission_hold(self) -> dict[str, Any]:
        """The admission webhook's patch: suspended, and marked held at admission."""
        return _merge(self.suspend_fields(True), _annotate({HELD_ANNOTATION: HELD_AT_ADMISSION}))

    def suspend(
        self, workload: WorkloadFacts, reason: str, record: str | None = None
    ) -> Operation | None:
        if workload.suspended or workload.state == WorkloadState.FINISHED:
            return None
        return Operation(
            verb="patch",
            patch=_merge(
                self.suspend_fields(True),
                _annotate({HELD_ANNOTATION: reason, **_record(record)}),
            ),
        )

    def resume(self, workload: WorkloadFacts, budget_uid: str) -> Operation | None:
        """Let a workload the operator held run again; never one the user suspended.

        It is marked admitted by the budget, which is what lets its owner suspend
        and resume it herself afterwards (the workload guard policy).
        """
        if not (workload.suspended and workload.held) or workload.killed:
            return None
        return Operation(
            verb="patch",
            patch=_merge(
                self.suspend_fields(False),
                _annotate({HELD_ANNOTATION: None, ADMITTED_ANNOTATION: budget_uid}),
            ),
        )

    def kill(
        self, workload: WorkloadFacts, reason: str, record: str | None = None
    ) -> Operation | None:
        """Stop the workload for good: suspended, marked killed, never resumed."""
        if workload.killed or workload.state == WorkloadState.FINISHED:
            return None
        return Operation(
            verb="patch",
            patch=_merge(
                self.suspend_fields(True),
                _annotate({KILLED_ANNOTATION: reason, **_record(record)}),
            ),
        )


class PodTemplates(WorkloadAdapter):
    """A kind whose pods (or child workloads) get their metadata from templates in it.

    The workload guard refuses templates that name another budget than the
    workload's own, since pods are charged to their workload's budget.
    """

    templates_cel: str
    """CEL over ``{o}``: the templates whose ``metadata.labels`` its pods or children get."""

    def templates(self, obj: str) -> str:
        """CEL: the templates of ``obj`` (``object``, ``oldObject``)."""
        return self.templates_cel.replace("{o}", obj)


class PodController(WorkloadAdapter):
    """A kind other objects' controller references point at: its pods, a JobSet's Jobs.

    Those children are its business, held and stopped through it: the pod
    adapter leaves them out, the admission webhook does not hold them when the
    owner vouches for them, and the policies check them at their controller.
    """


class ChildOfControllers(WorkloadAdapter):
    """A kind whose objects a :class:`PodController` may control (a Job's pods).

    Only the objects no adapted controller controls are workloads of their own
    (a bare pod, a ReplicaSet's); the others are charged to, held through and
    checked at their controller, here and in the require-budget policy.
    """

    def __init__(self, controllers: frozenset[tuple[str, str]]) -> None:
        self.controllers = controllers
        """(API group, kind) of the :class:`PodController` kinds: their children are theirs."""

    def indexes(self, body: Mapping[str, Any]) -> bool:
        """A labelled object no adapted controller controls.

        One that carries a budget label its controller (a ReplicaSet, a
        StatefulSet, a custom controller) knows nothing of is charged to that
        budget and, since its controller cannot be suspended, stopped by deletion.
        """
        controller = controller_of(body)
        if controller is None:
            return True
        group = str(controller.get("apiVersion", "")).rpartition("/")[0]
        return (group, controller.get("kind")) not in self.controllers


class SchedulingGated(WorkloadAdapter):
    """A kind held by a scheduling gate, which the admission webhook adds at creation.

    Gates can be removed after creation, never added: one not gated at
    creation can only be stopped by deletion.
    """

    scheduling_gate: str
    """The gate's name; the object is not scheduled while it is there."""

    @property
    def switch(self) -> str:
        return f"the scheduling gate {self.scheduling_gate}"

    def held(self, obj: str) -> str:
        gate = json.dumps(self.scheduling_gate)  # a CEL string literal
        return f"{obj}.spec.?schedulingGates.orValue([]).exists(g, g.name == {gate})"

    def is_suspended(self, body: Mapping[str, Any]) -> bool:
        gates = (body.get("spec") or {}).get("schedulingGates") or []
        return any(gate.get("name") == self.scheduling_gate for gate in gates)

    def other_scheduling_gates(self, body: Mapping[str, Any]) -> tuple[str, ...]:
        gates = (body.get("spec") or {}).get("schedulingGates") or []
        return tuple(g["name"] for g in gates if g.get("name") != self.scheduling_gate)


class Operation(BaseModel):
    """One API call on a workload: a JSON merge patch, or a deletion."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    verb: Literal["patch", "delete"]
    patch: dict[str, Any] | None = None


def _record(record: str | None) -> dict[str, str | None]:
    return {} if record is None else {SPEND_RECORD_ANNOTATION: record}


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


def controller_of(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The controlling owner reference of an object, if any."""
    owners = (body.get("metadata") or {}).get("ownerReferences") or []
    return next((ref for ref in owners if isinstance(ref, Mapping) and ref.get("controller")), None)


class PodSet(BaseModel):
    """Pods of one template a workload runs: how many (a product of counts) and their spec."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="forbid")

    counts: tuple[object, ...]
    """The raw counts that multiply (a JobSet's replicas and its Jobs' parallelism)."""
    spec: Mapping[str, Any]
    where: str
    """Where in the object the template is, for messages."""


def read_count(value: object) -> tuple[int, str | None]:
    """A replica or parallelism count; unreadable counts as 1 (never as none), with why."""
    if value is None:
        return 1, None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value, None
    return 1, f"{value!r} is not a count"


def requested(pod_sets: list[PodSet]) -> tuple[float, list[str]]:
    """GPUs a workload asks for when all its pods run, and what of it could not be read."""
    total, problems = 0.0, []
    for pod_set in pod_sets:
        replicas = 1
        for raw in pod_set.counts:
            value, problem = read_count(raw)
            replicas *= value
            if problem:
                problems.append(f"{pod_set.where}: {problem}")
        resources, unreadable = pod_resources(pod_set.spec)
        problems.extend(f"{pod_set.where}: {problem}" for problem in unreadable)
        per_pod = gpu_count(resources, DEFAULT_GPU_RESOURCES) + dra_claims(pod_set.spec)
        total += replicas * per_pod
    return total, problems


def mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def condition_true(body: Mapping[str, Any], *types: str) -> bool:
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c.get("type") in types and c.get("status") == "True" for c in conditions)
