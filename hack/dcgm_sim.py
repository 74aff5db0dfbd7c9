#!/usr/bin/env python3
"""A simulated NVIDIA DCGM exporter for the local kwok cluster.

kwok nodes have no GPUs, so nothing would ever publish GPU utilisation. This
process stands in for dcgm-exporter running in Kubernetes mode: it watches
pods (and nodes) across all namespaces and, for every Running pod bound to a
node with ``nvidia.com/gpu`` in its requests or limits, publishes one series
per allocated GPU of

* ``DCGM_FI_DEV_GPU_UTIL``           gauge, percent 0-100 (an integer, as DCGM reports it)
* ``DCGM_FI_PROF_GR_ENGINE_ACTIVE``  gauge, ratio 0-1

labelled like the real exporter: ``gpu`` (index on the node, stable for the
pod's lifetime), ``UUID`` (a deterministic fake ``GPU-...`` id of that node's
GPU), ``device``, ``pci_bus_id``, ``modelName`` (from the node's
``nvidia.com/gpu.product`` label), ``Hostname`` (the node), ``pod``,
``namespace``, ``container``.

The utilisation of a pod comes from its annotation
``dcgm-sim.gpubudget.dev/utilization`` (a 0-1 ratio, default 1.0). The state is
kept up to date by watches, and every scrape renders the current state, so an
annotation change shows up at the next scrape. ``dcgm_sim_synced`` is 1 once
the initial pod and node lists have been loaded.

It also stands in for a training job's own metrics: a GPU pod annotated
``dcgm-sim.gpubudget.dev/tokens-per-second: "<rate>"`` exports the counter
``train_tokens_total{namespace, pod, job_name}``, growing at that rate from the
pod's start while it runs (what a TrainingBudget's ``spec.outcome`` reads).

Usage: dcgm_sim.py [--kubeconfig PATH] [--context NAME] [--listen 127.0.0.1:39400]
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

UTILIZATION_ANNOTATION = "dcgm-sim.gpubudget.dev/utilization"
TOKENS_ANNOTATION = "dcgm-sim.gpubudget.dev/tokens-per-second"
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
GPU_RESOURCE = "nvidia.com/gpu"
PRODUCT_LABEL = "nvidia.com/gpu.product"
COUNT_LABEL = "nvidia.com/gpu.count"
DEFAULT_UTILIZATION = 1.0
# GPU feature discovery derives nvidia.com/gpu.product from the model name by
# replacing spaces with dashes; these are the real model names for the
# products the local node pool uses. Unknown products fall back to dashes ->
# spaces.
MODEL_NAMES = {
    "NVIDIA-H100-80GB-HBM3": "NVIDIA H100 80GB HBM3",
    "NVIDIA-A100-SXM4-40GB": "NVIDIA A100-SXM4-40GB",
    "NVIDIA-A100-SXM4-80GB": "NVIDIA A100-SXM4-80GB",
    "NVIDIA-A10G": "NVIDIA A10G",
    "NVIDIA-L4": "NVIDIA L4",
}
UUID_NAMESPACE = uuid.UUID("6f1c1f5e-2f0b-4c1e-9a57-4d2f5e0b9a11")

log = logging.getLogger("dcgm-sim")


def model_name(product: str | None) -> str:
    if not product:
        return "NVIDIA Simulated GPU"
    return MODEL_NAMES.get(product, product.replace("-", " "))


def gpu_uuid(node: str, index: int) -> str:
    """The fake UUID of GPU ``index`` of ``node``: stable across restarts."""
    return f"GPU-{uuid.uuid5(UUID_NAMESPACE, f'{node}/{index}')}"


def parse_utilization(pod_key: str, annotations: dict[str, str] | None) -> float:
    raw = (annotations or {}).get(UTILIZATION_ANNOTATION)
    if raw is None:
        return DEFAULT_UTILIZATION
    try:
        value = float(raw)
    except ValueError:
        log.warning("pod %s: ignoring non-numeric %s=%r", pod_key, UTILIZATION_ANNOTATION, raw)
        return DEFAULT_UTILIZATION
    if math.isnan(value):
        return DEFAULT_UTILIZATION
    return min(1.0, max(0.0, value))


def parse_tokens_rate(pod_key: str, annotations: dict[str, str] | None) -> float | None:
    """Tokens a second the pod's training processes; None when it exports no tokens."""
    raw = (annotations or {}).get(TOKENS_ANNOTATION)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        log.warning("pod %s: ignoring non-numeric %s=%r", pod_key, TOKENS_ANNOTATION, raw)
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _quantity_to_int(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def container_gpus(pod: Any) -> list[tuple[str, int]]:
    """(container name, GPUs) for each container of the pod asking for GPUs."""
    out: list[tuple[str, int]] = []
    for c in pod.spec.containers or []:
        res = c.resources
        limits = (res.limits or {}) if res else {}
        requests = (res.requests or {}) if res else {}
        n = max(
            _quantity_to_int(limits.get(GPU_RESOURCE, 0)),
            _quantity_to_int(requests.get(GPU_RESOURCE, 0)),
        )
        if n > 0:
            out.append((c.name, n))
    return out


@dataclass
class GpuPod:
    uid: str
    name: str
    namespace: str
    node: str
    utilization: float
    # (gpu index on the node, container name), in container order.
    gpus: list[tuple[int, str]] = field(default_factory=list)
    job_name: str = ""
    tokens_rate: float | None = None
    """Tokens a second, from the annotation; None: no train_tokens_total series."""
    tokens_base: float = 0.0
    """Tokens counted up to ``tokens_since`` (a rate change starts a new stretch)."""
    tokens_since: float = 0.0

    def tokens(self, now: float) -> float:
        rate = self.tokens_rate or 0.0
        return self.tokens_base + rate * max(0.0, now - self.tokens_since)

    def set_tokens_rate(self, rate: float | None, now: float) -> None:
        if rate != self.tokens_rate:
            self.tokens_base = self.tokens(now)
            self.tokens_since = now
            self.tokens_rate = rate


class State:
    """Running GPU pods, node GPU products and the per-node GPU allocation."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pods: dict[str, GpuPod] = {}
        self.node_products: dict[str, str] = {}
        self.node_gpu_counts: dict[str, int] = {}
        self.used: dict[str, set[int]] = {}
        self.pods_synced = False
        self.nodes_synced = False

    # -- nodes -------------------------------------------------------------
    def upsert_node(self, node: Any) -> None:
        labels = node.metadata.labels or {}
        with self.lock:
            name = node.metadata.name
            self.node_products[name] = labels.get(PRODUCT_LABEL, "")
            count = _quantity_to_int(labels.get(COUNT_LABEL, 0))
            if count == 0 and node.status and node.status.capacity:
                count = _quantity_to_int(node.status.capacity.get(GPU_RESOURCE, 0))
            self.node_gpu_counts[name] = count

    def delete_node(self, name: str) -> None:
        with self.lock:
            self.node_products.pop(name, None)
            self.node_gpu_counts.pop(name, None)

    def replace_nodes(self, nodes: Iterable[Any]) -> None:
        nodes = list(nodes)
        with self.lock:
            self.node_products.clear()
            self.node_gpu_counts.clear()
        for n in nodes:
            self.upsert_node(n)
        with self.lock:
            self.nodes_synced = True

    # -- pods --------------------------------------------------------------
    def upsert_pod(self, pod: Any) -> None:
        uid = pod.metadata.uid
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        node = pod.spec.node_name
        running = pod.status is not None and pod.status.phase == "Running"
        wanted = container_gpus(pod) if running and node else []
        with self.lock:
            if not wanted:
                self._release(uid)
                return
            util = parse_utilization(key, pod.metadata.annotations)
            rate = parse_tokens_rate(key, pod.metadata.annotations)
            current = self.pods.get(uid)
            if current is not None and current.node == node:
                if current.utilization != util:
                    log.info("pod %s: utilization %.3f -> %.3f", key, current.utilization, util)
                current.utilization = util
                current.set_tokens_rate(rate, time.time())
                return
            self._release(uid)
            labels = pod.metadata.labels or {}
            started = pod.status.start_time
            gp = GpuPod(
                uid,
                pod.metadata.name,
                pod.metadata.namespace,
                node,
                util,
                job_name=next((labels[k] for k in JOB_NAME_LABELS if labels.get(k)), ""),
                tokens_rate=rate,
                # From the pod's start: a restarted simulator goes on counting where it was.
                tokens_since=min(time.time(), started.timestamp()) if started else time.time(),
            )
            used = self.used.setdefault(node, set())
            for cname, n in wanted:
                for _ in range(n):
                    idx = next(i for i in range(len(used) + 1) if i not in used)
                    used.add(idx)
                    gp.gpus.append((idx, cname))
            capacity = self.node_gpu_counts.get(node, 0)
            if used and max(used) >= capacity:
                log.warning("node %s: %d GPUs in use but it has %d", node, len(used), capacity)
            self.pods[uid] = gp
            log.info(
                "pod %s on %s: GPUs %s, utilization %.3f",
                key,
                node,
                [i for i, _ in gp.gpus],
                util,
            )

    def delete_pod(self, uid: str) -> None:
        with self.lock:
            self._release(uid)

    def replace_pods(self, pods: Iterable[Any]) -> None:
        # Oldest first, so a restart assigns the same indices as before in the
        # common case.
        def age_key(p: Any) -> tuple[str, str]:
            ts = p.metadata.creation_timestamp
            return (ts.isoformat() if ts else "", p.metadata.name or "")

        ordered = sorted(pods, key=age_key)
        keep = {p.metadata.uid for p in ordered}
        with self.lock:
            for uid in list(self.pods):
                if uid not in keep:
                    self._release(uid)
        for p in ordered:
            self.upsert_pod(p)
        with self.lock:
            self.pods_synced = True

    def _release(self, uid: str) -> None:
        gp = self.pods.pop(uid, None)
        if gp is None:
            return
        used = self.used.get(gp.node, set())
        for idx, _ in gp.gpus:
            used.discard(idx)
        log.info("pod %s/%s released GPUs on %s", gp.namespace, gp.name, gp.node)

    # -- rendering ---------------------------------------------------------
    def snapshot(self) -> tuple[bool, list[tuple[GpuPod, str]]]:
        with self.lock:
            synced = self.pods_synced and self.nodes_synced
            rows = [
                (
                    GpuPod(
                        p.uid,
                        p.name,
                        p.namespace,
                        p.node,
                        p.utilization,
                        list(p.gpus),
                        p.job_name,
                        p.tokens_rate,
                        p.tokens_base,
                        p.tokens_since,
                    ),
                    self.node_products.get(p.node, ""),
                )
                for p in self.pods.values()
            ]
        return synced, rows


LABELS = [
    "gpu",
    "UUID",
    "pci_bus_id",
    "device",
    "modelName",
    "Hostname",
    "container",
    "namespace",
    "pod",
]


class DcgmCollector(Collector):
    def __init__(self, state: State) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        synced, rows = self.state.snapshot()
        util = GaugeMetricFamily("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", labels=LABELS)
        gr = GaugeMetricFamily(
            "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
            "Ratio of time the graphics engine is active.",
            labels=LABELS,
        )
        for pod, product in sorted(rows, key=lambda r: (r[0].node, r[0].gpus)):
            for idx, container in pod.gpus:
                labels = [
                    str(idx),
                    gpu_uuid(pod.node, idx),
                    f"00000000:{0x10 + idx:02X}:00.0",
                    f"nvidia{idx}",
                    model_name(product),
                    pod.node,
                    container,
                    pod.namespace,
                    pod.name,
                ]
                util.add_metric(labels, float(round(pod.utilization * 100)))
                gr.add_metric(labels, pod.utilization)
        yield util
        yield gr
        now = time.time()
        tokens = CounterMetricFamily(
            "train_tokens",
            f"Tokens the simulated training job processed (annotation {TOKENS_ANNOTATION}).",
            labels=["namespace", "pod", "job_name"],
        )
        for pod, _ in sorted(rows, key=lambda r: (r[0].namespace, r[0].name)):
            if pod.tokens_rate is not None:
                tokens.add_metric([pod.namespace, pod.name, pod.job_name], pod.tokens(now))
        yield tokens
        yield GaugeMetricFamily(
            "dcgm_sim_synced",
            "1 once the simulator has loaded the initial pod and node lists.",
            value=1.0 if synced else 0.0,
        )
        yield GaugeMetricFamily(
            "dcgm_sim_gpu_pods", "Running pods with GPUs the simulator tracks.", value=len(rows)
        )


def run_informer(
    kind: str,
    list_fn: Callable[..., Any],
    replace: Callable[[list[Any]], None],
    upsert: Callable[[Any], None],
    delete: Callable[[Any], None],
    stop: threading.Event,
) -> None:
    """List then watch ``list_fn`` forever, relisting when the watch expires."""
    backoff = 1.0
    while not stop.is_set():
        try:
            listing = list_fn()
            replace(listing.items)
            rv = listing.metadata.resource_version
            log.info(
                "%s: listed %d, watching from resourceVersion %s", kind, len(listing.items), rv
            )
            backoff = 1.0
            while not stop.is_set():
                w = watch.Watch()
                for event in w.stream(
                    list_fn, resource_version=rv, timeout_seconds=240, allow_watch_bookmarks=True
                ):
                    obj = event["object"]
                    etype = event["type"]
                    if etype == "ERROR":
                        code = obj.get("code", 500) if isinstance(obj, dict) else 500
                        raise ApiException(status=code, reason=str(obj))
                    rv = obj.metadata.resource_version
                    if etype in ("ADDED", "MODIFIED"):
                        upsert(obj)
                    elif etype == "DELETED":
                        delete(obj)
                    if stop.is_set():
                        w.stop()
                        break
        except ApiException as e:
            if e.status == 410:
                log.info("%s: watch expired, relisting", kind)
                continue
            log.warning("%s: API error %s, retrying in %.0fs", kind, e.status, backoff)
        except Exception as e:  # the API server may be restarting
            log.warning("%s: %s: %s, retrying in %.0fs", kind, type(e).__name__, e, backoff)
        stop.wait(backoff)
        backoff = min(backoff * 2, 5.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kubeconfig", default=None, help="default: $KUBECONFIG")
    parser.add_argument("--context", default=None)
    parser.add_argument("--listen", default="127.0.0.1:39400", help="host:port to serve /metrics")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )

    config.load_kube_config(config_file=args.kubeconfig, context=args.context)
    core = client.CoreV1Api()
    state = State()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DcgmCollector(state))
    host, _, port = args.listen.rpartition(":")
    start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)
    log.info("serving /metrics on %s", args.listen)

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d, stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    threads = [
        threading.Thread(
            target=run_informer,
            name="nodes",
            args=(
                "nodes",
                core.list_node,
                state.replace_nodes,
                state.upsert_node,
                lambda n: state.delete_node(n.metadata.name),
                stop,
            ),
            daemon=True,
        ),
        threading.Thread(
            target=run_informer,
            name="pods",
            args=(
                "pods",
                core.list_pod_for_all_namespaces,
                state.replace_pods,
                state.upsert_pod,
                lambda p: state.delete_pod(p.metadata.uid),
                stop,
            ),
            daemon=True,
        ),
    ]
    for t in threads:
        t.start()
    while not stop.is_set():
        stop.wait(1.0)
    time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
