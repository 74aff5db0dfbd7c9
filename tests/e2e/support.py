"""Shared pieces of the operator's end-to-end tests: manifests, waits, and the operator fixture.

Prices come from examples/policy.yaml, the BudgetPolicy every e2e test shares:
a spot p5.48xlarge costs $3,600 an hour, $1 a second, so money moves fast.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.kubectl import wait_for
from tests.e2e.operator_process import OperatorProcess

REPO = Path(__file__).resolve().parents[2]
POLICY: dict[str, Any] = yaml.safe_load((REPO / "examples" / "policy.yaml").read_text())
NODE_PRICE = float(
    next(
        p["hourlyPrice"]
        for p in POLICY["spec"]["pricing"]["instanceTypes"]
        if p["instanceType"] == "p5.48xlarge" and p.get("capacityType") == "spot"
    )
)
"""USD/h for a whole spot p5.48xlarge (8 GPUs)."""


def ensure_shared_policy(cluster: Any) -> None:
    """Apply the BudgetPolicy every e2e test shares (examples/policy.yaml), whole.

    Idempotent and never deleted. Always the whole manifest: a test that found the
    policy present and left it alone could be looking at a partial one another
    worker was creating, and price its budgets with the wrong catalog.
    """
    cluster.kubectl.apply(POLICY)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def job_pods(cluster: Any, namespace: str, job: str) -> list[dict[str, Any]]:
    return list(
        cluster.kubectl.json("get", "pods", "-n", namespace, "-l", f"job-name={job}")["items"]
    )


def running_pods(cluster: Any, namespace: str, job: str, count: int) -> list[dict[str, Any]]:
    def ready() -> list[dict[str, Any]] | None:
        pods = [
            p
            for p in job_pods(cluster, namespace, job)
            if p["status"].get("phase") == "Running" and p["status"].get("startTime")
        ]
        return pods if len(pods) == count else None

    return list(wait_for(ready, 60, f"{count} running pods of job {job}"))


def expected_spend(
    pods: list[dict[str, Any]], at: datetime, node_price: float = NODE_PRICE, factor: float = 1.0
) -> float:
    return sum(
        node_price * factor * (at - parse_time(p["status"]["startTime"])).total_seconds() / 3600
        for p in pods
    )


def condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), None)


@pytest.fixture(scope="session")
def crds_and_policy(cluster: Any) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/trainingbudgets.gpubudget.dev",
        "crd/budgetpolicies.gpubudget.dev",
    )
    # The policy is shared with every other e2e test and the demo: it stays.
    ensure_shared_policy(cluster)


@pytest.fixture
def operator(
    cluster: Any, crds_and_policy: None, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    # Shared and cluster-scoped: make sure another test run has not removed it.
    ensure_shared_policy(cluster)
    # Serving only the test's namespace keeps concurrent test runs from
    # enforcing each other's budgets.
    process = OperatorProcess(
        cluster.kubeconfig,
        cluster.prometheus_url,
        tmp_path / "operator.log",
        extra_args=(f"--namespace={namespace}",),
    )
    process.start()
    yield process
    process.stop()
    print("operator log tail:\n" + process.tail())


class Receiver:
    """A local Slack-style webhook endpoint that records what it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reasons(self, namespace: str) -> list[str]:
        return [
            b["gpubudget"]["reason"]
            for b in self.bodies
            if b["gpubudget"]["namespace"] == namespace
        ]


@pytest.fixture
def receiver(cluster: Any, crds_and_policy: None) -> Iterator[Receiver]:
    receiver = Receiver()
    patch = {"spec": {"notificationWebhookUrl": receiver.url}}
    cluster.kubectl("patch", "budgetpolicy", "default", "--type=merge", "-p", json.dumps(patch))
    yield receiver
    cluster.kubectl(
        "patch",
        "budgetpolicy",
        "default",
        "--type=merge",
        "-p",
        '{"spec":{"notificationWebhookUrl":null}}',
    )
    receiver.server.shutdown()


def events_for(cluster: Any, namespace: str, name: str) -> list[dict[str, Any]]:
    events = cluster.kubectl.json(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}"
    )
    return list(events["items"])


def reasons(cluster: Any, namespace: str, name: str) -> list[str]:
    return [
        e["reason"]
        for e in events_for(cluster, namespace, name)
        for _ in range(e.get("count") or 1)
    ]


def grant_ml_engineer(
    cluster: Any, namespace: str, extra_resources: list[tuple[str, str]] | None = None
) -> str:
    """Give alice in ``namespace`` what she has in ml-team; returns her context name."""
    rules = [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["*"]},
        {"apiGroups": ["gpubudget.dev"], "resources": ["trainingbudgets"], "verbs": ["*"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    ]
    rules += [
        {"apiGroups": [g], "resources": [r], "verbs": ["*"]} for g, r in extra_resources or []
    ]
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "ml-engineer", "namespace": namespace},
        "rules": rules,
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "alice-ml-engineer", "namespace": namespace},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ml-engineer"},
    }
    for manifest in (role, binding):
        cluster.kubectl("create", "-f", "-", input=json.dumps(manifest))

    def allowed() -> bool:
        answer = cluster.kubectl(
            "auth", "can-i", "create", "jobs", "-n", namespace, context="alice", check=False
        )
        return bool(answer.stdout.strip() == "yes")

    wait_for(allowed, 10, "alice's RBAC in the test namespace")
    return "alice"
