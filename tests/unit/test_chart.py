"""The Helm chart (charts/gpu-budget-operator), rendered with `helm template`: no cluster.

What a reviewer of the chart would check: it lints strictly; it renders with the
defaults, in development mode and with every option; bad values fail with a
message that names them; the files it takes from the code (CRDs, admission
policies, webhook entries) are what the code generates; the webhooks point at
the kopf handler ids the operator serves; the pods are locked down; the alerts
and the dashboard query metrics the operator exports, in valid PromQL.

The RBAC of the chart is checked against the code in tests/unit/test_rbac.py.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpu_budget import BUDGET_LABEL, admission_policies, chartgen, metrics, rbac
from gpu_budget.models import BudgetPolicySpec

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "gpu-budget-operator"
RELEASE = "gbo"
NAMESPACE = "gpu-budget"
FULLNAME = "gbo-gpu-budget-operator"
SA_USERNAME = f"system:serviceaccount:{NAMESPACE}:{FULLNAME}"
DEV_CA = "-----BEGIN CERTIFICATE-----\nMIIBdev\n-----END CERTIFICATE-----\n"
DEV_MODE = {
    "operator": {"enabled": False},
    "webhook": {"url": "https://127.0.0.1:38443", "caBundle": DEV_CA},
}
EVERYTHING = {
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "prometheusRule": {"enabled": True, "additionalAlertLabels": {"team": "platform"}},
    "grafanaDashboard": {"enabled": True},
    "budgetPolicy": {
        "notificationWebhookUrl": "https://hooks.slack.example/T000/B000",
        "pricing": {
            "instanceTypes": [
                {"instanceType": "p5.48xlarge", "capacityType": "spot", "hourlyPrice": 3600}
            ],
            "gpuProducts": [{"gpuProduct": "NVIDIA-A10G", "gpuHourlyPrice": 1.2}],
        },
    },
}

Manifest = dict[str, Any]


# ------------------------------------------------------------------------ helpers


def helm_binary() -> str | None:
    """GPUBUDGET_HELM, else the one hack/build-tools.sh builds, else helm on PATH."""
    if os.environ.get("GPUBUDGET_HELM"):
        return os.environ["GPUBUDGET_HELM"]
    versions = dict(
        line.split("=", 1)
        for line in (REPO / "hack" / "versions.env").read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    cache = Path(
        os.environ.get("GPUBUDGET_TOOLS_CACHE") or Path.home() / ".cache/gpu-budget-operator/tools"
    )
    built = cache / f"helm-{versions['HELM_VERSION'].strip()}" / "bin" / "helm"
    if built.exists():
        return str(built)
    return shutil.which("helm")


HELM = helm_binary()


def needs_helm(test: Callable[..., None]) -> Callable[..., None]:
    """Fail, never skip, without helm: `make test-unit` builds it (make tools)."""

    @functools.wraps(test)
    def with_helm(*args: Any, **kwargs: Any) -> None:
        assert HELM is not None, "helm not built: run `make tools`"
        test(*args, **kwargs)

    return with_helm


def helm(*args: str, values: Sequence[Manifest] = (), check: bool = True) -> str:
    """Run helm with each of ``values`` as a values file; stdout, or stderr when it fails."""
    assert HELM is not None
    files = []
    for index, value in enumerate(values):
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"gbo-values-{os.getpid()}-{index}.json"
        path.write_text(json.dumps(value))
        files += ["-f", str(path)]
    try:
        result = subprocess.run(
            [HELM, *args, *files], capture_output=True, text=True, timeout=120, check=False
        )
    finally:
        for flag_or_path in files[1::2]:
            Path(flag_or_path).unlink(missing_ok=True)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout if result.returncode == 0 else result.stderr


def render(*values: Manifest, namespace: str = NAMESPACE, crds: bool = False) -> list[Manifest]:
    """`helm template` of the chart with ``values`` merged in order: the manifests."""
    args = ["template", RELEASE, str(CHART), "--namespace", namespace]
    if crds:
        args.append("--include-crds")
    out = helm(*args, values=values)
    return [doc for doc in yaml.safe_load_all(out) if doc]


def render_error(*values: Manifest) -> str:
    out = helm(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE, values=values, check=False
    )
    assert "Error" in out, f"expected helm template to fail; it rendered:\n{out[:2000]}"
    return out


def find(manifests: Iterable[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [
        m
        for m in manifests
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    ]


def one(manifests: Iterable[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = find(manifests, kind, name)
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} rendered"
    return found[0]


def env_of(container: Manifest) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def webhook_handlers() -> dict[str, Any]:
    """kopf webhook handler id -> handler, as the operator registers them."""
    registry = rbac.operator_registry()
    return {str(h.id): h for h in registry._webhooks.get_all_handlers()}


# ------------------------------------------------------------------------- tests


@needs_helm
@pytest.mark.parametrize(
    "values",
    [{}, DEV_MODE, EVERYTHING, {"operator": {"namespaces": ["ml-team", "research"]}}],
    ids=["defaults", "dev-mode", "everything", "namespaced"],
)
def test_helm_lint_strict_passes(values: Manifest) -> None:
    out = helm("lint", "--strict", str(CHART), values=[values])
    assert "1 chart(s) linted, 0 chart(s) failed" in out


@needs_helm
def test_defaults_render_a_locked_down_ha_operator() -> None:
    manifests = render()
    sts = one(manifests, "StatefulSet", FULLNAME)
    spec = sts["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == FULLNAME
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["runAsNonRoot"] is True
    assert set(container["resources"]) == {"requests", "limits"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090, "webhook": 9443}
    env = env_of(container)
    # HA: peering, not standalone; each replica's ordinal is its priority.
    assert "GPUBUDGET_STANDALONE" not in env
    assert env["GPUBUDGET_PRIORITY"] == {
        "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
    }
    assert env["GPUBUDGET_PEERING_NAME"] == FULLNAME
    assert env["GPUBUDGET_PEERING_LIFETIME"] == "15"
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["GPUBUDGET_METRICS_PORT"] == "9090"
    assert env["GPUBUDGET_LIVENESS_ENDPOINT"] == "http://0.0.0.0:8080/healthz"
    assert env["GPUBUDGET_WEBHOOK_CERT_FILE"] == "/etc/gpu-budget-operator/tls/tls.crt"
    assert "GPUBUDGET_NAMESPACES" not in env
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"/tmp", "/etc/gpu-budget-operator/tls"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["webhook-tls"]["secret"]["secretName"] == f"{FULLNAME}-webhook-tls"
    # The peering object the replicas coordinate through, and one replica kept up.
    assert one(manifests, "ClusterKopfPeering")["metadata"]["name"] == FULLNAME
    assert one(manifests, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    service = one(manifests, "Service", FULLNAME)
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "metrics": 9090,
        "webhook": 443,
    }


@needs_helm
def test_one_standalone_replica_has_no_peering() -> None:
    manifests = render({"operator": {"replicas": 1, "standalone": True}})
    (container,) = one(manifests, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    assert env["GPUBUDGET_STANDALONE"] == "true"
    assert "GPUBUDGET_PRIORITY" not in env
    assert not find(manifests, "ClusterKopfPeering")
    assert not find(manifests, "PodDisruptionBudget")


@needs_helm
def test_self_signed_certificate_is_served_and_trusted() -> None:
    manifests = render()
    secret = one(manifests, "Secret", f"{FULLNAME}-webhook-tls")
    assert secret["type"] == "kubernetes.io/tls"
    webhook_config = one(manifests, "MutatingWebhookConfiguration", FULLNAME)
    for webhook in webhook_config["webhooks"]:
        client = webhook["clientConfig"]
        assert client["caBundle"] == secret["data"]["ca.crt"]
        assert client["service"]["name"] == FULLNAME
        assert client["service"]["namespace"] == NAMESPACE
        assert client["service"]["port"] == 443
    # The certificate names the Service and is signed by the CA in the bundle.
    cert = base64.b64decode(secret["data"]["tls.crt"])
    ca = base64.b64decode(secret["data"]["ca.crt"])
    if shutil.which("openssl"):
        text = subprocess.run(
            ["openssl", "x509", "-noout", "-ext", "subjectAltName"],
            input=cert,
            capture_output=True,
            check=True,
        ).stdout.decode()
        assert f"DNS:{FULLNAME}.{NAMESPACE}.svc" in text
        ca_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"gbo-ca-{os.getpid()}.pem"
        ca_file.write_bytes(ca)
        try:
            verified = subprocess.run(
                ["openssl", "verify", "-CAfile", str(ca_file)], input=cert, capture_output=True
            )
        finally:
            ca_file.unlink()
        assert verified.returncode == 0, verified.stdout + verified.stderr


@needs_helm
def test_cert_manager_mode_injects_the_ca() -> None:
    manifests = render({"webhook": {"certificates": {"mode": "cert-manager"}}})
    assert not find(manifests, "Secret")
    certificate = one(manifests, "Certificate", f"{FULLNAME}-webhook")
    assert certificate["spec"]["secretName"] == f"{FULLNAME}-webhook-tls"
    assert f"{FULLNAME}.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    issuer = one(manifests, "Issuer")
    assert issuer["spec"] == {"selfSigned": {}}
    assert certificate["spec"]["issuerRef"]["name"] == issuer["metadata"]["name"]
    webhook_config = one(manifests, "MutatingWebhookConfiguration", FULLNAME)
    assert webhook_config["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": f"{NAMESPACE}/{FULLNAME}-webhook"
    }
    assert all("caBundle" not in w["clientConfig"] for w in webhook_config["webhooks"])
    # An issuer of one's own is used as given, and none is created.
    own = render(
        {
            "webhook": {
                "certificates": {
                    "mode": "cert-manager",
                    "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}},
                }
            }
        }
    )
    assert not find(own, "Issuer")
    assert one(own, "Certificate")["spec"]["issuerRef"] == {
        "name": "corp-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }


@needs_helm
@pytest.mark.parametrize(
    ("values", "mode"),
    [({}, "service"), (DEV_MODE, "url")],
    ids=["in-cluster", "dev-mode"],
)
def test_webhooks_are_the_operators_kopf_handlers(values: Manifest, mode: str) -> None:
    """One webhook per kopf handler, its id as the path, its failure policy and selector."""
    handlers = webhook_handlers()
    manifests = render(values)
    (webhook_config,) = find(manifests, "MutatingWebhookConfiguration")
    assert not find(manifests, "ValidatingWebhookConfiguration")  # no validating handlers
    webhooks = {w["name"].removesuffix(".gpubudget.dev"): w for w in webhook_config["webhooks"]}
    assert set(webhooks) == set(handlers)
    for handler_id, webhook in webhooks.items():
        handler = handlers[handler_id]
        assert handler.reason.value == "mutating"
        client = webhook["clientConfig"]
        if mode == "url":
            assert client["url"] == f"https://127.0.0.1:38443/{handler_id}"
            assert base64.b64decode(client["caBundle"]).decode() == DEV_CA.strip()
        else:
            assert client["service"]["path"] == f"/{handler_id}"
        assert webhook["failurePolicy"] == ("Ignore" if handler.ignore_failures else "Fail")
        (rule,) = webhook["rules"]
        assert rule["apiGroups"] == [handler.selector.group]
        assert rule["resources"] == [handler.selector.any_name]
        assert rule["operations"] == list(handler.operations)
        if handler.labels:
            assert webhook["objectSelector"] == {
                "matchExpressions": [{"key": BUDGET_LABEL, "operator": "Exists"}]
            }
        else:
            assert "objectSelector" not in webhook
        assert webhook["sideEffects"] == "None"
        assert webhook["timeoutSeconds"] == 10
        assert webhook["namespaceSelector"]["matchExpressions"] == [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system", "kube-node-lease"],
            }
        ]


@needs_helm
def test_dev_mode_installs_everything_but_the_operator() -> None:
    manifests = render(DEV_MODE)
    kinds = {m["kind"] for m in manifests}
    assert {"StatefulSet", "Service", "Secret", "PodDisruptionBudget"}.isdisjoint(kinds)
    assert {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "BudgetPolicy",
        "ClusterKopfPeering",
    } <= kinds
    # A CA given already base64-encoded is taken as it is.
    encoded = base64.b64encode(DEV_CA.encode()).decode()
    again = render(DEV_MODE, {"webhook": {"caBundle": encoded}})
    for webhook in one(again, "MutatingWebhookConfiguration")["webhooks"]:
        assert webhook["clientConfig"]["caBundle"] == encoded


@needs_helm
def test_namespaced_operator_is_narrowed_everywhere() -> None:
    served = ["ml-team", "research"]
    manifests = render({"operator": {"namespaces": served}})
    (container,) = one(manifests, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert env_of(container)["GPUBUDGET_NAMESPACES"] == "ml-team,research"
    peerings = find(manifests, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == served
    assert not find(manifests, "ClusterKopfPeering")
    only_served = {"key": "kubernetes.io/metadata.name", "operator": "In", "values": served}
    for webhook in one(manifests, "MutatingWebhookConfiguration")["webhooks"]:
        assert only_served in webhook["namespaceSelector"]["matchExpressions"]
    for binding in find(manifests, "ValidatingAdmissionPolicyBinding"):
        selector = binding["spec"]["matchResources"]["namespaceSelector"]
        assert only_served in selector["matchExpressions"], binding["metadata"]["name"]
    require = one(
        manifests, "ValidatingAdmissionPolicyBinding", "gpubudget.dev-require-budget-jobs"
    )
    assert require["spec"]["matchResources"]["namespaceSelector"]["matchLabels"] == {
        admission_policies.REQUIRE_BUDGET_LABEL: "true"
    }


# ---------------------------------------------------------------- bad values


BAD_VALUES = [
    ({"operator": {"replicas": "two"}}, "at '/operator/replicas': got string, want integer"),
    ({"operator": {"replica": 2}}, "at '/operator': additional properties 'replica' not allowed"),
    ({"operator": {"peering": {"lifetime": 1}}}, "at '/operator/peering/lifetime': minimum"),
    ({"operator": {"namespaces": ["ML_Team"]}}, "at '/operator/namespaces/0': 'ML_Team'"),
    ({"operator": {"prometheusUrl": "prometheus:9090"}}, "at '/operator/prometheusUrl'"),
    ({"operator": {"metricsPort": 70000}}, "at '/operator/metricsPort': maximum"),
    ({"image": {"pullPolicy": "Sometimes"}}, "at '/image/pullPolicy'"),
    ({"webhook": {"certificates": {"mode": "letsencrypt"}}}, "at '/webhook/certificates/mode'"),
    ({"webhook": {"url": "http://127.0.0.1:38443"}}, "at '/webhook/url'"),
    ({"webhook": {"timeoutSeconds": 60}}, "at '/webhook/timeoutSeconds': maximum"),
    ({"budgetPolicy": {"contingency": 20}}, "at '/budgetPolicy/contingency': maximum: got 20"),
    ({"budgetPolicy": {"approvalCeiling": -1}}, "at '/budgetPolicy/approvalCeiling': minimum"),
    ({"budgetPolicy": {"defaultWarnAt": [0.5, 0.5]}}, "items at 0 and 1 are equal"),
    ({"budgetPolicy": {"defaultWarnAt": [1.5]}}, "at '/budgetPolicy/defaultWarnAt/0'"),
    ({"budgetPolicy": {"approval_ceiling": 5}}, "additional properties 'approval_ceiling'"),
    (
        {"budgetPolicy": {"pricing": {"instanceTypes": [{"instanceType": "p5.48xlarge"}]}}},
        "missing property 'hourlyPrice'",
    ),
    (
        {
            "budgetPolicy": {
                "pricing": {
                    "instanceTypes": [
                        {"instanceType": "p5", "hourlyPrice": 1, "capacityType": "reserved"}
                    ]
                }
            }
        },
        "at '/budgetPolicy/pricing/instanceTypes/0/capacityType'",
    ),
    ({"admissionPolicies": {"extraOperatorUsernames": ["o'brien"]}}, "extraOperatorUsernames/0"),
    ({"serviceMonitor": {"interval": "30 seconds"}}, "at '/serviceMonitor/interval'"),
    ({"prometheusRule": {"spentRatioThreshold": 90}}, "at '/prometheusRule/spentRatioThreshold'"),
]


def _path(values: Any) -> str:
    """operator.replicas for {"operator": {"replicas": ...}}: a readable test id."""
    if isinstance(values, dict) and len(values) == 1:
        ((key, value),) = values.items()
        rest = _path(value)
        return f"{key}.{rest}" if rest else str(key)
    return ""


@needs_helm
@pytest.mark.parametrize(("values", "message"), BAD_VALUES, ids=[_path(v) for v, _ in BAD_VALUES])
def test_schema_rejects_bad_values_naming_them(values: Manifest, message: str) -> None:
    error = render_error(values)
    assert "values don't meet the specifications of the schema" in error
    assert message in error, error


INCONSISTENT_VALUES = [
    (
        {"operator": {"standalone": True}},
        "operator.standalone=true with operator.replicas=2: standalone replicas do not coordinate",
    ),
    (
        {"operator": {"enabled": False}, "webhook": {"url": "https://127.0.0.1:38443"}},
        "webhook.url is set (development mode) but webhook.caBundle is empty",
    ),
    (
        {"webhook": {"url": "https://127.0.0.1:38443", "caBundle": DEV_CA}},
        "webhook.url is set (development mode: the webhooks call an operator outside the "
        "cluster) but operator.enabled is true",
    ),
    (
        {"serviceAccount": {"create": False}},
        "serviceAccount.name is required when serviceAccount.create is false",
    ),
]


@needs_helm
@pytest.mark.parametrize(
    ("values", "message"), INCONSISTENT_VALUES, ids=["standalone-ha", "no-ca", "url-and-pods", "sa"]
)
def test_inconsistent_values_fail_with_a_clear_message(values: Manifest, message: str) -> None:
    assert message in render_error(values)


# ------------------------------------------------------- files from the code


def test_generated_chart_files_are_in_sync() -> None:
    problems = chartgen.check_chart(CHART)
    assert not problems, "".join(problems) + "\nrun hack/chart-sync.sh"


def test_chart_crds_equal_the_repositorys_byte_for_byte() -> None:
    ours = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    assert ours
    for name in ours:
        assert (CHART / "crds" / name).read_bytes() == (REPO / "crds" / name).read_bytes(), name
    extra = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert extra == sorted([*ours, chartgen.KOPF_PEERING_CRDS_FILE])


def test_chart_has_kopfs_peering_crds() -> None:
    crds = {
        doc["metadata"]["name"]: doc
        for doc in yaml.safe_load_all(
            (CHART / "crds" / chartgen.KOPF_PEERING_CRDS_FILE).read_text()
        )
        if doc
    }
    assert set(crds) == {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    assert crds["clusterkopfpeerings.kopf.dev"]["spec"]["scope"] == "Cluster"
    assert crds["kopfpeerings.kopf.dev"]["spec"]["scope"] == "Namespaced"
    for crd in crds.values():
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1"
        # kopf patches status on the main resource: no status subresource.
        assert "subresources" not in version


def _without_chart_labels(manifest: Manifest) -> Manifest:
    manifest = copy.deepcopy(manifest)
    manifest["metadata"].pop("labels")
    return manifest


@needs_helm
def test_policies_are_the_generated_ones_for_the_charts_identity() -> None:
    rendered = [
        _without_chart_labels(m)
        for m in render()
        if m["kind"].startswith("ValidatingAdmissionPolicy")
    ]
    expected = []
    for m in admission_policies.render([SA_USERNAME]):
        m = _without_chart_labels(m)
        if m["kind"] == "ValidatingAdmissionPolicyBinding":
            # Every binding takes the chart's namespace scope (none by default).
            selector = m["spec"].pop("matchResources", {}).get("namespaceSelector", {})
            m["spec"]["matchResources"] = {"namespaceSelector": selector}
        expected.append(m)
    key = lambda m: (m["kind"], m["metadata"]["name"])  # noqa: E731
    assert sorted(rendered, key=key) == sorted(expected, key=key)
    labels = one(render(), "ValidatingAdmissionPolicy", admission_policies.APPROVAL_GUARD)
    assert labels["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


@needs_helm
def test_policies_take_prefix_extra_operators_and_scope() -> None:
    manifests = render(
        {
            "admissionPolicies": {
                "namePrefix": "team-a-",
                "extraOperatorUsernames": ["admin"],
                "namespaceSelector": {"matchLabels": {"gpubudget.dev/enforced": "true"}},
            }
        }
    )
    policies = find(manifests, "ValidatingAdmissionPolicy")
    assert policies
    assert all(p["metadata"]["name"].startswith("team-a-") for p in policies)
    hold = one(manifests, "ValidatingAdmissionPolicy", "team-a-hold-guard-jobs")
    variables = {v["name"]: v["expression"] for v in hold["spec"]["variables"]}
    assert variables["isOperator"] == (f'request.userInfo.username in ["{SA_USERNAME}","admin"]')
    messages = " ".join(v["message"] for v in hold["spec"]["validations"])
    assert f"only the operator ({SA_USERNAME}, admin) may" in messages
    for binding in find(manifests, "ValidatingAdmissionPolicyBinding"):
        assert binding["spec"]["policyName"] == binding["metadata"]["name"]
        labels = binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"]
        assert labels["gpubudget.dev/enforced"] == "true"
    disabled = render({"admissionPolicies": {"enabled": False}})
    assert not find(disabled, "ValidatingAdmissionPolicy")


# ------------------------------------------------------------- BudgetPolicy


@needs_helm
def test_budget_policy_comes_from_values_and_is_valid() -> None:
    policy = one(render(EVERYTHING), "BudgetPolicy", "default")
    spec = BudgetPolicySpec.model_validate(policy["spec"])
    assert spec.approval_ceiling == 10000
    assert spec.contingency == 0.5
    assert spec.finance_groups == ["finance"]
    assert spec.default_warn_at == [0.5, 0.8, 0.9]
    assert spec.notification_webhook_url == "https://hooks.slack.example/T000/B000"
    assert spec.pricing.instance_types[0].hourly_price == 3600
    assert spec.pricing.gpu_products[0].gpu_hourly_price == 1.2
    default = one(render(), "BudgetPolicy", "default")
    assert "notificationWebhookUrl" not in default["spec"]
    assert BudgetPolicySpec.model_validate(default["spec"]) == BudgetPolicySpec()
    # Large amounts stay plain numbers.
    big = one(render({"budgetPolicy": {"approvalCeiling": 2500000}}), "BudgetPolicy")
    assert big["spec"]["approvalCeiling"] == 2500000
    assert not find(render({"budgetPolicy": {"create": False}}), "BudgetPolicy")


def _json_schema_of(crd_schema: Manifest) -> Manifest:
    """The draft-07 JSON schema equivalent of a structural OpenAPI v3 schema."""
    out = {k: v for k, v in crd_schema.items() if not k.startswith("x-kubernetes-")}
    if out.get("exclusiveMinimum") is True:
        out["exclusiveMinimum"] = out.pop("minimum")
    if out.get("exclusiveMaximum") is True:
        out["exclusiveMaximum"] = out.pop("maximum")
    if "properties" in out:
        out["properties"] = {k: _json_schema_of(v) for k, v in out["properties"].items()}
        out["additionalProperties"] = False
    if "items" in out:
        out["items"] = _json_schema_of(out["items"])
    rules = [r["rule"] for r in crd_schema.get("x-kubernetes-validations", [])]
    if "self.all(x, self.exists_one(y, y == x))" in rules:
        out["uniqueItems"] = True
    return out


def test_budget_policy_values_schema_mirrors_the_crd() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = schema["properties"]["budgetPolicy"]["properties"]
    crd = next(
        doc
        for doc in yaml.safe_load_all((REPO / "crds" / "gpubudget.dev_budgetpolicies.yaml").open())
        if doc
    )
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    expected = _json_schema_of(spec)["properties"]
    assert {k: v for k, v in values.items() if k != "create"} == expected


# ------------------------------------------------------------ values.yaml docs


def test_every_value_is_documented_and_typed() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    # (indent, commented) of the keys enclosing the current line, outermost first.
    enclosing: list[tuple[int, bool]] = []
    for index, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w-]*):\s*(\S.*)?$", line)
        if not match:
            continue
        indent = len(match.group(1))
        commented = index > 0 and lines[index - 1].strip().startswith("#")
        enclosing = [(i, c) for i, c in enclosing if i < indent]
        # A leaf is documented by its own comment, or, inside a documented Kubernetes
        # object (resources, securityContext, a selector), by its parent's.
        inherited = any(c for i, c in enclosing if i > 0)
        if match.group(3) is not None and not (commented or inherited):
            undocumented.append(line.strip())
        enclosing.append((indent, commented))
    assert not undocumented, f"values without a comment above them: {undocumented}"
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def untyped(value: Any, node: Manifest, path: str) -> list[str]:
        if not isinstance(value, dict) or "properties" not in node:
            return []
        missing = []
        for key, item in value.items():
            if key not in node["properties"]:
                missing.append(f"{path}.{key}")
            else:
                missing += untyped(item, node["properties"][key], f"{path}.{key}")
        return missing

    assert not untyped(values, schema, ""), "values.yaml keys missing from values.schema.json"


# ------------------------------------------------------- alerts and dashboard

METRIC_NAMES = {
    name
    for collector in vars(metrics).values()
    if hasattr(collector, "_name") and hasattr(collector, "_type")
    for name in [str(collector._name)]
}
DERIVED_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def metric_names_in(expr: str) -> set[str]:
    return set(re.findall(r"\b(gpubudget_[a-z_]+)\b", expr))


def known_metric(name: str) -> bool:
    return name in METRIC_NAMES or any(
        name.removesuffix(s) in METRIC_NAMES for s in DERIVED_SUFFIXES if name.endswith(s)
    )


def promtool_check(rules: list[Manifest]) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool comes with Debian's prometheus: make system-deps"
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"gbo-rules-{os.getpid()}.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}))
    try:
        result = subprocess.run(
            [promtool, "check", "rules", str(path)], capture_output=True, text=True
        )
    finally:
        path.unlink()
    assert result.returncode == 0, result.stdout + result.stderr


@needs_helm
def test_alerts_cover_the_four_cases_in_valid_promql() -> None:
    rule = one(render(EVERYTHING), "PrometheusRule", FULLNAME)
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    job = f'job="{FULLNAME}"'
    assert alerts["GPUBudgetNearCap"]["expr"] == (
        f"max by (namespace, budget, team, cost_center) (gpubudget_spent_ratio{{{job}}}) > 0.9"
    )
    assert alerts["GPUBudgetAwaitingApproval"]["expr"] == (
        "time() - max by (namespace, budget, team, cost_center) "
        f"(gpubudget_awaiting_approval_since_timestamp_seconds{{{job}}}) > 86400"
    )
    assert alerts["GPUBudgetOperatorDown"]["expr"] == f"absent(up{{{job}}} == 1)"
    assert alerts["GPUBudgetOperatorReplicaDown"]["expr"] == f"up{{{job}}} == 0"
    assert alerts["GPUBudgetMetricsSourceUnavailable"]["expr"] == (
        f"gpubudget_metrics_source_up{{{job}}} == 0"
    )
    for alert in alerts.values():
        assert alert["labels"]["team"] == "platform"
        assert {"summary", "description"} <= set(alert["annotations"])
        for name in metric_names_in(alert["expr"]):
            assert known_metric(name), f"{alert['alert']}: {name} is not in gpu_budget.metrics"
    promtool_check(list(alerts.values()))
    monitor = one(render(EVERYTHING), "ServiceMonitor", FULLNAME)
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["honorLabels"] is True  # the budgets' namespace label must win
    assert monitor["metadata"]["labels"]["release"] == "prometheus"


def dashboard_exprs(dashboard: Manifest) -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


@needs_helm
def test_dashboard_shows_what_finance_asks_in_valid_promql() -> None:
    configmap = one(render(EVERYTHING), "ConfigMap", f"{FULLNAME}-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["gpu-budget.json"])
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {
        "Spend by team",
        "Top budgets by spend",
        "Burn rate by team",
        "Idle spend by team",
        "Cost per outcome",
        "Period spend against its limit",
    } <= titles
    exprs = dashboard_exprs(dashboard)
    used = set().union(*(metric_names_in(e) for _, e in exprs))
    unknown = {name for name in used if not known_metric(name)}
    assert not unknown, f"dashboard queries metrics the operator does not export: {unknown}"
    # Every per-budget gauge the operator exports is on the dashboard.
    for gauge in (
        "spent_usd",
        "burn_rate_usd_per_hour",
        "idle_spend_usd",
        "spent_ratio",
        "outcome_value",
        "cost_per_outcome_usd",
        "period_spent_usd",
        "period_claimed_usd",
        "period_limit_usd",
    ):
        assert f"gpubudget_{gauge}" in used
    substituted = [
        {
            "record": f"panel:{index}",
            "expr": expr.replace("$__range", "1h")
            .replace("$team", ".*")
            .replace("$namespace", ".*"),
        }
        for index, (_, expr) in enumerate(exprs)
    ]
    promtool_check(substituted)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
