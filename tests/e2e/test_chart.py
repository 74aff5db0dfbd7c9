"""The Helm chart installed the way a platform team would, on the local cluster.

Pods are simulated there (kwok runs no containers), so the chart is installed in
its development mode: everything but the operator's pods (CRDs, ServiceAccount,
RBAC, peering object, ValidatingAdmissionPolicies, and a MutatingWebhookConfiguration
pointing at ``webhook.url``), while the operator runs as a local process **with a
token of the chart's ServiceAccount**, so every API call it makes is authorised by
the chart's RBAC and every release of a held workload is checked against the
chart's policies for that identity.

Each test installs its own release into a fresh namespace and serves only that
namespace (``operator.namespaces``): the webhooks, the policy bindings and the
RBAC (Roles) apply there only, and policy names carry the release's prefix, so
concurrent tests elsewhere on the cluster are unaffected. The BudgetPolicy
``default`` is shared by every e2e test: the chart does not create it here
(``budgetPolicy.create=false``); the tests use the one all of them share
(examples/policy.yaml, spot p5 at $3,600 an hour).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from gpu_budget import APPROVED_AMOUNT_ANNOTATION, BUDGET_LABEL
from gpu_budget.admission import HELD_AT_ADMISSION
from gpu_budget.plan import APPROVED_BY_ANNOTATION
from gpu_budget.workloads import HELD_ANNOTATION
from localcluster.kubectl import wait_for
from localcluster.manifests import gpu_job
from localcluster.net import free_port
from tests.e2e.conftest import E2ECluster
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.support import (
    ensure_shared_policy,
    events_for,
    grant_ml_engineer,
    job_pods,
    running_pods,
)

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "gpu-budget-operator"
SA_KUBECONFIG_SCRIPT = REPO / "hack" / "chart-sa-kubeconfig.sh"
POLICIES_LABEL = "gpubudget.dev/admission-policies"
"""On the namespaces of these tests: the chart's policies govern them (see the report)."""
CHART_NAME = "gpu-budget-operator"
KINDS_NOT_ON_THE_LOCAL_CLUSTER = {"ServiceMonitor", "PrometheusRule", "Certificate", "Issuer"}


# ------------------------------------------------------------------------ helpers


def helm_binary() -> str:
    from tests.unit.test_chart import helm_binary as find

    found = find()
    if found is None:
        pytest.fail("helm not found: run `make tools`", pytrace=False)
    return found


class Release:
    """One `helm install` of the chart, with its values, into one namespace."""

    def __init__(self, cluster: E2ECluster, name: str, namespace: str, tmp_path: Path):
        self.cluster = cluster
        self.name = name
        self.namespace = namespace
        self.tmp_path = tmp_path
        self.helm_bin = helm_binary()
        self.installed = False

    @property
    def fullname(self) -> str:
        return self.name if CHART_NAME in self.name else f"{self.name}-{CHART_NAME}"

    def helm(self, *args: str, values: dict[str, Any] | None = None) -> str:
        cmd = [self.helm_bin, f"--kubeconfig={self.cluster.kubeconfig}", "--kube-context=admin"]
        cmd += [*args]
        if values is not None:
            path = self.tmp_path / f"values-{secrets.token_hex(3)}.yaml"
            path.write_text(yaml.safe_dump(values))
            cmd += ["-f", str(path)]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd[3:])} failed:\n{result.stderr}")
        return result.stdout

    def install(self, values: dict[str, Any]) -> str:
        out = self.helm(
            "install", self.name, str(CHART), "-n", self.namespace, "--wait", values=values
        )
        self.installed = True
        return out

    def upgrade(self, values: dict[str, Any]) -> str:
        return self.helm(
            "upgrade", self.name, str(CHART), "-n", self.namespace, "--wait", values=values
        )

    def uninstall(self) -> None:
        if self.installed:
            self.helm("uninstall", self.name, "-n", self.namespace, "--wait")
            self.installed = False

    def template(self, values: dict[str, Any], *flags: str) -> str:
        return self.helm(
            "template", self.name, str(CHART), "-n", self.namespace, *flags, values=values
        )

    def leftovers(self) -> list[str]:
        """Every object in the cluster labelled as this release's, of any listable kind."""
        kinds = self.cluster.kubectl("api-resources", "--verbs=list", "-o", "name").stdout.split()
        kinds = [k for k in kinds if k not in ("events", "events.events.k8s.io")]
        out = self.cluster.kubectl(
            "get", ",".join(kinds), "-A", "-o", "name", "-l",
            f"app.kubernetes.io/instance={self.name}",
        )  # fmt: skip
        return sorted(line for line in out.stdout.splitlines() if line.strip())


def sa_kubeconfig(cluster: E2ECluster, namespace: str, sa: str, path: Path) -> Path:
    """hack/chart-sa-kubeconfig.sh: a kubeconfig with a 1 h token of the chart's ServiceAccount."""
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig, "KUBECTL": cluster.kubectl.binary}
    subprocess.run(
        [str(SA_KUBECONFIG_SCRIPT), namespace, sa, str(path), "1h"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return path


def ensure_crds(cluster: E2ECluster) -> None:
    """The chart's CRDs (ours and kopf's peering), created when absent, never replaced."""
    for path in sorted((CHART / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if (
                doc
                and cluster.kubectl("get", "crd", doc["metadata"]["name"], check=False).returncode
            ):
                cluster.kubectl("create", "-f", "-", input=json.dumps(doc), check=False)
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/trainingbudgets.gpubudget.dev", "crd/budgetpolicies.gpubudget.dev",
        "crd/kopfpeerings.kopf.dev", "crd/clusterkopfpeerings.kopf.dev",
    )  # fmt: skip


def operator_reasons(cluster: E2ECluster, namespace: str, name: str) -> list[str]:
    """Reasons of the Events the operator (kopf) posted about an object, with repeats."""
    return [
        e["reason"]
        for e in events_for(cluster, namespace, name)
        if (e.get("source") or {}).get("component") == "kopf"
        or e.get("reportingComponent") == "kopf"
        for _ in range(e.get("count") or 1)
    ]


def foreign_hold_guards(cluster: E2ECluster, namespace: str, username: str) -> list[str]:
    """Hold guards not of this release that would refuse ``username`` releasing a Job here.

    Found by a server-side dry run of the PATCH the operator sends when it releases a
    held Job, as that user (admin impersonates it; a PATCH needs no GET, which the
    operator may not do): the API server evaluates every policy that matches.
    """
    probe = gpu_job("hold-probe", namespace, "no-such-budget", pods=1)
    probe["spec"]["suspend"] = True
    probe["metadata"]["annotations"] = {HELD_ANNOTATION: HELD_AT_ADMISSION}
    cluster.kubectl("create", "-f", "-", input=json.dumps(probe))
    client = kubernetes.config.new_client_from_config(
        config_file=cluster.kubeconfig, context="admin"
    )
    client.set_default_header("Impersonate-User", username)
    release = {"spec": {"suspend": False}, "metadata": {"annotations": {HELD_ANNOTATION: None}}}
    try:
        kubernetes.client.BatchV1Api(client).patch_namespaced_job(
            "hold-probe", namespace, release, dry_run="All"
        )
    except kubernetes.client.ApiException as error:
        return [str(json.loads(error.body).get("message", error.body))]
    finally:
        client.close()
        cluster.kubectl("delete", "job", "hold-probe", "-n", namespace, "--wait=false", check=False)
    return []


def values_dev_mode(
    namespace: str, release: str, webhook_port: int, ca: Path, **extra: Any
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "operator": {"enabled": False, "namespaces": [namespace]},
        "webhook": {"url": f"https://127.0.0.1:{webhook_port}", "caBundle": ca.read_text()},
        "admissionPolicies": {"namePrefix": f"{release}-"},
        "budgetPolicy": {"create": False},
    }
    for key, value in extra.items():
        values.setdefault(key, {}).update(value)
    return values


# ----------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def webhook_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("chart-webhook-certs")
    subprocess.run(
        [str(REPO / "hack" / "webhook-certs.sh"), str(directory)], check=True, capture_output=True
    )
    return directory


@pytest.fixture
def chart_namespace(cluster: E2ECluster, namespace: str) -> str:
    """The test namespace, marked as governed by the chart's policies."""
    cluster.kubectl("label", "namespace", namespace, f"{POLICIES_LABEL}=chart")
    ensure_crds(cluster)
    ensure_shared_policy(cluster)
    return namespace


@pytest.fixture
def release(cluster: E2ECluster, chart_namespace: str, tmp_path: Path) -> Iterator[Release]:
    rel = Release(cluster, f"gbo-{secrets.token_hex(3)}", chart_namespace, tmp_path)
    yield rel
    try:
        rel.uninstall()
    except AssertionError as error:
        print(f"cleanup: {error}")


@pytest.fixture
def alice(cluster: E2ECluster, chart_namespace: str) -> str:
    """alice runs Jobs and their TrainingBudgets in the test namespace, as in ml-team."""
    return grant_ml_engineer(cluster, chart_namespace)


# -------------------------------------------------------------------------- tests


@pytest.mark.timeout(300)
def test_rendered_chart_validates_against_the_clusters_openapi(
    cluster: E2ECluster, release: Release, webhook_certs: Path
) -> None:
    """`helm template | kubectl apply --dry-run=server`: schemas, CEL, references, all checked.

    With the defaults (what a platform team installs), in development mode, and
    namespaced with the dashboard; the prometheus-operator and cert-manager kinds are
    not served by the local cluster (tests/unit/test_chart.py checks those).
    """
    variants = {
        "defaults": {},
        "dev-mode": values_dev_mode(
            release.namespace, release.name, 38443, webhook_certs / "ca.crt"
        ),
        "namespaced": {
            "operator": {"namespaces": [release.namespace]},
            "grafanaDashboard": {"enabled": True},
            "budgetPolicy": {"notificationWebhookUrl": "https://hooks.slack.example/x"},
        },
    }
    for variant, values in variants.items():
        rendered = release.template(values, "--include-crds")
        docs = [d for d in yaml.safe_load_all(rendered) if d]
        kinds = {d["kind"] for d in docs}
        assert not kinds & KINDS_NOT_ON_THE_LOCAL_CLUSTER, variant
        result = cluster.kubectl(
            "apply", "--server-side", "--dry-run=server", "--force-conflicts",
            "--field-manager=gpubudget-e2e-chart-dry-run", "-f", "-",
            input=rendered, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"{variant}:\n{result.stderr}"
        applied = [line for line in result.stdout.splitlines() if "(server dry run)" in line]
        assert len(applied) == len(docs), f"{variant}: {result.stdout}"
        print(f"[chart] {variant}: {len(docs)} objects valid ({', '.join(sorted(kinds))})")


@pytest.mark.timeout(600)
def test_install_approve_enforce_upgrade_uninstall(
    cluster: E2ECluster,
    release: Release,
    alice: str,
    webhook_certs: Path,
    tmp_path: Path,
) -> None:
    namespace = release.namespace
    webhook_port, metrics_port = free_port(), free_port()
    values = values_dev_mode(namespace, release.name, webhook_port, webhook_certs / "ca.crt")
    sa = release.fullname
    sa_user = f"system:serviceaccount:{namespace}:{sa}"

    # ---- install, and the operator up as the chart's ServiceAccount
    started = time.monotonic()
    release.install(values)
    installed = time.monotonic() - started
    kubeconfig = sa_kubeconfig(cluster, namespace, sa, tmp_path / "sa.kubeconfig")
    operator = OperatorProcess(
        str(kubeconfig),
        cluster.prometheus_url,
        tmp_path / "operator.log",
        port=free_port(),
        peering_name=release.fullname,
        priority=1,
        extra_args=(
            f"--namespace={namespace}",
            "--webhook-address=127.0.0.1",
            f"--webhook-port={webhook_port}",
            f"--webhook-cert-file={webhook_certs / 'tls.crt'}",
            f"--webhook-key-file={webhook_certs / 'tls.key'}",
            f"--metrics-port={metrics_port}",
        ),
    )
    try:
        operator.start()

        def holding() -> bool:
            probe = gpu_job("webhook-probe", namespace, "no-such-budget", pods=1)
            result = cluster.kubectl(
                "create", "--dry-run=server", "-o", "json", "-f", "-",
                input=json.dumps(probe), check=False,
            )  # fmt: skip
            return result.returncode == 0 and json.loads(result.stdout)["spec"].get("suspend")

        wait_for(holding, 60, "the chart's webhook configuration to reach the operator")
        wait_for(operator.active, 30, "the operator to be active in its peering")
        ready = time.monotonic() - started
        print(
            f"[chart] helm install {installed:.1f}s; helm install to operator ready (active, "
            f"webhooks answering through the chart's configuration): {ready:.1f}s"
        )

        conflicts = foreign_hold_guards(cluster, namespace, sa_user)
        assert not conflicts, (
            "another set of hold-guard ValidatingAdmissionPolicies on this cluster (not this "
            f"release's) refuses the chart's operator identity {sa_user} in namespace "
            f"{namespace}, so the operator could never release a held workload here. Scope "
            f"those policies' bindings away from namespaces labelled {POLICIES_LABEL}=chart. "
            f"The API server said: {conflicts}"
        )
        run_scenario(cluster, release, alice, sa_user, f"http://127.0.0.1:{metrics_port}/metrics")

        # ---- upgrade: a changed value reaches the cluster, the webhooks still hold
        release.upgrade({**values, "webhook": {**values["webhook"], "timeoutSeconds": 5}})
        webhook_config = cluster.kubectl.json(
            "get", "mutatingwebhookconfiguration", release.fullname
        )
        assert {w["timeoutSeconds"] for w in webhook_config["webhooks"]} == {5}
        assert webhook_config["metadata"]["labels"]["app.kubernetes.io/instance"] == release.name
        wait_for(holding, 30, "the webhooks to hold workloads after the upgrade")
        history = yaml.safe_load(
            release.helm("history", release.name, "-n", namespace, "-o", "yaml")
        )
        assert [h["status"] for h in history] == ["superseded", "deployed"]

        # ---- RBAC: nothing the operator did was refused
        log = operator.log_text()
        # 403 as a status code, not the digits inside a timestamp (".060403").
        for refusal in (r"\b403\b", "Forbidden", "Not enough permissions"):
            assert not re.search(refusal, log), (
                f"the operator was refused something:\n{operator.tail(60)}"
            )

    finally:
        # Budgets carry the operator's finalizer: delete them while the operator runs.
        cluster.kubectl("delete", "job", "--all", "-n", namespace, "--wait=false", check=False)
        cluster.kubectl(
            "delete", "trainingbudgets", "--all", "-n", namespace, "--timeout=60s", check=False
        )
        operator.stop()
        print("operator log tail:\n" + operator.tail(30))

    # ---- uninstall: nothing of the release is left but the CRDs (which Helm never deletes)
    before = release.leftovers()
    assert before, "the release's objects should be listed before the uninstall"
    release.uninstall()
    assert release.leftovers() == []
    remaining = sorted(
        name
        for name in cluster.kubectl("get", "crd", "-o", "name").stdout.split()
        if name.endswith((".gpubudget.dev", ".kopf.dev"))
    )
    assert remaining == [
        "customresourcedefinition.apiextensions.k8s.io/budgetpolicies.gpubudget.dev",
        "customresourcedefinition.apiextensions.k8s.io/clusterkopfpeerings.kopf.dev",
        "customresourcedefinition.apiextensions.k8s.io/kopfpeerings.kopf.dev",
        "customresourcedefinition.apiextensions.k8s.io/trainingbudgets.gpubudget.dev",
    ]
    print(f"[chart] uninstall removed {len(before)} objects; left by design: {remaining}")


def scrape(url: str, name: str, **labels: str) -> float | None:
    """One sample of the operator's /metrics, the one whose labels include ``labels``."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def run_scenario(
    cluster: E2ECluster, release: Release, alice: str, sa_user: str, metrics_url: str
) -> None:
    """alice's run waits for finance, runs once bob approves, and is suspended at its cap."""
    namespace = release.namespace
    cap = 80.0  # two spot p5 nodes burn $2 a second: 40 s of run
    run_budget = {
        "apiVersion": "gpubudget.dev/v1alpha1",
        "kind": "TrainingBudget",
        "metadata": {"name": "big", "namespace": namespace},
        "spec": {
            "costCap": cap,
            # 16 H100s for 2 h at $450 a GPU-hour, +50%: $21,600, over the $10,000 ceiling.
            "estimate": {
                "hours": 2,
                "gpus": 16,
                "instanceType": "p5.48xlarge",
                "capacityType": "spot",
            },
        },
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(run_budget), context=alice)
    cluster.kubectl(
        "create", "-f", "-", input=json.dumps(gpu_job("train", namespace, "big", pods=2)),
        context=alice,
    )  # fmt: skip

    # Held by the chart's webhook at creation; waiting for finance.
    job = cluster.kubectl.get("job", "train", namespace)
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["annotations"][HELD_ANNOTATION] == HELD_AT_ADMISSION
    wait_for(
        lambda: (
            cluster.kubectl.get("tb", "big", namespace).get("status", {}).get("phase")
            == "AwaitingApproval"
        ),
        20,
        "phase AwaitingApproval",
    )
    time.sleep(2)
    assert not job_pods(cluster, namespace, "train"), "no GPU may be used before approval"
    # What the awaiting-approval alert reads.
    since = scrape(
        metrics_url,
        "gpubudget_awaiting_approval_since_timestamp_seconds",
        namespace=namespace,
        budget="big",
    )
    assert since is not None and 0 < time.time() - since < 60

    # alice can neither approve her own budget nor release the Job herself.
    denied = cluster.kubectl(
        "annotate", "tb", "big", "-n", namespace, f"{APPROVED_AMOUNT_ANNOTATION}={cap:g}",
        context=alice, check=False,
    )  # fmt: skip
    assert denied.returncode != 0
    assert f"{release.name}-approval-guard" in denied.stderr
    assert f"user alice may not set, change or remove {APPROVED_AMOUNT_ANNOTATION}" in denied.stderr
    released = cluster.kubectl(
        "patch", "job", "train", "-n", namespace, "--type=merge", "-p",
        '{"spec":{"suspend":false}}', context=alice, check=False,
    )  # fmt: skip
    assert released.returncode != 0
    assert f"{release.name}-hold-guard-jobs" in released.stderr
    assert f"only the operator ({sa_user}) may release spec.suspend" in released.stderr

    # bob (finance) approves; the chart's webhook records him; the operator releases the Job.
    cluster.kubectl(
        "annotate", "tb", "big", "-n", namespace, f"{APPROVED_AMOUNT_ANNOTATION}={cap:g}",
        context="bob",
    )  # fmt: skip
    annotations = cluster.kubectl.get("tb", "big", namespace)["metadata"]["annotations"]
    assert annotations[APPROVED_BY_ANNOTATION] == "bob"
    wait_for(
        lambda: cluster.kubectl.get("job", "train", namespace)["spec"]["suspend"] is False,
        20,
        "the operator to release the Job after the approval",
    )
    pods = running_pods(cluster, namespace, "train", 2)
    assert all(p["spec"]["nodeName"].startswith("p5-spot-") for p in pods)

    # At the cap: suspended, spend within 1% of it.
    wait_for(
        lambda: not job_pods(cluster, namespace, "train"), 60, "the Job's pods gone at the cap"
    )
    time.sleep(3)
    status = cluster.kubectl.get("tb", "big", namespace)["status"]
    error = (status["spent"] - cap) / cap
    print(f"[chart] final spend ${status['spent']:.3f} vs cap ${cap:.2f} ({error:+.3%})")
    assert status["phase"] == "Suspended"
    assert status["spent"] == pytest.approx(cap, rel=0.01)
    job = cluster.kubectl.get("job", "train", namespace)
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["annotations"][HELD_ANNOTATION] == "CapReached"
    # What the near-cap alert and the dashboard read.
    ratio = scrape(metrics_url, "gpubudget_spent_ratio", namespace=namespace, budget="big")
    assert ratio == pytest.approx(1.0, abs=0.01)
    assert scrape(metrics_url, "gpubudget_awaiting_approval_since_timestamp_seconds") is None
    budget_reasons = operator_reasons(cluster, namespace, "big")
    assert budget_reasons.count("Approved") == 1
    assert budget_reasons.count("CapReached") == 1
    job_reasons = operator_reasons(cluster, namespace, "train")
    assert job_reasons.count("Admitted") == 1, job_reasons
    assert job_reasons.count("Suspended") == 1, job_reasons


@pytest.mark.timeout(300)
def test_self_signed_certificate_is_kept_across_upgrades(
    cluster: E2ECluster, release: Release
) -> None:
    """The chart's own CA and certificate are made once and read back (lookup) on upgrade.

    In-cluster mode with no replicas (the local cluster cannot run them), serving
    only the test namespace: the webhook configuration trusts the Secret's CA, and
    with no replica up it fails closed for labelled workloads, and only for them.
    """
    namespace = release.namespace
    values: dict[str, Any] = {
        "operator": {"replicas": 0, "namespaces": [namespace]},
        "admissionPolicies": {"enabled": False},
        "budgetPolicy": {"create": False},
        "rbac": {"aggregateToDefaultRoles": False, "finance": {"create": False}},
    }
    release.install(values)
    secret_name = f"{release.fullname}-webhook-tls"

    def certificate() -> tuple[dict[str, str], set[str]]:
        data = cluster.kubectl.get("secret", secret_name, namespace)["data"]
        config = cluster.kubectl.json("get", "mutatingwebhookconfiguration", release.fullname)
        bundles = {w["clientConfig"]["caBundle"] for w in config["webhooks"]}
        return data, bundles

    data, bundles = certificate()
    assert bundles == {data["ca.crt"]}
    assert base64.b64decode(data["tls.key"]).startswith(b"-----BEGIN")
    release.upgrade({**values, "operator": {**values["operator"], "accountingInterval": 10}})
    assert certificate() == (data, bundles)
    statefulset = cluster.kubectl.get("statefulset", release.fullname, namespace)
    env = {
        e["name"]: e.get("value")
        for e in statefulset["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["GPUBUDGET_ACCOUNTING_INTERVAL"] == "10"

    # No replica answers: a labelled Job is refused (fail closed), an unlabelled one is not.
    labelled = gpu_job("labelled", namespace, "some-budget", pods=1)
    result = cluster.kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(labelled), check=False
    )
    assert result.returncode != 0
    assert "hold-jobs.gpubudget.dev" in result.stderr
    unlabelled = gpu_job("unlabelled", namespace, "x", pods=1)
    del unlabelled["metadata"]["labels"][BUDGET_LABEL]
    cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(unlabelled))
    release.uninstall()
    assert release.leftovers() == []
    assert cluster.kubectl("get", "secret", secret_name, "-n", namespace, check=False).returncode
