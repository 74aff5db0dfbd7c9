"""The simulated GPU node pool (hack/cluster/nodepool.yaml) and kwok, which plays their kubelet."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import yaml

from localcluster.context import Context
from localcluster.kubectl import WaitTimeout, wait_for
from localcluster.layout import CLUSTER_CONFIG
from localcluster.processes import Component
from localcluster.report import ClusterError, progress, tail
from localcluster.tools import read_versions

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"


def generate_nodes(path: Path = CLUSTER_CONFIG / "nodepool.yaml") -> list[dict[str, Any]]:
    spec = yaml.safe_load(path.read_text())
    region = spec["region"]
    kube_version = read_versions()["KUBERNETES_VERSION"]
    nodes: list[dict[str, Any]] = []
    ip = 10
    for pool in spec["pools"]:
        for capacity_type, count_key in (("spot", "spot"), ("on-demand", "onDemand")):
            for i in range(int(pool.get(count_key, 0))):
                name = f"{pool['name']}-{capacity_type.replace('-', '')}-{i}"
                zone = pool["zones"][i % len(pool["zones"])]
                gpus = str(pool["gpuCount"])
                machine_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.gpubudget.local"))
                resources = {
                    "cpu": str(pool["cpu"]),
                    "memory": str(pool["memory"]),
                    "pods": str(pool["pods"]),
                    "ephemeral-storage": "500Gi",
                    "nvidia.com/gpu": gpus,
                }
                nodes.append(
                    {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "metadata": {
                            "name": name,
                            "annotations": {
                                KWOK_NODE_ANNOTATION: "fake",
                                "node.alpha.kubernetes.io/ttl": "0",
                            },
                            "labels": {
                                "type": "kwok",
                                "kubernetes.io/arch": "amd64",
                                "kubernetes.io/os": "linux",
                                "kubernetes.io/hostname": name,
                                "node.kubernetes.io/instance-type": pool["instanceType"],
                                "topology.kubernetes.io/region": region,
                                "topology.kubernetes.io/zone": zone,
                                "karpenter.sh/capacity-type": capacity_type,
                                "eks.amazonaws.com/capacityType": (
                                    "SPOT" if capacity_type == "spot" else "ON_DEMAND"
                                ),
                                "nvidia.com/gpu.present": "true",
                                "nvidia.com/gpu.product": pool["gpuProduct"],
                                "nvidia.com/gpu.count": gpus,
                                "nvidia.com/gpu.memory": str(pool["gpuMemoryMiB"]),
                            },
                        },
                        "spec": {"podCIDR": f"10.244.{ip}.0/24", "podCIDRs": [f"10.244.{ip}.0/24"]},
                        "status": {
                            "capacity": resources,
                            "allocatable": dict(resources),
                            "addresses": [
                                {"type": "InternalIP", "address": f"10.0.0.{ip}"},
                                {"type": "Hostname", "address": name},
                            ],
                            "nodeInfo": {
                                "architecture": "amd64",
                                "operatingSystem": "linux",
                                "osImage": "Simulated GPU node (kwok)",
                                "kernelVersion": "kwok",
                                "containerRuntimeVersion": "kwok",
                                "kubeletVersion": kube_version,
                                "kubeProxyVersion": kube_version,
                                "machineID": machine_id,
                                "systemUUID": machine_id,
                                "bootID": machine_id,
                            },
                        },
                    }
                )
                ip += 1
    return nodes


def nodes_ready_line(ctx: Context) -> str:
    """For `status`: how many of the simulated nodes are Ready."""
    res = ctx.kubectl(
        "get",
        "nodes",
        "-l",
        "type=kwok",
        "-o",
        'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}',
        check=False,
    )
    lines = res.stdout.split()
    return f"nodes: {lines.count('True')}/{len(lines)} simulated GPU nodes Ready"


def components(ctx: Context) -> list[Component]:
    def kwok() -> list[str]:
        return [
            ctx.tool("kwok"),
            f"--kubeconfig={ctx.layout.kubeconfig}",
            f"--config={CLUSTER_CONFIG / 'kwok.yaml'}",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
        ]

    def kwok_ok() -> bool:
        # kwok serves nothing (no --server-address); alive is all we can probe
        # cheaply. Its settle step waits for the nodes it manages to be Ready.
        return ctx.processes.alive("kwok")

    def register_nodes() -> None:
        nodes = generate_nodes()
        # Client-side apply: the first apply creates the Node with its status
        # (capacity/allocatable, addresses); server-side apply would drop status.
        manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes})
        ctx.kubectl("apply", "-f", "-", input=manifest)
        existing = {n["metadata"]["name"]: n for n in ctx.kubectl.json("get", "nodes")["items"]}
        for node in nodes:
            name = node["metadata"]["name"]
            got = existing.get(name, {})
            if "nvidia.com/gpu" not in (got.get("status", {}).get("allocatable") or {}):
                patch = json.dumps({"status": node["status"]})
                ctx.kubectl(
                    "patch", "node", name, "--subresource=status", "--type=merge", "-p", patch
                )
        progress(f"bootstrap: {len(nodes)} simulated GPU nodes registered")

    def wait_nodes_ready(timeout: float = 90.0) -> None:
        want = {n["metadata"]["name"] for n in generate_nodes()}

        def pending() -> set[str]:
            if not ctx.processes.alive("kwok"):
                raise ClusterError(ctx.processes.failure("kwok", "exited"))
            out = set(want)
            for n in ctx.kubectl.json("get", "nodes", "-l", "type=kwok")["items"]:
                conds = {c["type"]: c["status"] for c in n.get("status", {}).get("conditions", [])}
                if conds.get("Ready") == "True" and not n.get("spec", {}).get("taints"):
                    out.discard(n["metadata"]["name"])
            return out

        try:
            wait_for(lambda: not pending(), timeout, "the simulated GPU nodes")
        except WaitTimeout:
            raise ClusterError(
                f"nodes not Ready and untainted after {timeout:.0f}s: {sorted(pending())}\n"
                + tail(ctx.layout.log("kwok"))
            ) from None
        progress("nodes: all simulated GPU nodes Ready, no taints")

    return [
        Component(
            "kwok",
            "kwok",
            kwok,
            kwok_ok,
            timeout=30,
            phase=2,
            # kwok reads ~/.kwok/kwok.yaml too when it exists; keep a
            # developer's kwokctl settings out of this cluster.
            env={"HOME": str(ctx.layout.root / "kwok-home")},
            prepare=register_nodes,
            settle=wait_nodes_ready,
        ),
    ]
