#!/usr/bin/env python3
"""Benchmark: the accounting loop at 50/400, 250/2,000 and 1,000/5,000 budgets/GPU pods.

Not a test: it prints a table. Against the local cluster (make cluster-up) it
adds simulated 8-GPU nodes and budgets, each with one Job of one-GPU pods; the
rows nest (row 2 adds to row 1's objects, row 3 to row 2's), so each row only
brings up what it adds. For each row it starts the operator as a real process
and measures: CPU (% of one core), peak RSS, time from start to every budget
accounted, status staleness (now - lastAccountedAt of every budget, median and
p95), API writes per second (the operator's own counters), and the landing
error of a capped budget that reaches its cap during the measurement. The last
row is run again as a polling baseline (accounting every 60 s, stopping only at
a pass, as cost tools evaluate budgets on a schedule) and the overshoot of the
two is compared. Everything it creates is removed at the end.

    eval "$(make -s cluster-env)"
    export PYTHONPATH=hack    # the localcluster package: kubectl, manifests
    .venv/bin/python hack/bench/accounting_sweep.py            # all rows
    .venv/bin/python hack/bench/accounting_sweep.py --rows 1   # just 50/400
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from gpu_budget import FINALIZER
from localcluster.kubectl import Kubectl, KubectlError
from localcluster.manifests import budget, gpu_job
from localcluster.net import free_port

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "bench-sweep"
NODE_PREFIX = "bench-sweep-gpu-"
GPUS_PER_NODE = 8
SWEEP_NODES = {"gpubudget.dev/bench": "sweep"}
CLK_TCK = os.sysconf("SC_CLK_TCK")
NODE_PRICE = 7200.0
"""examples/policy.yaml: an on-demand p5.48xlarge is $7,200/h, so a one-GPU pod costs $0.25/s."""
POD_PRICE_PER_SECOND = NODE_PRICE / GPUS_PER_NODE / 3600


@dataclass(frozen=True)
class Row:
    budgets: int
    pods: int
    pods_per_budget: int
    """Of the budgets this row adds to the previous row's."""


ROWS = (Row(50, 400, 8), Row(250, 2000, 8), Row(1000, 5000, 4))


KUBECTL = Kubectl.from_env()


def apply(objects: list[dict[str, Any]]) -> None:
    for start in range(0, len(objects), 500):
        batch = {"apiVersion": "v1", "kind": "List", "items": objects[start : start + 500]}
        KUBECTL.apply(batch)


def node(index: int) -> dict[str, Any]:
    gpus = str(GPUS_PER_NODE)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": f"{NODE_PREFIX}{index}",
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                **SWEEP_NODES,
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


def budget_and_job(name: str, pods: int, cap: float) -> list[dict[str, Any]]:
    """A budget and its Job of ``pods`` one-GPU pods on the sweep's nodes.

    The budget carries the operator's finalizer, as every budget does once an operator
    has seen it: a row measures an operator *restart* over existing budgets, not a
    first sight of a thousand new ones (which adds a finalizer patch per budget).
    """
    tb = budget(name, NAMESPACE, cap, owner={"team": f"team-{hash(name) % 5}"})
    tb["metadata"]["finalizers"] = [FINALIZER]
    return [
        tb,
        gpu_job(name, NAMESPACE, name, pods=pods, gpus=1, node_selector=SWEEP_NODES),
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


def accounted_since(budget: dict[str, Any], moment: float) -> bool:
    when = budget.get("status", {}).get("lastAccountedAt")
    return (
        bool(when) and datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp() >= moment - 1
    )


def budgets() -> list[dict[str, Any]]:
    return list(KUBECTL.json("get", "tb", "-n", NAMESPACE)["items"])


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def wait_running(total: int) -> None:
    t0 = time.monotonic()
    while True:
        running = KUBECTL(
            "get", "pods", "-n", NAMESPACE, "--field-selector=status.phase=Running", "-o", "name"
        ).stdout.count("\n")
        print(f"  {running}/{total} pods running ({time.monotonic() - t0:.0f}s)", flush=True)
        if running >= total:
            return
        time.sleep(5)


def start_operator(
    interval: float, metrics_port: int, extra: list[str], log: Path
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable, "-m", "gpu_budget", "--standalone", f"--namespace={NAMESPACE}",
            f"--accounting-interval={interval}", f"--metrics-port={metrics_port}",
            f"--liveness-endpoint=http://127.0.0.1:{free_port()}/healthz", *extra,
        ],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def stop_operator(operator: subprocess.Popen[bytes]) -> None:
    if operator.poll() is None:
        os.killpg(operator.pid, signal.SIGTERM)
        try:
            operator.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(operator.pid, signal.SIGKILL)


def capped_landing(name: str, cap: float, timeout: float) -> float | None:
    """Wait for the capped budget to stop; its final spend's error against its cap."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = KUBECTL.get("tb", name, NAMESPACE)
        if body.get("status", {}).get("phase") == "Suspended":
            time.sleep(3)
            spent = KUBECTL.get("tb", name, NAMESPACE)["status"]["spent"]
            return (float(spent) - cap) / cap
        time.sleep(1)
    return None


def measure(
    row: Row, interval: float, seconds: float, extra: list[str], label: str, cap_name: str
) -> dict[str, Any]:
    log = Path(tempfile.mkdtemp(prefix="gpubudget-sweep-")) / "operator.log"
    metrics_port = free_port()
    operator = start_operator(interval, metrics_port, extra, log)
    started, started_wall = time.monotonic(), time.time()
    try:
        while True:
            if all(accounted_since(b, started_wall) for b in budgets()):
                break
            if operator.poll() is not None:
                raise SystemExit(f"operator exited; see {log}")
            if time.monotonic() - started > 900:
                break
            time.sleep(1)
        all_accounted = time.monotonic() - started
        # The capped budget: one one-GPU pod, reaching its cap while we measure.
        cap = round(POD_PRICE_PER_SECOND * 40, 2)
        apply(budget_and_job(cap_name, 1, cap))
        cpu0, _ = proc_sample(operator.pid)
        writes0 = metric(metrics_port, "gpubudget_status_writes_total")
        wall0 = time.monotonic()
        rss: list[int] = []
        staleness: list[float] = []
        while time.monotonic() - wall0 < seconds:
            _, kib = proc_sample(operator.pid)
            rss.append(kib)
            now = time.time()
            for b in budgets():
                when = b.get("status", {}).get("lastAccountedAt")
                if when and b["status"].get("burnRatePerHour", 0) > 0:
                    staleness.append(
                        now - datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
                    )
            time.sleep(3)
        cpu1, _ = proc_sample(operator.pid)
        wall = time.monotonic() - wall0
        writes = metric(metrics_port, "gpubudget_status_writes_total") - writes0
        landing = capped_landing(cap_name, cap, 180)
        staleness = sorted(staleness) or [0.0]
        return {
            "label": label,
            "row": row,
            "cpu": 100 * (cpu1 - cpu0) / wall,
            "rss": max(rss) / 1024,
            "all_accounted": all_accounted,
            "stale_median": statistics.median(staleness),
            "stale_p95": staleness[max(0, int(0.95 * len(staleness)) - 1)],
            "writes_per_s": writes / wall,
            "landing": landing,
            "log": str(log),
        }
    finally:
        stop_operator(operator)
        KUBECTL("delete", "job,tb", cap_name, "-n", NAMESPACE, "--wait=false", check=False)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=len(ROWS), help="how many rows to run (1-3)")
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--measure", type=float, default=60.0, help="seconds sampled per row")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument(
        "--keep", action="store_true", help="leave the nodes, budgets and pods for the next run"
    )
    parser.add_argument(
        "--skip-rows",
        type=int,
        default=0,
        help="bring up but do not measure the first N rows (objects kept from a run "
        "stopped with SIGTERM are reused as they are)",
    )
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    try:
        KUBECTL("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        KUBECTL(
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            str(REPO / "examples" / "policy.yaml"),
        )
        KUBECTL("create", "namespace", NAMESPACE, check=False)  # kept from a previous run: reused
        budgets_made = pods_made = nodes_made = 0
        for index, row in enumerate(ROWS[: args.rows]):
            nodes = -(-row.pods // GPUS_PER_NODE) + 1  # one spare, for the capped budget
            objects: list[dict[str, Any]] = [node(i) for i in range(nodes_made, nodes)]
            added = row.budgets - budgets_made
            for i in range(budgets_made, row.budgets):
                objects.extend(budget_and_job(f"run-{i:04d}", row.pods_per_budget, 9000))
            print(
                f"row {index + 1}: +{nodes - nodes_made} nodes, +{added} budgets, "
                f"+{added * row.pods_per_budget} pods",
                flush=True,
            )
            apply(objects)
            budgets_made, nodes_made = row.budgets, nodes
            pods_made += added * row.pods_per_budget
            wait_running(pods_made)
            if index < args.skip_rows:
                continue
            results.append(measure(row, args.interval, args.measure, [], "loop", f"capped-{index}"))
            print_result(results[-1])
        if not args.no_baseline:
            row = ROWS[args.rows - 1]
            baseline = measure(
                row,
                60.0,
                max(args.measure, 130.0),
                ["--stop-at-pass-only"],
                "polling baseline (60 s, stop at a pass)",
                "capped-baseline",
            )
            results.append(baseline)
            print_result(baseline)
    finally:
        print("\n" + table(results))
        if not args.keep:
            print("cleaning up", flush=True)
            # No operator serves the namespace any more: take its finalizer off the budgets
            # (as the operator would after holding their workloads), or they stay Terminating.
            for name in KUBECTL(
                "get", "tb", "-n", NAMESPACE, "-o", "name", check=False
            ).stdout.split():
                KUBECTL(
                    "patch", name, "-n", NAMESPACE, "--type=merge",
                    "-p", '{"metadata":{"finalizers":null}}', check=False,
                )  # fmt: skip
            KUBECTL("delete", "namespace", NAMESPACE, "--wait=false", check=False)
            KUBECTL(
                "delete", "nodes", "-l", "gpubudget.dev/bench=sweep", "--wait=false", check=False
            )


def print_result(result: dict[str, Any]) -> None:
    print(table([result]), flush=True)


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| operator | budgets / GPU pods / nodes | CPU (% core) | peak RSS "
        "| all accounted after start | staleness median / p95 | status writes/s "
        "| capped landing |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        row: Row = r["row"]
        landing = "n/a" if r["landing"] is None else f"{r['landing']:+.2%}"
        lines.append(
            f"| {r['label']} | {row.budgets} / {row.pods} / {-(-row.pods // GPUS_PER_NODE)} "
            f"| {r['cpu']:.1f}% | {r['rss']:.0f} MiB | {r['all_accounted']:.1f} s "
            f"| {r['stale_median']:.1f} s / {r['stale_p95']:.1f} s | {r['writes_per_s']:.1f} "
            f"| {landing} |"
        )
    loop = [r for r in results if r["label"] == "loop" and r["landing"] is not None]
    base = [r for r in results if r["label"] != "loop" and r["landing"] is not None]
    if loop and base and loop[-1]["landing"]:
        lines.append(
            f"\novershoot, polling baseline vs loop: {base[-1]['landing']:+.2%} vs "
            f"{loop[-1]['landing']:+.2%} ({abs(base[-1]['landing'] / loop[-1]['landing']):.0f}x)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        main()
    except KubectlError as error:
        sys.exit(str(error))
