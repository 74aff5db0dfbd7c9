"""High availability: two replicas, one active; kill the active one, the other takes over.

The replicas are two operator processes as the chart runs them: kopf peering
through the chart's KopfPeering (no --standalone), distinct priorities (the
StatefulSet gives each replica its ordinal), the chart's ServiceAccount token.
The active one is killed with SIGKILL while a run is metered; the test measures
how long until the other is active *and acting* (the budget's lastAccountedAt
moves again) and checks that nothing was done twice: one Event per threshold,
one CapReached, one suspension of the Job, and a final spend at the cap (a
double-charged interval would overshoot it).
"""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from localcluster.kubectl import wait_for
from localcluster.manifests import budget, gpu_job
from localcluster.net import free_port
from tests.e2e.conftest import E2ECluster
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.support import (
    ensure_shared_policy,
    job_pods,
    parse_time,
    running_pods,
)
from tests.e2e.test_chart import (
    POLICIES_LABEL,
    Release,
    ensure_crds,
    operator_reasons,
    sa_kubeconfig,
)

CAP = 120.0  # two spot p5 nodes burn $2 a second: 60 s of run, the failover fits inside
FAILOVER_BUDGET_SECONDS = 30.0


@pytest.mark.timeout(420)
def test_killing_the_active_replica_fails_over_without_double_enforcement(
    cluster: E2ECluster, namespace: str, tmp_path: Path
) -> None:
    ensure_crds(cluster)
    ensure_shared_policy(cluster)
    # The replicas run as the chart's ServiceAccount, so the admission policies bound for
    # the operator on the local cluster (admin) must not govern this namespace.
    cluster.kubectl("label", "namespace", namespace, f"{POLICIES_LABEL}=chart")
    release = Release(cluster, f"gbo-ha-{secrets.token_hex(3)}", namespace, tmp_path)
    # The chart without its webhooks and policies: ServiceAccount, RBAC, the KopfPeering.
    release.install(
        {
            "operator": {"enabled": False, "namespaces": [namespace], "peering": {"lifetime": 15}},
            "webhook": {"enabled": False},
            "admissionPolicies": {"enabled": False},
            "budgetPolicy": {"create": False},
            "rbac": {"aggregateToDefaultRoles": False, "finance": {"create": False}},
        }
    )
    replicas: list[OperatorProcess] = []
    try:
        peering = cluster.kubectl.get("kopfpeering", release.fullname, namespace)
        assert peering["metadata"]["labels"]["app.kubernetes.io/instance"] == release.name
        kubeconfig = sa_kubeconfig(cluster, namespace, release.fullname, tmp_path / "sa.kubeconfig")
        for ordinal in (1, 0):  # as the StatefulSet does: the ordinal is the priority
            replica = OperatorProcess(
                str(kubeconfig),
                cluster.prometheus_url,
                tmp_path / f"replica-{ordinal}.log",
                port=free_port(),
                peering_name=release.fullname,
                priority=ordinal,
                extra_args=(f"--namespace={namespace}", "--peering-lifetime=15"),
                extra_env={"POD_ID": f"{release.fullname}-{ordinal}"},
            )
            replica.start()
            replicas.append(replica)
        active, standby = replicas
        wait_for(active.active, 30, "replica 1 (priority 1) to be active")
        # kopf starts every replica paused and resumes it once no live peer outranks
        # it: the standby stays paused, silently.
        time.sleep(3)
        assert not standby.active()

        run = budget("run", namespace, cap=CAP)
        cluster.kubectl("create", "-f", "-", input=json.dumps(run))
        cluster.kubectl(
            "create", "-f", "-", input=json.dumps(gpu_job("train", namespace, "run", pods=2))
        )
        running_pods(cluster, namespace, "train", 2)
        # Replica 1 meters the run for a while...
        wait_for(
            lambda: (
                cluster.kubectl.get("tb", "run", namespace).get("status", {}).get("spent", 0) > 16
            ),
            30,
            "replica 1 to meter the run",
        )
        assert "Resuming operations" not in standby.log_text()

        # ...and dies hard.
        killed_at = datetime.now(UTC)
        active.kill()

        def accounted_after_kill() -> dict[str, Any] | None:
            status: dict[str, Any] = cluster.kubectl.get("tb", "run", namespace).get("status", {})
            at = status.get("lastAccountedAt")
            return status if at and parse_time(at) > killed_at else None

        status = wait_for(accounted_after_kill, 60, "replica 0 to account the budget")
        failover = (parse_time(status["lastAccountedAt"]) - killed_at).total_seconds()
        print(
            f"[failover] SIGKILL of the active replica to the standby's first accounting pass: "
            f"{failover:.1f}s (peering lifetime 15s)"
        )
        assert standby.active()
        assert failover < FAILOVER_BUDGET_SECONDS
        assert status["spent"] < CAP, "the cap was reached while no replica was active"

        # The standby carries the run to its cap: one stop, nothing twice.
        wait_for(
            lambda: not job_pods(cluster, namespace, "train"), 90, "the Job's pods gone at the cap"
        )
        time.sleep(3)
        final = cluster.kubectl.get("tb", "run", namespace)["status"]
        error = (final["spent"] - CAP) / CAP
        print(f"[failover] final spend ${final['spent']:.3f} vs cap ${CAP:.2f} ({error:+.3%})")
        assert final["phase"] == "Suspended"
        assert final["spent"] == pytest.approx(CAP, rel=0.01)
        job = cluster.kubectl.get("job", "train", namespace)
        assert job["spec"]["suspend"] is True
        budget_reasons = operator_reasons(cluster, namespace, "run")
        assert budget_reasons.count("ThresholdReached") == 3, budget_reasons
        assert budget_reasons.count("CapReached") == 1, budget_reasons
        assert operator_reasons(cluster, namespace, "train").count("Suspended") == 1
        # The standby's kopf found its peer dead and took over; the dead one did nothing more.
        assert "Resuming operations" in standby.log_text()
    finally:
        # The budget carries the operator's finalizer: delete it while a replica runs.
        cluster.kubectl("delete", "job", "train", "-n", namespace, "--wait=false", check=False)
        cluster.kubectl("delete", "tb", "run", "-n", namespace, "--timeout=60s", check=False)
        for replica in replicas:
            replica.stop()
            print(f"{replica.log_path.name} tail:\n" + replica.tail(15))
        release.uninstall()
    assert release.leftovers() == []
