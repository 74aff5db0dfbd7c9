"""Live spend accounting on the real local cluster, with the operator as a real process.

Prices are set through the BudgetPolicy so money moves fast: a spot p5 node
costs $3,600 an hour, $1 a second. The expected spend is computed in closed
form from what the API server says about the pods (their start times) and the
instant the operator says it accounted up to.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.operator_process import OperatorProcess

NODE_PRICE = 3600.0  # USD/h for a whole spot p5.48xlarge: 8 GPUs, $450 per GPU-hour
POLICY = {
    "apiVersion": "gpubudget.dev/v1alpha1",
    "kind": "BudgetPolicy",
    "metadata": {"name": "default"},
    "spec": {
        "pricing": {
            "instanceTypes": [
                {"instanceType": "p5.48xlarge", "capacityType": "spot", "hourlyPrice": NODE_PRICE}
            ]
        }
    },
}
REPO = Path(__file__).resolve().parents[2]


def apply(cluster: Any, manifest: dict[str, Any], context: str = "admin") -> None:
    cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "-",
        input=json.dumps(manifest),
        context=context,
    )


def get(cluster: Any, kind: str, name: str, namespace: str) -> dict[str, Any]:
    out = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout
    return dict(json.loads(out))


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def budget(name: str, namespace: str, cap: float = 9_000, **spec: Any) -> dict[str, Any]:
    """A budget under the default $10,000 approval ceiling, so it runs without finance."""
    return {
        "apiVersion": "gpubudget.dev/v1alpha1",
        "kind": "TrainingBudget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"costCap": cap, **spec},
    }


def gpu_job(
    name: str, namespace: str, budget_name: str, pods: int = 2, utilization: float = 1.0
) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"gpubudget.dev/budget": budget_name},
        },
        "spec": {
            "parallelism": pods,
            "completions": pods,
            "backoffLimit": 0,
            "template": {
                "metadata": {
                    "annotations": {"dcgm-sim.gpubudget.dev/utilization": str(utilization)}
                },
                "spec": {
                    "restartPolicy": "Never",
                    # kwok removes pods at once; say so, so the planned stop
                    # does not leave a grace period's worth of the cap unspent.
                    "terminationGracePeriodSeconds": 0,
                    "nodeSelector": {
                        "node.kubernetes.io/instance-type": "p5.48xlarge",
                        "karpenter.sh/capacity-type": "spot",
                    },
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "trainer:latest",
                            "resources": {"limits": {"nvidia.com/gpu": 8}},
                        }
                    ],
                },
            },
        },
    }


def job_pods(cluster: Any, namespace: str, job: str) -> list[dict[str, Any]]:
    out = cluster.kubectl(
        "get", "pods", "-n", namespace, "-l", f"job-name={job}", "-o", "json"
    ).stdout
    return list(json.loads(out)["items"])


def running_pods(cluster: Any, namespace: str, job: str, count: int) -> list[dict[str, Any]]:
    def ready() -> list[dict[str, Any]] | None:
        pods = [
            p
            for p in job_pods(cluster, namespace, job)
            if p["status"].get("phase") == "Running" and p["status"].get("startTime")
        ]
        return pods if len(pods) == count else None

    return list(wait_for(ready, 60, f"{count} running pods of job {job}"))


def expected_spend(
    pods: list[dict[str, Any]], at: datetime, node_price: float = NODE_PRICE, factor: float = 1.0
) -> float:
    return sum(
        node_price * factor * (at - parse_time(p["status"]["startTime"])).total_seconds() / 3600
        for p in pods
    )


def condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), None)


@pytest.fixture(scope="module")
def crds_and_policy(cluster: Any) -> Iterator[None]:
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/trainingbudgets.gpubudget.dev",
        "crd/budgetpolicies.gpubudget.dev",
    )
    apply(cluster, POLICY)
    yield
    cluster.kubectl("delete", "budgetpolicy", "default", "--ignore-not-found")


@pytest.fixture
def operator(
    cluster: Any, crds_and_policy: None, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    # Serving only the test's namespace keeps concurrent test runs from
    # enforcing each other's budgets.
    process = OperatorProcess(
        cluster.kubeconfig,
        cluster.prometheus_url,
        tmp_path / "operator.log",
        extra_args=(f"--namespace={namespace}",),
    )
    process.start()
    yield process
    process.stop()
    print("operator log tail:\n" + process.tail())


def test_spend_follows_the_closed_form_and_survives_a_restart(
    cluster: Any, namespace: str, operator: OperatorProcess
) -> None:
    apply(cluster, budget("run", namespace))
    apply(cluster, gpu_job("train", namespace, "run", pods=2, utilization=0.25))
    pods = running_pods(cluster, namespace, "train", 2)
    assert {p["spec"]["nodeName"] for p in pods} <= {"p5-spot-0", "p5-spot-1"}

    errors: list[float] = []
    for checkpoint in (8, 16):
        time.sleep(checkpoint / 2)
        status = get(cluster, "tb", "run", namespace)["status"]
        at = parse_time(status["lastAccountedAt"])
        expected = expected_spend(pods, at)
        errors.append(abs(status["spent"] - expected) / expected)
        assert status["spent"] == pytest.approx(expected, rel=0.02), status
        assert status["burnRatePerHour"] == pytest.approx(2 * NODE_PRICE, rel=1e-9)
        assert status["phase"] == "Running"
        staleness = time.time() - at.timestamp()
        assert staleness < 5, f"spent is {staleness:.1f}s stale"

    # Utilisation 0.25 from the simulated DCGM exporter through Prometheus.
    status = wait_for(
        lambda: (
            (s := get(cluster, "tb", "run", namespace)["status"]).get("gpuUtilization") is not None
            and s
        ),
        30,
        "gpuUtilization",
    )
    assert status["gpuUtilization"] == pytest.approx(0.25, abs=0.02)
    metered_share = status["idleSpend"] / (status["spent"] * 0.75)
    assert 0.5 < metered_share <= 1.0001, status
    assert condition(status, "MetricsAvailable")["status"] == "True"  # type: ignore[index]
    assert condition(status, "Priced")["status"] == "True"  # type: ignore[index]
    workloads = status["workloads"]
    assert workloads == [{"kind": "Job", "name": "train", "state": "Running"}]

    # Kill the operator hard, leave it down, bring it back: downtime is charged, nothing twice.
    operator.kill()
    time.sleep(6)
    operator.start()
    before = time.time()
    status = wait_for(
        lambda: (
            (s := get(cluster, "tb", "run", namespace)["status"])
            and parse_time(s["lastAccountedAt"]).timestamp() > before
            and s
        ),
        30,
        "accounting after restart",
    )
    expected = expected_spend(pods, parse_time(status["lastAccountedAt"]))
    errors.append(abs(status["spent"] - expected) / expected)
    assert status["spent"] == pytest.approx(expected, rel=0.02)
    print(f"relative spend errors at checkpoints: {[f'{e:.5%}' for e in errors]}")

    events = cluster.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "involvedObject.name=run",
        "-o",
        "json",
    ).stdout
    reasons = {e["reason"] for e in json.loads(events)["items"]}
    assert "WorkloadAttached" in reasons


def test_utilization_cost_model_charges_work_done(
    cluster: Any, namespace: str, operator: OperatorProcess
) -> None:
    apply(cluster, budget("shared", namespace, costModel="Utilization"))
    apply(cluster, gpu_job("share", namespace, "shared", pods=1, utilization=0.5))
    pods = running_pods(cluster, namespace, "share", 1)
    status = wait_for(
        lambda: (
            (s := get(cluster, "tb", "shared", namespace)["status"]).get("burnRatePerHour")
            == NODE_PRICE * 0.5
            and s
        ),
        30,
        "utilisation-weighted burn rate",
    )
    time.sleep(6)
    status = get(cluster, "tb", "shared", namespace)["status"]
    full = expected_spend(pods, parse_time(status["lastAccountedAt"]))
    # Until Prometheus has the first sample the pod is charged in full, so the
    # spend sits between half and all of the allocation cost, near the half.
    assert full * 0.5 <= status["spent"] < full * 0.75, (status["spent"], full)


def test_prometheus_down_keeps_allocation_spend_and_sets_condition(
    cluster: Any, namespace: str, operator: OperatorProcess
) -> None:
    apply(cluster, budget("nometrics", namespace))
    apply(cluster, gpu_job("blind", namespace, "nometrics", pods=1))
    pods = running_pods(cluster, namespace, "blind", 1)
    wait_for(
        lambda: (
            (
                condition(
                    get(cluster, "tb", "nometrics", namespace).get("status", {}), "MetricsAvailable"
                )
                or {}
            ).get("status")
            == "True"
        ),
        30,
        "MetricsAvailable=True",
    )
    pidfile = Path(cluster.state_dir) / "run" / "prometheus.pid"
    os.kill(int(pidfile.read_text()), signal.SIGSTOP)  # hung, not just gone: the worse case
    try:
        status = wait_for(
            lambda: (
                (s := get(cluster, "tb", "nometrics", namespace)["status"])
                and (condition(s, "MetricsAvailable") or {}).get("status") == "False"
                and s
            ),
            40,
            "MetricsAvailable=False",
        )
        time.sleep(4)
        status = get(cluster, "tb", "nometrics", namespace)["status"]
        expected = expected_spend(pods, parse_time(status["lastAccountedAt"]))
        assert status["spent"] == pytest.approx(expected, rel=0.02)
        assert time.time() - parse_time(status["lastAccountedAt"]).timestamp() < 8
    finally:
        os.kill(int(pidfile.read_text()), signal.SIGCONT)
    wait_for(
        lambda: (
            (
                condition(get(cluster, "tb", "nometrics", namespace)["status"], "MetricsAvailable")
                or {}
            ).get("status")
            == "True"
        ),
        40,
        "MetricsAvailable=True again",
    )
