"""The rows of docs/guarantees.md, tried as alice on the real local cluster.

alice has exactly an ML engineer's rights in her namespace (``grant_ml_engineer``:
Jobs and TrainingBudgets, read-only pods) and bob is finance. Each test makes
one attack an engineer could make with those rights and asserts that the API
server refuses it with a message saying why and what to do instead, or that
the run is stopped with spend within 1% of its limit. The admission policies
are the ones ``gpu_budget.admission_policies.render`` generates (as the chart
installs them), and the operator runs as a real process with its webhooks.

Runs here cost $1 a second (one spot p5.48xlarge pod), so caps of $50-100 mean
runs of about a minute: long enough that actuation latency under load stays within 1%.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from gpu_budget import APPROVED_AMOUNT_ANNOTATION, BUDGET_LABEL, FINALIZER, SPEND_RECORD_ANNOTATION
from gpu_budget.admission_policies import REQUIRE_BUDGET_LABEL
from gpu_budget.workloads import HELD_ANNOTATION
from localcluster.kubectl import wait_for
from localcluster.manifests import gpu_job
from tests.e2e import test_admission
from tests.e2e.conftest import E2ECluster
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.support import (
    grant_ml_engineer,
    job_pods,
    reasons,
    running_pods,
)
from tests.e2e.test_admission import annotations_of, create, get, kubectl, refused

# The operator with its webhooks and the rendered admission policies, as test_admission
# sets them up (pytest finds fixtures by their module-level names).
policies = test_admission.policies
webhook_certs = test_admission.webhook_certs
operator = test_admission.operator

OVER_CEILING_ESTIMATE = {
    "hours": 1,
    "gpus": 16,
    "instanceType": "p5.48xlarge",
    "capacityType": "spot",
}
"""16 H100s for an hour, +50%: over the $10,000 ceiling, so finance must approve."""


@pytest.fixture
def alice(cluster: E2ECluster, namespace: str) -> str:
    return grant_ml_engineer(cluster, namespace)


def tb(name: str, namespace: str, cap: float, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "gpubudget.dev/v1alpha1",
        "kind": "TrainingBudget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"costCap": cap, **spec},
    }


def status_of(cluster: E2ECluster, name: str, namespace: str) -> dict[str, Any]:
    return dict(get(cluster, "tb", name, namespace).get("status") or {})


def wait_phase(cluster: E2ECluster, name: str, namespace: str, phase: str, timeout: float) -> Any:
    return wait_for(
        lambda: (s := status_of(cluster, name, namespace)).get("phase") == phase and s,
        timeout,
        f"budget {name} {phase}",
    )


def landed(cluster: E2ECluster, namespace: str, budget: str, job: str, limit: float) -> float:
    """Wait for the run's pods to be gone and return the final spend's error against ``limit``."""
    wait_for(lambda: not job_pods(cluster, namespace, job), 60, f"pods of {job} gone")
    time.sleep(3)  # a last pass after the pods are gone
    spent = float(status_of(cluster, budget, namespace)["spent"])
    error = (spent - limit) / limit
    print(f"[guarantee] {budget}: final spend ${spent:.3f} vs limit ${limit:.2f} ({error:+.3%})")
    return error


def patch(cluster: E2ECluster, kind: str, name: str, namespace: str, body: Any, **kw: Any) -> Any:
    return kubectl(
        cluster, "patch", kind, name, "-n", namespace, "--type=merge", "-p", json.dumps(body), **kw
    )


# ----------------------------------------------------------------------- binding


def test_a_workload_stays_bound_to_its_budget(
    cluster: E2ECluster, namespace: str, alice: str, operator: OperatorProcess
) -> None:
    """Relabelling a running Job to another budget (or off budgets) is refused."""
    create(cluster, tb("capped", namespace, 50), context=alice)
    create(cluster, tb("roomy", namespace, 9000), context=alice)
    create(cluster, gpu_job("train", namespace, "capped", pods=1), context=alice)
    running_pods(cluster, namespace, "train", 1)

    for change in (f"{BUDGET_LABEL}=roomy", f"{BUDGET_LABEL}-"):
        result = refused(
            cluster, "label", "--overwrite", "job", "train", "-n", namespace, change, context=alice
        )
        assert "gpubudget.dev-workload-guard-jobs" in result.stderr
        assert "capped" in result.stderr
        assert "new" in result.stderr.lower(), result.stderr  # says what to do instead
    assert get(cluster, "job", "train", namespace)["metadata"]["labels"][BUDGET_LABEL] == "capped"

    # A pod template that names another budget than its Job is refused too.
    other = gpu_job("split", namespace, "capped", pods=1)
    other["spec"]["template"]["metadata"]["labels"] = {BUDGET_LABEL: "roomy"}
    result = refused(cluster, "create", "-f", "-", context=alice, input=json.dumps(other))
    assert "gpubudget.dev-workload-guard-jobs" in result.stderr
    assert "metadata.labels" in result.stderr

    # And the run is still stopped at the budget it started under.
    wait_phase(cluster, "capped", namespace, "Suspended", 120)
    assert landed(cluster, namespace, "capped", "train", 50) == pytest.approx(0, abs=0.01)


def test_pods_are_charged_by_owner_not_by_copied_labels(
    cluster: E2ECluster, namespace: str, alice: str, operator: OperatorProcess
) -> None:
    """A Job whose pods carry another Job's controller-uid label is charged to its own budget."""
    create(cluster, tb("first", namespace, 9000), context=alice)
    create(cluster, tb("second", namespace, 50), context=alice)
    create(cluster, gpu_job("first", namespace, "first", pods=1), context=alice)
    running_pods(cluster, namespace, "first", 1)
    first_uid = get(cluster, "job", "first", namespace)["metadata"]["uid"]

    copycat = gpu_job("second", namespace, "second", pods=1)
    copied = {"batch.kubernetes.io/controller-uid": first_uid, "job-name": "first"}
    copycat["spec"]["manualSelector"] = True
    copycat["spec"]["selector"] = {"matchLabels": copied}
    copycat["spec"]["template"]["metadata"]["labels"] = copied
    create(cluster, copycat, context=alice)

    wait_for(
        lambda: float(status_of(cluster, "second", namespace).get("burnRatePerHour") or 0) > 0,
        30,
        "the copycat's budget to charge its pod",
    )
    wait_phase(cluster, "second", namespace, "Suspended", 120)
    wait_for(
        lambda: get(cluster, "job", "second", namespace)["status"].get("active") in (None, 0),
        60,
        "the copycat's pods gone",
    )
    time.sleep(3)
    second = status_of(cluster, "second", namespace)
    error = (second["spent"] - 50) / 50
    print(f"[guarantee] copycat: final spend ${second['spent']:.3f} vs cap $50 ({error:+.3%})")
    assert error == pytest.approx(0, abs=0.01)
    first_pods = {line["name"] for line in status_of(cluster, "first", namespace)["ledger"]["pods"]}
    assert all(name.startswith("first-") for name in first_pods), first_pods


# ---------------------------------------------------------------------- identity


def test_recreating_a_capped_budget_neither_resets_spend_nor_lifts_the_stop(
    cluster: E2ECluster, namespace: str, alice: str, operator: OperatorProcess
) -> None:
    """Delete a budget at its cap and create it again: the Job stays stopped, spend carries on."""
    cap = 50.0
    create(cluster, tb("run", namespace, cap), context=alice)
    create(cluster, gpu_job("train", namespace, "run", pods=1), context=alice)
    running_pods(cluster, namespace, "train", 1)
    wait_phase(cluster, "run", namespace, "Suspended", 120)
    assert landed(cluster, namespace, "run", "train", cap) == pytest.approx(0, abs=0.01)
    spent_before = float(status_of(cluster, "run", namespace)["spent"])

    kubectl(cluster, "delete", "tb", "run", "-n", namespace, "--wait=true", context=alice)
    record = json.loads(
        annotations_of(get(cluster, "job", "train", namespace))[SPEND_RECORD_ANNOTATION]
    )
    assert record["spent"] == pytest.approx(spent_before, rel=1e-6)
    assert record["reason"] == "CapReached"

    create(cluster, tb("run", namespace, cap), context=alice)
    status = wait_for(
        lambda: (s := status_of(cluster, "run", namespace)).get("lastAccountedAt") and s,
        20,
        "the new budget's first pass",
    )
    assert status["phase"] == "Suspended"
    assert status["enforcement"]["reason"] == "CapReached"
    assert status["spent"] >= spent_before
    assert "Inherited" in reasons(cluster, namespace, "run")
    time.sleep(3)
    assert get(cluster, "job", "train", namespace)["spec"]["suspend"] is True
    assert not job_pods(cluster, namespace, "train")

    # Raising the cap of the new budget is raising the old one's: it runs on to the new cap.
    patch(cluster, "tb", "run", namespace, {"spec": {"costCap": 2 * cap}}, context=alice)
    running_pods(cluster, namespace, "train", 1)
    wait_phase(cluster, "run", namespace, "Suspended", 150)
    assert landed(cluster, namespace, "run", "train", 2 * cap) == pytest.approx(0, abs=0.01)


def test_only_the_operator_removes_its_finalizer(
    cluster: E2ECluster, namespace: str, alice: str, operator: OperatorProcess
) -> None:
    """alice cannot drop the finalizer that makes the operator record spend on deletion."""
    create(cluster, tb("run", namespace, 100), context=alice)
    wait_for(
        lambda: (
            FINALIZER in (get(cluster, "tb", "run", namespace)["metadata"].get("finalizers") or [])
        ),
        20,
        "the operator's finalizer",
    )
    result = refused(
        cluster, "patch", "tb", "run", "-n", namespace, "--type=json",
        "-p", '[{"op": "remove", "path": "/metadata/finalizers"}]', context=alice,
    )  # fmt: skip
    assert "gpubudget.dev-finalizer-guard" in result.stderr
    assert "deleting the budget is enough" in result.stderr.lower(), result.stderr


@pytest.mark.serial  # its stopped operator's fail-closed webhooks reach every namespace
def test_a_budget_deleted_by_force_leaves_its_workloads_held(
    cluster: E2ECluster, namespace: str, alice: str, operator: OperatorProcess
) -> None:
    """Out of alice's reach (an admin forces it), but it must not free the run either."""
    create(cluster, tb("run", namespace, 9000), context=alice)
    create(cluster, gpu_job("train", namespace, "run", pods=1), context=alice)
    running_pods(cluster, namespace, "train", 1)
    operator.stop()
    kubectl(cluster, "delete", "tb", "run", "-n", namespace, "--wait=false")
    kubectl(
        cluster, "patch", "tb", "run", "-n", namespace, "--type=json",
        "-p", '[{"op": "remove", "path": "/metadata/finalizers"}]',
    )  # fmt: skip
    wait_for(
        lambda: kubectl(cluster, "get", "tb", "run", "-n", namespace, check=False).returncode,
        20,
        "the budget gone",
    )
    operator.start()
    wait_for(
        lambda: get(cluster, "job", "train", namespace)["spec"].get("suspend") is True,
        30,
        "the orphaned Job held",
    )
    wait_for(lambda: not job_pods(cluster, namespace, "train"), 60, "its pods gone")
    assert annotations_of(get(cluster, "job", "train", namespace))[HELD_ANNOTATION] in (
        "BudgetDeleted",
        "BudgetNotFound",
    )


# ---------------------------------------------------------------------- approval


def approved_run(
    cluster: E2ECluster, namespace: str, alice: str, cap: float, amount: float
) -> None:
    """An over-ceiling budget that bob approves for ``amount``, with its Job running."""
    create(cluster, tb("big", namespace, cap, estimate=OVER_CEILING_ESTIMATE), context=alice)
    create(cluster, gpu_job("train", namespace, "big", pods=1), context=alice)
    wait_phase(cluster, "big", namespace, "AwaitingApproval", 20)
    kubectl(
        cluster, "annotate", "tb", "big", "-n", namespace,
        f"{APPROVED_AMOUNT_ANNOTATION}={amount:g}", context="bob",
    )  # fmt: skip
    running_pods(cluster, namespace, "train", 1)


def test_switching_an_approved_budget_to_alert_stops_at_the_approval(
    cluster: E2ECluster, namespace: str, alice: str, operator: OperatorProcess
) -> None:
    """Approved for $50, then set to Alert: it alerts at the cap and stops at the $50."""
    approved_run(cluster, namespace, alice, cap=50, amount=50)
    patch(
        cluster,
        "tb",
        "big",
        namespace,
        {"spec": {"enforcement": {"action": "Alert"}}},
        context=alice,
    )
    wait_phase(cluster, "big", namespace, "Suspended", 120)
    assert landed(cluster, namespace, "big", "train", 50) == pytest.approx(0, abs=0.01)
    assert status_of(cluster, "big", namespace)["enforcement"]["reason"] == "ApprovalExhausted"


def test_alert_above_the_ceiling_is_refused(
    cluster: E2ECluster, namespace: str, alice: str, operator: OperatorProcess
) -> None:
    """The default policy does not let a budget above the ceiling choose Alert."""
    result = refused(
        cluster, "create", "-f", "-", context=alice,
        input=json.dumps(tb("huge", namespace, 50_000, enforcement={"action": "Alert"})),
    )  # fmt: skip
    assert "gpubudget.dev-budget-guard" in result.stderr
    assert "Alert" in result.stderr


def test_raising_the_cap_after_approval_does_not_widen_it(
    cluster: E2ECluster, namespace: str, alice: str, operator: OperatorProcess
) -> None:
    """bob approves $200 for a $50 cap; alice raises the cap to $100: it still stops at $50."""
    approved_run(cluster, namespace, alice, cap=50, amount=200)
    patch(cluster, "tb", "big", namespace, {"spec": {"costCap": 100}}, context=alice)
    status = wait_for(
        lambda: (
            (s := status_of(cluster, "big", namespace)).get("approval", {}).get("spendLimit") == 50
            and s
        ),
        20,
        "the approval to stay at the cap finance saw",
    )
    assert status["approval"]["approvedCap"] == 50
    wait_phase(cluster, "big", namespace, "Suspended", 120)
    assert landed(cluster, namespace, "big", "train", 50) == pytest.approx(0, abs=0.01)


# --------------------------------------------------------------------- the hold


def test_a_forged_owner_does_not_skip_the_hold(
    cluster: E2ECluster, namespace: str, alice: str, operator: OperatorProcess
) -> None:
    """A Job claiming a JobSet owns it (which would exempt it) is held like any other."""
    create(cluster, tb("big", namespace, 25, estimate=OVER_CEILING_ESTIMATE), context=alice)
    forged = gpu_job("train", namespace, "big", pods=1)
    forged["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "jobset.x-k8s.io/v1alpha2",
            "kind": "JobSet",
            "name": "not-a-jobset",
            "uid": str(uuid.uuid4()),
            "controller": True,
        }
    ]
    created = create(cluster, forged, context=alice)
    assert created["spec"]["suspend"] is True
    assert annotations_of(created)[HELD_ANNOTATION] == "Admission"
    time.sleep(3)
    assert not job_pods(cluster, namespace, "train"), "no GPU before finance approves"


@pytest.mark.serial  # its stopped operator's fail-closed webhooks reach every namespace
def test_an_unadmitted_workload_stays_held_while_the_operator_is_down(
    cluster: E2ECluster, namespace: str, alice: str, operator: OperatorProcess
) -> None:
    """Created suspended by alice, resumed by her while the operator's webhooks are down."""
    create(cluster, tb("big", namespace, 25, estimate=OVER_CEILING_ESTIMATE), context=alice)
    mine = gpu_job("train", namespace, "big", pods=1)
    mine["spec"]["suspend"] = True
    create(cluster, mine, context=alice)
    operator.stop()
    result = refused(
        cluster, "patch", "job", "train", "-n", namespace, "--type=merge",
        "-p", '{"spec":{"suspend":false}}', context=alice,
    )  # fmt: skip
    assert "gpubudget.dev-workload-guard-jobs" in result.stderr
    assert "only the operator" in result.stderr
    assert get(cluster, "job", "train", namespace)["spec"]["suspend"] is True


# ------------------------------------------------------------------- attribution


def test_attribution_follows_the_namespace(
    cluster: E2ECluster, namespace: str, alice: str, operator: OperatorProcess
) -> None:
    """A namespace the platform team labelled for team nlp cannot bill another team."""
    kubectl(cluster, "label", "namespace", namespace, "gpubudget.dev/team=nlp")
    wait_for(
        lambda: kubectl(
            cluster, "create", "--dry-run=server", "-f", "-", check=False,
            input=json.dumps(tb("probe", namespace, 10, owner={"team": "vision"})),
        ).returncode,
        30,
        "the namespace label to reach the budget guard",
    )  # fmt: skip
    result = refused(
        cluster, "create", "-f", "-", context=alice,
        input=json.dumps(tb("run", namespace, 10, owner={"team": "vision"})),
    )  # fmt: skip
    assert "gpubudget.dev-budget-guard" in result.stderr
    assert "nlp" in result.stderr
    create(cluster, tb("run", namespace, 10, owner={"team": "nlp"}), context=alice)
    create(cluster, tb("unset", namespace, 10), context=alice)


# ----------------------------------------------------------------- every GPU counts


def test_require_budget_covers_every_gpu_resource_and_kind(
    cluster: E2ECluster, namespace: str, operator: OperatorProcess
) -> None:
    """MIG slices and AMD GPUs need a budget too; kinds a budget cannot stop are refused."""
    alice = grant_ml_engineer(cluster, namespace, extra_resources=[("apps", "deployments")])
    kubectl(cluster, "label", "namespace", namespace, f"{REQUIRE_BUDGET_LABEL}=true")

    def unbudgeted_job(resource: str) -> dict[str, Any]:
        job = gpu_job(f"j-{resource.replace('/', '-').replace('.', '-')}", namespace, "x", pods=1)
        del job["metadata"]["labels"]
        job["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {resource: 1}}
        return job

    wait_for(
        lambda: kubectl(
            cluster, "create", "--dry-run=server", "-f", "-", check=False,
            input=json.dumps(unbudgeted_job("nvidia.com/gpu")),
        ).returncode,
        30,
        "the require-budget policy to apply to the namespace",
    )  # fmt: skip
    for resource in ("nvidia.com/mig-1g.10gb", "amd.com/gpu", "nvidia.com/gpu.shared"):
        result = refused(
            cluster, "create", "-f", "-", context=alice, input=json.dumps(unbudgeted_job(resource))
        )
        assert "gpubudget.dev-require-budget-jobs" in result.stderr, resource

    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "serve", "namespace": namespace, "labels": {BUDGET_LABEL: "x"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "serve"}},
            "template": {
                "metadata": {"labels": {"app": "serve"}},
                "spec": {
                    "containers": [
                        {
                            "name": "s",
                            "image": "s",
                            "resources": {"limits": {"nvidia.com/gpu": 1}},
                        }
                    ]
                },
            },
        },
    }
    result = refused(cluster, "create", "-f", "-", context=alice, input=json.dumps(deployment))
    assert "gpubudget.dev-require-budget-deployments" in result.stderr
    assert "Job" in result.stderr and "JobSet" in result.stderr  # the kinds a budget can stop
