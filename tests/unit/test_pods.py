"""Reading pods: GPUs requested, when they started holding them, when they let go."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from gpu_budget.models import DEFAULT_GPU_RESOURCES, GpuResource
from gpu_budget.pods import PodFacts, has_extended_resources
from gpu_budget.workloads.base import PodSet, requested

NOW = datetime(2026, 11, 1, 13, 0, tzinfo=UTC)


def raw_pod(phase: str = "Running", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "uid": "u",
            "name": "train-0",
            "namespace": "ml-team",
            "labels": {"a": "b"},
            "ownerReferences": [{"kind": "Job", "name": "train", "controller": True}],
        },
        "spec": {
            "nodeName": "p5-spot-0",
            "containers": [{"resources": {"limits": {"nvidia.com/gpu": "8"}}}],
        },
        "status": {"phase": phase, **status},
    }


def test_gpu_requests_sum_containers_and_respect_init_containers() -> None:
    spec = {
        "containers": [
            {"resources": {"limits": {"nvidia.com/gpu": 2}}},
            {"resources": {"requests": {"nvidia.com/gpu": "1"}}},
            {"resources": {"limits": {"cpu": "1"}}},
        ],
        "initContainers": [{"resources": {"limits": {"nvidia.com/gpu": 4}}}],
    }
    assert requested_gpus(spec) == 4
    assert requested_gpus({"containers": [{}]}) == 0


def requested_gpus(spec: dict[str, object]) -> float:
    """What a workload with one pod of ``spec`` asks for."""
    gpus, _ = requested([PodSet(counts=(), spec=spec, where="spec")])
    return gpus


def test_running_pod_holds_gpus_from_its_start_time() -> None:
    facts = PodFacts.from_pod(raw_pod(startTime="2026-11-01T12:00:00Z"), NOW)
    assert facts.running_since == datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    assert facts.ended_at is None
    assert facts.gpus(DEFAULT_GPU_RESOURCES) == 8
    assert facts.controller_kind == "Job"


def test_container_start_is_the_fallback_start() -> None:
    status = {"containerStatuses": [{"state": {"running": {"startedAt": "2026-11-01T12:05:00Z"}}}]}
    facts = PodFacts.from_pod(raw_pod(**status), NOW)
    assert facts.running_since == datetime(2026, 11, 1, 12, 5, tzinfo=UTC)


def test_unscheduled_pod_has_not_started() -> None:
    pod = raw_pod(phase="Pending")
    del pod["spec"]["nodeName"]
    facts = PodFacts.from_pod(pod, NOW)
    assert facts.node is None and facts.running_since is None


def test_finished_pod_ends_at_its_last_container_finish() -> None:
    status = {
        "startTime": "2026-11-01T12:00:00Z",
        "containerStatuses": [
            {
                "state": {
                    "terminated": {
                        "startedAt": "2026-11-01T12:00:01Z",
                        "finishedAt": "2026-11-01T12:30:00Z",
                    }
                }
            },
            {
                "state": {
                    "terminated": {
                        "startedAt": "2026-11-01T12:00:01Z",
                        "finishedAt": "2026-11-01T12:40:00Z",
                    }
                }
            },
        ],
    }
    facts = PodFacts.from_pod(raw_pod(phase="Succeeded", **status), NOW)
    assert facts.ended_at == datetime(2026, 11, 1, 12, 40, tzinfo=UTC)


def test_finished_pod_without_timestamps_ends_when_observed() -> None:
    facts = PodFacts.from_pod(raw_pod(phase="Failed", startTime="2026-11-01T12:00:00Z"), NOW)
    assert facts.ended_at == NOW


def pod_with(limits: dict[str, Any], **spec: Any) -> dict[str, Any]:
    pod = raw_pod(startTime="2026-11-01T12:00:00Z")
    pod["spec"]["containers"] = [{"name": "t", "resources": {"limits": limits}}]
    pod["spec"].update(spec)
    return pod


def test_the_controllers_uid_is_read_for_matching() -> None:
    pod = raw_pod()
    pod["metadata"]["ownerReferences"] = [
        {"kind": "ReplicaSet", "uid": "rs-uid"},  # not the controller
        {"kind": "Job", "uid": "job-uid", "controller": True},
    ]
    facts = PodFacts.from_pod(pod, NOW)
    assert (facts.controller_kind, facts.controller_uid) == ("Job", "job-uid")
    bare = raw_pod()
    del bare["metadata"]["ownerReferences"]
    facts = PodFacts.from_pod(bare, NOW)
    assert facts.controller_kind is None and facts.controller_uid is None


def test_a_malformed_gpu_quantity_does_not_raise_counts_one_and_is_a_problem() -> None:
    facts = PodFacts.from_pod(pod_with({"nvidia.com/gpu": "lots"}), NOW)
    assert facts.gpus(DEFAULT_GPU_RESOURCES) == 1
    assert len(facts.problems) == 1
    assert "container t" in facts.problems[0] and "nvidia.com/gpu" in facts.problems[0]
    assert "lots" in facts.problems[0]
    assert facts.observation(DEFAULT_GPU_RESOURCES).gpus == 1


def test_quantities_with_suffixes_are_kubernetes_quantities() -> None:
    facts = PodFacts.from_pod(pod_with({"nvidia.com/gpu": "1k"}), NOW)
    assert facts.gpus(DEFAULT_GPU_RESOURCES) == 1000 and facts.problems == ()
    thousand = {"containers": [{"resources": {"limits": {"nvidia.com/gpu": "1k"}}}]}
    assert requested_gpus(thousand) == 1000


def test_gpus_follow_the_rules_given() -> None:
    facts = PodFacts.from_pod(pod_with({"nvidia.com/mig-3g.20gb": 2, "cpu": "4"}), NOW)
    assert facts.resources == {"nvidia.com/mig-3g.20gb": 2.0}
    assert facts.gpus(DEFAULT_GPU_RESOURCES) == pytest.approx(2 * 3 / 7)
    assert facts.gpus([GpuResource(resource="nvidia.com/gpu")]) == 0
    assert requested_gpus(pod_with({"nvidia.com/mig-3g.20gb": 2})["spec"]) == pytest.approx(6 / 7)


def test_device_claims_count_as_gpus() -> None:
    facts = PodFacts.from_pod(
        pod_with({}, resourceClaims=[{"name": "gpu", "resourceClaimName": "c"}]), NOW
    )
    assert facts.dra_claims == 1
    assert facts.gpus(DEFAULT_GPU_RESOURCES) == 1
    assert has_extended_resources(pod_with({}, resourceClaims=[{"name": "gpu"}]))
    assert not has_extended_resources(pod_with({"cpu": "1"}))


def test_grace_periods_are_read_and_an_unreadable_one_is_a_problem() -> None:
    pod = pod_with({"nvidia.com/gpu": 1}, terminationGracePeriodSeconds=600)
    pod["metadata"]["deletionTimestamp"] = "2026-11-01T12:30:00Z"
    pod["metadata"]["deletionGracePeriodSeconds"] = 120
    facts = PodFacts.from_pod(pod, NOW)
    assert (facts.termination_grace_seconds, facts.deleting, facts.deletion_grace_seconds) == (
        600,
        True,
        120,
    )
    assert facts.problems == ()
    odd = PodFacts.from_pod(pod_with({"nvidia.com/gpu": 1}, terminationGracePeriodSeconds="x"), NOW)
    assert odd.termination_grace_seconds == 30
    assert any("terminationGracePeriodSeconds" in problem for problem in odd.problems)
    assert PodFacts.from_pod(pod_with({"nvidia.com/gpu": 1}), NOW).deletion_grace_seconds is None


def test_an_unreadable_start_time_falls_back_to_the_containers() -> None:
    status = {
        "startTime": "not a time",
        "containerStatuses": [{"state": {"running": {"startedAt": "2026-11-01T12:05:00Z"}}}],
    }
    facts = PodFacts.from_pod(raw_pod(**status), NOW)
    assert facts.running_since == datetime(2026, 11, 1, 12, 5, tzinfo=UTC)


def test_a_malformed_pod_never_raises() -> None:
    facts = PodFacts.from_pod({"metadata": {"uid": "u"}, "spec": "nonsense", "status": None}, NOW)
    assert facts.uid == "u" and facts.resources == {} and facts.node is None
