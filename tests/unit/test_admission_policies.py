"""The rendered ValidatingAdmissionPolicies: their shape and the facts their CEL relies on.

The CEL itself is proven on a real API server (tests/e2e/test_admission.py);
here the manifests are checked for what a reviewer would check by eye.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from gpu_budget import (
    ADMITTED_ANNOTATION,
    APPROVED_AMOUNT_ANNOTATION,
    APPROVED_AT_ANNOTATION,
    APPROVED_BY_ANNOTATION,
    APPROVED_CAP_ANNOTATION,
    BUDGET_LABEL,
    FINALIZER,
    GPU_RESOURCE,
    NAMESPACE_COST_CENTER_LABEL,
    NAMESPACE_TEAM_LABEL,
    SPEND_RECORD_ANNOTATION,
)
from gpu_budget.admission_policies import (
    APPROVAL_ANNOTATIONS,
    APPROVAL_GUARD,
    BUDGET_GUARD,
    DEFAULT_GPU_RULES,
    FINALIZER_GUARD,
    LABELS,
    NUMBER_PATTERN,
    REQUIRE_BUDGET_LABEL,
    UNSTOPPABLE_KINDS,
    WORKLOAD_KINDS,
    Cel,
    concat,
    gpu_rule,
    main,
    render,
    service_account_username,
)
from gpu_budget.gpus import gpu_share
from gpu_budget.models import DEFAULT_GPU_RESOURCES, BudgetPolicySpec, GpuResource, GpuShare
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


def variables_of(spec: dict[str, Any]) -> dict[str, str]:
    return {v["name"]: v["expression"] for v in spec.get("variables", [])}


def conditions_of(spec: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["expression"] for c in spec.get("matchConditions", [])}


def params_ref(name: str = "default") -> dict[str, str]:
    return {"name": name, "parameterNotFoundAction": "Deny"}


BUDGET_RULE = {
    "apiGroups": ["gpubudget.dev"],
    "apiVersions": ["*"],
    "resources": ["trainingbudgets"],
}


def test_every_policy_has_its_binding_and_fails_closed(
    manifests: dict[tuple[str, str], Any],
) -> None:
    policies = {name for kind, name in manifests if kind == "ValidatingAdmissionPolicy"}
    bindings = {name for kind, name in manifests if kind == "ValidatingAdmissionPolicyBinding"}
    assert policies == bindings
    # approval, budget and finalizer guards; hold guard, workload guard and require
    # budget per workload kind; require budget per kind a budget cannot stop.
    assert len(policies) == 3 + 3 * len(WORKLOAD_KINDS) + len(UNSTOPPABLE_KINDS)
    for name in policies:
        assert name.startswith("gpubudget.dev-")
        assert policy(manifests, name)["failurePolicy"] == "Fail"
        assert binding(manifests, name)["policyName"] == name
        assert binding(manifests, name)["validationActions"] == ["Deny"]
        # Params come from the BudgetPolicy, and without it the request is denied.
        has_params = "paramKind" in policy(manifests, name)
        assert has_params == ("paramRef" in binding(manifests, name)), name
        if has_params:
            assert policy(manifests, name)["paramKind"] == {
                "apiVersion": "gpubudget.dev/v1alpha1",
                "kind": "BudgetPolicy",
            }
            assert binding(manifests, name)["paramRef"] == params_ref()
        for validation in policy(manifests, name)["validations"]:
            assert validation["message"] and validation["messageExpression"]
            # The API server drops a multi-line message.
            assert "\n" not in validation["message"] + validation["messageExpression"]
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
    for key in (
        APPROVED_AMOUNT_ANNOTATION,
        APPROVED_BY_ANNOTATION,
        APPROVED_AT_ANNOTATION,
        APPROVED_CAP_ANNOTATION,
    ):
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
    # Pods: all but a Job's, JobSet's or PyTorchJob's (checked at their workload).
    assert ("not-a-workloads-pod" in conditions) == (kind.adapter.kind == "Pod")
    (validation,) = spec["validations"]
    assert validation["reason"] == "Invalid"
    for needle in ("containers", "initContainers", "limits", "requests", "resourceClaims"):
        assert needle in validation["expression"]
    # Which resources are GPUs is the BudgetPolicy's word (nvidia.com/gpu by default).
    assert "variables.gpuRules" in validation["expression"]
    assert GPU_RESOURCE in variables_of(spec)["gpuRules"]
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


# ------------------------------------------------------------------ approval guard


def test_only_finance_touches_the_approved_cap(manifests: dict[tuple[str, str], Any]) -> None:
    assert APPROVED_CAP_ANNOTATION in APPROVAL_ANNOTATIONS
    spec = policy(manifests, APPROVAL_GUARD)
    changed = variables_of(spec)["changed"]
    assert f'"{APPROVED_CAP_ANNOTATION}"' in changed
    assert APPROVED_CAP_ANNOTATION in spec["validations"][0]["message"]


def test_an_approval_records_the_cap_as_a_number(manifests: dict[tuple[str, str], Any]) -> None:
    spec = policy(manifests, APPROVAL_GUARD)
    cap_is_number = variables_of(spec)["capIsNumber"]
    # The regex first, so that a non-number is a denial rather than a CEL error.
    assert cap_is_number.index(".matches(") < cap_is_number.index("double(")
    assert json.dumps(NUMBER_PATTERN) in cap_is_number
    record_is_true = spec["validations"][1]
    assert "variables.capIsNumber" in record_is_true["expression"]
    assert "variables.amountChanged" in record_is_true["expression"]
    for text in (record_is_true["message"], record_is_true["messageExpression"]):
        assert APPROVED_CAP_ANNOTATION in text
        assert "spec.costCap" in text
        assert "is the operator running with its webhooks?" in text
    # The whole record goes with the amount.
    assert APPROVED_CAP_ANNOTATION in spec["validations"][2]["expression"]


@pytest.mark.parametrize(
    "value", ["500", "500.0", "20000.5", "1e+16", "1.2345678901234567e+16", "1e-05", "1" * 26]
)
def test_what_the_webhook_writes_as_the_cap_is_a_number(value: str) -> None:
    # The admission webhook writes str() of spec.costCap, an int or a float.
    assert re.match(NUMBER_PATTERN, value)


@pytest.mark.parametrize("value", ["", "lots", "-1", "inf", "NaN", "$500", "1e999", "9" * 41, " 1"])
def test_what_double_could_not_read_or_would_overflow_is_no_cap(value: str) -> None:
    assert not re.match(NUMBER_PATTERN, value)


# -------------------------------------------------------------------- budget guard


def test_budget_guard_reads_the_budget_policy_and_fails_closed(
    manifests: dict[tuple[str, str], Any],
) -> None:
    spec = policy(manifests, BUDGET_GUARD)
    assert binding(manifests, BUDGET_GUARD)["paramRef"] == params_ref()
    assert spec["matchConstraints"]["resourceRules"] == [
        {**BUDGET_RULE, "operations": ["CREATE", "UPDATE"]}
    ]
    # Judged when the spec is written: the operator's metadata writes (its finalizer,
    # kopf's annotations) of a budget written before the policy changed go through.
    assert conditions_of(spec) == {
        "spec-written": "request.operation == 'CREATE' || "
        "object.?spec.orValue({}) != oldObject.?spec.orValue({})"
    }


def test_budget_guard_defaults_are_the_budget_policys(
    manifests: dict[tuple[str, str], Any],
) -> None:
    """A policy stored before a field existed reads as the model's default, never an error."""
    variables = variables_of(policy(manifests, BUDGET_GUARD))
    defaults = BudgetPolicySpec()
    assert variables["allowedActions"] == (
        "params.?spec.?allowedActions.orValue(" + json.dumps(defaults.allowed_actions) + ")"
    ).replace('","', '", "')
    assert variables["alertAboveCeiling"] == (
        "params.?spec.?alertAboveCeiling.orValue(false) == true"
    )
    assert defaults.alert_above_ceiling is False
    assert variables["ceiling"] == (
        f"double(params.?spec.?approvalCeiling.orValue({float(defaults.approval_ceiling)!r}))"
    )
    assert variables["action"] == 'object.spec.?enforcement.?action.orValue("Suspend")'
    # An integer costCap may arrive as a CEL int: both sides are doubles.
    assert variables["costCap"] == "double(object.spec.?costCap.orValue(0.0))"


def test_budget_guard_rules_say_what_to_do(manifests: dict[tuple[str, str], Any]) -> None:
    spec = policy(manifests, BUDGET_GUARD)
    allowed, alert, team, cost_center = spec["validations"]
    assert allowed["expression"] == "variables.action in variables.allowedActions"
    assert "variables.allowedActions.join(', ')" in allowed["messageExpression"]
    assert "ask the platform team" in allowed["messageExpression"]
    assert alert["expression"] == (
        'variables.alertAboveCeiling || variables.action != "Alert" || '
        "variables.costCap <= variables.ceiling"
    )
    assert "Choose Suspend or Kill" in alert["messageExpression"]
    assert "spec.alertAboveCeiling" in alert["messageExpression"]
    variables = variables_of(spec)
    for validation, label, field, variable in (
        (team, NAMESPACE_TEAM_LABEL, "team", "namespaceTeam"),
        (cost_center, NAMESPACE_COST_CENTER_LABEL, "costCenter", "namespaceCostCenter"),
    ):
        assert variables[variable] == (
            f"namespaceObject.metadata.?labels[?\"{label}\"].orValue('')"
        )
        assert validation["expression"] == (
            f"variables.{variable} == '' || object.spec.?owner.?{field}"
            f".orValue(variables.{variable}) == variables.{variable}"
        )
        assert f"Leave spec.owner.{field} out or set it to " in validation["messageExpression"]
        assert label in validation["message"]


def test_budget_guard_follows_the_configured_policy_name() -> None:
    rendered = {(m["kind"], m["metadata"]["name"]): m for m in render(["admin"], "finance-rules")}
    for name in (BUDGET_GUARD, "gpubudget.dev-require-budget-jobs"):
        assert binding(rendered, name)["paramRef"] == params_ref("finance-rules")
    assert (
        "BudgetPolicy finance-rules" in policy(rendered, BUDGET_GUARD)["validations"][0]["message"]
    )


# ----------------------------------------------------------------- finalizer guard


def test_only_the_operator_removes_the_finalizer(manifests: dict[tuple[str, str], Any]) -> None:
    spec = policy(manifests, FINALIZER_GUARD)
    assert "paramKind" not in spec
    assert "paramRef" not in binding(manifests, FINALIZER_GUARD)
    assert spec["matchConstraints"]["resourceRules"] == [{**BUDGET_RULE, "operations": ["UPDATE"]}]
    removed = conditions_of(spec)["finalizer-removed"]
    assert f'"{FINALIZER}" in oldObject.metadata.?finalizers.orValue([])' in removed
    assert f'!("{FINALIZER}" in object.metadata.?finalizers.orValue([]))' in removed
    (validation,) = spec["validations"]
    assert validation["expression"] == f'request.userInfo.username in ["{OPERATOR}"]'
    assert "Deleting the budget is enough" in validation["messageExpression"]
    assert f"only the operator ({OPERATOR}) may" in validation["messageExpression"]


# ------------------------------------------------------------------ workload guard


@pytest.mark.parametrize("kind", WORKLOAD_KINDS, ids=lambda k: k.adapter.kind)
def test_workload_guard_exempts_only_the_operator(
    manifests: dict[tuple[str, str], Any], kind: Any
) -> None:
    name = f"gpubudget.dev-workload-guard-{kind.adapter.plural}"
    spec = policy(manifests, name)
    assert "paramKind" not in spec
    assert "paramRef" not in binding(manifests, name)
    assert "matchResources" not in binding(manifests, name)  # every namespace
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert rule == {
        "apiGroups": [kind.adapter.group],
        "apiVersions": [kind.adapter.version],
        "operations": ["CREATE", "UPDATE"],
        "resources": [kind.adapter.plural],
    }
    assert conditions_of(spec) == {
        "not-the-operator": f'!(request.userInfo.username in ["{OPERATOR}"])'
    }


@pytest.mark.parametrize("kind", WORKLOAD_KINDS, ids=lambda k: k.adapter.kind)
def test_workload_guard_rules(manifests: dict[tuple[str, str], Any], kind: Any) -> None:
    what = kind.adapter.kind
    spec = policy(manifests, f"gpubudget.dev-workload-guard-{kind.adapter.plural}")
    validations = spec["validations"]
    if kind.templates_cel is None:
        bound, records, resumed = validations
    else:
        bound, templates, records, resumed = validations
        assert variables_of(spec)["templates"] == kind.templates("object")
        assert kind.templates("oldObject") in templates["expression"]  # older objects pass
        assert "variables.controlledByWorkload" in templates["expression"]
        assert (
            f"put the label on the {what}'s metadata.labels only"
            in (templates["messageExpression"])
        )
    # a. The budget label is for good.
    assert bound["expression"].startswith("request.operation != 'UPDATE' || ")
    assert f'"{BUDGET_LABEL}" in variables.oldLabels' in bound["expression"]
    assert f"create a new {what} with the label {BUDGET_LABEL}" in bound["messageExpression"]
    # c. The operator's records.
    changed = variables_of(spec)["changedRecords"]
    for key in (ADMITTED_ANNOTATION, SPEND_RECORD_ANNOTATION):
        assert f'"{key}"' in changed
        assert key in records["message"]
    assert records["expression"] == "size(variables.changedRecords) == 0"
    assert "Leave them as they are" in records["messageExpression"]
    # d. A workload its budget never admitted is released by the operator only.
    assert kind.held("oldObject") in resumed["expression"]
    assert kind.held("object") in resumed["expression"]
    assert f'"{ADMITTED_ANNOTATION}" in variables.oldAnnotations' in resumed["expression"]
    assert f'"{HELD_ANNOTATION}"' in resumed["expression"]  # the hold guard's business
    assert (
        f"only the operator ({OPERATOR}) may release {kind.switch}"
        in (resumed["messageExpression"])
    )
    assert "is the operator running with its webhooks?" in resumed["messageExpression"]


def test_templates_are_found_where_each_kind_keeps_them() -> None:
    kinds = {kind.adapter.kind: kind for kind in WORKLOAD_KINDS}
    assert kinds["Job"].templates("o") == "[o.spec.?template.orValue({})]"
    jobset = kinds["JobSet"].templates("o")
    assert "r.?template.orValue({})" in jobset  # the Job templates: their labels are the Jobs'
    assert "r.?template.?spec.?template.orValue({})" in jobset  # the pod templates
    assert "o.spec.pytorchReplicaSpecs[k].?template" in kinds["PyTorchJob"].templates("o")
    assert kinds["Pod"].templates_cel is None
    with pytest.raises(ValueError, match="no templates"):
        kinds["Pod"].templates("o")


def test_children_of_budgeted_workloads_are_recognised_by_their_controller(
    manifests: dict[tuple[str, str], Any],
) -> None:
    controlled = variables_of(policy(manifests, "gpubudget.dev-workload-guard-jobs"))[
        "controlledByWorkload"
    ]
    assert "r.?controller.orValue(false) == true" in controlled
    for group, kind in (
        ("batch", "Job"),
        ("jobset.x-k8s.io", "JobSet"),
        ("kubeflow.org", "PyTorchJob"),
    ):
        assert f'startsWith("{group}/")' in controlled
        assert f"r.?kind.orValue('') == \"{kind}\"" in controlled
    pods = conditions_of(policy(manifests, "gpubudget.dev-require-budget-pods"))
    assert pods["not-a-workloads-pod"] == f"!({controlled})"


# ------------------------------------------------------------------ require budget


def _first_rule_counts(resource: str, rules: tuple[str, ...]) -> bool:
    """The CEL policies' reading of :func:`gpu_rule` strings, in Python."""
    for rule in rules:
        name = rule[2:]
        if resource.startswith(name) if rule[1] == "*" else resource == name:
            return rule[0] == "+"
    return False


@pytest.mark.parametrize(
    "resource",
    [
        "nvidia.com/gpu",
        "nvidia.com/gpu.shared",
        "nvidia.com/mig-3g.20gb",
        "amd.com/gpu",
        "gpu.intel.com/i915",
        "gpu.intel.com/millicores",
        "gpu.intel.com/memory.max",
        "example.com/fpga",
        "cpu",
    ],
)
def test_gpu_rules_agree_with_the_operators_gpu_counting(resource: str) -> None:
    share = gpu_share(resource, DEFAULT_GPU_RESOURCES)
    assert _first_rule_counts(resource, DEFAULT_GPU_RULES) == bool(share)


def test_gpu_rule_strings() -> None:
    assert gpu_rule(GpuResource(resource="nvidia.com/gpu")) == "+=nvidia.com/gpu"
    assert gpu_rule(GpuResource(resource="gpu.intel.com/memory.max", gpus_per_unit=0)) == (
        "-=gpu.intel.com/memory.max"
    )
    mig = GpuResource(resource="nvidia.com/mig-*", share=GpuShare.MIG_SLICES, gpus_per_unit=0)
    assert gpu_rule(mig) == "+*nvidia.com/mig-"


@pytest.mark.parametrize("kind", WORKLOAD_KINDS, ids=lambda k: k.adapter.kind)
def test_require_budget_reads_gpu_resources_from_the_policy(
    manifests: dict[tuple[str, str], Any], kind: Any
) -> None:
    name = f"gpubudget.dev-require-budget-{kind.adapter.plural}"
    assert binding(manifests, name)["paramRef"] == params_ref()
    variables = variables_of(policy(manifests, name))
    assert variables["podSpecs"] == kind.pod_specs_cel
    gpu_rules = variables["gpuRules"]
    assert gpu_rules.startswith("params.?spec.?gpuResources.hasValue() ? ")
    assert gpu_rules.endswith(json.dumps(list(DEFAULT_GPU_RULES)).replace('","', '", "'))
    assert '"MigComputeSlices"' in gpu_rules
    assert "gpusPerUnit" in gpu_rules


@pytest.mark.parametrize("kind", UNSTOPPABLE_KINDS, ids=lambda k: k.kind)
def test_kinds_a_budget_cannot_stop_may_not_request_gpus(
    manifests: dict[tuple[str, str], Any], kind: Any
) -> None:
    name = f"gpubudget.dev-require-budget-{kind.plural}"
    spec = policy(manifests, name)
    assert binding(manifests, name)["matchResources"] == {
        "namespaceSelector": {"matchLabels": {REQUIRE_BUDGET_LABEL: "true"}}
    }
    assert binding(manifests, name)["paramRef"] == params_ref()
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert rule == {
        "apiGroups": ["batch" if kind.kind == "CronJob" else "apps"],
        "apiVersions": ["v1"],
        "operations": ["CREATE", "UPDATE"],
        "resources": [kind.plural],
    }
    # Labelled or not: no condition on the budget label.
    conditions = conditions_of(spec)
    assert list(conditions) == ["created-or-template-written"]
    assert BUDGET_LABEL not in conditions["created-or-template-written"]
    template = (
        "object.spec.?jobTemplate.?spec.?template.orValue({})"
        if kind.kind == "CronJob"
        else "object.spec.?template.orValue({})"
    )
    assert variables_of(spec)["podSpecs"] == f"[{template}.?spec.orValue({{}})]"
    (validation,) = spec["validations"]
    assert "variables.gpuRules" in validation["expression"]
    message = validation["messageExpression"]
    assert "can hold and stop only Job, JobSet, PyTorchJob and Pod" in message
    assert "run the training as a Job, JobSet or PyTorchJob" in message


def test_cel_is_safe_in_a_helm_template(manifests: dict[tuple[str, str], Any]) -> None:
    """The chart embeds these expressions in a Helm template: no ``{{`` or ``}}``."""

    def strings(value: Any) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return []

    for manifest in manifests.values():
        for text in strings(manifest):
            assert "{{" not in text and "}}" not in text, manifest["metadata"]["name"]
