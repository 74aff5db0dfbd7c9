"""A limit per period closes the split-below-the-ceiling gap, tried as alice.

The attack: the ceiling is $10,000 per budget, so an engineer who needs more
makes several budgets just below it and finance never sees them. Here the
namespace may spend $240 a month and alice makes three $100 budgets (each far
below the ceiling): the third does not fit beside the first two and waits for
finance; once finance lets it run, all three stop together when the month's
spend reaches $240 (within 1%), before any of them reaches its cap; deleting a
budget frees none of it.

The limit is the namespace's own (scope Namespace, named after the test's
namespace), so tests sharing the cluster-wide BudgetPolicy are not counted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gpu_budget import APPROVED_AMOUNT_ANNOTATION
from localcluster.kubectl import wait_for
from localcluster.manifests import gpu_job
from tests.e2e import test_admission
from tests.e2e.conftest import E2ECluster
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.support import condition, grant_ml_engineer, job_pods
from tests.e2e.test_admission import create, get, kubectl, refused
from tests.e2e.test_guarantees import status_of, tb, wait_phase

policies = test_admission.policies
webhook_certs = test_admission.webhook_certs
operator = test_admission.operator

LIMIT = 240.0
CAP = 100.0


@pytest.fixture
def limited(cluster: E2ECluster, namespace: str, operator: OperatorProcess) -> Iterator[str]:
    """The shared policy with a monthly limit for this namespace only; removed afterwards."""

    def limits() -> list[dict[str, Any]]:
        policy = cluster.kubectl.json("get", "budgetpolicy", "default")
        return list(policy["spec"].get("periodLimits") or [])

    def set_limits(entries: list[dict[str, Any]]) -> None:
        body = {"spec": {"periodLimits": entries}}
        cluster.kubectl("patch", "budgetpolicy", "default", "--type=merge", "-p", json.dumps(body))

    mine = {"scope": "Namespace", "name": namespace, "period": "Monthly", "amount": LIMIT}
    set_limits([*(e for e in limits() if e["name"] != namespace), mine])
    yield namespace
    set_limits([e for e in limits() if e["name"] != namespace])


def test_budgets_split_below_the_ceiling_cannot_pass_the_namespaces_monthly_limit(
    cluster: E2ECluster, namespace: str, limited: str
) -> None:
    alice = grant_ml_engineer(cluster, namespace)
    for name in ("a", "b", "c"):
        create(cluster, tb(name, namespace, CAP), context=alice)
        time.sleep(1.1)  # creation order decides who claims the month first
    for name in ("a", "b", "c"):
        create(cluster, gpu_job(name, namespace, name, pods=1), context=alice)

    waiting = wait_phase(cluster, "c", namespace, "AwaitingApproval", 30)
    fit = condition(waiting, "PeriodLimit")
    assert fit is not None and fit["status"] == "False"
    assert fit["reason"] == "DoesNotFitPeriod"
    assert f"limit of ${LIMIT:,.2f} a month has $40.00 left" in fit["message"]
    for name in ("a", "b"):
        wait_phase(cluster, name, namespace, "Running", 60)
    assert get(cluster, "job", "c", namespace)["spec"]["suspend"] is True

    # Only finance lets the third run.
    denied = refused(
        cluster,
        "annotate",
        "tb",
        "c",
        "-n",
        namespace,
        f"{APPROVED_AMOUNT_ANNOTATION}={CAP}",
        context=alice,
    )
    assert "finance groups" in denied.stderr
    kubectl(
        cluster,
        "annotate",
        "tb",
        "c",
        "-n",
        namespace,
        f"{APPROVED_AMOUNT_ANNOTATION}={CAP}",
        "gpubudget.dev/approval-reason=one-off evaluation run",
        context="bob",
    )
    wait_phase(cluster, "c", namespace, "Running", 60)

    # The month's spend reaches the limit before any cap: all three stop together.
    for name in ("a", "b", "c"):
        status = wait_phase(cluster, name, namespace, "Suspended", 150)
        assert status["enforcement"]["reason"] == "PeriodLimitReached"
    wait_for(
        lambda: not any(job_pods(cluster, namespace, n) for n in ("a", "b", "c")),
        60,
        "every pod gone",
    )
    time.sleep(3)  # a last pass after the pods are gone
    total = sum(float(status_of(cluster, n, namespace)["spent"]) for n in ("a", "b", "c"))
    error = (total - LIMIT) / LIMIT
    print(f"[periods] month's spend ${total:.3f} vs limit ${LIMIT:.2f} ({error:+.3%})")
    assert error == pytest.approx(0, abs=0.01)

    # Deleting a budget frees nothing: its spend stays counted in the policy's status.
    spent_a = float(status_of(cluster, "a", namespace)["spent"])
    uid_a = get(cluster, "tb", "a", namespace)["metadata"]["uid"]
    kubectl(cluster, "delete", "tb", "a", "-n", namespace, "--wait=true", context=alice)
    departed = cluster.kubectl.json("get", "budgetpolicy", "default")["status"]["departed"]
    (record,) = [d for d in departed if d["budgetUid"] == uid_a]
    assert record["spent"] == pytest.approx(spent_a, abs=0.01)
    create(cluster, tb("d", namespace, 10), context=alice)
    late = wait_phase(cluster, "d", namespace, "AwaitingApproval", 30)
    assert condition(late, "PeriodLimit")["reason"] == "DoesNotFitPeriod"  # type: ignore[index]
    still = status_of(cluster, "b", namespace)
    assert still["phase"] == "Suspended"
