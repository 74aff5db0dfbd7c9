"""ValidatingAdmissionPolicies that the API server itself enforces, generated from Python.

Guards that must hold even while the operator is down, so they live in the API
server as CEL rather than in the operator's webhooks. The threat they answer:
an ML engineer with only namespace rights (workloads, TrainingBudgets) must not
get GPU time past her budget.

* **Approval guard** (``trainingbudgets``): only members of the finance groups
  of the ``BudgetPolicy`` (``spec.financeGroups``, read as the policy's params,
  so a change takes effect at once) may set, change or remove the finance
  approval annotations. The approval record must be true: when the amount
  changes, ``approved-by`` must be the requesting user, ``approved-at`` a fresh
  RFC 3339 time and ``approved-cap`` a number (the cap finance saw; the
  operator never lets the approval cover more). The operator's mutating
  webhook writes all three; if it is not running, approvals are refused rather
  than recorded wrongly, while every other edit of a budget still works.
* **Budget guard** (``trainingbudgets``, params ``BudgetPolicy``): a budget's
  action at the cap is one the policy allows (``spec.allowedActions``); an
  Alert-only budget stays within the approval ceiling unless the policy says
  otherwise (``spec.alertAboveCeiling``); a budget in a namespace the platform
  team attributed (labels ``gpubudget.dev/team``, ``gpubudget.dev/cost-center``)
  names no other team or cost centre. Checked when a budget's spec is written.
* **Finalizer guard** (``trainingbudgets``): only the operator removes its
  finalizer, which it does once it has held the budget's workloads and
  recorded their spend.
* **Hold guard** (each workload kind): a workload the operator holds
  (``gpubudget.dev/held``) or killed (``gpubudget.dev/killed``) may be
  resumed, and those annotations removed or changed, only by the operator;
  a killed workload may be resumed by nobody, the operator included.
* **Workload guard** (each workload kind, the operator exempt): a workload's
  budget label cannot be changed or removed; its templates carry no other
  budget; the operator's records (``gpubudget.dev/admitted``,
  ``gpubudget.dev/spend-record``) are the operator's to write; and a labelled
  workload its budget never admitted, suspended by its user, may not be
  resumed by her (the operator's webhook normally turns that into a hold).
* **Require budget** (in namespaces labelled
  ``gpubudget.dev/require-budget=true``): a Job, JobSet, PyTorchJob or Pod
  (not one of the former's) that requests GPUs (a resource the policy's
  ``spec.gpuResources`` counts, or a DRA resource claim) must carry the
  ``gpubudget.dev/budget`` label; a Deployment, StatefulSet, ReplicaSet,
  DaemonSet or CronJob that requests GPUs is refused, labelled or not: a budget
  cannot stop its controller.

The operator's identity is a render-time argument (:func:`render`): it is a
fact of the deployment (who the operator runs as), known where the operator is
deployed, so it is rendered in next to the rest of the deployment (the Helm
chart, or ``admin`` on the local cluster), and nobody can widen it by editing a
cluster object. ``python -m gpu_budget.admission_policies --operator-username
admin`` prints the manifests as YAML.

Parameter-not-found is ``Deny`` for every guard with params (approval, budget,
require budget): without the ``BudgetPolicy`` the API server cannot know who
finance is, what a budget may choose, or which resources are GPUs, and failing
open would let anyone approve, or run GPUs unbudgeted. The price is that while
the policy object is missing *every* create and update of a TrainingBudget's
main resource is denied, and so is every create and update of the kinds the
require-budget policies match in require-budget namespaces, GPU or not (the API
server looks the params up before it evaluates anything; the denial names the
policy). The operator's status writes go to the ``status`` subresource, which
these policies do not match, so metering continues. The Helm chart and ``make
demo`` create the ``default`` policy.

Params are read with ``.?field.orValue(default)`` (the defaults of
:class:`gpu_budget.models.BudgetPolicySpec`): a policy stored before a field
existed still works. Every expression compiles on Kubernetes 1.37 (optional
types, the strings and lists extensions).
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
    ADMITTED_ANNOTATION,
    API_VERSION,
    APPROVAL_REASON_ANNOTATION,
    APPROVED_AMOUNT_ANNOTATION,
    APPROVED_AT_ANNOTATION,
    APPROVED_BY_ANNOTATION,
    APPROVED_CAP_ANNOTATION,
    BUDGET_LABEL,
    FINALIZER,
    GROUP,
    NAMESPACE_COST_CENTER_LABEL,
    NAMESPACE_TEAM_LABEL,
    SPEND_RECORD_ANNOTATION,
)
from gpu_budget.models import (
    DEFAULT_GPU_RESOURCES,
    BudgetPolicySpec,
    EnforcementAction,
    GpuResource,
    GpuShare,
)
from gpu_budget.workloads import (
    ADAPTERS,
    CONTROLLERS,
    HELD_ANNOTATION,
    KILLED_ANNOTATION,
    ChildOfControllers,
    PodTemplates,
    WorkloadAdapter,
)

ADMISSION_API_VERSION = "admissionregistration.k8s.io/v1"
NAME_PREFIX = f"{GROUP}-"
REQUIRE_BUDGET_LABEL = f"{GROUP}/require-budget"
"""Namespaces labelled ``gpubudget.dev/require-budget=true`` reject unbudgeted GPU workloads."""

APPROVAL_ANNOTATIONS = (
    APPROVED_AMOUNT_ANNOTATION,
    APPROVED_BY_ANNOTATION,
    APPROVED_AT_ANNOTATION,
    APPROVED_CAP_ANNOTATION,
    APPROVAL_REASON_ANNOTATION,
)
"""The finance approval, its record and its reason: only finance may touch any of them."""

OPERATOR_RECORDS = (ADMITTED_ANNOTATION, SPEND_RECORD_ANNOTATION)
"""Annotations on workloads that only the operator writes."""

LABELS = {
    "app.kubernetes.io/name": "gpu-budget-operator",
    "app.kubernetes.io/component": "admission",
    "app.kubernetes.io/managed-by": "gpu-budget-operator",
}
"""On every rendered object, so they can be listed (and pruned) together."""

RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
)
NUMBER_PATTERN = r"^[0-9]{1,40}(\.[0-9]{0,40})?([eE][+-]?[0-9]{1,2})?$"
"""A plain non-negative decimal number, short enough that ``double()`` never overflows."""

_POLICY_DEFAULTS = BudgetPolicySpec()
DEFAULT_ALLOWED_ACTIONS: tuple[str, ...] = tuple(
    EnforcementAction(a).value for a in _POLICY_DEFAULTS.allowed_actions
)
DEFAULT_APPROVAL_CEILING = float(_POLICY_DEFAULTS.approval_ceiling)
DEFAULT_ALERT_ABOVE_CEILING = _POLICY_DEFAULTS.alert_above_ceiling

# CEL fragments shared by the policies. ``oldObject`` is null on CREATE.
NEW_ANNOTATIONS = "object.metadata.?annotations.orValue({})"
OLD_ANNOTATIONS = "oldObject == null ? {} : oldObject.metadata.?annotations.orValue({})"
NEW_LABELS = "object.metadata.?labels.orValue({})"
OLD_LABELS = "oldObject == null ? {} : oldObject.metadata.?labels.orValue({})"
DISPLAY_NAME = (
    "request.namespace + '/' + (object.metadata.?name.orValue('') != '' ? "
    "object.metadata.name : object.metadata.?generateName.orValue('') + '*')"
)


def cel_string(value: str) -> str:
    """A CEL string literal (JSON string syntax is valid CEL)."""
    return json.dumps(value)


def cel_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(cel_string(v) for v in values) + "]"


def cel_double(value: float) -> str:
    """A CEL double literal (``10000.0``, never the int ``10000``)."""
    return repr(float(value))


@dataclass(frozen=True)
class Cel:
    """A CEL expression among literal text, for :func:`concat`."""

    expression: str


def concat(*parts: str | Cel) -> str:
    """A CEL string expression: literal text and expressions, joined with ``+``."""
    return " + ".join(f"({p.expression})" if isinstance(p, Cel) else cel_string(p) for p in parts)


USERNAME = Cel("request.userInfo.username")
NAMESPACE = Cel("request.namespace")


def is_operator(operator_usernames: Sequence[str]) -> str:
    """CEL: the request is the operator's."""
    return f"request.userInfo.username in {cel_list(operator_usernames)}"


@dataclass(frozen=True)
class WorkloadKind:
    """One workload kind as the policies read it: the CEL fragments its adapter gives.

    The fragments live with the kind, in its module under
    :mod:`gpu_budget.workloads`; what only some kinds have is a capability.
    """

    adapter: WorkloadAdapter

    @property
    def switch(self) -> str:
        """How the kind is held, for messages: ``spec.suspend``, a scheduling gate, ..."""
        return self.adapter.switch

    def held(self, obj: str) -> str:
        """CEL: ``obj`` is suspended (or gated) right now."""
        return self.adapter.held(obj)

    @property
    def pod_specs_cel(self) -> str:
        """CEL over ``object``: the list of its pod specs (templates)."""
        return self.adapter.pod_specs_cel

    @property
    def templates_cel(self) -> str | None:
        """CEL over ``{o}``: the templates whose metadata its pods (or child workloads)
        get, which must not name another budget; None for a kind without templates."""
        return self.adapter.templates_cel if isinstance(self.adapter, PodTemplates) else None

    def templates(self, obj: str) -> str:
        if not isinstance(self.adapter, PodTemplates):
            raise ValueError(f"{self.adapter.kind} has no templates")
        return self.adapter.templates(obj)


WORKLOAD_KINDS: tuple[WorkloadKind, ...] = tuple(WorkloadKind(adapter) for adapter in ADAPTERS)

STOPPABLE = (
    ", ".join(kind.adapter.kind for kind in WORKLOAD_KINDS[:-1])
    + f" and {WORKLOAD_KINDS[-1].adapter.kind}"
)
"""For messages: the kinds a budget can hold and stop."""


def controlled_by_workload(obj: str) -> str:
    """CEL: ``obj`` names a Job, JobSet or PyTorchJob as its controller.

    Anyone may write an owner reference; the operator's webhook checks that the
    owner exists and vouches for the object, which CEL cannot. These policies
    exempt such objects only from checks their controller's own checks cover.
    """
    kinds = " || ".join(
        f"(r.?apiVersion.orValue('').startsWith({cel_string(a.group + '/')}) && "
        f"r.?kind.orValue('') == {cel_string(a.kind)})"
        for a in CONTROLLERS
    )
    return (
        f"{obj}.metadata.?ownerReferences.orValue([])"
        f".exists(r, r.?controller.orValue(false) == true && ({kinds}))"
    )


def service_account_username(namespace: str, name: str) -> str:
    """The username Kubernetes gives a ServiceAccount, for :func:`render`."""
    return f"system:serviceaccount:{namespace}:{name}"


def _rule(group: str, version: str, plural: str, operations: Sequence[str]) -> dict[str, Any]:
    return {
        "apiGroups": [group],
        "apiVersions": [version],
        "operations": list(operations),
        "resources": [plural],
    }


def _resource_rule(adapter: WorkloadAdapter, operations: Sequence[str]) -> dict[str, Any]:
    return _rule(adapter.group, adapter.version, adapter.plural, operations)


def _budget_rule(operations: Sequence[str]) -> dict[str, Any]:
    """TrainingBudgets' main resource only: the operator writes status through the
    status subresource, which these policies never judge."""
    return _rule(GROUP, "*", "trainingbudgets", operations)


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


def _policy_params(policy_name: str) -> dict[str, Any]:
    """The BudgetPolicy as params: missing, the request is denied (see the module doc)."""
    return {"name": policy_name, "parameterNotFoundAction": "Deny"}


PARAM_KIND = {"apiVersion": API_VERSION, "kind": "BudgetPolicy"}

REQUIRE_BUDGET_NAMESPACES = {"namespaceSelector": {"matchLabels": {REQUIRE_BUDGET_LABEL: "true"}}}


# ------------------------------------------------------------------ approval guard

APPROVAL_GUARD = f"{NAME_PREFIX}approval-guard"


def approval_guard(policy_name: str = "default") -> list[dict[str, Any]]:
    """Only finance may touch the approval; the record must name the approver, freshly."""
    amount, by, at, cap = (cel_string(k) for k in APPROVAL_ANNOTATIONS[:4])
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
        {
            # The regex first: a non-number is a denial, never a CEL error.
            "name": "capIsNumber",
            "expression": f"variables.newAnnotations[?{cap}].orValue('')"
            f".matches({cel_string(NUMBER_PATTERN)}) && "
            f"double(variables.newAnnotations[{cap}]) >= 0.0",
        },
        {"name": "budget", "expression": DISPLAY_NAME},
        {"name": "name", "expression": "object.metadata.?name.orValue('<name>')"},
    ]
    budget, name = Cel("variables.budget"), Cel("variables.name")
    record = f"{APPROVED_BY_ANNOTATION}, {APPROVED_AT_ANNOTATION}, {APPROVED_CAP_ANNOTATION}"
    finance_only = _validation(
        "size(variables.changed) == 0 || variables.isFinance",
        f"only members of the finance groups of BudgetPolicy {policy_name} "
        f"(spec.financeGroups) may set, change or remove {APPROVED_AMOUNT_ANNOTATION} "
        f"(or its record {record})",
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
        f"variables.oldAnnotations[{at}] != variables.newAnnotations[{at}]) && "
        f"(!(variables.amountChanged || {cap} in variables.changed) || variables.capIsNumber))",
        f"an approval must be recorded: {APPROVED_BY_ANNOTATION} must be the approving user, "
        f"{APPROVED_AT_ANNOTATION} the time of the approval and {APPROVED_CAP_ANNOTATION} the "
        "budget's spec.costCap at the approval, as a number. gpu-budget-operator's admission "
        "webhook records all three; is the operator running with its webhooks?",
        concat(
            "the approval of TrainingBudget ",
            budget,
            f" must be recorded: {APPROVED_BY_ANNOTATION} must be ",
            USERNAME,
            f", {APPROVED_AT_ANNOTATION} the RFC 3339 time of this approval and "
            f"{APPROVED_CAP_ANNOTATION} the budget's spec.costCap as a number (the approval "
            "never covers more than that cap). gpu-budget-operator's admission webhook records "
            "all three; is the operator running with its webhooks?",
        ),
    )
    record_goes_with_amount = _validation(
        "size(variables.changed) == 0 || !variables.isFinance || variables.hasAmount || "
        f"!{cel_list(APPROVAL_ANNOTATIONS[1:])}.exists(k, k in variables.newAnnotations)",
        f"{record} record an approval: remove them with {APPROVED_AMOUNT_ANNOTATION}",
        concat(
            "TrainingBudget ",
            budget,
            f" has no {APPROVED_AMOUNT_ANNOTATION}, so it may not keep an approval record: "
            f"remove {record} with it",
        ),
    )
    policy = _policy(
        APPROVAL_GUARD,
        {
            "paramKind": dict(PARAM_KIND),
            "matchConstraints": {"resourceRules": [_budget_rule(["CREATE", "UPDATE"])]},
            "variables": variables,
            "validations": [finance_only, record_is_true, record_goes_with_amount],
        },
    )
    return [policy, _binding(APPROVAL_GUARD, param_ref=_policy_params(policy_name))]


# -------------------------------------------------------------------- budget guard

BUDGET_GUARD = f"{NAME_PREFIX}budget-guard"


def budget_guard(policy_name: str = "default") -> list[dict[str, Any]]:
    """A budget chooses what the BudgetPolicy allows, and is attributed as its namespace is.

    Judged when a budget is created or its spec is written, not on metadata-only
    updates: the operator's finalizer and kopf's annotations must still get through
    for a budget written before the policy changed.
    """
    team_label, cost_center_label = (
        cel_string(k) for k in (NAMESPACE_TEAM_LABEL, NAMESPACE_COST_CENTER_LABEL)
    )
    variables = [
        {"name": "budget", "expression": DISPLAY_NAME},
        {
            "name": "action",
            "expression": "object.spec.?enforcement.?action.orValue("
            f"{cel_string(EnforcementAction.SUSPEND.value)})",
        },
        {
            "name": "allowedActions",
            "expression": "params.?spec.?allowedActions.orValue("
            f"{cel_list(DEFAULT_ALLOWED_ACTIONS)})",
        },
        {
            "name": "alertAboveCeiling",
            "expression": "params.?spec.?alertAboveCeiling.orValue("
            f"{str(DEFAULT_ALERT_ABOVE_CEILING).lower()}) == true",
        },
        {
            "name": "ceiling",
            "expression": "double(params.?spec.?approvalCeiling.orValue("
            f"{cel_double(DEFAULT_APPROVAL_CEILING)}))",
        },
        # A JSON integer may arrive as an int: compare doubles.
        {"name": "costCap", "expression": "double(object.spec.?costCap.orValue(0.0))"},
        {
            "name": "namespaceTeam",
            "expression": f"namespaceObject.metadata.?labels[?{team_label}].orValue('')",
        },
        {
            "name": "namespaceCostCenter",
            "expression": f"namespaceObject.metadata.?labels[?{cost_center_label}].orValue('')",
        },
    ]
    budget = Cel("variables.budget")
    allowed = _validation(
        "variables.action in variables.allowedActions",
        f"BudgetPolicy {policy_name} does not allow this action at the cap "
        "(spec.enforcement.action): choose one of its spec.allowedActions, or ask the platform "
        "team to allow it",
        concat(
            "TrainingBudget ",
            budget,
            " chooses spec.enforcement.action ",
            Cel("variables.action"),
            f", which BudgetPolicy {policy_name} does not allow: choose one of [",
            Cel("variables.allowedActions.join(', ')"),
            "], or ask the platform team to allow it (BudgetPolicy spec.allowedActions).",
        ),
    )
    alert = cel_string(EnforcementAction.ALERT.value)
    alert_within_ceiling = _validation(
        f"variables.alertAboveCeiling || variables.action != {alert} || "
        "variables.costCap <= variables.ceiling",
        f"an Alert-only budget does not stop its workloads at the cap, so BudgetPolicy "
        f"{policy_name} allows Alert only for a spec.costCap within its approval ceiling "
        "(spec.approvalCeiling): choose Suspend or Kill, lower the cap, or ask the platform "
        "team to allow it (spec.alertAboveCeiling)",
        concat(
            "TrainingBudget ",
            budget,
            " chooses spec.enforcement.action Alert with a spec.costCap of $",
            Cel("string(variables.costCap)"),
            ", above the approval ceiling of $",
            Cel("string(variables.ceiling)"),
            f" (BudgetPolicy {policy_name}): an Alert-only budget does not stop its workloads "
            "at the cap, so above the ceiling it must Suspend or Kill. Choose Suspend or Kill, "
            "lower spec.costCap to the ceiling, or ask the platform team to allow it "
            "(BudgetPolicy spec.alertAboveCeiling).",
        ),
    )

    def attributed(what: str, field: str, label: str, variable: str) -> dict[str, Any]:
        value = f"object.spec.?owner.?{field}"
        return _validation(
            f"variables.{variable} == '' || "
            f"{value}.orValue(variables.{variable}) == variables.{variable}",
            f"budgets in this namespace are attributed to a {what} by the platform team (the "
            f"namespace's label {label}): leave spec.owner.{field} out or set it to that {what}",
            concat(
                "budgets in namespace ",
                NAMESPACE,
                f" are attributed to {what} ",
                Cel(f"variables.{variable}"),
                f" by the platform team (the namespace's label {label}), but TrainingBudget ",
                budget,
                f" sets spec.owner.{field}: ",
                Cel(f"string({value}.orValue(''))"),
                f". Leave spec.owner.{field} out or set it to ",
                Cel(f"variables.{variable}"),
                ".",
            ),
        )

    policy = _policy(
        BUDGET_GUARD,
        {
            "paramKind": dict(PARAM_KIND),
            "matchConstraints": {"resourceRules": [_budget_rule(["CREATE", "UPDATE"])]},
            "matchConditions": [
                {
                    "name": "spec-written",
                    "expression": "request.operation == 'CREATE' || "
                    "object.?spec.orValue({}) != oldObject.?spec.orValue({})",
                }
            ],
            "variables": variables,
            "validations": [
                allowed,
                alert_within_ceiling,
                attributed("team", "team", NAMESPACE_TEAM_LABEL, "namespaceTeam"),
                attributed(
                    "cost centre", "costCenter", NAMESPACE_COST_CENTER_LABEL, "namespaceCostCenter"
                ),
            ],
        },
    )
    return [policy, _binding(BUDGET_GUARD, param_ref=_policy_params(policy_name))]


# ----------------------------------------------------------------- finalizer guard

FINALIZER_GUARD = f"{NAME_PREFIX}finalizer-guard"


def finalizer_guard(operator_usernames: Sequence[str]) -> list[dict[str, Any]]:
    """Only the operator takes its finalizer off a budget."""
    finalizer = cel_string(FINALIZER)
    operators = ", ".join(operator_usernames)
    validation = _validation(
        is_operator(operator_usernames),
        f"only the operator ({operators}) may remove the finalizer {FINALIZER}: it does "
        "so once it has held the budget's workloads and recorded their spend. Deleting the "
        "budget is enough; if it stays Terminating, the operator is not running",
        concat(
            "user ",
            USERNAME,
            f" may not remove the finalizer {FINALIZER} from TrainingBudget ",
            Cel(DISPLAY_NAME),
            f": only the operator ({operators}) may, once it has held the budget's "
            "workloads and recorded their spend (so a budget recreated under the same name "
            "inherits it). Deleting the budget is enough; if it stays Terminating, the operator "
            "is not running.",
        ),
    )
    policy = _policy(
        FINALIZER_GUARD,
        {
            "matchConstraints": {"resourceRules": [_budget_rule(["UPDATE"])]},
            "matchConditions": [
                {
                    "name": "finalizer-removed",
                    "expression": f"{finalizer} in oldObject.metadata.?finalizers.orValue([]) && "
                    f"!({finalizer} in object.metadata.?finalizers.orValue([]))",
                }
            ],
            "validations": [validation],
        },
    )
    return [policy, _binding(FINALIZER_GUARD)]


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
        {"name": "isOperator", "expression": is_operator(operator_usernames)},
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


# ------------------------------------------------------------------ workload guard


def workload_guard_name(kind: WorkloadKind) -> str:
    return f"{NAME_PREFIX}workload-guard-{kind.adapter.plural}"


def _templates_agree(templates: str, labels: str) -> str:
    """CEL: every template that carries the budget label carries the workload's value."""
    label = cel_string(BUDGET_LABEL)
    return (
        f"({templates}).all(t, !({label} in t.?metadata.?labels.orValue({{}})) || "
        f"({label} in {labels} && t.metadata.labels[{label}] == {labels}[{label}]))"
    )


def workload_guard(kind: WorkloadKind, operator_usernames: Sequence[str]) -> list[dict[str, Any]]:
    """What a workload's user may not do to its budget, the operator exempt.

    Every rule judges a change, never a state the object was already in, so
    controllers' and the garbage collector's updates of old objects go through.
    """
    what = kind.adapter.kind
    operators = ", ".join(operator_usernames)
    label = cel_string(BUDGET_LABEL)
    admitted = cel_string(ADMITTED_ANNOTATION)
    records = cel_list(OPERATOR_RECORDS)
    record_changed = (
        "(k in variables.oldAnnotations) != (k in variables.newAnnotations) || "
        "(k in variables.newAnnotations && variables.oldAnnotations[k] != "
        "variables.newAnnotations[k])"
    )
    variables = [
        {"name": "newLabels", "expression": NEW_LABELS},
        {"name": "oldLabels", "expression": OLD_LABELS},
        {"name": "newAnnotations", "expression": NEW_ANNOTATIONS},
        {"name": "oldAnnotations", "expression": OLD_ANNOTATIONS},
        {"name": "budget", "expression": f"variables.newLabels[?{label}].orValue('')"},
        {"name": "oldBudget", "expression": f"variables.oldLabels[?{label}].orValue('')"},
        {"name": "workload", "expression": DISPLAY_NAME},
        {"name": "controlledByWorkload", "expression": controlled_by_workload("object")},
        {"name": "changedRecords", "expression": f"{records}.filter(k, {record_changed})"},
    ]
    if kind.templates_cel is not None:
        variables.append({"name": "templates", "expression": kind.templates("object")})
    workload, old_budget = Cel("variables.workload"), Cel("variables.oldBudget")

    bound = _validation(
        f"request.operation != 'UPDATE' || !({label} in variables.oldLabels) || "
        f"({label} in variables.newLabels && "
        f"variables.newLabels[{label}] == variables.oldLabels[{label}])",
        f"a workload is bound to its TrainingBudget for good: the label {BUDGET_LABEL} may not "
        f"be changed or removed. To spend from another budget, create a new {what} with "
        f"{BUDGET_LABEL}: <other budget>",
        concat(
            f"{what} ",
            workload,
            " is bound to TrainingBudget ",
            old_budget,
            f" for good: its label {BUDGET_LABEL} may not be changed or removed. To spend from "
            f"another budget, create a new {what} with the label {BUDGET_LABEL}: <other budget>.",
        ),
    )
    records_stay = _validation(
        "size(variables.changedRecords) == 0",
        f"only the operator ({operators}) may set, change or remove "
        f"{ADMITTED_ANNOTATION} (the budget that admitted the workload) and "
        f"{SPEND_RECORD_ANNOTATION} (its spend when it was stopped): leave them as they are, "
        "and leave them out of a new workload",
        concat(
            "user ",
            USERNAME,
            " may not set, change or remove ",
            Cel("variables.changedRecords.join(', ')"),
            f" on {what} ",
            workload,
            f": only the operator ({operators}) writes them. ",
            Cel(
                "request.operation == 'CREATE' ? 'Leave them out of a new workload (a manifest "
                "copied from an existing one carries them).' : 'Leave them as they are.'"
            ),
        ),
    )
    old_held = f"({kind.held('oldObject')})"
    new_held = f"({kind.held('object')})"
    hold_annotations = cel_list([HELD_ANNOTATION, KILLED_ANNOTATION])
    not_resumed_unadmitted = _validation(
        # Workloads carrying the operator's hold or kill are the hold guard's business.
        f"request.operation != 'UPDATE' || variables.controlledByWorkload || "
        "(variables.budget == '' && variables.oldBudget == '') || "
        f"!{old_held} || {new_held} || {admitted} in variables.oldAnnotations || "
        f"{hold_annotations}.exists(k, k in variables.oldAnnotations)",
        f"only the operator ({operators}) may release {kind.switch} of a {what} its "
        "TrainingBudget has not admitted, which it does when the budget allows. The "
        "operator's admission webhook normally turns this release into a hold for the operator "
        "to release; it did not answer: is the operator running with its webhooks? Retry "
        "once it is",
        concat(
            f"{what} ",
            workload,
            " is suspended and TrainingBudget ",
            Cel("variables.budget != '' ? variables.budget : variables.oldBudget"),
            f" has not admitted it ({ADMITTED_ANNOTATION}): only the operator "
            f"({operators}) may release {kind.switch}, which it does when the budget allows. "
            "The operator's admission webhook normally turns this release into a hold for the "
            "operator to release; it did not answer, so is the operator running with its "
            "webhooks? Retry once it is; `kubectl describe trainingbudget ",
            Cel("variables.budget != '' ? variables.budget : variables.oldBudget"),
            " -n ",
            NAMESPACE,
            "` shows the budget.",
        ),
    )
    validations = [bound]
    if kind.templates_cel is not None:
        offending = (
            f"variables.templates.filter(t, {label} in t.?metadata.?labels.orValue({{}}) && "
            f"!({label} in variables.newLabels && "
            f"t.metadata.labels[{label}] == variables.newLabels[{label}]))"
            f".map(t, string(t.metadata.labels[{label}])).distinct().join(', ')"
        )
        validations.append(
            _validation(
                f"variables.controlledByWorkload || "
                f"{_templates_agree('variables.templates', 'variables.newLabels')} || "
                # An object that disagreed before this policy is not made to agree by an
                # unrelated update (the garbage collector's, say).
                "(request.operation == 'UPDATE' && !("
                f"{_templates_agree(kind.templates('oldObject'), 'variables.oldLabels')}))",
                f"pods are charged to the TrainingBudget of their {what}, so its templates may "
                f"not name another budget: put the label {BUDGET_LABEL} on the {what}'s "
                "metadata.labels only, and leave it out of its templates",
                concat(
                    f"the templates of {what} ",
                    workload,
                    f" carry the label {BUDGET_LABEL}: ",
                    Cel(offending),
                    f", but the {what} ",
                    Cel(
                        f"variables.budget != '' ? 'spends from TrainingBudget ' + "
                        f"variables.budget : 'has no {BUDGET_LABEL} label'"
                    ),
                    f". Pods are charged to the budget of their {what}: put the label on the "
                    f"{what}'s metadata.labels only, and leave it out of its templates.",
                ),
            )
        )
    validations += [records_stay, not_resumed_unadmitted]
    policy = _policy(
        workload_guard_name(kind),
        {
            "matchConstraints": {
                "resourceRules": [_resource_rule(kind.adapter, ["CREATE", "UPDATE"])],
            },
            "matchConditions": [
                {"name": "not-the-operator", "expression": f"!({is_operator(operator_usernames)})"}
            ],
            "variables": variables,
            "validations": validations,
        },
    )
    return [policy, _binding(workload_guard_name(kind))]


# ------------------------------------------------------------------ require budget


def require_budget_name(kind: WorkloadKind) -> str:
    return f"{NAME_PREFIX}require-budget-{kind.adapter.plural}"


def gpu_rule(resource: GpuResource) -> str:
    """One ``gpuResources`` entry as the CEL policies match it, a string.

    ``+`` or ``-``: whether the resource counts as a GPU (a ``gpusPerUnit`` of 0
    does not); ``=`` or ``*``: an exact name or a prefix; then the name (without
    its ``*``). A string, because CEL literals in Kubernetes are homogeneous.
    """
    counts = GpuShare(resource.share) is GpuShare.MIG_SLICES or resource.gpus_per_unit != 0
    name = resource.resource
    match = "*" + name[:-1] if name.endswith("*") else "=" + name
    return ("+" if counts else "-") + match


DEFAULT_GPU_RULES = tuple(gpu_rule(r) for r in DEFAULT_GPU_RESOURCES)

GPU_RULES = (
    "params.?spec.?gpuResources.hasValue() ? params.spec.gpuResources.map(g, "
    f"((g.?share.orValue('PerUnit') == {cel_string(GpuShare.MIG_SLICES.value)} || "
    "double(g.?gpusPerUnit.orValue(1.0)) != 0.0) ? '+' : '-') + "
    "(string(g.?resource.orValue('')).endsWith('*') ? "
    "'*' + string(g.resource).substring(0, size(string(g.resource)) - 1) : "
    "'=' + string(g.?resource.orValue('')))) : "
    f"{cel_list(DEFAULT_GPU_RULES)}"
)
"""CEL: the policy's ``gpuResources`` (or the defaults) as :func:`gpu_rule` strings."""


def _is_gpu(key: str) -> str:
    """CEL: the resource named ``key`` is a GPU: the first rule that matches it counts."""
    matching = (
        "variables.gpuRules.filter(r, r.substring(1, 2) == '*' ? "
        f"{key}.startsWith(r.substring(2)) : {key} == r.substring(2))"
    )
    # Every GPU rule names a domain: cpu, memory and the like are ruled out at once.
    return f"({key}.contains('/') && size({matching}) > 0 && {matching}[0].startsWith('+'))"


def _gpu_keys(resources: str) -> str:
    """CEL: the GPU resources a map of quantities asks for (not quantity 0).

    A quantity is a string in built-in kinds but may be a number in custom
    resources (JSON ``8``), so it is compared as a string.
    """
    return f"{resources}.filter(k, string({resources}[k]) != '0' && {_is_gpu('k')})"


_CONTAINERS = "(s.?containers.orValue([]) + s.?initContainers.orValue([]))"
_QUANTITIES = "[c.?resources.?limits.orValue({}), c.?resources.?requests.orValue({})]"

REQUESTS_GPUS = (
    "variables.podSpecs.exists(s, size(s.?resourceClaims.orValue([])) > 0 || "
    f"{_CONTAINERS}.exists(c, {_QUANTITIES}.exists(m, size({_gpu_keys('m')}) > 0)))"
)
"""CEL: a pod spec asks for a GPU: a container's limits or requests, or a DRA claim."""

GPU_VARIABLES = [
    {"name": "gpuRules", "expression": GPU_RULES},
    {
        # For messages: every ask of a GPU resource, one per container and section.
        "name": "gpuAsks",
        "expression": f"variables.podSpecs.map(s, {_CONTAINERS}.map(c, "
        f"{_QUANTITIES}.map(m, {_gpu_keys('m')}))).flatten().flatten().flatten()",
    },
    {
        # Deduplicated among the first asks only: distinct() costs the square of
        # its list, and a large JobSet would run the message out of its budget.
        "name": "gpusAsked",
        "expression": "variables.gpuAsks.slice(0, "
        "size(variables.gpuAsks) < 16 ? size(variables.gpuAsks) : 16).distinct()",
    },
    {
        "name": "claims",
        "expression": "variables.podSpecs.exists(s, size(s.?resourceClaims.orValue([])) > 0)",
    },
    {
        # For messages: what it asks for.
        "name": "asks",
        "expression": "size(variables.gpusAsked) > 0 ? variables.gpusAsked.join(', ') + "
        "(variables.claims ? ' and DRA resource claims' : '') : "
        "'GPUs through DRA resource claims (spec.resourceClaims)'",
    },
]


def _gpu_variables() -> list[dict[str, str]]:
    """A copy of :data:`GPU_VARIABLES` for one policy."""
    return [dict(v) for v in GPU_VARIABLES]


def require_budget(kind: WorkloadKind, policy_name: str = "default") -> list[dict[str, Any]]:
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
    if isinstance(kind.adapter, ChildOfControllers):
        # Pods: those a Job, JobSet or PyTorchJob controls are checked at that workload.
        conditions.append(
            {
                "name": "not-a-workloads-pod",
                "expression": "!(" + controlled_by_workload("object") + ")",
            }
        )
    attach = (
        f"Attach it to a TrainingBudget: add the label {BUDGET_LABEL}: <budget name> to the "
        f"{what}'s metadata.labels"
    )
    validation = _validation(
        f"!({REQUESTS_GPUS})",
        f"this namespace requires a TrainingBudget for every GPU workload "
        f"({REQUIRE_BUDGET_LABEL}=true), and this {what} requests GPUs (a resource "
        f"BudgetPolicy {policy_name} counts in spec.gpuResources, or a DRA resource claim) "
        f"without the {BUDGET_LABEL} label. {attach}.",
        concat(
            f"{what} ",
            Cel(DISPLAY_NAME),
            " requests ",
            Cel("variables.asks"),
            f" but has no {BUDGET_LABEL} label, and namespace ",
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
            "paramKind": dict(PARAM_KIND),
            "matchConstraints": {
                "resourceRules": [_resource_rule(kind.adapter, ["CREATE", "UPDATE"])],
            },
            "matchConditions": conditions,
            "variables": [
                {"name": "podSpecs", "expression": kind.pod_specs_cel},
                *_gpu_variables(),
            ],
            "validations": [validation],
        },
    )
    binding = _binding(
        require_budget_name(kind),
        param_ref=_policy_params(policy_name),
        match_resources=json.loads(json.dumps(REQUIRE_BUDGET_NAMESPACES)),
    )
    return [policy, binding]


@dataclass(frozen=True)
class UnstoppableKind:
    """A kind whose controller recreates what a budget stops, so it may not hold GPUs."""

    kind: str
    group: str
    version: str
    plural: str
    template: str
    """CEL path from ``object`` to its pod template."""

    def template_of(self, obj: str) -> str:
        """CEL: the pod template of ``obj``, ``{}`` when it has none."""
        first, *rest = self.template.split(".")
        return f"{obj}.{first}" + "".join(f".?{part}" for part in rest) + ".orValue({})"


UNSTOPPABLE_KINDS: tuple[UnstoppableKind, ...] = (
    UnstoppableKind("Deployment", "apps", "v1", "deployments", "spec.template"),
    UnstoppableKind("StatefulSet", "apps", "v1", "statefulsets", "spec.template"),
    UnstoppableKind("ReplicaSet", "apps", "v1", "replicasets", "spec.template"),
    UnstoppableKind("DaemonSet", "apps", "v1", "daemonsets", "spec.template"),
    UnstoppableKind("CronJob", "batch", "v1", "cronjobs", "spec.jobTemplate.spec.template"),
)


def unstoppable_name(kind: UnstoppableKind) -> str:
    return f"{NAME_PREFIX}require-budget-{kind.plural}"


def require_stoppable(kind: UnstoppableKind, policy_name: str = "default") -> list[dict[str, Any]]:
    """In opted-in namespaces, GPUs only in kinds a budget can stop, labelled or not.

    Judged on CREATE and on an UPDATE that writes the pod template: a controller's
    scaling or the garbage collector's updates of an object older than the policy
    go through (its new pods are the Pod policy's business).
    """
    what = kind.kind
    instead = (
        f"A TrainingBudget can hold and stop only {STOPPABLE} (a {what}'s controller would "
        f"recreate what the budget stops): run the training as a Job, JobSet or PyTorchJob "
        f"with the label {BUDGET_LABEL}: <budget name>"
    )
    validation = _validation(
        f"!({REQUESTS_GPUS})",
        f"this namespace requires a TrainingBudget for every GPU workload "
        f"({REQUIRE_BUDGET_LABEL}=true), and this {what} requests GPUs. {instead}.",
        concat(
            f"{what} ",
            Cel(DISPLAY_NAME),
            " requests ",
            Cel("variables.asks"),
            ", and namespace ",
            NAMESPACE,
            " requires a TrainingBudget for every GPU workload (it is labelled "
            f"{REQUIRE_BUDGET_LABEL}=true). {instead}.",
        ),
        reason="Invalid",
    )
    policy = _policy(
        unstoppable_name(kind),
        {
            "paramKind": dict(PARAM_KIND),
            "matchConstraints": {
                "resourceRules": [
                    _rule(kind.group, kind.version, kind.plural, ["CREATE", "UPDATE"])
                ],
            },
            "matchConditions": [
                {
                    "name": "created-or-template-written",
                    "expression": "request.operation == 'CREATE' || "
                    f"{kind.template_of('object')} != {kind.template_of('oldObject')}",
                }
            ],
            "variables": [
                {
                    "name": "podSpecs",
                    "expression": f"[{kind.template_of('object')}.?spec.orValue({{}})]",
                },
                *_gpu_variables(),
            ],
            "validations": [validation],
        },
    )
    binding = _binding(
        unstoppable_name(kind),
        param_ref=_policy_params(policy_name),
        match_resources=json.loads(json.dumps(REQUIRE_BUDGET_NAMESPACES)),
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
    manifests += budget_guard(policy_name)
    manifests += finalizer_guard(operator_usernames)
    for kind in WORKLOAD_KINDS:
        manifests += hold_guard(kind, operator_usernames)
    for kind in WORKLOAD_KINDS:
        manifests += workload_guard(kind, operator_usernames)
    for kind in WORKLOAD_KINDS:
        manifests += require_budget(kind, policy_name)
    for unstoppable in UNSTOPPABLE_KINDS:
        manifests += require_stoppable(unstoppable, policy_name)
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
