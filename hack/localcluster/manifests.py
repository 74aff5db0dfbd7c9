"""Manifests the tests, the demo and the benchmark create: budgets, and GPU Jobs and pods.

The pods land on the simulated node pool (hack/cluster/nodepool.yaml), by
default on its spot p5.48xlarge nodes (8 GPUs each); kwok runs them until
something deletes them.
"""

from __future__ import annotations

from typing import Any

from gpu_budget import BUDGET_LABEL

UTILIZATION_ANNOTATION = "dcgm-sim.gpubudget.dev/utilization"
"""What hack/dcgm_sim.py reports as the GPU utilisation of a pod (0-1, default 1)."""
TOKENS_ANNOTATION = "dcgm-sim.gpubudget.dev/tokens-per-second"
"""Makes hack/dcgm_sim.py export train_tokens_total for a pod, growing at this rate."""
SPOT_P5 = {"node.kubernetes.io/instance-type": "p5.48xlarge", "karpenter.sh/capacity-type": "spot"}


def budget(name: str, namespace: str, cap: float = 9_000, **spec: Any) -> dict[str, Any]:
    """A TrainingBudget; the default cap is under the default $10,000 approval ceiling,
    so it runs without finance."""
    return {
        "apiVersion": "gpubudget.dev/v1alpha1",
        "kind": "TrainingBudget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"costCap": cap, **spec},
    }


def gpu_pod_spec(gpus: int | str = 8, node_selector: dict[str, str] = SPOT_P5) -> dict[str, Any]:
    return {
        "restartPolicy": "Never",
        # kwok removes pods at once; say so, so the planned stop does not leave
        # a grace period's worth of the cap unspent.
        "terminationGracePeriodSeconds": 0,
        "nodeSelector": dict(node_selector),
        "containers": [
            {
                "name": "trainer",
                "image": "trainer:latest",
                "resources": {"limits": {"nvidia.com/gpu": gpus}},
            }
        ],
    }


def gpu_pod(
    name: str, namespace: str, labels: dict[str, str], gpus: int | str = 8
) -> dict[str, Any]:
    """A bare pod (no workload controller) on a spot p5 node."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": gpu_pod_spec(gpus),
    }


def gpu_job(
    name: str,
    namespace: str,
    budget_name: str,
    pods: int = 2,
    utilization: float = 1.0,
    gpus: int = 8,
    node_selector: dict[str, str] = SPOT_P5,
    tokens_per_second: float | None = None,
) -> dict[str, Any]:
    """A Job of ``pods`` pods running side by side, each with ``gpus`` GPUs, under a budget;
    with ``tokens_per_second``, each pod exports train_tokens_total (hack/dcgm_sim.py)."""
    annotations = {UTILIZATION_ANNOTATION: str(utilization)}
    if tokens_per_second is not None:
        annotations[TOKENS_ANNOTATION] = f"{tokens_per_second:g}"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {BUDGET_LABEL: budget_name},
        },
        "spec": {
            "parallelism": pods,
            "completions": pods,
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": annotations},
                "spec": gpu_pod_spec(gpus, node_selector),
            },
        },
    }
