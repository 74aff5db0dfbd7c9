"""The operator's writes to the cluster: workload operations, pods, budgets' status and finalizers.

Workload and pod calls use the blocking Kubernetes client (its dynamic client knows
every kind); each runs in a thread pool of the client's own, so the kopf event loop
keeps serving watches and other budgets, and nothing else (notifications, kopf's sync
handlers) can take the threads a stop needs. Budget writes, the frequent ones, are
merge patches on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import kubernetes
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from gpu_budget import GROUP, VERSION
from gpu_budget.cache import ApiSession
from gpu_budget.workloads import Operation, WorkloadAdapter, WorkloadFacts

T = TypeVar("T")

BUDGETS_PATH = f"/apis/{GROUP}/{VERSION}/namespaces/{{namespace}}/trainingbudgets"
POLICIES_PATH = f"/apis/{GROUP}/{VERSION}/budgetpolicies"

WORKERS = 8
"""Concurrent API calls; stops of different budgets do not wait for each other."""


class ClusterClient:
    def __init__(self) -> None:
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()
        self._dynamic = DynamicClient(kubernetes.client.ApiClient())
        self._core = kubernetes.client.CoreV1Api()
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="kube")
        self._http = ApiSession()

    async def _run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def _resource(self, api_version: str, kind: str) -> Any:
        return self._dynamic.resources.get(api_version=api_version, kind=kind)

    def _apply(self, adapter: WorkloadAdapter, workload: WorkloadFacts, op: Operation) -> None:
        resource = self._resource(adapter.api_version, adapter.kind)
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
        await self._run(lambda: self._apply(adapter, workload, op))

    def _get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = self._resource(api_version, kind).get(name=name, namespace=namespace)
        except (NotFoundError, kubernetes.dynamic.exceptions.ResourceNotFoundError):
            return None
        result: dict[str, Any] = found.to_dict()
        return result

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        """One object, or None when it (or its kind) does not exist."""
        return await self._run(lambda: self._get(api_version, kind, namespace, name))

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Write a TrainingBudget's status (merge patch on the status subresource).

        On the event loop, not the thread pool: at a thousand running budgets these are
        about a hundred writes a second, which the blocking client's threads and its
        parsing of every returned object made the operator's largest cost.
        """
        await self._http.merge_patch(
            f"{BUDGETS_PATH.format(namespace=namespace)}/{name}/status", {"status": status}
        )

    async def patch_policy_status(self, name: str, status: dict[str, Any]) -> None:
        """Write a BudgetPolicy's status: the spend deleted budgets leave in the periods."""
        await self._http.merge_patch(f"{POLICIES_PATH}/{name}/status", {"status": status})

    async def patch_finalizers(
        self, namespace: str, name: str, finalizers: list[str], version: str | None
    ) -> None:
        """Set a TrainingBudget's finalizers; with ``version``, only if it is still at it (409)."""
        meta: dict[str, Any] = {"finalizers": finalizers}
        if version is not None:
            meta["resourceVersion"] = version
        await self._http.merge_patch(
            f"{BUDGETS_PATH.format(namespace=namespace)}/{name}", {"metadata": meta}
        )

    async def close(self) -> None:
        await self._http.close()

    def _annotate_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        try:
            self._core.patch_namespaced_pod(
                name, namespace, {"metadata": {"annotations": annotations}}
            )
        except kubernetes.client.ApiException as error:
            if error.status != 404:
                raise

    async def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        await self._run(lambda: self._annotate_pod(namespace, name, annotations))

    def _delete_pod(self, namespace: str, name: str, grace_seconds: int) -> bool:
        try:
            self._core.delete_namespaced_pod(name, namespace, grace_period_seconds=grace_seconds)
        except kubernetes.client.ApiException as error:
            if error.status != 404:
                raise
            return False
        return True

    async def delete_pod(self, namespace: str, name: str, grace_seconds: int) -> bool:
        """Delete a pod with at most ``grace_seconds`` to terminate; False if it was gone."""
        return await self._run(lambda: self._delete_pod(namespace, name, grace_seconds))
