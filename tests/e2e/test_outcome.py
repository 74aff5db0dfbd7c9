"""Cost per outcome on the real local cluster: tokens from the simulated trainer, via Prometheus.

The Job's pod is annotated so hack/dcgm_sim.py exports ``train_tokens_total`` at
2 million tokens a second; Prometheus scrapes it, and the budget's
``spec.outcome`` asks for it in Mtokens. A spot p5 node costs $1 a second
(examples/policy.yaml), so a million tokens cost about $0.50 (a little more: the
value is as of the last scrape and query, the spend as of the pass).
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster.kubectl import wait_for
from localcluster.manifests import budget, gpu_job
from localcluster.net import free_port
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.support import NODE_PRICE, condition, ensure_shared_policy, running_pods

TOKENS_PER_SECOND = 2e6
OUTCOME_INTERVAL = 3


@pytest.fixture
def metered(
    cluster: Any, crds_and_policy: None, namespace: str, tmp_path: Path
) -> Iterator[tuple[OperatorProcess, int]]:
    """The operator with /metrics served and outcome queries every few seconds."""
    ensure_shared_policy(cluster)
    port = free_port()
    process = OperatorProcess(
        cluster.kubeconfig,
        cluster.prometheus_url,
        tmp_path / "operator.log",
        extra_args=(
            f"--namespace={namespace}",
            f"--metrics-port={port}",
            f"--outcome-interval={OUTCOME_INTERVAL}",
        ),
    )
    process.start()
    yield process, port
    process.stop()
    print("operator log tail:\n" + process.tail())


def scrape(port: int) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode().splitlines()


def test_cost_per_million_tokens(
    cluster: Any, namespace: str, metered: tuple[OperatorProcess, int]
) -> None:
    _, port = metered
    query = f'sum(train_tokens_total{{namespace="{namespace}",job_name="llm"}})'
    outcome = {"query": query, "unit": "Mtokens", "scale": 1e-6}
    cluster.kubectl.apply(budget("llm", namespace, outcome=outcome))
    # Not PromQL: just a failing query, in a condition; the operator carries on.
    broken = {"query": "sum(train_tokens_total{", "unit": "Mtokens"}
    cluster.kubectl.apply(budget("broken", namespace, outcome=broken))
    cluster.kubectl.apply(
        gpu_job("llm", namespace, "llm", pods=1, tokens_per_second=TOKENS_PER_SECOND)
    )
    running_pods(cluster, namespace, "llm", 1)

    def measured() -> dict[str, Any] | None:
        status = cluster.kubectl.get("tb", "llm", namespace).get("status") or {}
        return status if (status.get("outcome") or {}).get("value", 0) > 0 else None

    first = wait_for(measured, 60, "status.outcome of budget llm")
    time.sleep(2 * OUTCOME_INTERVAL + 10)  # a scrape, a query and a staleness rewrite later
    last = wait_for(
        lambda: (
            (s := measured()) is not None
            and s["outcome"]["value"] > first["outcome"]["value"]
            and s
        ),
        30,
        "status.outcome.value to grow",
    )
    value, unit = last["outcome"]["value"], last["outcome"]["unit"]
    cost_per_unit = last["outcome"]["costPerUnit"]
    assert unit == "Mtokens"
    assert cost_per_unit == pytest.approx(last["spent"] / value, rel=1e-6)
    ideal = NODE_PRICE / 3600 / (TOKENS_PER_SECOND * 1e-6)  # $ per Mtoken at steady state
    assert ideal <= cost_per_unit < 2 * ideal, last
    print(
        f"outcome {first['outcome']['value']:.1f} -> {value:.1f} Mtokens; spent "
        f"${last['spent']:.2f}; cost ${cost_per_unit:.4f}/Mtoken (steady state ${ideal:.2f})"
    )
    ok = condition(last, "OutcomeMeasured")
    assert ok is not None and (ok["status"], ok["reason"]) == ("True", "QueryAnswered")

    def failing() -> dict[str, Any] | None:
        status = cluster.kubectl.get("tb", "broken", namespace).get("status") or {}
        found = condition(status, "OutcomeMeasured")
        return found if found is not None and found["reason"] == "QueryFailed" else None

    refused = wait_for(failing, 30, "OutcomeMeasured=False on budget broken")
    assert refused["status"] == "False" and "parse error" in refused["message"], refused

    lines = scrape(port)
    labels = f'budget="llm",cost_center="",namespace="{namespace}",team="",unit="Mtokens"'
    exported = {
        name: float(line.rsplit(" ", 1)[1])
        for line in lines
        for name in ("gpubudget_outcome_value", "gpubudget_cost_per_outcome_usd")
        if line.startswith(f"{name}{{{labels}}}")
    }
    assert set(exported) == {"gpubudget_outcome_value", "gpubudget_cost_per_outcome_usd"}, [
        line for line in lines if "outcome" in line
    ]
    assert exported["gpubudget_outcome_value"] >= value
    assert any(
        line.startswith('gpubudget_outcome_queries_total{result="QueryFailed"}') for line in lines
    )
