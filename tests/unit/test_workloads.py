"""Workload adapters: pods, state, GPUs and the operations that suspend, resume and kill."""

from __future__ import annotations

from typing import Any

import pytest

from gpu_budget import ADMITTED_ANNOTATION, BUDGET_LABEL, SPEND_RECORD_ANNOTATION
from gpu_budget.pods import PodFacts
from gpu_budget.workloads import (
    ADAPTERS_BY_KIND,
    HELD_ANNOTATION,
    KILLED_ANNOTATION,
    WorkloadState,
)
from gpu_budget.workloads.base import read_count
from gpu_budget.workloads.pod import SCHEDULING_GATE

GPU_POD = {"containers": [{"resources": {"limits": {"nvidia.com/gpu": 8}}}]}
BUDGET_UID = "budget-uid"


def gpu_pod(
    uid: str, labels: dict[str, str] | None = None, controller_uid: str | None = None
) -> PodFacts:
    return PodFacts(
        uid=uid,
        name=uid,
        namespace="ml-team",
        labels=labels or {},
        node="n",
        resources={"nvidia.com/gpu": 8},
        running_since=None,
        ended_at=None,
        controller_kind=None if controller_uid is None else "Job",
        controller_uid=controller_uid,
    )


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
    assert adapter.resume(facts, BUDGET_UID) is None  # not suspended


def test_operator_never_resumes_what_the_user_suspended() -> None:
    adapter = ADAPTERS_BY_KIND["Job"]
    assert adapter.resume(adapter.facts(job(suspend=True)), BUDGET_UID) is None
    held = adapter.facts(job(suspend=True, **{HELD_ANNOTATION: "AwaitingApproval"}))
    assert held.state == WorkloadState.SUSPENDED
    resume = adapter.resume(held, BUDGET_UID)
    assert resume is not None
    assert resume.patch == {
        "spec": {"suspend": False},
        "metadata": {"annotations": {HELD_ANNOTATION: None, ADMITTED_ANNOTATION: BUDGET_UID}},
    }


def test_killed_workload_is_never_resumed_and_kill_is_idempotent() -> None:
    adapter = ADAPTERS_BY_KIND["Job"]
    facts = adapter.facts(job())
    kill = adapter.kill(facts, "CapReached: $100 of $100")
    assert kill is not None and kill.patch is not None
    assert kill.patch["metadata"]["annotations"][KILLED_ANNOTATION].startswith("CapReached")
    killed = adapter.facts(job(suspend=True, **{KILLED_ANNOTATION: "x", HELD_ANNOTATION: "x"}))
    assert killed.state == WorkloadState.KILLED
    assert adapter.resume(killed, BUDGET_UID) is None
    assert adapter.kill(killed, "again") is None


def test_jobset() -> None:
    adapter = ADAPTERS_BY_KIND["JobSet"]
    facts = adapter.facts(jobset())
    assert facts.requested_gpus == 3 * 2 * 8
    # Its pods are its Jobs' pods: followed from each pod's Job up to the JobSet.
    assert facts.owns(gpu_pod("p", controller_uid="job-0-uid"), {"job-0-uid": "w-uid"})
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
    release = adapter.resume(gated, BUDGET_UID)
    assert release is not None
    assert release.patch == {
        "metadata": {"annotations": {ADMITTED_ANNOTATION: BUDGET_UID}},
        "spec": {"schedulingGates": [{"name": "other.io/gate"}]},
    }
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
    # A JobSet's pods are controlled by its Jobs, each controlled by the JobSet.
    owners = {"w-job-0-uid": "w-uid"}
    own = {
        "Job": gpu_pod("mine", controller_uid="w-uid"),
        "JobSet": gpu_pod("mine", controller_uid="w-job-0-uid"),
        "PyTorchJob": gpu_pod("mine", controller_uid="w-uid"),
        "Pod": gpu_pod("solo-uid"),
    }[kind]
    stranger = gpu_pod(
        "theirs",
        labels={"batch.kubernetes.io/controller-uid": "x", "jobset.sigs.k8s.io/jobset-name": "x"},
        controller_uid="x",
    )
    assert facts.owns(own, owners)
    assert not facts.owns(stranger, owners)


def test_controller_owned_pods_are_not_bare_workloads() -> None:
    owned = bare_pod()
    owned["metadata"]["ownerReferences"] = [
        {"apiVersion": "batch/v1", "kind": "Job", "controller": True}
    ]
    assert not ADAPTERS_BY_KIND["Pod"].indexes(owned)
    assert ADAPTERS_BY_KIND["Pod"].indexes(bare_pod())


# ----------------------------------------------------------- matching by owner uid


def test_a_pod_carrying_a_jobs_label_but_another_controller_is_not_the_jobs() -> None:
    facts = ADAPTERS_BY_KIND["Job"].facts(job())
    forged = gpu_pod(
        "forged", labels={"batch.kubernetes.io/controller-uid": "w-uid"}, controller_uid="other"
    )
    assert not facts.owns(forged, {})
    uncontrolled = gpu_pod("bare", labels={"batch.kubernetes.io/controller-uid": "w-uid"})
    assert not facts.owns(uncontrolled, {})


def test_owner_chains_are_followed_but_bounded() -> None:
    facts = ADAPTERS_BY_KIND["JobSet"].facts(jobset())
    assert facts.owns(gpu_pod("p", controller_uid="a"), {"a": "b", "b": "w-uid"})
    assert not facts.owns(gpu_pod("p", controller_uid="a"), {"a": "b", "b": "a"})
    deep = {"a": "b", "b": "c", "c": "d", "d": "e", "e": "w-uid"}
    assert not facts.owns(gpu_pod("p", controller_uid="a"), deep)


def test_a_pod_workload_owns_only_itself() -> None:
    facts = ADAPTERS_BY_KIND["Pod"].facts(bare_pod())
    assert facts.pod_uid == "solo-uid"
    assert facts.owns(gpu_pod("solo-uid", controller_uid="rs-uid"), {})
    assert not facts.owns(gpu_pod("other", controller_uid="solo-uid"), {})


@pytest.mark.parametrize(
    ("api_version", "kind", "indexed"),
    [
        ("batch/v1", "Job", False),
        ("jobset.x-k8s.io/v1alpha2", "JobSet", False),
        ("kubeflow.org/v1", "PyTorchJob", False),
        ("apps/v1", "ReplicaSet", True),
        ("apps/v1", "StatefulSet", True),
        ("example.com/v1", "Job", True),  # a Job of another API group is not ours to trust
    ],
)
def test_pods_of_other_controllers_are_pod_workloads(
    api_version: str, kind: str, indexed: bool
) -> None:
    pod = bare_pod()
    pod["metadata"]["ownerReferences"] = [
        {"apiVersion": api_version, "kind": kind, "name": "o", "uid": "o-uid", "controller": True}
    ]
    assert ADAPTERS_BY_KIND["Pod"].indexes(pod) is indexed


def test_a_non_controller_owner_does_not_make_a_pod_its_owners() -> None:
    pod = bare_pod()
    pod["metadata"]["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "uid": "j"}]
    assert ADAPTERS_BY_KIND["Pod"].indexes(pod)


# ---------------------------------------------------------- records and admission


def test_suspend_and_kill_carry_the_spend_record() -> None:
    adapter = ADAPTERS_BY_KIND["Job"]
    facts = adapter.facts(job())
    suspend = adapter.suspend(facts, "CapReached", '{"r":1}')
    assert suspend is not None and suspend.patch == {
        "spec": {"suspend": True},
        "metadata": {
            "annotations": {HELD_ANNOTATION: "CapReached", SPEND_RECORD_ANNOTATION: '{"r":1}'}
        },
    }
    kill = adapter.kill(facts, "CapReached: x", '{"r":2}')
    assert kill is not None and kill.patch is not None
    assert kill.patch["metadata"]["annotations"] == {
        KILLED_ANNOTATION: "CapReached: x",
        SPEND_RECORD_ANNOTATION: '{"r":2}',
    }
    # Without a record the annotation is left alone (not removed).
    plain = adapter.suspend(facts, "CapReached")
    assert plain is not None and plain.patch is not None
    assert SPEND_RECORD_ANNOTATION not in plain.patch["metadata"]["annotations"]


def test_record_writes_only_a_changed_record() -> None:
    adapter = ADAPTERS_BY_KIND["Job"]
    stopped = adapter.facts(
        job(suspend=True, **{HELD_ANNOTATION: "CapReached", SPEND_RECORD_ANNOTATION: "old"})
    )
    assert stopped.spend_record == "old"
    op = adapter.record(stopped, "new")
    assert op is not None and op.verb == "patch"
    assert op.patch == {"metadata": {"annotations": {SPEND_RECORD_ANNOTATION: "new"}}}
    assert adapter.record(stopped, "old") is None


def test_a_deleted_pod_needs_no_record() -> None:
    adapter = ADAPTERS_BY_KIND["Pod"]
    running = adapter.facts(bare_pod())
    op = adapter.suspend(running, "CapReached", "record")
    assert op is not None and op.verb == "delete" and op.patch is None


def test_admitted_by_is_read_from_the_annotation() -> None:
    adapter = ADAPTERS_BY_KIND["Job"]
    assert adapter.facts(job(**{ADMITTED_ANNOTATION: BUDGET_UID})).admitted_by == BUDGET_UID
    assert adapter.facts(job()).admitted_by is None


# ------------------------------------------------------------------- counts


@pytest.mark.parametrize(
    ("value", "expected", "readable"),
    [
        (None, 1, True),
        (3, 3, True),
        (0, 0, True),
        ("4", 1, False),
        (-2, 1, False),
        ("lots", 1, False),
        (2.5, 1, False),
        ([1], 1, False),
        (True, 1, False),
    ],
)
def test_an_unreadable_count_counts_as_one_and_says_so(
    value: object, expected: int, readable: bool
) -> None:
    count, problem = read_count(value)
    assert count == expected
    assert (problem is None) == readable


def test_malformed_replica_counts_do_not_break_reading_a_workload() -> None:
    body = pytorchjob()
    body["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = "three"
    assert ADAPTERS_BY_KIND["PyTorchJob"].facts(body).requested_gpus == 2 * 8
    body = jobset()
    body["spec"]["replicatedJobs"][0]["replicas"] = "many"
    assert ADAPTERS_BY_KIND["JobSet"].facts(body).requested_gpus == 2 * 8
    body = job()
    body["spec"]["parallelism"] = "two"
    facts = ADAPTERS_BY_KIND["Job"].facts(body)
    assert facts.requested_gpus == 8
    assert facts.problems == ("spec.template: 'two' is not a count",)


def test_an_unreadable_gpu_quantity_in_a_template_is_a_problem_of_the_workload() -> None:
    body = pytorchjob()
    resources = body["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    resources["resources"] = {"limits": {"nvidia.com/gpu": "lots"}}
    facts = ADAPTERS_BY_KIND["PyTorchJob"].facts(body)
    assert any("Worker" in p and "lots" in p for p in facts.problems), facts.problems


def test_fractional_gpus_are_requested_as_fractions() -> None:
    body = job()
    body["spec"]["template"]["spec"] = {
        "containers": [{"resources": {"limits": {"nvidia.com/mig-1g.10gb": 1}}}]
    }
    assert ADAPTERS_BY_KIND["Job"].facts(body).requested_gpus == pytest.approx(2 / 7)
