"""ValidatingAdmissionPolicies that the API server itself enforces, generated from Python.

Three guards that must hold even while the operator is down, so they live in
the API server as CEL rather than in the operator's webhooks:

* **Approval guard** (``trainingbudgets``): only members of the finance groups
  of the ``BudgetPolicy`` (``spec.financeGroups``, read as the policy's params,
  so a change takes effect at once) may set, change or remove the finance
  approval annotations. The approval record (who, when) must be true: when the
  amount changes, ``approved-by`` must be the requesting user and
  ``approved-at`` a fresh RFC 3339 time. The operator's mutating webhook
  writes both; if it is not running, approvals are refused rather than
  recorded wrongly, while every other edit of a budget still works.
* **Hold guard** (each workload kind): a workload the operator holds
  (``gpubudget.dev/held``) or killed (``gpubudget.dev/killed``) may be
  resumed, and those annotations removed or changed, only by the operator;
  a killed workload may be resumed by nobody, the operator included.
* **Require budget** (each workload kind): in namespaces labelled
  ``gpubudget.dev/require-budget=true``, a workload that requests
  ``nvidia.com/gpu`` must carry the ``gpubudget.dev/budget`` label.

The operator's identity is a render-time argument (:func:`render`): it is a
fact of the deployment (who the operator runs as), known where the operator is
deployed, so it is rendered in next to the rest of the deployment (the Helm
chart, or ``admin`` on the local cluster), and nobody can widen it by editing a
cluster object. ``python -m gpu_budget.admission_policies --operator-username
admin`` prints the manifests as YAML.

Parameter-not-found is ``Deny`` for the approval guard (the only guard with
params): without the ``BudgetPolicy`` the API server cannot know who finance
is, and failing open would let anyone approve. The price is that while the
policy object is missing *every* create and update of a TrainingBudget's main
resource is denied (the API server looks the params up before it evaluates
anything; the denial names the policy ``gpubudget.dev-approval-guard``). The
operator's status writes go to the ``status`` subresource, which these policies
do not match, so metering continues. The Helm chart and ``make demo`` create
the ``default`` policy.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from gpu_budget import (
    API_VERSION,
    APPROVED_AMOUNT_ANNOTATION,
    APPROVED_AT_ANNOTATION,
    APPROVED_BY_ANNOTATION,
    BUDGET_LABEL,
    GPU_RESOURCE,
    GROUP,
)
from gpu_budget.workloads import ADAPTERS_BY_KIND, HELD_ANNOTATION, KILLED_ANNOTATION
from gpu_budget.workloads.base import WorkloadAdapter
from gpu_budget.workloads.pod import SCHEDULING_GATE

ADMISSION_API_VERSION = "admissionregistration.k8s.io/v1"
NAME_PREFIX = f"{GROUP}-"
REQUIRE_BUDGET_LABEL = f"{GROUP}/require-budget"
"""Namespaces labelled ``gpubudget.dev/require-budget=true`` reject unbudgeted GPU workloads."""

APPROVAL_ANNOTATIONS = (APPROVED_AMOUNT_ANNOTATION, APPROVED_BY_ANNOTATION, APPROVED_AT_ANNOTATION)
"""The finance approval and its record: only finance may touch any of them."""

LABELS = {
    "app.kubernetes.io/name": "gpu-budget-operator",
    "app.kubernetes.io/component": "admission",
    "app.kubernetes.io/managed-by": "gpu-budget-operator",
}
"""On every rendered object, so they can be listed (and pruned) together."""

RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
)

# CEL fragments shared by the policies. ``oldObject`` is null on CREATE.
NEW_ANNOTATIONS = "object.metadata.?annotations.orValue({})"
OLD_ANNOTATIONS = "oldObject == null ? {} : oldObject.metadata.?annotations.orValue({})"
DISPLAY_NAME = (
    "request.namespace + '/' + (object.metadata.?name.orValue('') != '' ? "
    "object.metadata.name : object.metadata.?generateName.orValue('') + '*')"
)


def cel_string(value: str) -> str:
    """A CEL string literal (JSON string syntax is valid CEL)."""
    return json.dumps(value)


def cel_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(cel_string(v) for v in values) + "]"


@dataclass(frozen=True)
class Cel:
    """A CEL expression among literal text, for :func:`concat`."""

    expression: str


def concat(*parts: str | Cel) -> str:
    """A CEL string expression: literal text and expressions, joined with ``+``."""
    return " + ".join(f"({p.expression})" if isinstance(p, Cel) else cel_string(p) for p in parts)


USERNAME = Cel("request.userInfo.username")
NAMESPACE = Cel("request.namespace")


@dataclass(frozen=True)
class WorkloadKind:
    """What the policies need to know of one workload kind, as CEL over an object."""

    adapter: WorkloadAdapter
    switch: str
    """How the kind is held, for messages: ``spec.suspend``, a scheduling gate, ..."""
    held_cel: str
    """CEL over ``{o}``: the object is suspended (or gated) right now."""
    pod_specs_cel: str
    """CEL over ``object``: the list of its pod specs (templates)."""
    bare_pods_only: bool = False
    """Pods: only those without a controller; a controller's pods are its business."""

    def held(self, obj: str) -> str:
        return self.held_cel.format(o=obj)


WORKLOAD_KINDS: tuple[WorkloadKind, ...] = (
    WorkloadKind(
        adapter=ADAPTERS_BY_KIND["Job"],
        switch="spec.suspend",
        held_cel="{o}.spec.?suspend.orValue(false) == true",
        pod_specs_cel="[object.spec.template.?spec.orValue({})]",
    ),
    WorkloadKind(
        adapter=ADAPTERS_BY_KIND["JobSet"],
        switch="spec.suspend",
        held_cel="{o}.spec.?suspend.orValue(false) == true",
        pod_specs_cel=(
            "object.spec.?replicatedJobs.orValue([])"
            ".map(r, r.?template.?spec.?template.?spec.orValue({}))"
        ),
    ),
    WorkloadKind(
        adapter=ADAPTERS_BY_KIND["PyTorchJob"],
        switch="spec.runPolicy.suspend",
        held_cel="{o}.spec.?runPolicy.?suspend.orValue(false) == true",
        pod_specs_cel=(
            "object.spec.?pytorchReplicaSpecs.orValue({}).map(k, "
            "object.spec.pytorchReplicaSpecs[k].?template.?spec.orValue({}))"
        ),
    ),
    WorkloadKind(
        adapter=ADAPTERS_BY_KIND["Pod"],
        switch=f"the scheduling gate {SCHEDULING_GATE}",
        held_cel=(
            "{o}.spec.?schedulingGates.orValue([]).exists(g, g.name == "
            + cel_string(SCHEDULING_GATE)
            + ")"
        ),
        pod_specs_cel="[object.spec]",
        bare_pods_only=True,
    ),
)


def service_account_username(namespace: str, name: str) -> str:
    """The username Kubernetes gives a ServiceAccount, for :func:`render`."""
    return f"system:serviceaccount:{namespace}:{name}"


def _resource_rule(adapter: WorkloadAdapter, operations: Sequence[str]) -> dict[str, Any]:
    return {
        "apiGroups": [adapter.group],
        "apiVersions": [adapter.version],
        "operations": list(operations),
        "resources": [adapter.plural],
    }


def _policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": dict(LABELS)},
        "spec": {"failurePolicy": "Fail", **spec},
    }


def _binding(
    name: str,
    param_ref: dict[str, Any] | None = None,
    match_resources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"policyName": name, "validationActions": ["Deny"]}
    if param_ref is not None:
        spec["paramRef"] = param_ref
    if match_resources is not None:
        spec["matchResources"] = match_resources
    return {
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": dict(LABELS)},
        "spec": spec,
    }


def _validation(
    expression: str, message: str, message_expression: str, reason: str = "Forbidden"
) -> dict[str, Any]:
    """``message`` is the fallback the API server uses if ``messageExpression`` fails."""
    return {
        "expression": expression,
        "message": message,
        "messageExpression": message_expression,
        "reason": reason,
    }


# ------------------------------------------------------------------ approval guard

APPROVAL_GUARD = f"{NAME_PREFIX}approval-guard"


def approval_guard(policy_name: str = "default") -> list[dict[str, Any]]:
    """Only finance may touch the approval; the record must name the approver, freshly."""
    amount, by, at = (cel_string(k) for k in APPROVAL_ANNOTATIONS)
    changed = (
        "(k in variables.oldAnnotations) != (k in variables.newAnnotations) || "
        "(k in variables.newAnnotations && variables.oldAnnotations[k] != "
        "variables.newAnnotations[k])"
    )
    variables = [
        {"name": "newAnnotations", "expression": NEW_ANNOTATIONS},
        {"name": "oldAnnotations", "expression": OLD_ANNOTATIONS},
        {
            "name": "changed",
            "expression": f"{cel_list(APPROVAL_ANNOTATIONS)}.filter(k, {changed})",
        },
        {"name": "financeGroups", "expression": "params.spec.?financeGroups.orValue([])"},
        {
            "name": "isFinance",
            "expression": "request.userInfo.?groups.orValue([])"
            ".exists(g, g in variables.financeGroups)",
        },
        {"name": "amountChanged", "expression": f"{amount} in variables.changed"},
        {"name": "hasAmount", "expression": f"{amount} in variables.newAnnotations"},
        {"name": "budget", "expression": DISPLAY_NAME},
        {"name": "name", "expression": "object.metadata.?name.orValue('<name>')"},
    ]
    budget, name = Cel("variables.budget"), Cel("variables.name")
    finance_only = _validation(
        "size(variables.changed) == 0 || variables.isFinance",
        f"only members of the finance groups of BudgetPolicy {policy_name} "
        f"(spec.financeGroups) may set, change or remove {APPROVED_AMOUNT_ANNOTATION} "
        f"(or its record {APPROVED_BY_ANNOTATION}, {APPROVED_AT_ANNOTATION})",
        concat(
            "user ",
            USERNAME,
            " may not set, change or remove ",
            Cel(f"variables.amountChanged ? {amount} : variables.changed.join(', ')"),
            " on TrainingBudget ",
            budget,
            ": only members of the finance groups [",
            Cel("variables.financeGroups.join(', ')"),
            f"] (BudgetPolicy {policy_name}, spec.financeGroups) may. Finance approves with "
            "`kubectl annotate trainingbudget ",
            name,
            " -n ",
            NAMESPACE,
            f" {APPROVED_AMOUNT_ANNOTATION}=<USD>`.",
        ),
    )
    record_is_true = _validation(
        "size(variables.changed) == 0 || !variables.isFinance || !variables.hasAmount || ("
        f"variables.newAnnotations[?{by}].orValue('') == request.userInfo.username && "
        f"variables.newAnnotations[?{at}].orValue('').matches({cel_string(RFC3339_PATTERN)}) && "
        f"(!variables.amountChanged || !({at} in variables.oldAnnotations) || "
        f"variables.oldAnnotations[{at}] != variables.newAnnotations[{at}]))",
        f"an approval must be recorded: {APPROVED_BY_ANNOTATION} must be the approving user and "
        f"{APPROVED_AT_ANNOTATION} the time of the approval. gpu-budget-operator's admission "
        "webhook records both; is the operator running with its webhooks?",
        concat(
            "the approval of TrainingBudget ",
            budget,
            f" must be recorded: {APPROVED_BY_ANNOTATION} must be ",
            USERNAME,
            f" and {APPROVED_AT_ANNOTATION} the RFC 3339 time of this approval. "
            "gpu-budget-operator's admission webhook records both; is the operator running "
            "with its webhooks?",
        ),
    )
    record_goes_with_amount = _validation(
        "size(variables.changed) == 0 || !variables.isFinance || variables.hasAmount || "
        f"!({by} in variables.newAnnotations || {at} in variables.newAnnotations)",
        f"{APPROVED_BY_ANNOTATION} and {APPROVED_AT_ANNOTATION} record an approval: remove them "
        f"with {APPROVED_AMOUNT_ANNOTATION}",
        concat(
            "TrainingBudget ",
            budget,
            f" has no {APPROVED_AMOUNT_ANNOTATION}, so it may not keep an approval record: "
            f"remove {APPROVED_BY_ANNOTATION} and {APPROVED_AT_ANNOTATION} with it",
        ),
    )
    policy = _policy(
        APPROVAL_GUARD,
        {
            "paramKind": {"apiVersion": API_VERSION, "kind": "BudgetPolicy"},
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [GROUP],
                        "apiVersions": ["*"],
                        "operations": ["CREATE", "UPDATE"],
                        # The main resource only: the operator writes status through
                        # the status subresource, which cannot change annotations.
                        "resources": ["trainingbudgets"],
                    }
                ]
            },
            "variables": variables,
            "validations": [finance_only, record_is_true, record_goes_with_amount],
        },
    )
    binding = _binding(
        APPROVAL_GUARD,
        param_ref={"name": policy_name, "parameterNotFoundAction": "Deny"},
    )
    return [policy, binding]


# ---------------------------------------------------------------------- hold guard


def hold_guard_name(kind: WorkloadKind) -> str:
    return f"{NAME_PREFIX}hold-guard-{kind.adapter.plural}"


def hold_guard(kind: WorkloadKind, operator_usernames: Sequence[str]) -> list[dict[str, Any]]:
    """Only the operator resumes what it holds; nobody resumes what it killed."""
    held, killed = cel_string(HELD_ANNOTATION), cel_string(KILLED_ANNOTATION)
    what = kind.adapter.kind
    operators = ", ".join(operator_usernames)
    variables = [
        {"name": "newAnnotations", "expression": NEW_ANNOTATIONS},
        {"name": "oldAnnotations", "expression": "oldObject.metadata.?annotations.orValue({})"},
        {
            "name": "isOperator",
            "expression": f"request.userInfo.username in {cel_list(operator_usernames)}",
        },
        {
            "name": "resumed",
            "expression": f"({kind.held('oldObject')}) && !({kind.held('object')})",
        },
        {"name": "killed", "expression": f"{killed} in variables.oldAnnotations"},
        {"name": "workload", "expression": DISPLAY_NAME},
        {
            "name": "why",
            "expression": f"variables.oldAnnotations[?{killed}].orValue("
            f"variables.oldAnnotations[?{held}].orValue(''))",
        },
        {
            "name": "budget",
            "expression": f"object.metadata.?labels[?{cel_string(BUDGET_LABEL)}].orValue('')",
        },
    ]
    workload, why, budget = Cel("variables.workload"), Cel("variables.why"), Cel("variables.budget")
    never_resume_killed = _validation(
        "!variables.killed || !variables.resumed",
        f"this {what} was killed by gpu-budget-operator ({KILLED_ANNOTATION}) and may never "
        f"run again: nobody may release {kind.switch}",
        concat(
            f"{what} ",
            workload,
            " was killed by gpu-budget-operator (",
            why,
            f") and may never run again: nobody may release {kind.switch}. Start a new {what} "
            "with a new TrainingBudget instead.",
        ),
    )
    only_operator_resumes = _validation(
        "variables.isOperator || !variables.resumed",
        f"this {what} is held by gpu-budget-operator ({HELD_ANNOTATION}); only the operator "
        f"({operators}) may release {kind.switch}, which it does when the budget allows",
        concat(
            f"{what} ",
            workload,
            " is held by gpu-budget-operator (",
            why,
            f"); only the operator ({operators}) may release {kind.switch}, which it does when "
            "TrainingBudget ",
            budget,
            " allows it; `kubectl describe trainingbudget ",
            budget,
            " -n ",
            NAMESPACE,
            "` says why it is held.",
        ),
    )
    annotations_stay = _validation(
        f"variables.isOperator || {cel_list([HELD_ANNOTATION, KILLED_ANNOTATION])}.all(k, "
        "!(k in variables.oldAnnotations) || (k in variables.newAnnotations && "
        "variables.newAnnotations[k] == variables.oldAnnotations[k]))",
        f"only gpu-budget-operator ({operators}) may remove or change {HELD_ANNOTATION} and "
        f"{KILLED_ANNOTATION}",
        concat(
            f"{what} ",
            workload,
            " is held by gpu-budget-operator (",
            why,
            f"): only the operator ({operators}) may remove or change {HELD_ANNOTATION} and "
            f"{KILLED_ANNOTATION}.",
        ),
    )
    policy = _policy(
        hold_guard_name(kind),
        {
            "matchConstraints": {
                "resourceRules": [_resource_rule(kind.adapter, ["UPDATE"])],
            },
            "matchConditions": [
                {
                    "name": "held-or-killed",
                    "expression": f"oldObject.metadata.?annotations.orValue({{}}).exists(k, "
                    f"k in {cel_list([HELD_ANNOTATION, KILLED_ANNOTATION])})",
                }
            ],
            "variables": variables,
            "validations": [never_resume_killed, only_operator_resumes, annotations_stay],
        },
    )
    return [policy, _binding(hold_guard_name(kind))]


# ------------------------------------------------------------------ require budget


def require_budget_name(kind: WorkloadKind) -> str:
    return f"{NAME_PREFIX}require-budget-{kind.adapter.plural}"


def _gpu_requested(container: str) -> str:
    """CEL: the container asks for a GPU, in its limits or its requests.

    A quantity is a string in built-in kinds but may be a number in custom
    resources (JSON ``8``), so it is compared as a string; the default is a
    string too, or the type checker would bind ``string()`` to ints only.
    """
    gpu = cel_string(GPU_RESOURCE)
    return " || ".join(
        f"string({container}.?resources.?{section}[?{gpu}].orValue('0')) != '0'"
        for section in ("limits", "requests")
    )


def require_budget(kind: WorkloadKind) -> list[dict[str, Any]]:
    """In opted-in namespaces, a GPU workload must name the budget it spends from."""
    what = kind.adapter.kind
    label = cel_string(BUDGET_LABEL)
    has_label = "{o}.metadata.?labels[?" + label + "].orValue('') != ''"
    conditions = [
        {
            "name": "created-or-label-removed",
            "expression": "request.operation == 'CREATE' || ("
            + has_label.format(o="oldObject")
            + " && !("
            + has_label.format(o="object")
            + "))",
        },
        {"name": "no-budget-label", "expression": "!(" + has_label.format(o="object") + ")"},
    ]
    if kind.bare_pods_only:
        conditions.append(
            {
                "name": "bare-pod",
                "expression": "!object.metadata.?ownerReferences.orValue([])"
                ".exists(r, r.?controller.orValue(false))",
            }
        )
    gpus = (
        "variables.podSpecs.exists(s, "
        f"s.?containers.orValue([]).exists(c, {_gpu_requested('c')}) || "
        f"s.?initContainers.orValue([]).exists(c, {_gpu_requested('c')}))"
    )
    attach = (
        f"Attach it to a TrainingBudget: add the label {BUDGET_LABEL}: <budget name> to the "
        f"{what}'s metadata.labels"
    )
    validation = _validation(
        f"!({gpus})",
        f"this namespace requires a TrainingBudget for every GPU workload "
        f"({REQUIRE_BUDGET_LABEL}=true), and this {what} requests {GPU_RESOURCE} without the "
        f"{BUDGET_LABEL} label. {attach}.",
        concat(
            f"{what} ",
            Cel(DISPLAY_NAME),
            f" requests {GPU_RESOURCE} but has no {BUDGET_LABEL} label, and namespace ",
            NAMESPACE,
            " requires a TrainingBudget for every GPU workload (it is labelled "
            f"{REQUIRE_BUDGET_LABEL}=true). {attach} (`kubectl get trainingbudgets -n ",
            NAMESPACE,
            "` lists the budgets).",
        ),
        reason="Invalid",
    )
    policy = _policy(
        require_budget_name(kind),
        {
            "matchConstraints": {
                "resourceRules": [_resource_rule(kind.adapter, ["CREATE", "UPDATE"])],
            },
            "matchConditions": conditions,
            "variables": [{"name": "podSpecs", "expression": kind.pod_specs_cel}],
            "validations": [validation],
        },
    )
    binding = _binding(
        require_budget_name(kind),
        match_resources={
            "namespaceSelector": {"matchLabels": {REQUIRE_BUDGET_LABEL: "true"}},
        },
    )
    return [policy, binding]


# ------------------------------------------------------------------------ render


def render(operator_usernames: Sequence[str], policy_name: str = "default") -> list[dict[str, Any]]:
    """Every policy and binding, for an operator that runs as one of ``operator_usernames``.

    ``operator_usernames`` are Kubernetes usernames: ``admin`` on the local
    cluster, ``system:serviceaccount:<namespace>:<name>`` (see
    :func:`service_account_username`) when deployed by the Helm chart.
    """
    if not operator_usernames or not all(operator_usernames):
        raise ValueError("at least one non-empty operator username is needed")
    manifests = approval_guard(policy_name)
    for kind in WORKLOAD_KINDS:
        manifests += hold_guard(kind, operator_usernames)
    for kind in WORKLOAD_KINDS:
        manifests += require_budget(kind)
    return manifests


def to_yaml(manifests: Sequence[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(manifests, sort_keys=False, width=100)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gpu_budget.admission_policies",
        description="Print gpu-budget-operator's ValidatingAdmissionPolicies as YAML.",
    )
    parser.add_argument(
        "--operator-username",
        action="append",
        default=[],
        help="Username the operator runs as (repeatable), e.g. admin on the local cluster.",
    )
    parser.add_argument(
        "--operator-service-account",
        action="append",
        default=[],
        metavar="NAMESPACE/NAME",
        help="ServiceAccount the operator runs as (repeatable).",
    )
    parser.add_argument(
        "--policy-name",
        default="default",
        help="BudgetPolicy whose spec.financeGroups say who finance is (default: default).",
    )
    args = parser.parse_args(argv)
    usernames = list(args.operator_username)
    for ref in args.operator_service_account:
        namespace, _, name = ref.partition("/")
        if not namespace or not name:
            parser.error(f"--operator-service-account {ref!r}: expected NAMESPACE/NAME")
        usernames.append(service_account_username(namespace, name))
    if not usernames:
        parser.error(
            "give the operator's identity: --operator-username or --operator-service-account"
        )
    sys.stdout.write(to_yaml(render(usernames, policy_name=args.policy_name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
