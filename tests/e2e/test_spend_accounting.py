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
from pathlib import Path
from typing import Any

import pytest

from localcluster.kubectl import wait_for
from localcluster.manifests import budget, gpu_job
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.support import (
    NODE_PRICE,
    condition,
    expected_spend,
    parse_time,
    running_pods,
)


def test_spend_follows_the_closed_form_and_survives_a_restart(
    cluster: Any, namespace: str, operator: OperatorProcess
) -> None:
    cluster.kubectl.apply(budget("run", namespace))
    cluster.kubectl.apply(gpu_job("train", namespace, "run", pods=2, utilization=0.25))
    pods = running_pods(cluster, namespace, "train", 2)
    assert all(p["spec"]["nodeName"].startswith("p5-spot-") for p in pods)

    errors: list[float] = []
    for checkpoint in (8, 16):
        time.sleep(checkpoint / 2)
        status = cluster.kubectl.get("tb", "run", namespace)["status"]
        at = parse_time(status["lastAccountedAt"])
        expected = expected_spend(pods, at)
        errors.append(abs(status["spent"] - expected) / expected)
        assert status["spent"] == pytest.approx(expected, rel=0.02), status
        assert status["burnRatePerHour"] == pytest.approx(2 * NODE_PRICE, rel=1e-9)
        assert status["phase"] == "Running"
        staleness = time.time() - at.timestamp()
        assert staleness < 5, f"spent is {staleness:.1f}s stale"

    # Utilisation 0.25 from the simulated DCGM exporter through Prometheus. The first
    # seconds of a pod are unmetered (dcgm-sim sees it, Prometheus scrapes, the operator
    # queries); under a loaded machine that start takes longer, so wait until most of the
    # run so far is metered rather than sampling one instant.
    def metered() -> dict[str, Any] | None:
        s = cluster.kubectl.get("tb", "run", namespace)["status"]
        if s.get("gpuUtilization") is None or not s.get("spent"):
            return None
        return s if s["idleSpend"] / (s["spent"] * 0.75) > 0.5 else None

    status = wait_for(metered, 60, "utilisation metered for most of the run")
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
            (s := cluster.kubectl.get("tb", "run", namespace)["status"])
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
    cluster.kubectl.apply(budget("shared", namespace, costModel="Utilization"))
    cluster.kubectl.apply(gpu_job("share", namespace, "shared", pods=1, utilization=0.5))
    pods = running_pods(cluster, namespace, "share", 1)
    status = wait_for(
        lambda: (
            (s := cluster.kubectl.get("tb", "shared", namespace)["status"]).get("burnRatePerHour")
            == NODE_PRICE * 0.5
            and s
        ),
        30,
        "utilisation-weighted burn rate",
    )
    # From here on every interval is metered: spend grows at half the allocation rate.
    first = status
    time.sleep(8)
    last = cluster.kubectl.get("tb", "shared", namespace)["status"]
    elapsed = parse_time(last["lastAccountedAt"]) - parse_time(first["lastAccountedAt"])
    allocation = NODE_PRICE * elapsed.total_seconds() / 3600
    assert last["spent"] - first["spent"] == pytest.approx(0.5 * allocation, rel=0.02)
    assert last["idleSpend"] - first["idleSpend"] == pytest.approx(0.5 * allocation, rel=0.02)
    # Before Prometheus had the pod's first sample it was charged in full, never less.
    full = expected_spend(pods, parse_time(last["lastAccountedAt"]))
    assert 0.5 * full <= last["spent"] <= full


def test_prometheus_down_keeps_allocation_spend_and_sets_condition(
    cluster: Any, namespace: str, operator: OperatorProcess
) -> None:
    cluster.kubectl.apply(budget("nometrics", namespace))
    cluster.kubectl.apply(gpu_job("blind", namespace, "nometrics", pods=1))
    pods = running_pods(cluster, namespace, "blind", 1)
    wait_for(
        lambda: (
            (
                condition(
                    cluster.kubectl.get("tb", "nometrics", namespace).get("status", {}),
                    "MetricsAvailable",
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
                (s := cluster.kubectl.get("tb", "nometrics", namespace)["status"])
                and (condition(s, "MetricsAvailable") or {}).get("status") == "False"
                and s
            ),
            40,
            "MetricsAvailable=False",
        )
        time.sleep(4)
        status = cluster.kubectl.get("tb", "nometrics", namespace)["status"]
        expected = expected_spend(pods, parse_time(status["lastAccountedAt"]))
        assert status["spent"] == pytest.approx(expected, rel=0.02)
        assert time.time() - parse_time(status["lastAccountedAt"]).timestamp() < 8
    finally:
        os.kill(int(pidfile.read_text()), signal.SIGCONT)
    wait_for(
        lambda: (
            (
                condition(
                    cluster.kubectl.get("tb", "nometrics", namespace)["status"], "MetricsAvailable"
                )
                or {}
            ).get("status")
            == "True"
        ),
        40,
        "MetricsAvailable=True again",
    )
