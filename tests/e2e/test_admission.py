"""Admission on the real API server: the policies' CEL and the operator's webhooks.

The ValidatingAdmissionPolicies are rendered by ``gpu_budget.admission_policies``
for an operator running as ``admin`` (as it does on the local cluster) and
applied once; they are shared and left in place. Each test that needs the
webhooks runs its own operator process, serving only the test's namespace and
managing webhook configurations of its own name, which are deleted afterwards,
so concurrent tests elsewhere on the cluster are unaffected.

Workloads name budgets that do not exist, so whatever the operator's enforcement
decides, they stay held while the test looks at them.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gpu_budget import (
    APPROVED_AMOUNT_ANNOTATION,
    APPROVED_AT_ANNOTATION,
    APPROVED_BY_ANNOTATION,
    BUDGET_LABEL,
)
from gpu_budget.admission import HELD_AT_ADMISSION
from gpu_budget.admission_policies import REQUIRE_BUDGET_LABEL, render
from gpu_budget.workloads import HELD_ANNOTATION, KILLED_ANNOTATION
from gpu_budget.workloads.pod import SCHEDULING_GATE
from localcluster.kubectl import KubectlError, wait_for
from localcluster.manifests import gpu_job
from localcluster.net import free_port
from tests.e2e.conftest import E2ECluster
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.support import (
    Receiver,
    ensure_shared_policy,
    grant_ml_engineer,
    job_pods,
    reasons,
    running_pods,
)

REPO = Path(__file__).resolve().parents[2]
TEST_CRDS = REPO / "tests" / "e2e" / "crds"
OPERATOR_USER = "admin"
NO_SUCH_BUDGET = "no-such-budget"


# ------------------------------------------------------------------------ helpers


NO_POLICY = "no params found for policy binding"


def kubectl(
    cluster: E2ECluster,
    *args: str,
    context: str = "admin",
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``cluster.kubectl``, surviving another test deleting the shared BudgetPolicy.

    Without it the approval guard (parameterNotFoundAction Deny) refuses every
    TrainingBudget write; that is by design, but not what these tests are about.
    """
    for _ in range(3):
        result = cluster.kubectl(*args, context=context, check=False, input=input)
        if NO_POLICY not in result.stderr:
            break
        ensure_shared_policy(cluster)
    if check and result.returncode != 0:
        raise KubectlError(result.returncode, result.args, result.stdout, result.stderr)
    return result


def kubectl_json(
    cluster: E2ECluster, *args: str, context: str = "admin", input: str | None = None
) -> dict[str, Any]:
    return dict(
        json.loads(kubectl(cluster, *args, "-o", "json", context=context, input=input).stdout)
    )


def create(cluster: E2ECluster, manifest: dict[str, Any], context: str = "admin") -> dict[str, Any]:
    return kubectl_json(cluster, "create", "-f", "-", context=context, input=json.dumps(manifest))


def refused(
    cluster: E2ECluster, *args: str, context: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run kubectl expecting the API server to refuse; return the result for its message."""
    result = kubectl(cluster, *args, context=context, check=False, input=input)
    assert result.returncode != 0, f"kubectl {' '.join(args)} as {context} was allowed"
    return result


def get(cluster: E2ECluster, kind: str, name: str, namespace: str) -> dict[str, Any]:
    return kubectl_json(cluster, "get", kind, name, "-n", namespace)


def annotations_of(obj: dict[str, Any]) -> dict[str, str]:
    return dict(obj["metadata"].get("annotations") or {})


def approval(obj: dict[str, Any]) -> dict[str, str]:
    """The finance approval annotations of a budget (kopf keeps others of its own)."""
    keys = (APPROVED_AMOUNT_ANNOTATION, APPROVED_BY_ANNOTATION, APPROVED_AT_ANNOTATION)
    return {k: v for k, v in annotations_of(obj).items() if k in keys}


def pod_spec(gpus: int) -> dict[str, Any]:
    resources = {"limits": {"nvidia.com/gpu": gpus}} if gpus else {}
    return {
        "restartPolicy": "Never",
        "containers": [{"name": "trainer", "image": "trainer:latest", "resources": resources}],
    }


def job(
    name: str,
    namespace: str,
    budget: str | None = NO_SUCH_BUDGET,
    gpus: int = 1,
    suspend: bool | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"backoffLimit": 0, "template": {"spec": pod_spec(gpus)}}
    if suspend is not None:
        spec["suspend"] = suspend
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {BUDGET_LABEL: budget} if budget else {},
            "annotations": annotations or {},
        },
        "spec": spec,
    }


def bare_pod(name: str, namespace: str, budget: str | None = NO_SUCH_BUDGET) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {BUDGET_LABEL: budget} if budget else {},
        },
        "spec": pod_spec(1),
    }


def pytorchjob(name: str, namespace: str, budget: str | None = NO_SUCH_BUDGET) -> dict[str, Any]:
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {BUDGET_LABEL: budget} if budget else {},
        },
        "spec": {
            "pytorchReplicaSpecs": {
                "Master": {"replicas": 1, "template": {"spec": pod_spec(8)}},
                "Worker": {"replicas": 3, "template": {"spec": pod_spec(8)}},
            }
        },
    }


def budget(name: str, namespace: str, **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "gpubudget.dev/v1alpha1",
        "kind": "TrainingBudget",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {"costCap": 500},
    }


# ----------------------------------------------------------------------- fixtures

CHART_GOVERNED = "gpubudget.dev/admission-policies"
"""Namespaces with this label are governed by a Helm release's own policies (test_chart)."""


def shared_policies() -> list[dict[str, Any]]:
    """The policies for an operator running as admin, bound outside chart-governed namespaces.

    The chart e2e installs the same policies for the chart's ServiceAccount, in
    namespaces it labels; two hold guards on one namespace would each refuse the
    other's operator.
    """
    manifests = render([OPERATOR_USER])
    for manifest in manifests:
        if manifest["kind"] == "ValidatingAdmissionPolicyBinding":
            match = manifest["spec"].setdefault("matchResources", {})
            selector = match.setdefault("namespaceSelector", {})
            selector.setdefault("matchExpressions", []).append(
                {"key": CHART_GOVERNED, "operator": "DoesNotExist"}
            )
    return manifests


@pytest.fixture(scope="session")
def policies(cluster: E2ECluster) -> None:
    """CRDs, the shared BudgetPolicy ``default`` and the policies, applied idempotently."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    crds = ["crd/trainingbudgets.gpubudget.dev", "crd/budgetpolicies.gpubudget.dev"]
    if TEST_CRDS.is_dir():
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(TEST_CRDS))
        crds += ["crd/pytorchjobs.kubeflow.org", "crd/jobsets.jobset.x-k8s.io"]
    cluster.kubectl("wait", "--for=condition=Established", *crds)
    ensure_shared_policy(cluster)
    cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=gpu-budget-operator",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": shared_policies()}),
    )

    # Policies take a moment to reach the API server's admission chain: wait until
    # one denies what it must (a dry run, so nothing is created).
    def enforced() -> bool:
        probe = budget("vap-probe", "default", **{APPROVED_AMOUNT_ANNOTATION: "1"})
        result = cluster.kubectl(
            "create", "--dry-run=server", "-f", "-", input=json.dumps(probe), check=False
        )
        return "gpubudget.dev-approval-guard" in result.stderr

    wait_for(enforced, 30, "the approval guard policy to be enforced")


@pytest.fixture(scope="session")
def webhook_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("webhook-certs")
    subprocess.run([str(REPO / "hack" / "webhook-certs.sh"), str(directory)], check=True)
    return directory


@pytest.fixture
def alice(cluster: E2ECluster, namespace: str) -> str:
    """alice may do in this namespace what she may do in ml-team (and run PyTorchJobs)."""
    return grant_ml_engineer(cluster, namespace, extra_resources=[("kubeflow.org", "pytorchjobs")])


@pytest.fixture
def operator(
    cluster: E2ECluster,
    namespace: str,
    policies: None,
    webhook_certs: Path,
    tmp_path: Path,
) -> Iterator[OperatorProcess]:
    """The operator with its webhooks, serving this namespace, managing its own configuration."""
    config_name = f"{namespace}.gpubudget.dev"
    process = OperatorProcess(
        cluster.kubeconfig,
        None,
        tmp_path / "operator.log",
        port=free_port(),
        extra_args=(
            f"--namespace={namespace}",
            f"--webhook-port={free_port()}",
            "--webhook-address=127.0.0.1",
            f"--webhook-cert-file={webhook_certs / 'tls.crt'}",
            f"--webhook-key-file={webhook_certs / 'tls.key'}",
            f"--webhook-ca-file={webhook_certs / 'ca.crt'}",
            "--manage-webhook-config",
            f"--webhook-config-name={config_name}",
        ),
    )
    try:
        process.start()

        # The configuration is written once kopf has scanned the resources; then the
        # API server needs a moment to call it. A dry run shows when it does.
        def holding() -> bool:
            result = kubectl(
                cluster, "create", "--dry-run=server", "-o", "json", "-f", "-",
                input=json.dumps(job("webhook-probe", namespace)), check=False,
            )  # fmt: skip
            return result.returncode == 0 and json.loads(result.stdout)["spec"].get("suspend")

        wait_for(holding, 60, f"the operator's webhooks ({process.tail(10)})")
        yield process
    finally:
        # Our configurations first: a held-workload webhook stays registered when the
        # operator stops (it fails closed), and must not outlive the test.
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            cluster.kubectl("delete", kind, config_name, "--ignore-not-found", check=False)
        process.stop()
        print("operator log tail:\n" + process.tail())


# -------------------------------------------------------------------------- tests


def test_alice_cannot_approve_her_own_budget(
    cluster: E2ECluster, namespace: str, alice: str, operator: OperatorProcess
) -> None:
    create(cluster, budget("run", namespace), context=alice)
    result = refused(
        cluster, "annotate", "trainingbudget", "run", "-n", namespace,
        f"{APPROVED_AMOUNT_ANNOTATION}=50000", context=alice,
    )  # fmt: skip
    assert "gpubudget.dev-approval-guard" in result.stderr
    assert f"user alice may not set, change or remove {APPROVED_AMOUNT_ANNOTATION}" in (
        result.stderr
    )
    assert "only members of the finance groups [finance]" in result.stderr
    assert APPROVED_AMOUNT_ANNOTATION not in annotations_of(get(cluster, "tb", "run", namespace))

    # Nor may she create a budget that comes approved.
    result = refused(
        cluster, "create", "-f", "-", context=alice,
        input=json.dumps(budget("preapproved", namespace, **{APPROVED_AMOUNT_ANNOTATION: "1e6"})),
    )  # fmt: skip
    assert f"user alice may not set, change or remove {APPROVED_AMOUNT_ANNOTATION}" in (
        result.stderr
    )
    assert kubectl(cluster, "get", "tb", "preapproved", "-n", namespace, check=False).returncode


def test_finance_approval_is_recorded_with_the_approver(
    cluster: E2ECluster, namespace: str, alice: str, operator: OperatorProcess
) -> None:
    create(cluster, budget("run", namespace), context=alice)
    before = datetime.now(UTC).replace(microsecond=0)
    kubectl(
        cluster, "annotate", "tb", "run", "-n", namespace, f"{APPROVED_AMOUNT_ANNOTATION}=50000",
        context="bob",
    )  # fmt: skip
    approved = approval(get(cluster, "tb", "run", namespace))
    assert approved[APPROVED_AMOUNT_ANNOTATION] == "50000"
    assert approved[APPROVED_BY_ANNOTATION] == "bob"
    approved_at = datetime.fromisoformat(approved[APPROVED_AT_ANNOTATION].replace("Z", "+00:00"))
    assert before <= approved_at <= datetime.now(UTC) + timedelta(seconds=1)

    # The record cannot be rewritten by hand, not even by finance: it is kept, with a warning.
    result = kubectl(
        cluster, "annotate", "tb", "run", "-n", namespace, "--overwrite",
        f"{APPROVED_BY_ANNOTATION}=carol", context="bob",
    )  # fmt: skip
    assert "recorded by gpu-budget-operator" in result.stderr
    assert annotations_of(get(cluster, "tb", "run", namespace))[APPROVED_BY_ANNOTATION] == "bob"

    # alice edits her budget: the approval and its record stay as they are.
    kubectl(
        cluster, "patch", "tb", "run", "-n", namespace, "--type=merge", "-p",
        '{"spec":{"costCap":600}}', context=alice,
    )  # fmt: skip
    assert approval(get(cluster, "tb", "run", namespace)) == approved

    # Withdrawing the approval withdraws its record.
    kubectl(
        cluster,
        "annotate",
        "tb",
        "run",
        "-n",
        namespace,
        f"{APPROVED_AMOUNT_ANNOTATION}-",
        context="bob",
    )
    assert approval(get(cluster, "tb", "run", namespace)) == {}


@pytest.mark.serial  # needs no other operator's webhooks on the cluster
def test_approval_is_refused_when_it_cannot_be_recorded(
    cluster: E2ECluster, namespace: str, alice: str, policies: None
) -> None:
    """No operator serves this namespace: finance's approval is refused, not left unrecorded."""
    others = kubectl_json(cluster, "get", "mutatingwebhookconfigurations")["items"]
    if any(
        "trainingbudgets" in rule.get("resources", [])
        for config in others
        for webhook in config.get("webhooks") or []
        for rule in webhook.get("rules") or []
    ):
        pytest.skip("another operator's webhook records approvals on this cluster right now")
    create(cluster, budget("run", namespace), context=alice)
    result = refused(
        cluster, "annotate", "tb", "run", "-n", namespace, f"{APPROVED_AMOUNT_ANNOTATION}=50000",
        context="bob",
    )  # fmt: skip
    assert f"must be recorded: {APPROVED_BY_ANNOTATION} must be bob" in result.stderr
    assert "is the operator running with its webhooks?" in result.stderr


def test_labelled_job_is_held_at_creation_unless_created_suspended(
    cluster: E2ECluster, namespace: str, alice: str, operator: OperatorProcess
) -> None:
    held = create(cluster, job("train", namespace), context=alice)
    assert held["spec"]["suspend"] is True
    assert annotations_of(held)[HELD_ANNOTATION] == HELD_AT_ADMISSION

    unlabelled = create(cluster, job("unbudgeted", namespace, budget=None), context=alice)
    assert not unlabelled["spec"].get("suspend")
    assert HELD_ANNOTATION not in annotations_of(unlabelled)

    # Created suspended: the user's own suspension, left alone...
    mine = create(cluster, job("mine", namespace, suspend=True), context=alice)
    assert mine["spec"]["suspend"] is True
    assert HELD_ANNOTATION not in annotations_of(mine)
    # ...until the user resumes it: then it is held for the budget like a new one.
    kubectl(
        cluster, "patch", "job", "mine", "-n", namespace, "--type=merge", "-p",
        '{"spec":{"suspend":false}}', context=alice,
    )  # fmt: skip
    resumed = get(cluster, "job", "mine", namespace)
    assert resumed["spec"]["suspend"] is True
    assert annotations_of(resumed)[HELD_ANNOTATION] == HELD_AT_ADMISSION


def test_only_the_operator_releases_a_held_job(
    cluster: E2ECluster, namespace: str, alice: str, operator: OperatorProcess
) -> None:
    create(cluster, job("train", namespace), context=alice)
    result = refused(
        cluster, "patch", "job", "train", "-n", namespace, "--type=merge", "-p",
        '{"spec":{"suspend":false}}', context=alice,
    )  # fmt: skip
    assert "gpubudget.dev-hold-guard-jobs" in result.stderr
    assert (
        f"Job {namespace}/train is held by gpu-budget-operator ({HELD_AT_ADMISSION}); "
        f"only the operator ({OPERATOR_USER}) may release spec.suspend"
    ) in result.stderr
    result = refused(
        cluster, "annotate", "job", "train", "-n", namespace, f"{HELD_ANNOTATION}-",
        context=alice,
    )  # fmt: skip
    assert f"may remove or change {HELD_ANNOTATION}" in result.stderr
    assert get(cluster, "job", "train", namespace)["spec"]["suspend"] is True

    # The operator may (this is what it sends when the budget allows).
    release = {"spec": {"suspend": False}, "metadata": {"annotations": {HELD_ANNOTATION: None}}}
    kubectl(
        cluster, "patch", "job", "train", "-n", namespace, "--type=merge",
        "-p", json.dumps(release), context=OPERATOR_USER,
    )  # fmt: skip


def test_nobody_releases_a_killed_job(
    cluster: E2ECluster, namespace: str, alice: str, operator: OperatorProcess
) -> None:
    reason = "CapReached: spent $500.00 of $500.00"
    create(
        cluster,
        job("killed", namespace, suspend=True, annotations={KILLED_ANNOTATION: reason}),
    )
    for user in (alice, OPERATOR_USER):
        result = refused(
            cluster, "patch", "job", "killed", "-n", namespace, "--type=merge", "-p",
            '{"spec":{"suspend":false}}', context=user,
        )  # fmt: skip
        assert (
            f"Job {namespace}/killed was killed by gpu-budget-operator ({reason}) and may never "
            "run again"
        ) in result.stderr
    result = refused(
        cluster, "annotate", "job", "killed", "-n", namespace, f"{KILLED_ANNOTATION}-",
        context=alice,
    )  # fmt: skip
    assert f"may remove or change {HELD_ANNOTATION} and {KILLED_ANNOTATION}" in result.stderr
    assert get(cluster, "job", "killed", namespace)["spec"]["suspend"] is True


def test_require_budget_namespace_rejects_unbudgeted_gpu_workloads(
    cluster: E2ECluster, namespace: str, alice: str, operator: OperatorProcess
) -> None:
    kubectl(cluster, "label", "namespace", namespace, f"{REQUIRE_BUDGET_LABEL}=true")

    def rejected(manifest: dict[str, Any], context: str) -> str:
        result = refused(cluster, "create", "-f", "-", context=context, input=json.dumps(manifest))
        return result.stderr

    # Namespace labels reach the policy through an informer: wait until it applies.
    wait_for(
        lambda: kubectl(
            cluster, "create", "--dry-run=server", "-f", "-", check=False,
            input=json.dumps(job("probe", namespace, budget=None)),
        ).returncode,
        30,
        "the require-budget policy to apply to the namespace",
    )  # fmt: skip
    message = rejected(job("unbudgeted", namespace, budget=None), alice)
    assert "gpubudget.dev-require-budget-jobs" in message
    assert (
        f"Job {namespace}/unbudgeted requests nvidia.com/gpu but has no {BUDGET_LABEL} label"
    ) in message
    assert f"add the label {BUDGET_LABEL}: <budget name>" in message

    create(cluster, job("budgeted", namespace), context=alice)
    create(cluster, job("cpu-only", namespace, budget=None, gpus=0), context=alice)

    message = rejected(bare_pod("unbudgeted", namespace, budget=None), OPERATOR_USER)
    assert f"Pod {namespace}/unbudgeted requests nvidia.com/gpu" in message

    # A controller's pods are exempt: the controller was checked.
    owned = bare_pod("owned", namespace, budget=None)
    owned["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": "budgeted",
            "uid": get(cluster, "job", "budgeted", namespace)["metadata"]["uid"],
            "controller": True,
        }
    ]
    kubectl(cluster, "create", "--dry-run=server", "-f", "-", input=json.dumps(owned))

    # Nor may the label be taken off a GPU workload later.
    result = refused(
        cluster, "label", "job", "budgeted", "-n", namespace, f"{BUDGET_LABEL}-", context=alice
    )
    # Two policies refuse it (the label is also the workload's binding to its budget); the
    # API server reports whichever it evaluates first.
    assert (
        "gpubudget.dev-require-budget-jobs" in result.stderr
        or "gpubudget.dev-workload-guard-jobs" in result.stderr
    ), result.stderr


def test_labelled_bare_pod_is_gated(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    pod = create(cluster, bare_pod("train", namespace))
    assert {"name": SCHEDULING_GATE} in pod["spec"]["schedulingGates"]
    assert annotations_of(pod)[HELD_ANNOTATION] == HELD_AT_ADMISSION
    assert get(cluster, "pod", "train", namespace)["status"].get("phase") == "Pending"

    pinned = bare_pod("pinned", namespace)
    pinned["spec"]["nodeName"] = "g5-spot-0"
    result = refused(cluster, "create", "-f", "-", context=OPERATOR_USER, input=json.dumps(pinned))
    assert "sets spec.nodeName, which skips the scheduler" in result.stderr


@pytest.mark.skipif(not TEST_CRDS.is_dir(), reason="no test CRDs for PyTorchJob")
def test_pytorchjob_is_held_by_run_policy(
    cluster: E2ECluster, namespace: str, alice: str, operator: OperatorProcess
) -> None:
    held = create(cluster, pytorchjob("train", namespace), context=alice)
    assert held["spec"]["runPolicy"]["suspend"] is True
    assert annotations_of(held)[HELD_ANNOTATION] == HELD_AT_ADMISSION
    result = refused(
        cluster, "patch", "pytorchjob", "train", "-n", namespace, "--type=merge", "-p",
        '{"spec":{"runPolicy":{"suspend":false}}}', context=alice,
    )  # fmt: skip
    assert "may release spec.runPolicy.suspend" in result.stderr

    kubectl(cluster, "label", "namespace", namespace, f"{REQUIRE_BUDGET_LABEL}=true")
    wait_for(
        lambda: "gpubudget.dev-require-budget-pytorchjobs"
        in kubectl(
            cluster, "create", "--dry-run=server", "-f", "-", context=alice, check=False,
            input=json.dumps(pytorchjob("unbudgeted", namespace, budget=None)),
        ).stderr,
        30,
        "the require-budget policy to reject an unbudgeted PyTorchJob",
    )  # fmt: skip


# -------------------------------------------------------------- the whole story


@pytest.mark.serial  # sets the shared policy's notification URL
def test_finance_approval_story_from_hold_to_cap_to_raise(
    cluster: E2ECluster,
    namespace: str,
    alice: str,
    operator: OperatorProcess,
    receiver: Receiver,
) -> None:
    """alice's over-ceiling run waits for bob, runs to its cap, and needs bob again to go on.

    The cap is small but the estimate (16 H100s for an hour, +50%) is over the
    $10,000 ceiling, so finance must approve before any GPU is used.
    """
    cap = 80.0
    run_budget = {
        "apiVersion": "gpubudget.dev/v1alpha1",
        "kind": "TrainingBudget",
        "metadata": {"name": "big", "namespace": namespace},
        "spec": {
            "costCap": cap,
            "estimate": {
                "hours": 1,
                "gpus": 16,
                "instanceType": "p5.48xlarge",
                "capacityType": "spot",
            },
        },
    }
    create(cluster, run_budget, context=alice)
    create(cluster, gpu_job("train", namespace, "big", pods=2), context=alice)

    held = get(cluster, "job", "train", namespace)
    assert held["spec"]["suspend"] is True
    assert annotations_of(held)[HELD_ANNOTATION] == HELD_AT_ADMISSION
    status = wait_for(
        lambda: (
            get(cluster, "tb", "big", namespace).get("status", {}).get("phase")
            == "AwaitingApproval"
            and get(cluster, "tb", "big", namespace)["status"]
        ),
        20,
        "AwaitingApproval",
    )
    assert status["estimate"]["total"] == pytest.approx(16 * 450 * 1.5)
    time.sleep(3)
    assert not job_pods(cluster, namespace, "train"), "no GPU before approval"

    denied = cluster.kubectl(
        "annotate", "tb", "big", "-n", namespace, f"{APPROVED_AMOUNT_ANNOTATION}={cap:g}",
        context=alice, check=False,
    )  # fmt: skip
    assert denied.returncode != 0
    assert "gpubudget.dev-approval-guard" in denied.stderr

    cluster.kubectl(
        "annotate",
        "tb",
        "big",
        "-n",
        namespace,
        f"{APPROVED_AMOUNT_ANNOTATION}={cap:g}",
        context="bob",
    )
    running_pods(cluster, namespace, "train", 2)
    approved = get(cluster, "tb", "big", namespace)["status"]["approval"]
    assert approved["approvedBy"] == "bob"
    assert approved["approvedAmount"] == cap

    wait_for(
        lambda: get(cluster, "tb", "big", namespace)["status"]["phase"] == "Suspended",
        90,
        "stop at the cap",
    )
    wait_for(lambda: not job_pods(cluster, namespace, "train"), 30, "pods gone")
    time.sleep(3)
    status = get(cluster, "tb", "big", namespace)["status"]
    error = (status["spent"] - cap) / cap
    spent = status["spent"]
    print(
        f"[enforcement] approval story: final spend ${spent:.3f} vs cap ${cap:.2f} ({error:+.3%})"
    )
    assert status["spent"] == pytest.approx(cap, rel=0.01)
    event_reasons = reasons(cluster, namespace, "big")
    assert "Approved" in event_reasons
    assert event_reasons.count("ThresholdReached") == 3
    wait_for(
        lambda: (
            {"AwaitingApproval", "Approved", "ThresholdReached", "CapReached"}
            <= set(receiver.reasons(namespace))
        ),
        10,
        "notifications for approval, thresholds and the cap",
    )

    # alice raises the cap: above what finance approved, so it stays suspended.
    cluster.kubectl(
        "patch", "tb", "big", "-n", namespace, "--type=merge", "-p", '{"spec":{"costCap":160}}',
        context=alice,
    )  # fmt: skip
    status = wait_for(
        lambda: (
            (s := get(cluster, "tb", "big", namespace)["status"])["approval"]["spendLimit"] == cap
            and s
        ),
        20,
        "the raised cap to be seen",
    )
    time.sleep(3)
    assert get(cluster, "tb", "big", namespace)["status"]["phase"] == "Suspended"
    assert get(cluster, "job", "train", namespace)["spec"]["suspend"] is True

    # bob approves the new cap: the run resumes.
    approve_more = f"{APPROVED_AMOUNT_ANNOTATION}=160"
    cluster.kubectl(
        "annotate", "--overwrite", "tb", "big", "-n", namespace, approve_more, context="bob"
    )
    running_pods(cluster, namespace, "train", 2)
    wait_for(
        lambda: get(cluster, "tb", "big", namespace)["status"]["phase"] == "Running", 10, "Running"
    )
