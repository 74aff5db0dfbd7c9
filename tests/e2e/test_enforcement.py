"""Warnings and enforcement on the real cluster: thresholds, suspend, kill, alert, idle, deletion.

Each budget's cap is small and money moves at $1 per second per spot p5 node,
so a run reaches its cap in well under a minute. The operator runs as a real
process; the Job controller and scheduler are the real ones. JobSet and
PyTorchJob have no controller here, so the test plays their controller's part:
it creates the pods their controllers would and deletes them on suspension.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import kubernetes
import pytest

from localcluster.kubectl import wait_for
from localcluster.manifests import budget, gpu_job, gpu_pod
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.support import (
    REPO,
    Receiver,
    condition,
    parse_time,
    reasons,
    running_pods,
)

CAP = 80.0  # two spot p5 nodes burn $2 a second: 40 seconds of run


def wait_until_gone(cluster: Any, namespace: str, selector: str, timeout: float = 60) -> float:
    """Poll until no pod matches; return the wall-clock time it was first seen empty."""

    def gone() -> float | None:
        out = cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "name").stdout
        return time.time() if not out.strip() else None

    return float(wait_for(gone, timeout, f"pods {selector} gone", interval=0.1))


def final_status(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    """Status once spend has stopped moving (two equal readings a pass apart)."""
    time.sleep(3)
    return dict(cluster.kubectl.get("tb", name, namespace)["status"])


def report(case: str, status: dict[str, Any], stop_delay: float | None = None) -> None:
    error = (status["spent"] - CAP) / CAP
    delay = "" if stop_delay is None else f", planned stop to pods gone {stop_delay:.2f}s"
    spent = status["spent"]
    print(f"[enforcement] {case}: final spend ${spent:.3f} vs cap ${CAP:.2f} ({error:+.3%}){delay}")


@pytest.mark.serial  # sets the shared policy's notification URL
def test_thresholds_then_suspend_at_the_cap_then_resume_on_a_raised_cap(
    cluster: Any, namespace: str, operator: OperatorProcess, receiver: Receiver
) -> None:
    cluster.kubectl.apply(
        budget("run", namespace, cap=CAP, enforcement={"checkpointLeadSeconds": 10})
    )
    cluster.kubectl.apply(gpu_job("train", namespace, "run", pods=2))
    running_pods(cluster, namespace, "train", 2)

    # The checkpoint warning reaches the pods before the stop.
    annotated = wait_for(
        lambda: [
            p
            for p in json.loads(
                cluster.kubectl(
                    "get", "pods", "-n", namespace, "-l", "job-name=train", "-o", "json"
                ).stdout
            )["items"]
            if "gpubudget.dev/stop-at" in p["metadata"].get("annotations", {})
        ],
        40,
        "stop-at annotation on the pods",
    )
    stop_at = parse_time(annotated[0]["metadata"]["annotations"]["gpubudget.dev/stop-at"])
    planned = parse_time(
        cluster.kubectl.get("tb", "run", namespace)["status"]["enforcement"]["stopAt"]
    )
    gone_at = wait_until_gone(cluster, namespace, "job-name=train")
    status = final_status(cluster, namespace, "run")
    delay = gone_at - planned.timestamp()
    report("Job, Suspend", status, delay)

    assert status["phase"] == "Suspended"
    assert status["spent"] == pytest.approx(CAP, rel=0.01)
    assert abs((stop_at - planned).total_seconds()) <= 1
    job = cluster.kubectl.get("job", "train", namespace)
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["annotations"]["gpubudget.dev/held"] == "CapReached"
    budget_reasons = reasons(cluster, namespace, "run")
    assert budget_reasons.count("ThresholdReached") == 3
    assert budget_reasons.count("CapReached") == 1
    assert "Suspended" in reasons(cluster, namespace, "train")
    capped = condition(status, "CapReached")
    assert capped is not None and capped["status"] == "True"
    threshold = condition(status, "ThresholdReached")
    assert threshold is not None and threshold["reason"] == "Above90Percent"
    wait_for(
        lambda: receiver.reasons(namespace).count("ThresholdReached") == 3,
        10,
        "3 threshold notifications",
    )
    assert "CapReached" in receiver.reasons(namespace)
    assert all("text" in body for body in receiver.bodies)

    # It stays down on its own...
    time.sleep(4)
    assert cluster.kubectl.get("job", "train", namespace)["spec"]["suspend"] is True
    # ...and comes back when the engineer raises the cap (still under the ceiling).
    cluster.kubectl(
        "patch", "tb", "run", "-n", namespace, "--type=merge", "-p", '{"spec":{"costCap":160}}'
    )
    wait_for(
        lambda: cluster.kubectl.get("job", "train", namespace)["spec"]["suspend"] is False,
        20,
        "Job resumed",
    )
    running_pods(cluster, namespace, "train", 2)
    assert "Resumed" in reasons(cluster, namespace, "run")


def test_kill_stops_for_good(cluster: Any, namespace: str, operator: OperatorProcess) -> None:
    cluster.kubectl.apply(budget("run", namespace, cap=CAP, enforcement={"action": "Kill"}))
    cluster.kubectl.apply(gpu_job("train", namespace, "run", pods=2))
    running_pods(cluster, namespace, "train", 2)
    wait_until_gone(cluster, namespace, "job-name=train")
    status = final_status(cluster, namespace, "run")
    report("Job, Kill", status)
    assert status["phase"] == "Killed"
    assert status["spent"] == pytest.approx(CAP, rel=0.01)
    job = cluster.kubectl.get("job", "train", namespace)
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["annotations"]["gpubudget.dev/killed"].startswith("CapReached")
    # A bigger cap does not bring a killed run back.
    cluster.kubectl(
        "patch", "tb", "run", "-n", namespace, "--type=merge", "-p", '{"spec":{"costCap":400}}'
    )
    time.sleep(4)
    assert cluster.kubectl.get("tb", "run", namespace)["status"]["phase"] == "Killed"
    assert cluster.kubectl.get("job", "train", namespace)["spec"]["suspend"] is True


def test_alert_only_lets_the_run_pass_its_cap(
    cluster: Any, namespace: str, operator: OperatorProcess
) -> None:
    cluster.kubectl.apply(budget("run", namespace, cap=10, enforcement={"action": "Alert"}))
    cluster.kubectl.apply(gpu_job("train", namespace, "run", pods=1))
    running_pods(cluster, namespace, "train", 1)
    status = wait_for(
        lambda: (s := cluster.kubectl.get("tb", "run", namespace)["status"])["spent"] > 12 and s,
        40,
        "spend past the cap",
    )
    assert status["phase"] == "Running"
    assert reasons(cluster, namespace, "run").count("CapExceeded") == 1
    assert cluster.kubectl.get("job", "train", namespace)["spec"].get("suspend") is not True


def play_controller(
    cluster: Any,
    namespace: str,
    plural: str,
    name: str,
    pod_label: str,
    suspended: Callable[[dict[str, Any]], bool],
    stop: threading.Event,
) -> None:
    """Stand in for a workload controller: one GPU pod while running, none while suspended.

    It polls through the API client every 50 ms, about as fast as a real
    controller's watch, so the spend measured is the operator's, not the stand-in's.
    """
    api = cluster.api()
    core = kubernetes.client.CoreV1Api(api)
    custom = kubernetes.client.CustomObjectsApi(api)
    group, version = {
        "jobsets": ("jobset.x-k8s.io", "v1alpha2"),
        "pytorchjobs": ("kubeflow.org", "v1"),
    }[plural]
    pod = gpu_pod(f"{name}-0", namespace, {pod_label: name}, gpus="8")
    created = False
    while not stop.is_set():
        body = custom.get_namespaced_custom_object(group, version, namespace, plural, name)
        # As a real controller does: the pod names its workload as controller.
        pod["metadata"]["ownerReferences"] = [
            {
                "apiVersion": body["apiVersion"],
                "kind": body["kind"],
                "name": name,
                "uid": body["metadata"]["uid"],
                "controller": True,
            }
        ]
        if suspended(body):
            if created:
                core.delete_namespaced_pod(f"{name}-0", namespace, grace_period_seconds=0)
                created = False
        elif not created:
            core.create_namespaced_pod(namespace, pod)
            created = True
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("kind", "crd", "pod_label", "action"),
    [
        ("jobset", "jobset.yaml", "jobset.sigs.k8s.io/jobset-name", "Suspend"),
        ("pytorchjob", "pytorchjob.yaml", "training.kubeflow.org/job-name", "Kill"),
    ],
)
def test_jobset_and_pytorchjob_through_their_adapters(
    cluster: Any,
    namespace: str,
    operator: OperatorProcess,
    kind: str,
    crd: str,
    pod_label: str,
    action: str,
) -> None:
    cluster.kubectl("apply", "-f", str(REPO / "tests" / "e2e" / "crds" / crd))
    if kind == "jobset":
        workload = {
            "apiVersion": "jobset.x-k8s.io/v1alpha2",
            "kind": "JobSet",
            "spec": {"suspend": False, "replicatedJobs": []},
        }

        def suspended(body: dict[str, Any]) -> bool:
            return bool(body["spec"].get("suspend"))
    else:
        workload = {
            "apiVersion": "kubeflow.org/v1",
            "kind": "PyTorchJob",
            "spec": {"runPolicy": {"suspend": False}, "pytorchReplicaSpecs": {}},
        }

        def suspended(body: dict[str, Any]) -> bool:
            return bool(body["spec"]["runPolicy"].get("suspend"))

    workload["metadata"] = {
        "name": "train",
        "namespace": namespace,
        "labels": {"gpubudget.dev/budget": "run"},
    }
    cap = CAP / 2  # one node: $1 a second
    cluster.kubectl.apply(budget("run", namespace, cap=cap, enforcement={"action": action}))
    cluster.kubectl.apply(workload)
    stop = threading.Event()
    controller = threading.Thread(
        target=play_controller,
        args=(cluster, namespace, f"{kind}s", "train", pod_label, suspended, stop),
        daemon=True,
    )
    controller.start()
    try:
        status = wait_for(
            lambda: (
                (s := cluster.kubectl.get("tb", "run", namespace).get("status", {})).get("phase")
                in ("Suspended", "Killed")
                and s
            ),
            60,
            f"{kind} stopped at the cap",
        )
        wait_until_gone(cluster, namespace, f"{pod_label}=train")
        status = final_status(cluster, namespace, "run")
    finally:
        stop.set()
        controller.join(10)
    error = (status["spent"] - cap) / cap
    spent = status["spent"]
    label = f"{kind}, {action}"
    print(f"[enforcement] {label}: final spend ${spent:.3f} vs cap ${cap:.2f} ({error:+.3%})")
    assert status["spent"] == pytest.approx(cap, rel=0.01)
    body = cluster.kubectl.get(kind, "train", namespace)
    assert suspended(body)
    annotation = "gpubudget.dev/held" if action == "Suspend" else "gpubudget.dev/killed"
    assert annotation in body["metadata"]["annotations"]
    assert status["workloads"][0]["kind"] in ("JobSet", "PyTorchJob")


def test_bare_pod_is_deleted_at_the_cap(
    cluster: Any, namespace: str, operator: OperatorProcess
) -> None:
    cap = CAP / 2
    cluster.kubectl.apply(budget("run", namespace, cap=cap))
    pod = gpu_pod("solo", namespace, {"gpubudget.dev/budget": "run"})
    cluster.kubectl.apply(pod)
    wait_for(
        lambda: (
            cluster.kubectl(
                "get", "pod", "solo", "-n", namespace, "-o", "jsonpath={.status.phase}"
            ).stdout
            == "Running"
        ),
        30,
        "bare pod running",
    )
    wait_for(
        lambda: (
            not cluster.kubectl(
                "get", "pod", "solo", "-n", namespace, "--ignore-not-found", "-o", "name"
            ).stdout
        ),
        60,
        "bare pod deleted at the cap",
    )
    status = final_status(cluster, namespace, "run")
    error = (status["spent"] - cap) / cap
    spent = status["spent"]
    print(f"[enforcement] Pod, Suspend: final spend ${spent:.3f} vs cap ${cap:.2f} ({error:+.3%})")
    assert status["spent"] == pytest.approx(cap, rel=0.01)
    assert status["phase"] == "Suspended"
    assert status["workloads"] == []  # the pod is gone, and with it the workload


def test_idle_gpus_suspend_the_run(cluster: Any, namespace: str, operator: OperatorProcess) -> None:
    idle = {"belowUtilization": 0.5, "forMinutes": 0.15, "action": "Suspend"}
    cluster.kubectl.apply(budget("run", namespace, cap=5000, enforcement={"idle": idle}))
    cluster.kubectl.apply(gpu_job("train", namespace, "run", pods=1, utilization=0.05))
    running_pods(cluster, namespace, "train", 1)
    status = wait_for(
        lambda: (
            (s := cluster.kubectl.get("tb", "run", namespace)["status"])["phase"] == "Suspended"
            and s
        ),
        60,
        "suspension for idle GPUs",
    )
    assert status["enforcement"]["reason"] == "IdleGPUs"
    idle_condition = condition(status, "GPUsIdle")
    assert idle_condition is not None
    since = parse_time(status["enforcement"]["idleSince"])
    stopped = parse_time(status["enforcement"]["stoppedAt"])
    assert (stopped - since).total_seconds() >= 0.15 * 60 - 1
    assert cluster.kubectl.get("job", "train", namespace)["spec"]["suspend"] is True


def test_deleting_a_budget_holds_its_workloads(
    cluster: Any, namespace: str, operator: OperatorProcess
) -> None:
    cluster.kubectl.apply(budget("run", namespace, cap=5000))
    cluster.kubectl.apply(gpu_job("train", namespace, "run", pods=1))
    running_pods(cluster, namespace, "train", 1)
    wait_for(
        lambda: (
            cluster.kubectl.get("tb", "run", namespace).get("status", {}).get("phase") == "Running"
        ),
        20,
        "Running",
    )
    cluster.kubectl("delete", "tb", "run", "-n", namespace, "--timeout=30s")
    job = cluster.kubectl.get("job", "train", namespace)
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["annotations"]["gpubudget.dev/held"] == "BudgetDeleted"
    assert "BudgetDeleted" in reasons(cluster, namespace, "train")
    wait_until_gone(cluster, namespace, "job-name=train")
