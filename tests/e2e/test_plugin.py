"""``kubectl gpubudget`` against the local cluster: every verb, through kubectl's plugin lookup.

The operator runs as a real process with its webhooks and admission policies
(test_admission's fixtures), serving its /metrics on a port of its own; a
private Prometheus scrapes it every second, so ``report`` and ``export`` read
the history of this test's budgets, one of them deleted on the way.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster.kubectl import kubectl_binary, wait_for
from localcluster.manifests import budget, gpu_job
from localcluster.net import free_port
from tests.e2e import test_admission
from tests.e2e.conftest import E2ECluster
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.support import running_pods

policies = test_admission.policies
webhook_certs = test_admission.webhook_certs
operator = test_admission.operator

PLUGIN_BIN = Path(sys.executable).parent
OWNER = {"team": "nlp", "costCenter": "cc-4711"}


def plugin(
    cluster: E2ECluster, *args: str, context: str = "admin"
) -> subprocess.CompletedProcess[str]:
    """``kubectl gpubudget ARGS`` as a user types it, the plugin found on PATH."""
    env = {**os.environ, "PATH": f"{PLUGIN_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [kubectl_binary(), "gpubudget", *args]
    if args and args[0] not in ("report", "export"):  # those read Prometheus only
        cmd += ["--kubeconfig", cluster.kubeconfig, "--context", context]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    print(f"$ kubectl gpubudget {' '.join(args)}\n{result.stdout}{result.stderr}")
    return result


@pytest.fixture
def metrics_port(monkeypatch: pytest.MonkeyPatch) -> int:
    """The operator's /metrics port, set before the operator fixture starts it."""
    port = free_port()
    monkeypatch.setenv("GPUBUDGET_METRICS_PORT", str(port))
    return port


@pytest.fixture
def prometheus(metrics_port: int, operator: OperatorProcess, tmp_path: Path) -> Iterator[str]:
    """A Prometheus of this test's own, scraping the operator every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed (make system-deps)")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "- job_name: gpu-budget-operator\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        f"  static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), 60, "the test's Prometheus to be ready")
        yield url
    finally:
        process.terminate()
        process.wait(20)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_estimate_prices_with_the_clusters_policy(
    cluster: E2ECluster, crds_and_policy: None
) -> None:
    """The shared policy prices a spot p5.48xlarge at $3,600/h: $450 per GPU-hour."""
    result = plugin(
        cluster,
        "estimate",
        "--hours",
        "2",
        "--gpus",
        "16",
        "--instance-type",
        "p5.48xlarge",
        "--capacity-type",
        "spot",
    )
    assert result.returncode == 0, result.stderr
    assert "BudgetPolicy default of context admin" in result.stdout
    assert "$450.0000/GPU-h" in result.stdout and "$21,600.00" in result.stdout
    assert "needs finance approval" in result.stdout
    document = json.loads(
        plugin(
            cluster, "estimate", "--hours", "2", "--instance-type", "p5.48xlarge", "-o", "json"
        ).stdout
    )
    assert document["estimate"]["gpuHourlyPrice"] == 900  # on-demand: $7,200/h over 8 GPUs


def test_every_verb_on_a_running_cluster(
    cluster: E2ECluster, namespace: str, prometheus: str, tmp_path: Path
) -> None:
    cluster.kubectl.apply(budget("run", namespace, cap=9_000, owner=OWNER))
    cluster.kubectl.apply(gpu_job("train", namespace, "run", pods=1, utilization=0.5))
    cluster.kubectl.apply(budget("gone", namespace, cap=9_000, owner={"team": "vision"}))
    cluster.kubectl.apply(gpu_job("short", namespace, "gone", pods=1))
    over = {"hours": 1, "gpus": 16, "instanceType": "p5.48xlarge", "capacityType": "spot"}
    cluster.kubectl.apply(budget("big", namespace, cap=50_000, estimate=over, owner=OWNER))
    running_pods(cluster, namespace, "train", 1)
    running_pods(cluster, namespace, "short", 1)

    # -- estimate from a manifest: the workload alone, its budget read from the cluster
    job = tmp_path / "job.yaml"
    job.write_text(json.dumps(gpu_job("next", namespace, "big", pods=2)))
    est = plugin(cluster, "estimate", "-f", str(job))
    assert est.returncode == 0 and "16 GPUs x 1 h" in est.stdout and "needs finance" in est.stdout

    # -- top
    def spending() -> Any:
        rows = json.loads(plugin(cluster, "top", "-n", namespace, "-o", "json").stdout)
        run = next(r for r in rows if r["name"] == "run")
        return rows if run["spent"] > 5 and run["burn_per_hour"] > 0 else None

    rows = wait_for(spending, 60, "spend on budget run")
    assert rows[0]["name"] in ("run", "gone") and rows[0]["time_left"]
    table = plugin(cluster, "top", "-A").stdout
    assert namespace in table and "BURN/H" in table

    # -- a budget deleted inside the report's period
    time.sleep(5)
    cluster.kubectl("delete", "job", "short", "-n", namespace, "--wait=false")
    cluster.kubectl("delete", "tb", "gone", "-n", namespace, "--wait=true", "--timeout=60s")

    # -- pending and approve
    pending = json.loads(plugin(cluster, "pending", "-n", namespace, "-o", "json").stdout)
    assert [p["name"] for p in pending] == ["big"] and pending[0]["estimate"] > 10_000
    denied = plugin(
        cluster,
        "approve",
        "big",
        "-n",
        namespace,
        "--amount",
        "50000",
        "--reason",
        "mine",
        context="alice",
    )
    assert denied.returncode == 1 and "forbidden" in denied.stderr.lower()
    assert "Traceback" not in denied.stderr
    approved = plugin(
        cluster,
        "approve",
        "big",
        "-n",
        namespace,
        "--amount",
        "$50,000",
        "--reason",
        "Q3 pretraining",
        context="bob",
    )
    assert approved.returncode == 0, approved.stderr
    annotations = cluster.kubectl.get("tb", "big", namespace)["metadata"]["annotations"]
    assert annotations["gpubudget.dev/approved-amount"] == "50000"
    assert annotations["gpubudget.dev/approval-reason"] == "Q3 pretraining"
    assert annotations["gpubudget.dev/approved-by"] == "bob"
    wait_for(
        lambda: not json.loads(plugin(cluster, "pending", "-n", namespace, "-o", "json").stdout),
        60,
        "big no longer awaiting approval",
    )
    missing = plugin(cluster, "approve", "nope", "-n", namespace, "--amount", "1", "--reason", "x")
    assert missing.returncode == 1 and "not found" in missing.stderr

    # -- report: both teams, the deleted budget's spend included
    time.sleep(3)  # a last scrape
    history = ["--since", "15m", "--prometheus", prometheus]
    report = json.loads(plugin(cluster, "report", *history, "--by", "team", "-o", "json").stdout)
    teams = {r["group"]: r for r in report}
    assert teams["vision"]["spent"] > 5 and teams["nlp"]["spent"] > 5
    status = cluster.kubectl.get("tb", "run", namespace)["status"]
    assert teams["nlp"]["spent"] == pytest.approx(status["spent"], rel=0.1)
    assert plugin(cluster, "report", *history, "--by", "budget").returncode == 0

    # -- export: FOCUS rows for the running and the deleted budget
    focus = tmp_path / "focus.csv"
    exported = plugin(cluster, "export", *history, "--granularity", "hourly", "--file", str(focus))
    assert exported.returncode == 0, exported.stderr
    focus_rows = list(csv.DictReader(io.StringIO(focus.read_text())))
    assert {r["ResourceName"] for r in focus_rows} >= {"run", "gone"}
    import focus_validator

    verdict = subprocess.run(
        [
            str(PLUGIN_BIN / "focus-validator"),
            "--data-file",
            str(focus),
            "--validate-version",
            "1.0",
        ],
        cwd=Path(focus_validator.__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(verdict.stdout)
    assert "Validation succeeded." in verdict.stdout

    # -- report --html
    page = tmp_path / "report.html"
    assert plugin(cluster, "report", *history, "--html", str(page)).returncode == 0
    html = page.read_text()
    assert html.count("<svg") == 3 and "vision" in html
