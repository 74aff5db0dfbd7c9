"""The rendered ValidatingAdmissionPolicies: their shape and the facts their CEL relies on.

The CEL itself is proven on a real API server (tests/e2e/test_admission.py);
here the manifests are checked for what a reviewer would check by eye.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from gpu_budget import (
    APPROVED_AMOUNT_ANNOTATION,
    APPROVED_AT_ANNOTATION,
    APPROVED_BY_ANNOTATION,
    BUDGET_LABEL,
    GPU_RESOURCE,
)
from gpu_budget.admission_policies import (
    APPROVAL_GUARD,
    LABELS,
    REQUIRE_BUDGET_LABEL,
    WORKLOAD_KINDS,
    Cel,
    concat,
    main,
    render,
    service_account_username,
)
from gpu_budget.workloads import HELD_ANNOTATION, KILLED_ANNOTATION
from gpu_budget.workloads.pod import SCHEDULING_GATE

OPERATOR = "system:serviceaccount:gpu-budget:gpu-budget-operator"


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    return {(m["kind"], m["metadata"]["name"]): m for m in render([OPERATOR])}


def policy(manifests: dict[tuple[str, str], Any], name: str) -> dict[str, Any]:
    spec: dict[str, Any] = manifests[("ValidatingAdmissionPolicy", name)]["spec"]
    return spec


def binding(manifests: dict[tuple[str, str], Any], name: str) -> dict[str, Any]:
    spec: dict[str, Any] = manifests[("ValidatingAdmissionPolicyBinding", name)]["spec"]
    return spec


def all_cel(spec: dict[str, Any]) -> str:
    """Every expression of a policy, to look for what it refers to."""
    parts = [v["expression"] for v in spec.get("variables", [])]
    parts += [c["expression"] for c in spec.get("matchConditions", [])]
    parts += [v["expression"] for v in spec["validations"]]
    return "\n".join(parts)


def test_every_policy_has_its_binding_and_fails_closed(
    manifests: dict[tuple[str, str], Any],
) -> None:
    policies = {name for kind, name in manifests if kind == "ValidatingAdmissionPolicy"}
    bindings = {name for kind, name in manifests if kind == "ValidatingAdmissionPolicyBinding"}
    assert policies == bindings
    assert len(policies) == 1 + 2 * len(WORKLOAD_KINDS)
    for name in policies:
        assert name.startswith("gpubudget.dev-")
        assert policy(manifests, name)["failurePolicy"] == "Fail"
        assert binding(manifests, name)["policyName"] == name
        assert binding(manifests, name)["validationActions"] == ["Deny"]
        for validation in policy(manifests, name)["validations"]:
            assert validation["message"] and validation["messageExpression"]
    for manifest in manifests.values():
        assert manifest["apiVersion"] == "admissionregistration.k8s.io/v1"
        assert manifest["metadata"]["labels"] == LABELS


def test_approval_guard_reads_finance_groups_from_the_policy_and_fails_closed(
    manifests: dict[tuple[str, str], Any],
) -> None:
    spec = policy(manifests, APPROVAL_GUARD)
    assert spec["paramKind"] == {"apiVersion": "gpubudget.dev/v1alpha1", "kind": "BudgetPolicy"}
    assert binding(manifests, APPROVAL_GUARD)["paramRef"] == {
        "name": "default",
        "parameterNotFoundAction": "Deny",
    }
    # The main resource only: the operator's status writes must never be judged here.
    assert spec["matchConstraints"]["resourceRules"] == [
        {
            "apiGroups": ["gpubudget.dev"],
            "apiVersions": ["*"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["trainingbudgets"],
        }
    ]
    cel = all_cel(spec)
    for key in (APPROVED_AMOUNT_ANNOTATION, APPROVED_BY_ANNOTATION, APPROVED_AT_ANNOTATION):
        assert f'"{key}"' in cel
    assert "params.spec.?financeGroups" in cel
    assert "request.userInfo.?groups" in cel
    assert "request.userInfo.username" in cel
    finance_only = spec["validations"][0]
    assert finance_only["expression"] == "size(variables.changed) == 0 || variables.isFinance"
    assert "only members of the finance groups" in finance_only["messageExpression"]
    assert "kubectl annotate trainingbudget" in finance_only["messageExpression"]


def test_approval_guard_follows_the_configured_policy_name() -> None:
    rendered = {(m["kind"], m["metadata"]["name"]): m for m in render(["admin"], "finance-rules")}
    assert binding(rendered, APPROVAL_GUARD)["paramRef"]["name"] == "finance-rules"
    assert (
        "BudgetPolicy finance-rules"
        in policy(rendered, APPROVAL_GUARD)["validations"][0]["message"]
    )


@pytest.mark.parametrize("kind", WORKLOAD_KINDS, ids=lambda k: k.adapter.kind)
def test_hold_guard_lets_only_the_operator_release(
    manifests: dict[tuple[str, str], Any], kind: Any
) -> None:
    name = f"gpubudget.dev-hold-guard-{kind.adapter.plural}"
    spec = policy(manifests, name)
    assert "paramKind" not in spec
    assert "paramRef" not in binding(manifests, name)
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert rule == {
        "apiGroups": [kind.adapter.group],
        "apiVersions": [kind.adapter.version],
        "operations": ["UPDATE"],
        "resources": [kind.adapter.plural],
    }
    (condition,) = spec["matchConditions"]
    assert HELD_ANNOTATION in condition["expression"]
    assert KILLED_ANNOTATION in condition["expression"]
    variables = {v["name"]: v["expression"] for v in spec["variables"]}
    assert variables["isOperator"] == f'request.userInfo.username in ["{OPERATOR}"]'
    assert kind.held("oldObject") in variables["resumed"]
    assert kind.held("object") in variables["resumed"]
    killed, released, annotations = spec["validations"]
    assert killed["expression"] == "!variables.killed || !variables.resumed"  # nobody
    assert released["expression"] == "variables.isOperator || !variables.resumed"
    assert annotations["expression"].startswith("variables.isOperator || ")
    assert kind.switch in released["messageExpression"]
    assert OPERATOR in released["messageExpression"]


def test_each_kind_is_released_by_its_own_switch() -> None:
    held = {kind.adapter.kind: kind.held("o") for kind in WORKLOAD_KINDS}
    assert held["Job"] == held["JobSet"] == "o.spec.?suspend.orValue(false) == true"
    assert held["PyTorchJob"] == "o.spec.?runPolicy.?suspend.orValue(false) == true"
    assert f'g.name == "{SCHEDULING_GATE}"' in held["Pod"]


@pytest.mark.parametrize("kind", WORKLOAD_KINDS, ids=lambda k: k.adapter.kind)
def test_require_budget_applies_in_labelled_namespaces_only(
    manifests: dict[tuple[str, str], Any], kind: Any
) -> None:
    name = f"gpubudget.dev-require-budget-{kind.adapter.plural}"
    spec = policy(manifests, name)
    assert binding(manifests, name)["matchResources"] == {
        "namespaceSelector": {"matchLabels": {REQUIRE_BUDGET_LABEL: "true"}}
    }
    assert spec["matchConstraints"]["resourceRules"][0]["operations"] == ["CREATE", "UPDATE"]
    conditions = {c["name"]: c["expression"] for c in spec["matchConditions"]}
    assert BUDGET_LABEL in conditions["no-budget-label"]
    assert "oldObject" in conditions["created-or-label-removed"]
    assert ("bare-pod" in conditions) == (kind.adapter.kind == "Pod")
    (validation,) = spec["validations"]
    assert validation["reason"] == "Invalid"
    for needle in (GPU_RESOURCE, "containers", "initContainers", "limits", "requests"):
        assert needle in validation["expression"]
    assert f"add the label {BUDGET_LABEL}: <budget name>" in validation["messageExpression"]


def test_pod_specs_are_found_where_each_kind_keeps_them() -> None:
    specs = {kind.adapter.kind: kind.pod_specs_cel for kind in WORKLOAD_KINDS}
    assert specs["Pod"] == "[object.spec]"
    assert "template" in specs["Job"]
    assert "replicatedJobs" in specs["JobSet"]
    assert "pytorchReplicaSpecs" in specs["PyTorchJob"]


def test_operator_identity_is_required() -> None:
    with pytest.raises(ValueError, match="operator username"):
        render([])
    with pytest.raises(ValueError, match="operator username"):
        render([""])


def test_concat_quotes_text_and_parenthesises_expressions() -> None:
    assert concat("it's ", Cel("a ? 'x' : 'y'"), ' "q"') == (
        '"it\'s " + (a ? \'x\' : \'y\') + " \\"q\\""'
    )


def test_cli_prints_yaml_for_a_service_account(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--operator-service-account", "gpu-budget/gpu-budget-operator"]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert documents == render([service_account_username("gpu-budget", "gpu-budget-operator")])


def test_cli_needs_the_operator_identity(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([])
    assert "--operator-username" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--operator-service-account", "no-slash"])
