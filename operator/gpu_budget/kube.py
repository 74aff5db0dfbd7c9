"""The operator's writes to the cluster besides status: workload operations and pod annotations.

The Kubernetes client is blocking; every call here runs in a worker thread so
the kopf event loop keeps serving watches and other budgets.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kubernetes
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from gpu_budget.workloads import Operation, WorkloadAdapter, WorkloadFacts


class ClusterClient:
    def __init__(self) -> None:
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()
        self._dynamic = DynamicClient(kubernetes.client.ApiClient())
        self._core = kubernetes.client.CoreV1Api()

    def _resource(self, adapter: WorkloadAdapter) -> Any:
        return self._dynamic.resources.get(api_version=adapter.api_version, kind=adapter.kind)

    def _apply(self, adapter: WorkloadAdapter, workload: WorkloadFacts, op: Operation) -> None:
        resource = self._resource(adapter)
        try:
            if op.verb == "delete":
                resource.delete(name=workload.name, namespace=workload.namespace)
            else:
                resource.patch(
                    name=workload.name,
                    namespace=workload.namespace,
                    body=op.patch,
                    content_type="application/merge-patch+json",
                )
        except NotFoundError:
            pass  # already gone: nothing left to stop

    async def apply(self, adapter: WorkloadAdapter, workload: WorkloadFacts, op: Operation) -> None:
        await asyncio.to_thread(self._apply, adapter, workload, op)

    def _annotate_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        try:
            self._core.patch_namespaced_pod(
                name, namespace, {"metadata": {"annotations": annotations}}
            )
        except kubernetes.client.ApiException as error:
            if error.status != 404:
                raise

    async def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        await asyncio.to_thread(self._annotate_pod, namespace, name, annotations)
