"""Reading pods: GPUs requested, when they started holding them, when they let go."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gpu_budget.pods import PodFacts, requested_gpus

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


def test_running_pod_holds_gpus_from_its_start_time() -> None:
    facts = PodFacts.from_pod(raw_pod(startTime="2026-11-01T12:00:00Z"), NOW)
    assert facts.running_since == datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    assert facts.ended_at is None
    assert facts.gpus == 8
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
