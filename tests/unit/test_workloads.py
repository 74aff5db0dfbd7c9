"""Workload adapters: pods, state, GPUs and the operations that suspend, resume and kill."""

from __future__ import annotations

from typing import Any

import pytest

from gpu_budget import BUDGET_LABEL
from gpu_budget.pods import PodFacts
from gpu_budget.workloads import (
    ADAPTERS_BY_KIND,
    HELD_ANNOTATION,
    KILLED_ANNOTATION,
    WorkloadState,
)
from gpu_budget.workloads.pod import SCHEDULING_GATE

GPU_POD = {"containers": [{"resources": {"limits": {"nvidia.com/gpu": 8}}}]}


def meta(name: str = "w", **annotations: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": "ml-team",
        "uid": f"{name}-uid",
        "labels": {BUDGET_LABEL: "run"},
        "annotations": annotations,
    }


def job(suspend: bool = False, **annotations: str) -> dict[str, Any]:
    return {
        "metadata": meta(**annotations),
        "spec": {"parallelism": 2, "suspend": suspend, "template": {"spec": GPU_POD}},
        "status": {"active": 2},
    }


def jobset(suspend: bool = False) -> dict[str, Any]:
    return {
        "metadata": meta(),
        "spec": {
            "suspend": suspend,
            "replicatedJobs": [
                {
                    "name": "workers",
                    "replicas": 3,
                    "template": {"spec": {"parallelism": 2, "template": {"spec": GPU_POD}}},
                }
            ],
        },
    }


def pytorchjob(suspend: bool = False) -> dict[str, Any]:
    return {
        "metadata": meta(),
        "spec": {
            "runPolicy": {"suspend": suspend},
            "pytorchReplicaSpecs": {
                "Master": {"replicas": 1, "template": {"spec": GPU_POD}},
                "Worker": {"replicas": 3, "template": {"spec": GPU_POD}},
            },
        },
        "status": {"conditions": [{"type": "Running", "status": "True"}]},
    }


def bare_pod(gated: bool = False, phase: str = "Running") -> dict[str, Any]:
    gates = [{"name": "other.io/gate"}] + ([{"name": SCHEDULING_GATE}] if gated else [])
    return {
        "metadata": meta("solo"),
        "spec": {**GPU_POD, "schedulingGates": gates},
        "status": {"phase": phase},
    }


def test_job_facts_and_operations() -> None:
    adapter = ADAPTERS_BY_KIND["Job"]
    facts = adapter.facts(job())
    assert facts.requested_gpus == 16
    assert facts.state == WorkloadState.RUNNING
    suspend = adapter.suspend(facts, "CapReached")
    assert suspend is not None
    assert suspend.patch == {
        "spec": {"suspend": True},
        "metadata": {"annotations": {HELD_ANNOTATION: "CapReached"}},
    }
    assert adapter.resume(facts) is None  # not suspended


def test_operator_never_resumes_what_the_user_suspended() -> None:
    adapter = ADAPTERS_BY_KIND["Job"]
    assert adapter.resume(adapter.facts(job(suspend=True))) is None
    held = adapter.facts(job(suspend=True, **{HELD_ANNOTATION: "AwaitingApproval"}))
    assert held.state == WorkloadState.SUSPENDED
    resume = adapter.resume(held)
    assert resume is not None
    assert resume.patch == {
        "spec": {"suspend": False},
        "metadata": {"annotations": {HELD_ANNOTATION: None}},
    }


def test_killed_workload_is_never_resumed_and_kill_is_idempotent() -> None:
    adapter = ADAPTERS_BY_KIND["Job"]
    facts = adapter.facts(job())
    kill = adapter.kill(facts, "CapReached: $100 of $100")
    assert kill is not None and kill.patch is not None
    assert kill.patch["metadata"]["annotations"][KILLED_ANNOTATION].startswith("CapReached")
    killed = adapter.facts(job(suspend=True, **{KILLED_ANNOTATION: "x", HELD_ANNOTATION: "x"}))
    assert killed.state == WorkloadState.KILLED
    assert adapter.resume(killed) is None
    assert adapter.kill(killed, "again") is None


def test_jobset() -> None:
    adapter = ADAPTERS_BY_KIND["JobSet"]
    facts = adapter.facts(jobset())
    assert facts.requested_gpus == 3 * 2 * 8
    assert facts.pod_labels == {"jobset.sigs.k8s.io/jobset-name": "w"}
    op = adapter.suspend(facts, "r")
    assert op is not None and op.patch is not None
    assert op.patch["spec"] == {"suspend": True}


def test_pytorchjob() -> None:
    adapter = ADAPTERS_BY_KIND["PyTorchJob"]
    facts = adapter.facts(pytorchjob())
    assert facts.requested_gpus == 4 * 8
    assert facts.state == WorkloadState.RUNNING
    op = adapter.suspend(facts, "r")
    assert op is not None and op.patch is not None
    assert op.patch["spec"] == {"runPolicy": {"suspend": True}}
    assert adapter.facts(pytorchjob(suspend=True)).state == WorkloadState.SUSPENDED


def test_bare_pod_is_held_by_its_gate_and_stopped_by_deletion() -> None:
    adapter = ADAPTERS_BY_KIND["Pod"]
    gated = adapter.facts(bare_pod(gated=True, phase="Pending"))
    assert gated.suspended and gated.state == WorkloadState.SUSPENDED
    assert adapter.suspend(gated, "r") is None
    release = adapter.resume(gated)
    assert release is not None
    assert release.patch == {"spec": {"schedulingGates": [{"name": "other.io/gate"}]}}
    running = adapter.facts(bare_pod())
    suspend = adapter.suspend(running, "r")
    assert suspend is not None and suspend.verb == "delete"
    kill = adapter.kill(running, "r")
    assert kill is not None and kill.verb == "delete"


@pytest.mark.parametrize(
    ("kind", "body"),
    [("Job", job()), ("JobSet", jobset()), ("PyTorchJob", pytorchjob()), ("Pod", bare_pod())],
)
def test_each_adapter_finds_only_its_own_pods(kind: str, body: dict[str, Any]) -> None:
    facts = ADAPTERS_BY_KIND[kind].facts(body)
    own_labels = {
        "Job": {"batch.kubernetes.io/controller-uid": "w-uid"},
        "JobSet": {"jobset.sigs.k8s.io/jobset-name": "w"},
        "PyTorchJob": {"training.kubeflow.org/job-name": "w"},
        "Pod": {},
    }[kind]

    def pod(uid: str, labels: dict[str, str]) -> PodFacts:
        return PodFacts(
            uid=uid,
            name=uid,
            namespace="ml-team",
            labels=labels,
            node="n",
            gpus=8,
            running_since=None,
            ended_at=None,
        )

    own = pod("solo-uid" if kind == "Pod" else "mine", own_labels)
    stranger = pod(
        "theirs", {"batch.kubernetes.io/controller-uid": "x", "jobset.sigs.k8s.io/jobset-name": "x"}
    )
    assert facts.owns(own)
    assert not facts.owns(stranger)


def test_controller_owned_pods_are_not_bare_workloads() -> None:
    owned = bare_pod()
    owned["metadata"]["ownerReferences"] = [{"kind": "Job", "controller": True}]
    assert not ADAPTERS_BY_KIND["Pod"].indexes(owned)
    assert ADAPTERS_BY_KIND["Pod"].indexes(bare_pod())
