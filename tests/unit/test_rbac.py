"""Least privilege: the chart grants exactly the API access the code needs, no more, no less.

:mod:`gpu_budget.rbac` derives the rules from the handlers the operator registers
and the calls of :mod:`gpu_budget.kube`; these tests render the chart with
`helm template` and compare its (Cluster)Roles with them both ways.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import yaml

from gpu_budget import kube, rbac
from gpu_budget.workloads import ADAPTERS_BY_KIND
from tests.unit.test_chart import FULLNAME, find, needs_helm, one, render

Triple = tuple[str, str, str]
WHERE = "templates/rbac.yaml, or namespacedRules in templates/_helpers.tpl"


def differences(granted: set[Triple], needed: set[Triple]) -> str:
    missing = sorted(needed - granted)
    extra = sorted(granted - needed)
    lines = []
    if missing:
        lines.append(f"the chart does not grant what the code needs (add them to {WHERE}):")
        lines += [f"  {group or 'core'} {resource}: {verb}" for group, resource, verb in missing]
    if extra:
        lines.append(f"the chart grants what the code does not use (remove them from {WHERE}):")
        lines += [f"  {group or 'core'} {resource}: {verb}" for group, resource, verb in extra]
    return "\n".join(lines)


def operator_rules(manifests: list[dict[str, Any]], kind: str) -> dict[str, set[Triple]]:
    """The operator's (Cluster)Roles, by namespace ('' for the ClusterRole)."""
    out: dict[str, set[Triple]] = {}
    for role in find(manifests, kind, FULLNAME):
        out[role["metadata"].get("namespace", "")] = rbac.expand(role["rules"])
    return out


# ----------------------------------------------------------- derivation itself


def test_the_derived_rules_cover_what_the_code_calls() -> None:
    needed = rbac.triples(rbac.rules())
    # Indices and events: list and watch, never get.
    for group, resource in [
        ("", "pods"),
        ("", "nodes"),
        ("gpubudget.dev", "budgetpolicies"),
        ("gpubudget.dev", "trainingbudgets"),
        ("batch", "jobs"),
        ("jobset.x-k8s.io", "jobsets"),
        ("kubeflow.org", "pytorchjobs"),
    ]:
        assert {(group, resource, "list"), (group, resource, "watch")} <= needed
    # The only reads besides the indices: admission's check of the controller a new
    # workload or pod names, read from the API server (adapted controller kinds only).
    assert {(group, resource) for group, resource, verb in needed if verb == "get"} == {
        ("batch", "jobs"),
        ("jobset.x-k8s.io", "jobsets"),
        ("kubeflow.org", "pytorchjobs"),
    }
    # The timer and the delete handler write the budget; the status via its subresource.
    assert ("gpubudget.dev", "trainingbudgets", "patch") in needed
    assert ("gpubudget.dev", "trainingbudgets/status", "patch") in needed
    # Nothing writes the policy or the nodes.
    assert not {
        t for t in needed if t[1] in ("budgetpolicies", "nodes") and t[2] not in ("list", "watch")
    }
    # Workloads: suspend switches are patched; a bare pod is deleted to stop it.
    assert ("batch", "jobs", "patch") in needed
    assert ("batch", "jobs", "delete") not in needed
    assert ("", "pods", "delete") in needed
    assert ("", "pods", "patch") in needed
    # kopf: events, CRD observation, peering.
    assert ("", "events", "create") in needed
    assert {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    } <= needed
    assert ("kopf.dev", "clusterkopfpeerings", "patch") in needed
    # No webhook configuration access unless kopf manages them (not the chart's case).
    assert not {t for t in needed if t[0] == "admissionregistration.k8s.io"}
    managed = rbac.triples(rbac.rules(manage_webhook_config=True))
    assert (
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        "patch",
    ) in managed - needed


def test_a_namespaced_operator_needs_namespaces_and_namespaced_peerings() -> None:
    rules = rbac.rules(clusterwide=False)
    needed = rbac.triples(rules)
    assert ("", "namespaces", "watch") in needed
    assert ("kopf.dev", "kopfpeerings", "patch") in needed
    assert not {t for t in needed if t[1] == "clusterkopfpeerings"}
    cluster_scoped = {r.resource for r in rules if not r.namespaced}
    assert cluster_scoped == {
        "namespaces",
        "nodes",
        "customresourcedefinitions",
        "budgetpolicies",
        "budgetpolicies/status",
    }


def test_adapter_verbs_follow_the_adapters() -> None:
    assert rbac.adapter_verbs(ADAPTERS_BY_KIND["Job"]) == {"patch"}
    assert rbac.adapter_verbs(ADAPTERS_BY_KIND["Pod"]) == {"patch", "delete"}


def test_every_kube_client_call_is_accounted_for() -> None:
    """A new ClusterClient method must come with its RBAC (rbac.KUBE_CALLS)."""
    public = {
        name
        for name, member in inspect.getmembers(kube.ClusterClient, inspect.isfunction)
        if not name.startswith("_")
    }
    assert public == set(rbac.KUBE_CALLS)


def test_cli_prints_the_cluster_role(capsys: pytest.CaptureFixture[str]) -> None:
    assert rbac.main([]) == 0
    role = yaml.safe_load(capsys.readouterr().out)
    assert role["kind"] == "ClusterRole"
    assert rbac.expand(role["rules"]) == rbac.triples(rbac.rules())
    assert rbac.main(["--namespaced"]) == 0
    cluster, namespaced = yaml.safe_load_all(capsys.readouterr().out)
    assert rbac.expand(cluster["rules"]) | rbac.expand(namespaced["rules"]) == rbac.triples(
        rbac.rules(clusterwide=False)
    )


def test_expand_refuses_wildcards() -> None:
    with pytest.raises(ValueError, match="wildcard"):
        rbac.expand([{"apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"]}])


# ------------------------------------------------------------ against the chart


@needs_helm
def test_chart_cluster_role_is_exactly_what_the_code_needs() -> None:
    manifests = render()
    granted = operator_rules(manifests, "ClusterRole")
    assert set(granted) == {""}
    assert not find(manifests, "Role")
    needed = rbac.triples(rbac.rules(clusterwide=True))
    assert granted[""] == needed, differences(granted[""], needed)
    binding = one(manifests, "ClusterRoleBinding", FULLNAME)
    assert binding["roleRef"]["name"] == FULLNAME
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": "gpu-budget"}
    ]


@needs_helm
def test_namespaced_chart_splits_cluster_role_and_roles_exactly() -> None:
    served = ["ml-team", "research"]
    manifests = render({"operator": {"namespaces": served}})
    rules = rbac.rules(clusterwide=False)
    cluster_needed = rbac.triples(r for r in rules if not r.namespaced)
    namespaced_needed = rbac.triples(r for r in rules if r.namespaced)
    cluster = operator_rules(manifests, "ClusterRole")[""]
    assert cluster == cluster_needed, differences(cluster, cluster_needed)
    roles = operator_rules(manifests, "Role")
    assert sorted(roles) == served
    for namespace, granted in roles.items():
        assert granted == namespaced_needed, f"{namespace}:\n" + differences(
            granted, namespaced_needed
        )
    bindings = find(manifests, "RoleBinding", FULLNAME)
    assert sorted(b["metadata"]["namespace"] for b in bindings) == served


@needs_helm
def test_user_roles_are_separate_and_optional() -> None:
    """The finance and aggregated roles are for people, never bound to the operator."""
    manifests = render()
    finance = one(manifests, "ClusterRoleBinding", f"{FULLNAME}-finance")
    assert finance["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "finance"}
    ]
    edit = one(manifests, "ClusterRole", f"{FULLNAME}-edit")
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    for binding in find(manifests, "ClusterRoleBinding"):
        if binding["metadata"]["name"] != FULLNAME:
            assert all(s["kind"] != "ServiceAccount" for s in binding["subjects"])
    bare = render({"rbac": {"aggregateToDefaultRoles": False, "finance": {"create": False}}})
    assert [r["metadata"]["name"] for r in find(bare, "ClusterRole")] == [FULLNAME]
    none = render(
        {"rbac": {"create": False, "aggregateToDefaultRoles": False, "finance": {"create": False}}}
    )
    assert not find(none, "ClusterRole")
    assert not find(none, "ClusterRoleBinding")
