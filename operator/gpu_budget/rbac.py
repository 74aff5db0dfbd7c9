"""What the operator asks of the Kubernetes API server, derived from its code.

The RBAC the operator needs follows from the handlers it registers, so it is
computed here rather than written by hand (:func:`rules`). The handlers are
registered into a fresh :class:`kopf.OperatorRegistry` (as ``python -m
gpu_budget`` does, webhooks enabled) and read back: an index or an event
handler lists and watches its resource; a timer or a change handler also
patches it (kopf writes its progress and finalizers into the object, and the
handler's status through the ``status`` subresource when the resource has
one). To that come the writes of :mod:`gpu_budget.kube` (each workload
adapter's operations, pod annotations), kopf's Events, kopf's peering
objects, its watch on CustomResourceDefinitions (so that a JobSet or
PyTorchJob CRD installed later is noticed), its watch on Namespaces when it
serves a list of namespaces, and the webhook configurations when kopf manages
them (dev mode only; the Helm chart renders them instead).

``python -m gpu_budget.rbac`` prints the ClusterRole rules of a cluster-wide
operator; ``--namespaced`` the split of a namespaced one (a ClusterRole for
cluster-scoped resources, a Role in each served namespace). The chart files
generated from the code are :mod:`gpu_budget.chartgen`'s.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
import yaml

from gpu_budget import GROUP, admission, crdgen, handlers
from gpu_budget.config import OperatorConfig
from gpu_budget.kube import ClusterClient
from gpu_budget.view import ClusterView
from gpu_budget.workloads import (
    ADAPTERS,
    CONTROLLERS,
    Operation,
    WorkloadAdapter,
    WorkloadFacts,
    WorkloadState,
)

READ = ("list", "watch")
"""kopf lists, then watches; it never GETs single objects."""

KOPF_GROUP = "kopf.dev"
CRD_GROUP = "apiextensions.k8s.io"
ADMISSION_GROUP = "admissionregistration.k8s.io"

KUBE_CALLS: dict[str, str] = {
    "apply": "each workload adapter's operations (patch, or delete for bare pods)",
    "annotate_pod": "patch pods (the gpubudget.dev/stop-at checkpoint warning)",
    "get": "get the controller a new labelled workload or pod names (admission's owner check)",
    "patch_status": "patch trainingbudgets/status (the accounting pass writes it itself)",
    "patch_finalizers": "patch trainingbudgets (the loop adds and removes its finalizer)",
    "patch_policy_status": "patch budgetpolicies/status (deleted budgets' spend in the periods)",
    "close": "nothing: closes the client's connections",
    "delete_pod": "delete pods whose grace period is above the policy's bound, with that bound",
}
"""The public methods of :class:`gpu_budget.kube.ClusterClient` and what they call.

A unit test fails when ClusterClient grows a method that is not listed here, so
a new kind of write cannot ship without its RBAC.
"""

_CLUSTER_SCOPED_BUILTINS = frozenset(
    {
        ("", "nodes"),
        ("", "namespaces"),
        (CRD_GROUP, "customresourcedefinitions"),
        (KOPF_GROUP, "clusterkopfpeerings"),
        (ADMISSION_GROUP, "mutatingwebhookconfigurations"),
        (ADMISSION_GROUP, "validatingwebhookconfigurations"),
    }
)


@dataclass(frozen=True, order=True)
class Rule:
    """Verbs on one resource (``plural`` or ``plural/subresource``) of one API group."""

    group: str
    resource: str
    verbs: tuple[str, ...]
    namespaced: bool

    def as_policy_rule(self) -> dict[str, Any]:
        return {"apiGroups": [self.group], "resources": [self.resource], "verbs": list(self.verbs)}


def _own_crd_scopes() -> dict[str, bool]:
    """plural -> namespaced, for the CRDs of :mod:`gpu_budget.crdgen`."""
    return {
        crd["spec"]["names"]["plural"]: crd["spec"]["scope"] == "Namespaced"
        for crd in crdgen.crds().values()
    }


def _own_crd_status_subresource() -> set[str]:
    return {
        crd["spec"]["names"]["plural"]
        for crd in crdgen.crds().values()
        if any("status" in (v.get("subresources") or {}) for v in crd["spec"]["versions"])
    }


def is_namespaced(group: str, resource: str) -> bool:
    plural = resource.partition("/")[0]
    if group == GROUP:
        return _own_crd_scopes()[plural]
    return (group, plural) not in _CLUSTER_SCOPED_BUILTINS


def webhook_config(manage_webhook_config: bool = False) -> OperatorConfig:
    """A configuration with every handler on: webhooks served (the files need not exist)."""
    return OperatorConfig(
        webhook_cert_file=Path("tls.crt"),
        webhook_key_file=Path("tls.key"),
        webhook_ca_file=Path("ca.crt"),
        manage_webhook_config=manage_webhook_config,
    )


def operator_registry(config: OperatorConfig | None = None) -> kopf.OperatorRegistry:
    """The registry ``python -m gpu_budget`` runs, with webhooks enabled."""
    config = config or webhook_config()
    registry = kopf.OperatorRegistry()
    handlers.register(registry, config)
    admission.register(registry, config)
    return registry


def handler_selector(handler: Any) -> tuple[str, str, str]:
    selector = handler.selector
    if selector is None or selector.group is None or not isinstance(selector.any_name, str):
        raise ValueError(f"{handler.id}: handler without a fully specified resource")
    return selector.group, selector.version, selector.any_name


def _sample_workloads(adapter: WorkloadAdapter) -> list[WorkloadFacts]:
    """Facts in every state the operator acts on: running, held, suspended by a user."""
    base = {
        "kind": adapter.kind,
        "namespace": "ns",
        "name": "w",
        "uid": "u",
        "budget": "b",
        "requested_gpus": 8,
        "killed": False,
    }
    return [
        WorkloadFacts(**base, state=WorkloadState.RUNNING, suspended=False, held=False),
        WorkloadFacts(**base, state=WorkloadState.PENDING, suspended=False, held=False),
        WorkloadFacts(**base, state=WorkloadState.SUSPENDED, suspended=True, held=True),
    ]


def adapter_verbs(adapter: WorkloadAdapter) -> set[str]:
    """The verbs of every operation the adapter can ask :meth:`ClusterClient.apply` for."""
    verbs: set[str] = set()
    for facts in _sample_workloads(adapter):
        operations: list[Operation | None] = [
            adapter.suspend(facts, "CapReached"),
            adapter.resume(facts, "budget-uid"),
            adapter.kill(facts, "CapReached"),
        ]
        verbs.update(op.verb for op in operations if op is not None)
    return verbs


def _kube_client_methods() -> set[str]:
    return {
        name
        for name in vars(ClusterClient)
        if not name.startswith("_") and callable(getattr(ClusterClient, name))
    }


def access(
    *, clusterwide: bool = True, manage_webhook_config: bool = False
) -> dict[tuple[str, str], set[str]]:
    """(API group, resource) -> verbs the operator uses."""
    unknown = _kube_client_methods() - set(KUBE_CALLS)
    if unknown:
        raise RuntimeError(
            f"gpu_budget.kube.ClusterClient has calls rbac.py does not know: {sorted(unknown)}; "
            "add them to KUBE_CALLS and to access()"
        )
    grants: dict[tuple[str, str], set[str]] = {}

    def grant(group: str, resource: str, *verbs: str) -> None:
        grants.setdefault((group, resource), set()).update(verbs)

    registry = operator_registry(webhook_config(manage_webhook_config))
    with_status = _own_crd_status_subresource()
    for handler in [
        *registry._indexing.get_all_handlers(),
        *registry._watching.get_all_handlers(),
    ]:
        group, _, plural = handler_selector(handler)
        grant(group, plural, *READ)
    for handler in [
        *registry._spawning.get_all_handlers(),
        *registry._changing.get_all_handlers(),
    ]:
        group, _, plural = handler_selector(handler)
        grant(group, plural, *READ)
        if not getattr(handler, "requires_finalizer", True):
            continue  # the loop's host: kopf writes nothing into it
        # Progress annotations and finalizers on the object; the status subresource
        # for what the handler writes into patch.status.
        grant(group, plural, "patch")
        if group == GROUP and plural in with_status:
            grant(group, f"{plural}/status", "patch")
    # Webhook handlers are called by the API server: no access of their own.

    # gpu_budget.view: the watch-fed caches the accounting loop reads
    for cache in ClusterView(() if clusterwide else ("served",)).all_caches():
        grant(cache.resource.group, cache.resource.plural, *READ)

    # gpu_budget.kube.ClusterClient
    for adapter in ADAPTERS:
        grant(adapter.group, adapter.plural, *adapter_verbs(adapter))
    grant("", "pods", "patch")  # annotate_pod
    grant("", "pods", "delete")  # delete_pod
    grant(GROUP, "trainingbudgets/status", "patch")  # patch_status
    grant(GROUP, "trainingbudgets", "patch")  # patch_finalizers
    grant(GROUP, "budgetpolicies/status", "patch")  # patch_policy_status
    for adapter in CONTROLLERS:
        grant(adapter.group, adapter.plural, "get")  # get: admission's owner check

    # kopf itself
    grant("", "events", "create")  # kopf.event() and kopf's own handler events
    grant(CRD_GROUP, "customresourcedefinitions", *READ)  # resource observer
    if clusterwide:
        grant(KOPF_GROUP, "clusterkopfpeerings", *READ, "patch")
    else:
        grant(KOPF_GROUP, "kopfpeerings", *READ, "patch")
        grant("", "namespaces", *READ)  # namespace observer (patterns -> namespaces)
    if manage_webhook_config:
        for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
            grant(ADMISSION_GROUP, kind, "create", "patch")
    return grants


VERB_ORDER = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")


def _sorted_verbs(verbs: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(verbs, key=lambda v: (VERB_ORDER.index(v) if v in VERB_ORDER else 99, v)))


def rules(*, clusterwide: bool = True, manage_webhook_config: bool = False) -> list[Rule]:
    """One rule per resource, sorted by group and resource."""
    return sorted(
        Rule(group, resource, _sorted_verbs(verbs), is_namespaced(group, resource))
        for (group, resource), verbs in access(
            clusterwide=clusterwide, manage_webhook_config=manage_webhook_config
        ).items()
    )


def expand(policy_rules: Iterable[Mapping[str, Any]]) -> set[tuple[str, str, str]]:
    """(group, resource, verb) triples a list of RBAC PolicyRules grants (no wildcards)."""
    triples: set[tuple[str, str, str]] = set()
    for rule in policy_rules:
        if rule.get("resourceNames") or rule.get("nonResourceURLs"):
            raise ValueError(f"unsupported rule (resourceNames/nonResourceURLs): {rule}")
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                for verb in rule.get("verbs") or []:
                    if "*" in (group, resource, verb):
                        raise ValueError(f"wildcard in rule {rule}: least privilege means none")
                    triples.add((group, resource, verb))
    return triples


def triples(selected: Iterable[Rule]) -> set[tuple[str, str, str]]:
    return expand(rule.as_policy_rule() for rule in selected)


# ------------------------------------------------------------------- chart files

CHART_NAME = "gpu-budget-operator"


def cluster_role(selected: Sequence[Rule], name: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [rule.as_policy_rule() for rule in selected],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gpu_budget.rbac",
        description="Print the RBAC rules gpu-budget-operator needs, derived from its handlers.",
    )
    parser.add_argument(
        "--namespaced",
        action="store_true",
        help="rules of an operator serving a list of namespaces: a ClusterRole for "
        "cluster-scoped resources and a Role for each namespace",
    )
    parser.add_argument(
        "--manage-webhook-config",
        action="store_true",
        help="include what --manage-webhook-config needs (dev mode; not the chart's case)",
    )
    args = parser.parse_args(argv)
    selected = rules(
        clusterwide=not args.namespaced, manage_webhook_config=args.manage_webhook_config
    )
    stamp = "# derived from the handlers of gpu_budget (python -m gpu_budget.rbac)\n"
    if not args.namespaced:
        sys.stdout.write(
            stamp + yaml.safe_dump(cluster_role(selected, CHART_NAME), sort_keys=False)
        )
        return 0
    cluster = [r for r in selected if not r.namespaced]
    namespaced = [r for r in selected if r.namespaced]
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": CHART_NAME, "namespace": "<each served namespace>"},
        "rules": [rule.as_policy_rule() for rule in namespaced],
    }
    sys.stdout.write(
        stamp
        + yaml.safe_dump(cluster_role(cluster, CHART_NAME), sort_keys=False)
        + "---\n"
        + yaml.safe_dump(role, sort_keys=False)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
