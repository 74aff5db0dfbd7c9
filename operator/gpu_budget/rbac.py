"""What the operator asks of the Kubernetes API server, derived from its code.

Two things follow from the handlers the operator registers, and both are
rendered here so that they cannot drift from the code:

* **RBAC** (:func:`rules`): the resources and verbs the operator calls. The
  handlers are registered into a fresh :class:`kopf.OperatorRegistry` (as
  ``python -m gpu_budget`` does, webhooks enabled) and read back: an index or
  an event handler lists and watches its resource; a timer or a change handler
  also patches it (kopf writes its progress and finalizers into the object,
  and the handler's status through the ``status`` subresource when the
  resource has one). To that come the writes of :mod:`gpu_budget.kube` (each
  workload adapter's operations, pod annotations), kopf's Events, kopf's
  peering objects, its watch on CustomResourceDefinitions (so that a JobSet or
  PyTorchJob CRD installed later is noticed), its watch on Namespaces when it
  serves a list of namespaces, and the webhook configurations when kopf
  manages them (dev mode only; the Helm chart renders them instead).
* **The chart's generated files** (:func:`chart_files`): the CRDs (copies of
  ``crds/``), the MutatingWebhookConfiguration entries (one per kopf webhook
  handler, its id as the URL path) and the ValidatingAdmissionPolicies of
  :mod:`gpu_budget.admission_policies`, with the chart's operator identity and
  namespace scope as Helm expressions.

``python -m gpu_budget.rbac`` prints the ClusterRole rules of a cluster-wide
operator; ``--namespaced`` the split of a namespaced one (a ClusterRole for
cluster-scoped resources, a Role in each served namespace);
``--write-chart DIR`` / ``--check-chart DIR`` write or check the generated chart
files (``hack/chart-sync.sh``).
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
import yaml

from gpu_budget import GROUP, admission, admission_policies, crdgen, handlers
from gpu_budget.config import OperatorConfig
from gpu_budget.kube import ClusterClient
from gpu_budget.workloads import (
    ADAPTERS,
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


def _selector(handler: Any) -> tuple[str, str, str]:
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
        "pod_labels": {},
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
            adapter.resume(facts),
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
        group, _, plural = _selector(handler)
        grant(group, plural, *READ)
    for handler in [
        *registry._spawning.get_all_handlers(),
        *registry._changing.get_all_handlers(),
    ]:
        group, _, plural = _selector(handler)
        # Progress annotations and finalizers on the object; the status subresource
        # for what the handler writes into patch.status.
        grant(group, plural, *READ, "patch")
        if group == GROUP and plural in with_status:
            grant(group, f"{plural}/status", "patch")
    # Webhook handlers are called by the API server: no access of their own.

    # gpu_budget.kube.ClusterClient
    for adapter in ADAPTERS:
        grant(adapter.group, adapter.plural, *adapter_verbs(adapter))
    grant("", "pods", "patch")  # annotate_pod

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
GENERATED_HEADER = (
    "{{{{/* Generated by `python -m gpu_budget.rbac --write-chart` ({what}); do not edit.\n"
    "Regenerate with hack/chart-sync.sh. */}}}}\n"
)
OPERATOR_SENTINEL = "__GPUBUDGET_OPERATOR_USERNAME__"
LABELS_SENTINEL = "__GPUBUDGET_LABELS__"
MATCH_RESOURCES_SENTINEL = "__GPUBUDGET_MATCH_RESOURCES__"
KOPF_PEERING_CRDS_FILE = "kopf.dev_peerings.yaml"


class _Dumper(yaml.SafeDumper):
    """Block style, lists indented under their key, nothing folded.

    Strings holding a Helm action are single-quoted: what Helm puts there (usernames,
    a JSON list of them, a name prefix) has no single quote, so the YAML stays valid.
    """

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "{{" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="'")
    return dumper.represent_str(value)


_Dumper.add_representer(str, _represent_str)


def _dump(value: Any, indent: int = 0) -> str:
    text = yaml.dump(value, Dumper=_Dumper, sort_keys=False, width=1_000_000, allow_unicode=True)
    if not indent:
        return text
    pad = " " * indent
    return "".join(pad + line if line.strip() else line for line in text.splitlines(True))


def _helm_strings(value: Any, replacements: Mapping[str, str]) -> Any:
    """Replace sentinel substrings in every string of a manifest tree."""
    if isinstance(value, str):
        for old, new in replacements.items():
            value = value.replace(old, new)
        return value
    if isinstance(value, list):
        return [_helm_strings(v, replacements) for v in value]
    if isinstance(value, dict):
        return {k: _helm_strings(v, replacements) for k, v in value.items()}
    return value


def _labels_block(indent: int, component: str) -> str:
    pad = " " * indent
    return (
        f'{pad}labels:\n{pad}  {{{{- include "{CHART_NAME}.labels" $ | nindent {indent + 2} }}}}\n'
        f"{pad}  app.kubernetes.io/component: {component}"
    )


def policies_template() -> str:
    """templates/admission-policies.yaml: every policy and binding, for the chart's identity.

    The operator usernames are the chart's ServiceAccount plus
    ``admissionPolicies.extraOperatorUsernames``; names start with
    ``admissionPolicies.namePrefix`` (default ``gpubudget.dev-``, as generated);
    every binding is limited to the operator's namespaces (when it serves a list)
    and to ``admissionPolicies.namespaceSelector``.
    """
    manifests = admission_policies.render([OPERATOR_SENTINEL])
    prefix = admission_policies.NAME_PREFIX
    out: list[str] = []
    for manifest in manifests:
        manifest = json.loads(json.dumps(manifest))  # a private copy
        meta = manifest["metadata"]
        if not meta["name"].startswith(prefix):
            raise ValueError(f"{meta['name']}: expected the prefix {prefix}")
        meta["name"] = "{{ $prefix }}" + meta["name"].removeprefix(prefix)
        meta["labels"] = LABELS_SENTINEL
        spec = manifest["spec"]
        if manifest["kind"] == "ValidatingAdmissionPolicyBinding":
            spec["policyName"] = "{{ $prefix }}" + spec["policyName"].removeprefix(prefix)
            selector = (spec.get("matchResources") or {}).pop("namespaceSelector", None) or {}
            if spec.get("matchResources"):
                raise ValueError(f"{meta['name']}: matchResources beyond a namespaceSelector")
            if set(selector) - {"matchLabels"}:
                raise ValueError(f"{meta['name']}: only matchLabels selectors are supported")
            spec["matchResources"] = MATCH_RESOURCES_SENTINEL + json.dumps(
                selector.get("matchLabels") or {}, sort_keys=True
            )
        manifest = _helm_strings(
            manifest,
            {
                json.dumps([OPERATOR_SENTINEL]): "{{ $operatorsCel }}",
                OPERATOR_SENTINEL: "{{ $operatorsText }}",
            },
        )
        if OPERATOR_SENTINEL in json.dumps(manifest):
            raise ValueError("an operator username in a context the generator does not know")
        out.append("---\n" + _dump(manifest))
    body = "".join(out)
    body = body.replace(f"  labels: {LABELS_SENTINEL}", _labels_block(2, "admission"))

    def match_resources(found: re.Match[str]) -> str:
        labels = json.loads(found.group(2))
        pairs = " ".join(f"{json.dumps(k)} {json.dumps(v)}" for k, v in sorted(labels.items()))
        return (
            f"{found.group(1)}matchResources:\n{found.group(1)}  namespaceSelector:"
            f' {{{{- include "{CHART_NAME}.policyNamespaceSelector"'
            f' (dict "root" $ "matchLabels" (dict {pairs})) | nindent 6 }}}}'
        ).replace("(dict )", "(dict)")

    body = re.sub(
        rf"^( *)matchResources: '?{MATCH_RESOURCES_SENTINEL}(.*?)'?$",
        match_resources,
        body,
        flags=re.MULTILINE,
    )
    head = (
        GENERATED_HEADER.format(what="gpu_budget.admission_policies")
        + "{{- if .Values.admissionPolicies.enabled }}\n"
        + f'{{{{- $prefix := include "{CHART_NAME}.policyNamePrefix" . }}}}\n'
        + f'{{{{- $operators := include "{CHART_NAME}.operatorUsernames" . | fromJsonArray }}}}\n'
        + "{{- $operatorsCel := $operators | toJson }}\n"
        + '{{- $operatorsText := join ", " $operators }}\n'
    )
    return head + body + "{{- end }}\n"


def webhooks_template() -> str:
    """templates/_webhooks.tpl: the webhook entries of the chart's MutatingWebhookConfiguration.

    One entry per kopf webhook handler, as kopf's managed configuration has it
    (rules, failure policy, object selector, side effects), with the handler id
    as the URL path; clientConfig and namespaceSelector come from the chart.
    """
    registry = operator_registry()
    entries: dict[str, list[dict[str, Any]]] = {"mutating": [], "validating": []}
    for handler in registry._webhooks.get_all_handlers():
        group, version, plural = _selector(handler)
        if handler.subresource is not None:
            plural = f"{plural}/{handler.subresource}"
        labels = handler.labels or {}
        if any(callable(v) for v in labels.values()):
            raise ValueError(f"{handler.id}: callable label filters have no objectSelector")
        expressions = [
            {"key": key, "operator": "Exists"}
            if value is kopf.PRESENT
            else {"key": key, "operator": "DoesNotExist"}
            if value is kopf.ABSENT
            else {"key": key, "operator": "In", "values": [str(value)]}
            for key, value in labels.items()
        ]
        entry: dict[str, Any] = {
            "name": f"{handler.id}.{GROUP}",
            "admissionReviewVersions": ["v1"],
            "clientConfig": f"__CLIENT_CONFIG__/{handler.id}",
            "failurePolicy": "Ignore" if handler.ignore_failures else "Fail",
            "matchPolicy": "Equivalent",
            "namespaceSelector": "__NAMESPACE_SELECTOR__",
            "rules": [
                {
                    "apiGroups": [group],
                    "apiVersions": [version],
                    "operations": list(handler.operations or ["*"]),
                    "resources": [plural],
                    "scope": "Namespaced" if is_namespaced(group, plural) else "Cluster",
                }
            ],
            "sideEffects": "NoneOnDryRun" if handler.side_effects else "None",
            "timeoutSeconds": "__TIMEOUT__",
        }
        if expressions:
            entry["objectSelector"] = {"matchExpressions": expressions}
        entries[handler.reason.value].append(entry)
    text = GENERATED_HEADER.format(what="the kopf webhook handlers of gpu_budget.admission")
    for reason, listed in entries.items():
        body = _dump(listed) if listed else ""
        body = re.sub(
            r"^(- |  )clientConfig: __CLIENT_CONFIG__(/\S+)$",
            lambda m: (
                f"{m.group(1)}clientConfig:"
                f' {{{{- include "{CHART_NAME}.webhookClientConfig"'
                f' (dict "root" .root "path" "{m.group(2)}" "caBundle" .caBundle) | nindent 4 }}}}'
            ),
            body,
            flags=re.MULTILINE,
        )
        body = body.replace(
            "  namespaceSelector: __NAMESPACE_SELECTOR__",
            f'  namespaceSelector: {{{{- include "{CHART_NAME}.webhookNamespaceSelector"'
            " .root | nindent 4 }}",
        ).replace(
            "  timeoutSeconds: __TIMEOUT__",
            "  timeoutSeconds: {{ .root.Values.webhook.timeoutSeconds }}",
        )
        if "__" in body:
            raise ValueError(f"unreplaced placeholder in the {reason} webhooks:\n{body}")
        text += f'{{{{- define "{CHART_NAME}.{reason}Webhooks" -}}}}\n{body}{{{{- end }}}}\n'
    return text


def chart_files() -> dict[str, str]:
    """Path inside the chart -> text, for every file the chart takes from the code."""
    files = {f"crds/{name}": text for name, text in crdgen.rendered().items()}
    files["templates/admission-policies.yaml"] = policies_template()
    files["templates/_webhooks.tpl"] = webhooks_template()
    return files


def write_chart(chart: Path) -> list[Path]:
    written = []
    for name, text in chart_files().items():
        path = chart / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    return written


def check_chart(chart: Path) -> list[str]:
    """Unified diffs between the chart and what the code generates; empty when in sync."""
    problems = []
    for name, text in chart_files().items():
        path = chart / name
        actual = path.read_text() if path.exists() else ""
        if actual != text:
            problems.append(
                "".join(
                    difflib.unified_diff(
                        actual.splitlines(True),
                        text.splitlines(True),
                        fromfile=str(path) + ("" if path.exists() else " (missing)"),
                        tofile=f"{name} (generated)",
                    )
                )
            )
    own = {f"crds/{name}" for name in crdgen.rendered()}
    for path in sorted((chart / "crds").glob(f"{GROUP}_*.yaml")):
        if f"crds/{path.name}" not in own:
            problems.append(f"{path}: not generated from any model; delete it\n")
    return problems


# ---------------------------------------------------------------------------- CLI


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
        description="Print the RBAC rules gpu-budget-operator needs, derived from its handlers; "
        "or write/check the chart files generated from the code.",
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
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write-chart", metavar="DIR", type=Path, help="write generated files")
    action.add_argument("--check-chart", metavar="DIR", type=Path, help="exit 1 if out of date")
    args = parser.parse_args(argv)
    if args.write_chart is not None:
        for path in write_chart(args.write_chart):
            print(f"wrote {path}")
        return 0
    if args.check_chart is not None:
        problems = check_chart(args.check_chart)
        if problems:
            sys.stdout.write("".join(problems))
            print(
                f"\n{args.check_chart} is out of date with the code: run hack/chart-sync.sh",
                file=sys.stderr,
            )
            return 1
        return 0
    selected = rules(
        clusterwide=not args.namespaced, manage_webhook_config=args.manage_webhook_config
    )
    stamp = "# derived from the handlers of gpu_budget (python -m gpu_budget.rbac)\n"
    if not args.namespaced:
        sys.stdout.write(stamp + _dump(cluster_role(selected, CHART_NAME)))
        return 0
    cluster = [r for r in selected if not r.namespaced]
    namespaced = [r for r in selected if r.namespaced]
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": CHART_NAME, "namespace": "<each served namespace>"},
        "rules": [rule.as_policy_rule() for rule in namespaced],
    }
    sys.stdout.write(stamp + _dump(cluster_role(cluster, CHART_NAME)) + "---\n" + _dump(role))
    return 0


if __name__ == "__main__":
    sys.exit(main())
