#!/usr/bin/env python3
"""Benchmark: the operator's CPU and memory with many budgets and GPU pods.

Not a test: it prints figures. Against the local cluster (make cluster-up) it
adds simulated 8-GPU nodes, creates BUDGETS TrainingBudgets each with one Job
of PODS_PER_BUDGET one-GPU pods, runs the operator as a real process, and
samples the operator's CPU time and RSS from /proc while every budget is
accounted each interval. Everything it creates is removed at the end.

    eval "$(make -s cluster-env)"
    .venv/bin/python hack/bench/operator_load.py --budgets 50 --pods-per-budget 8
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "bench-load"
NODE_PREFIX = "bench-gpu-"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(
        [os.environ.get("KUBECTL", "kubectl"), *args], input=stdin, capture_output=True, text=True
    )
    if check and result.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def apply(objects: list[dict[str, Any]]) -> None:
    kubectl(
        "apply",
        "--server-side",
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
    )


def node(index: int) -> dict[str, Any]:
    gpus = "8"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": f"{NODE_PREFIX}{index}",
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "gpubudget.dev/bench": "true",
                "node.kubernetes.io/instance-type": "p5.48xlarge",
                "topology.kubernetes.io/region": "us-east-1",
                "karpenter.sh/capacity-type": "on-demand",
                "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                "nvidia.com/gpu.count": gpus,
            },
        },
        "status": {
            "allocatable": {"cpu": "192", "memory": "2Ti", "pods": "110", "nvidia.com/gpu": gpus},
            "capacity": {"cpu": "192", "memory": "2Ti", "pods": "110", "nvidia.com/gpu": gpus},
        },
    }


def budget_and_job(index: int, pods: int) -> list[dict[str, Any]]:
    name = f"run-{index:03d}"
    return [
        {
            "apiVersion": "gpubudget.dev/v1alpha1",
            "kind": "TrainingBudget",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"costCap": 9000, "owner": {"team": f"team-{index % 5}"}},
        },
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "labels": {"gpubudget.dev/budget": name},
            },
            "spec": {
                "parallelism": pods,
                "completions": pods,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "nodeSelector": {"gpubudget.dev/bench": "true"},
                        "containers": [
                            {
                                "name": "t",
                                "image": "t",
                                "resources": {"limits": {"nvidia.com/gpu": 1}},
                            }
                        ],
                    }
                },
            },
        },
    ]


def proc_sample(pid: int) -> tuple[float, int]:
    """(CPU seconds used so far, RSS in KiB) of one process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    rss = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return cpu, rss


def budgets_status() -> list[dict[str, Any]]:
    return list(json.loads(kubectl("get", "tb", "-n", NAMESPACE, "-o", "json"))["items"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budgets", type=int, default=50)
    parser.add_argument("--pods-per-budget", type=int, default=8)
    parser.add_argument(
        "--interval", type=float, default=5.0, help="operator accounting interval (s)"
    )
    parser.add_argument(
        "--measure", type=float, default=60.0, help="seconds of steady state to sample"
    )
    parser.add_argument(
        "--warmup", type=float, default=15.0, help="seconds after the first full pass, unsampled"
    )
    args = parser.parse_args()
    total_pods = args.budgets * args.pods_per_budget
    nodes = -(-total_pods // 8)

    log = Path(tempfile.mkdtemp(prefix="gpubudget-bench-")) / "operator.log"
    operator: subprocess.Popen[bytes] | None = None
    try:
        t0 = time.monotonic()
        print(f"creating {nodes} nodes, {args.budgets} budgets, {total_pods} GPU pods", flush=True)
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        kubectl("apply", "-f", str(REPO / "examples" / "policy.yaml"))
        # A previous run's namespace may still be terminating.
        kubectl("wait", "--for=delete", f"namespace/{NAMESPACE}", "--timeout=180s", check=False)
        kubectl("create", "namespace", NAMESPACE)
        objects: list[dict[str, Any]] = [node(i) for i in range(nodes)]
        for i in range(args.budgets):
            objects.extend(budget_and_job(i, args.pods_per_budget))
        if objects:
            apply(objects)
        while True:
            running = kubectl(
                "get",
                "pods",
                "-n",
                NAMESPACE,
                "--field-selector=status.phase=Running",
                "-o",
                "name",
            ).count("\n")
            print(
                f"  {running}/{total_pods} pods running ({time.monotonic() - t0:.0f}s)", flush=True
            )
            if running >= total_pods:
                break
            time.sleep(3)

        port = 38090
        operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gpu_budget",
                "--standalone",
                f"--namespace={NAMESPACE}",
                f"--accounting-interval={args.interval}",
                f"--liveness-endpoint=http://127.0.0.1:{port}/healthz",
                *(
                    [f"--prometheus-url={os.environ['PROMETHEUS_URL']}"]
                    if os.environ.get("PROMETHEUS_URL")
                    else []
                ),
            ],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started = time.monotonic()
        while True:
            items = budgets_status()
            accounted = sum(1 for b in items if b.get("status", {}).get("lastAccountedAt"))
            if accounted == args.budgets:
                break
            if operator.poll() is not None:
                raise SystemExit(f"operator exited; see {log}")
            time.sleep(0.5)
        first_pass = time.monotonic() - started
        print(
            f"all {args.budgets} budgets accounted {first_pass:.1f}s after operator start",
            flush=True,
        )

        time.sleep(args.warmup)  # start-up (imports, initial listings) is not steady state
        cpu0, _ = proc_sample(operator.pid)
        wall0 = time.monotonic()
        rss: list[int] = []
        staleness: list[float] = []
        while time.monotonic() - wall0 < args.measure:
            _, kib = proc_sample(operator.pid)
            rss.append(kib)
            now = time.time()
            for b in budgets_status():
                when = b["status"]["lastAccountedAt"].replace("Z", "+00:00")
                staleness.append(now - datetime.fromisoformat(when).timestamp())
            time.sleep(2)
        cpu1, _ = proc_sample(operator.pid)
        wall = time.monotonic() - wall0
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                healthy = response.status == 200
        except OSError:
            healthy = False
        staleness = staleness or [0.0]  # --budgets 0: the operator at idle
        p95 = sorted(staleness)[max(0, int(0.95 * len(staleness)) - 1)]
        mib = [kib / 1024 for kib in rss]
        print("\nresults")
        print(f"  budgets {args.budgets}, GPU pods {total_pods}, interval {args.interval:g}s")
        print(f"  operator CPU      {100 * (cpu1 - cpu0) / wall:.1f}% of one core over {wall:.0f}s")
        print(
            f"  operator RSS      peak {max(mib):.0f} MiB, median {statistics.median(mib):.0f} MiB"
        )
        print(
            f"  status staleness  median {statistics.median(staleness):.1f}s, p95 {p95:.1f}s, "
            f"max {max(staleness):.1f}s"
        )
        print(f"  first full pass   {first_pass:.1f}s after start; healthy {healthy}")
        print(f"  operator log      {log}", flush=True)
    finally:
        if operator is not None and operator.poll() is None:
            os.killpg(operator.pid, signal.SIGTERM)
            operator.wait(30)
        print("cleaning up", flush=True)
        kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
        kubectl("delete", "nodes", "-l", "gpubudget.dev/bench=true", "--wait=false", check=False)


if __name__ == "__main__":
    main()
