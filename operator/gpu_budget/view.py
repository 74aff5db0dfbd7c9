"""The operator's view of the cluster: every watch-fed cache the accounting loop reads.

Each object is parsed once, when its watch event arrives, into the facts the
core needs (:class:`PodFacts`, :class:`NodeFacts`, :class:`WorkloadFacts`);
budgets and policies are kept as their bodies. The loop groups pods by budget
once per pass (:meth:`ClusterView.pods_by_budget`), following owner references
from each pod to its workload, so a pass costs time linear in the pods, not in
budgets times pods.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from gpu_budget import BUDGET_LABEL, GROUP, VERSION
from gpu_budget.cache import ApiSession, Cache, Resource
from gpu_budget.node_pricing import NodeFacts
from gpu_budget.pods import PodFacts, has_extended_resources
from gpu_budget.schedule import BudgetKey
from gpu_budget.workloads import ADAPTERS, WorkloadAdapter, WorkloadFacts
from gpu_budget.workloads.base import MAX_OWNER_DEPTH, controller_of

log = structlog.get_logger("gpu_budget.view")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _body(obj: Mapping[str, Any]) -> dict[str, Any]:
    return dict(obj)


def _owner(obj: Mapping[str, Any]) -> str | None:
    controller = controller_of(obj)
    return None if controller is None else str(controller.get("uid"))


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _pod_facts(obj: Mapping[str, Any]) -> PodFacts | None:
    if not has_extended_resources(obj):
        return None
    return PodFacts.from_pod(obj, observed_at=utcnow())


def _workload_parser(adapter: WorkloadAdapter) -> Callable[[Mapping[str, Any]], Any]:
    def parse(obj: Mapping[str, Any]) -> WorkloadFacts | None:
        if BUDGET_LABEL not in _labels(obj) or not adapter.indexes(obj):
            return None
        return adapter.facts(obj)

    return parse


class ClusterView:
    """Caches of pods, nodes, namespaces, Jobs' owners, workloads, budgets and policies."""

    def __init__(self, namespaces: Iterable[str] = ()) -> None:
        self.namespaces = tuple(namespaces)
        self.deleted_at: dict[str, datetime] = {}
        """Pod uid -> when its deletion was seen: its last interval ends there."""
        self.vanished: list[dict[str, Any]] = []
        """Budgets seen deleted, with their last state; the loop holds their workloads."""
        self.pods = self._scoped("", "v1", "pods", _pod_facts)
        for cache in self.pods:
            cache.on_delete = self._pod_deleted
        self.owners = self._scoped("batch", "v1", "jobs", _owner)
        self.workloads = {
            adapter.kind: self._scoped(
                adapter.group, adapter.version, adapter.plural, _workload_parser(adapter)
            )
            for adapter in ADAPTERS
        }
        self.budgets = self._scoped(GROUP, VERSION, "trainingbudgets", _body)
        for cache in self.budgets:
            cache.on_delete = self._budget_deleted
            cache.on_change = self._budget_changed
        for caches in self.workloads.values():
            for cache in caches:
                cache.on_change = self._workload_changed
        self.nodes = Cache(Resource("", "v1", "nodes"), NodeFacts.from_node)
        self.namespace_labels = Cache(Resource("", "v1", "namespaces"), _namespace)
        self.policies = Cache(Resource(GROUP, VERSION, "budgetpolicies"), _body)
        self.dirty: set[BudgetKey] = set()
        """Budgets a user or controller changed since the loop last looked: it wakes for them."""
        self.changed = asyncio.Event()
        self._triggers: dict[str, tuple[object, ...]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._api: ApiSession | None = None

    def _scoped(
        self, group: str, version: str, plural: str, parse: Callable[[Mapping[str, Any]], Any]
    ) -> list[Cache[Any]]:
        """One cache for all namespaces, or one per served namespace."""
        scopes: Iterable[str | None] = self.namespaces or (None,)
        return [Cache(Resource(group, version, plural, namespace), parse) for namespace in scopes]

    def all_caches(self) -> list[Cache[Any]]:
        return [
            *self.pods,
            *self.owners,
            *(cache for caches in self.workloads.values() for cache in caches),
            *self.budgets,
            self.nodes,
            self.namespace_labels,
            self.policies,
        ]

    # -- lifecycle

    def start(self) -> None:
        self._api = ApiSession()
        self._tasks = [asyncio.create_task(cache.run(self._api)) for cache in self.all_caches()]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._api is not None:
            await self._api.close()

    async def ready(self) -> None:
        """Every cache has listed once (the CRDs of absent kinds count as empty)."""
        await asyncio.gather(*(cache.ready.wait() for cache in self.all_caches()))

    # -- deletions

    def _pod_deleted(self, obj: Mapping[str, Any]) -> None:
        now = utcnow()
        self.deleted_at[str(obj["metadata"]["uid"])] = now

    def _budget_changed(self, obj: Mapping[str, Any]) -> None:
        """A change someone made (spec, approval, finalizers), not the operator's status write."""
        meta = obj.get("metadata") or {}
        trigger = (
            meta.get("generation"),
            tuple(sorted((meta.get("annotations") or {}).items())),
            meta.get("deletionTimestamp"),
        )
        uid = str(meta.get("uid", ""))
        if self._triggers.get(uid) != trigger:
            self._triggers[uid] = trigger
            self._wake((str(meta.get("namespace", "")), str(meta.get("name", ""))))

    def _workload_changed(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        budget = (meta.get("labels") or {}).get(BUDGET_LABEL)
        if budget:
            self._wake((str(meta.get("namespace", "")), budget))

    def _wake(self, key: BudgetKey) -> None:
        self.dirty.add(key)
        self.changed.set()

    def take_dirty(self) -> set[BudgetKey]:
        dirty, self.dirty = self.dirty, set()
        self.changed.clear()
        return dirty

    def _budget_deleted(self, obj: Mapping[str, Any]) -> None:
        if (obj.get("metadata") or {}).get("name"):
            self.vanished.append(dict(obj))

    def forget_deletions_before(self, moment: datetime) -> None:
        for uid, when in list(self.deleted_at.items()):
            if when < moment:
                del self.deleted_at[uid]

    # -- what a pass reads

    def budget_bodies(self) -> dict[BudgetKey, dict[str, Any]]:
        return {
            (body["metadata"]["namespace"], body["metadata"]["name"]): body
            for cache in self.budgets
            for body in cache
        }

    def workloads_by_budget(self) -> dict[BudgetKey, list[WorkloadFacts]]:
        grouped: dict[BudgetKey, list[WorkloadFacts]] = defaultdict(list)
        for caches in self.workloads.values():
            for cache in caches:
                for facts in cache:
                    grouped[(facts.namespace, facts.budget)].append(facts)
        return grouped

    def owner_map(self) -> dict[str, str]:
        """Uid of a Job with a controller -> that controller's uid (a JobSet's Jobs)."""
        return {uid: owner for cache in self.owners for uid, owner in cache.items.items() if owner}

    def pods_by_budget(
        self, workloads: Mapping[BudgetKey, list[WorkloadFacts]], owners: Mapping[str, str]
    ) -> dict[BudgetKey, list[PodFacts]]:
        """Each pod under the budget of the workload that owns it, found once per pod."""
        by_uid = {w.uid: key for key, items in workloads.items() for w in items}
        by_pod = {w.pod_uid: key for key, items in workloads.items() for w in items if w.pod_uid}
        grouped: dict[BudgetKey, list[PodFacts]] = defaultdict(list)
        for cache in self.pods:
            for pod in cache:
                key = by_pod.get(pod.uid)
                uid = pod.controller_uid
                for _ in range(MAX_OWNER_DEPTH):
                    if key is not None or uid is None:
                        break
                    key = by_uid.get(uid)
                    uid = owners.get(uid)
                if key is not None:
                    grouped[key].append(pod)
        return grouped

    def nodes_by_name(self) -> dict[str, NodeFacts]:
        return {node.name: node for node in self.nodes}

    def policy(self, name: str) -> dict[str, Any] | None:
        for body in self.policies:
            if body.get("metadata", {}).get("name") == name:
                return dict(body.get("spec") or {})
        return None

    def policy_status(self, name: str) -> dict[str, Any]:
        for body in self.policies:
            if body.get("metadata", {}).get("name") == name:
                return dict(body.get("status") or {})
        return {}


def _namespace(obj: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    return str(obj["metadata"]["name"]), _labels(obj)
