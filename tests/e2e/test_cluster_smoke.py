"""Smoke tests of the local cluster: every piece the operator relies on, for real.

Real kube-apiserver (token auth, RBAC, admission), real scheduler and job
controller, kwok for the node/pod lifecycle, hack/dcgm_sim.py scraped by a
real Prometheus.
"""

from __future__ import annotations

import base64
import http.server
import json
import ssl
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster.kubectl import wait_for
from localcluster.metrics import prom_query
from localcluster.tools import read_versions

from .conftest import E2ECluster

pytestmark = pytest.mark.timeout(300)

GPU = "nvidia.com/gpu"
UTIL_ANNOTATION = "dcgm-sim.gpubudget.dev/utilization"

# (instance type, capacity type) -> (minimum nodes, GPUs per node, gpu.product)
EXPECTED_POOL = {
    ("p5.48xlarge", "spot"): (2, 8, "NVIDIA-H100-80GB-HBM3"),
    ("p5.48xlarge", "on-demand"): (1, 8, "NVIDIA-H100-80GB-HBM3"),
    ("p4d.24xlarge", "spot"): (1, 8, "NVIDIA-A100-SXM4-40GB"),
    ("p4d.24xlarge", "on-demand"): (1, 8, "NVIDIA-A100-SXM4-40GB"),
    ("g5.xlarge", "spot"): (2, 1, "NVIDIA-A10G"),
    ("g5.xlarge", "on-demand"): (2, 1, "NVIDIA-A10G"),
}


def forbidden(res: subprocess.CompletedProcess[str]) -> bool:
    return res.returncode != 0 and "forbidden" in res.stderr.lower()


def assert_can_i(cluster: E2ECluster, user: str, expected: bool, *args: str) -> None:
    """``kubectl auth can-i`` as ``user`` answers ``expected`` (yes/no)."""
    res = cluster.kubectl("auth", "can-i", *args, context=user, check=False)
    answer = res.stdout.strip()
    assert answer in ("yes", "no"), f"`auth can-i {' '.join(args)}`: {res.stdout} {res.stderr}"
    assert (answer == "yes") == expected, (
        f"{user} {'should' if expected else 'should not'} be allowed to {' '.join(args)}; "
        f"kubectl says {answer!r} {res.stderr.strip()}"
    )


def job_manifest(
    name: str,
    *,
    parallelism: int,
    gpus: int,
    node_selector: dict[str, str] | None = None,
    utilization: str | None = None,
    suspend: bool = False,
) -> str:
    annotations = {UTIL_ANNOTATION: utilization} if utilization is not None else {}
    return json.dumps(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {
                "parallelism": parallelism,
                "completions": parallelism,
                "backoffLimit": 0,
                "suspend": suspend,
                "template": {
                    "metadata": {"annotations": annotations},
                    "spec": {
                        "restartPolicy": "Never",
                        "nodeSelector": node_selector or {},
                        "containers": [
                            {
                                "name": "trainer",
                                "image": "registry.example/llm-trainer:1.0",
                                "resources": {"limits": {GPU: str(gpus)}},
                            }
                        ],
                    },
                },
            },
        }
    )


def test_server_version(cluster: E2ECluster) -> None:
    want = read_versions()["KUBERNETES_VERSION"]
    version = cluster.kubectl.json("version")
    assert version["serverVersion"]["gitVersion"] == want
    assert version["clientVersion"]["gitVersion"] == want
    assert want == "v1.37.2"


def test_gpu_node_pool(cluster: E2ECluster) -> None:
    nodes = cluster.kubectl.json("get", "nodes", "-l", "type=kwok")["items"]
    by_pool: Counter[tuple[str, str]] = Counter()
    for node in nodes:
        name = node["metadata"]["name"]
        labels = node["metadata"]["labels"]
        itype = labels["node.kubernetes.io/instance-type"]
        ctype = labels["karpenter.sh/capacity-type"]
        key = (itype, ctype)
        assert key in EXPECTED_POOL, f"unexpected node {name} {key}"
        _, gpus, product = EXPECTED_POOL[key]
        by_pool[key] += 1
        assert name.startswith(f"{itype.split('.')[0]}-{ctype.replace('-', '')}-"), name
        assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
        assert labels["topology.kubernetes.io/region"] == "us-east-1"
        assert labels["topology.kubernetes.io/zone"].startswith("us-east-1")
        assert labels["nvidia.com/gpu.product"] == product
        assert labels["nvidia.com/gpu.count"] == str(gpus)
        for field in ("capacity", "allocatable"):
            res = node["status"][field]
            assert res[GPU] == str(gpus), f"{name} status.{field}: {res}"
            assert {"cpu", "memory", "pods"} <= set(res), f"{name} status.{field}: {res}"
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", f"{name} not Ready"
        assert not node["spec"].get("taints"), f"{name} has taints {node['spec']['taints']}"
    for key, (minimum, _, _) in EXPECTED_POOL.items():
        assert by_pool[key] >= minimum, f"want >= {minimum} {key} nodes, have {by_pool[key]}"


MODEL_NAMES = {
    "NVIDIA-H100-80GB-HBM3": "NVIDIA H100 80GB HBM3",
    "NVIDIA-A100-SXM4-40GB": "NVIDIA A100-SXM4-40GB",
    "NVIDIA-A10G": "NVIDIA A10G",
}


def _pod_gpus(pod: dict[str, Any]) -> int:
    total = 0
    for c in pod["spec"]["containers"]:
        res = c.get("resources") or {}
        total += max(
            int((res.get("limits") or {}).get(GPU, 0)), int((res.get("requests") or {}).get(GPU, 0))
        )
    return total


def _free_gpu_pool(cluster: E2ECluster) -> tuple[dict[str, str], set[str], int, str] | None:
    """A node pool with >= 2 nodes whose GPUs are all free: p5 spot if possible.

    The cluster may be shared (a developer's operator, other tests), so the test
    takes whichever pool is idle rather than assuming p5 spot is.
    Returns (nodeSelector, free node names, GPUs per node, gpu.product).
    """
    nodes = cluster.kubectl.json("get", "nodes", "-l", "type=kwok")["items"]
    pods = cluster.kubectl.json("get", "pods", "-A")["items"]
    used: Counter[str] = Counter()
    for p in pods:
        if p["spec"].get("nodeName") and p["status"].get("phase") not in ("Succeeded", "Failed"):
            used[p["spec"]["nodeName"]] += _pod_gpus(p)
    pools: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for n in nodes:
        labels = n["metadata"]["labels"]
        key = (labels["node.kubernetes.io/instance-type"], labels["karpenter.sh/capacity-type"])
        pools.setdefault(key, []).append(n)
    order = sorted(
        pools,
        key=lambda k: (
            k != ("p5.48xlarge", "spot"),
            -int(pools[k][0]["status"]["allocatable"][GPU]),
        ),
    )
    for itype, ctype in order:
        free = {
            n["metadata"]["name"] for n in pools[(itype, ctype)] if not used[n["metadata"]["name"]]
        }
        if len(free) >= 2:
            sample = pools[(itype, ctype)][0]
            selector = {
                "node.kubernetes.io/instance-type": itype,
                "karpenter.sh/capacity-type": ctype,
            }
            gpus = int(sample["status"]["allocatable"][GPU])
            return selector, free, gpus, sample["metadata"]["labels"]["nvidia.com/gpu.product"]
    return None


def _series(cluster: E2ECluster, metric: str, namespace: str) -> list[dict[str, Any]]:
    return prom_query(f'{metric}{{namespace="{namespace}"}}', cluster.prometheus_url)


def test_gpu_job_runs_is_metered_and_suspends(cluster: E2ECluster, namespace: str) -> None:
    pool = wait_for(
        lambda: _free_gpu_pool(cluster), 90, "a GPU node pool with 2 idle nodes (shared cluster?)"
    )
    assert pool is not None
    selector_labels, free_nodes, gpus, product = pool
    want_series = 2 * gpus

    # 2 pods each asking for a whole node's GPUs: the real scheduler must put
    # them on two different idle nodes of the pool (p5 spot unless it is busy).
    job = job_manifest(
        "smoke-train", parallelism=2, gpus=gpus, node_selector=selector_labels, utilization="0.37"
    )
    cluster.kubectl("-n", namespace, "create", "-f", "-", input=job)
    selector = "batch.kubernetes.io/job-name=smoke-train"

    def running_pods() -> list[dict[str, Any]]:
        pods = cluster.kubectl.json("-n", namespace, "get", "pods", "-l", selector)["items"]
        ok = [p for p in pods if p["status"].get("phase") == "Running"]
        return ok if len(ok) == 2 else []

    pods = wait_for(running_pods, 60, "2 Running pods of job smoke-train")
    pod_nodes = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods}
    assert set(pod_nodes.values()) <= free_nodes, f"{pod_nodes} not on idle {free_nodes}"
    assert len(set(pod_nodes.values())) == 2, f"both pods on one node: {pod_nodes}"
    for p in pods:
        owners = [o["kind"] for o in p["metadata"].get("ownerReferences", [])]
        assert owners == ["Job"], f"pod not created by the job controller: {owners}"
        assert p["spec"]["schedulerName"] == "default-scheduler"
        conds = {c["type"]: c["status"] for c in p["status"]["conditions"]}
        assert conds.get("PodScheduled") == "True"
        assert conds.get("Ready") == "True"
    # The binding was made by the real scheduler (an event it reported).
    events = cluster.kubectl.json("-n", namespace, "get", "events.events.k8s.io")["items"]
    scheduled = {
        e["regarding"]["name"]: e
        for e in events
        if e.get("reason") == "Scheduled" and e.get("reportingController") == "default-scheduler"
    }
    assert set(pod_nodes) <= set(scheduled), f"no Scheduled event for some pods: {scheduled}"
    for pod, node in pod_nodes.items():
        assert node in scheduled[pod]["note"], scheduled[pod]["note"]

    # DCGM series for every allocated GPU, scraped by Prometheus.
    def util_series() -> list[dict[str, Any]]:
        s = _series(cluster, "DCGM_FI_DEV_GPU_UTIL", namespace)
        return s if len(s) == want_series else []

    series = wait_for(
        util_series, 30, f"{want_series} DCGM_FI_DEV_GPU_UTIL series (2 pods x {gpus} GPUs)"
    )
    uuids = set()
    gpus_by_pod: dict[str, set[str]] = {}
    for s in series:
        m = s["metric"]
        assert m["pod"] in pod_nodes, m
        assert m["Hostname"] == pod_nodes[m["pod"]], m
        assert m["namespace"] == namespace
        assert m["container"] == "trainer"
        assert m["modelName"] == MODEL_NAMES[product], m
        assert m["UUID"].startswith("GPU-")
        uuids.add(m["UUID"])
        gpus_by_pod.setdefault(m["pod"], set()).add(m["gpu"])
        assert float(s["value"][1]) == 37.0, s
    assert len(uuids) == want_series
    assert all(g == {str(i) for i in range(gpus)} for g in gpus_by_pod.values()), gpus_by_pod
    active = _series(cluster, "DCGM_FI_PROF_GR_ENGINE_ACTIVE", namespace)
    assert len(active) == want_series
    assert all(abs(float(s["value"][1]) - 0.37) < 1e-9 for s in active), active

    # An annotation change shows up at the next scrape, for that pod only.
    first, second = sorted(pod_nodes)
    cluster.kubectl(
        "-n", namespace, "annotate", "--overwrite", "pod", first, f"{UTIL_ANNOTATION}=0.5"
    )

    def updated() -> bool:
        vals = {
            (s["metric"]["pod"], float(s["value"][1]))
            for s in _series(cluster, "DCGM_FI_DEV_GPU_UTIL", namespace)
        }
        return vals == {(first, 50.0), (second, 37.0)}

    wait_for(updated, 30, f"GPU_UTIL 50 for {first} and still 37 for {second}")

    # Suspending the Job: the real job controller deletes its pods, kwok finishes them.
    cluster.kubectl(
        "-n",
        namespace,
        "patch",
        "job",
        "smoke-train",
        "--type=merge",
        "-p",
        '{"spec":{"suspend":true}}',
    )

    def no_pods() -> bool:
        return not cluster.kubectl.json("-n", namespace, "get", "pods", "-l", selector)["items"]

    wait_for(no_pods, 60, "the suspended job's pods to be deleted")

    def suspended() -> bool:
        job = cluster.kubectl.json("-n", namespace, "get", "job", "smoke-train")
        conds = {c["type"]: c["status"] for c in job["status"].get("conditions", [])}
        return conds.get("Suspended") == "True" and not job["status"].get("active")

    wait_for(suspended, 30, "job condition Suspended=True and no active pods")
    wait_for(
        lambda: not _series(cluster, "DCGM_FI_DEV_GPU_UTIL", namespace),
        30,
        "the DCGM series of the deleted pods to go stale in Prometheus",
    )


def test_dcgm_sim_target_is_up(cluster: E2ECluster) -> None:
    up = prom_query('up{job="dcgm-exporter"}', cluster.prometheus_url)
    assert [s["value"][1] for s in up] == ["1"], up


ALICE_JOB = job_manifest("alice-smoke", parallelism=1, gpus=1, suspend=True)


def test_alice_rbac(cluster: E2ECluster) -> None:
    allowed: list[tuple[str, ...]] = [
        ("create", "jobs.batch", "-n", "ml-team"),
        ("delete", "jobs.batch", "-n", "ml-team"),
        ("create", "trainingbudgets.gpubudget.dev", "-n", "ml-team"),
        ("patch", "trainingbudgets.gpubudget.dev", "-n", "ml-team"),
        ("list", "pods", "-n", "ml-team"),
        ("watch", "pods", "-n", "ml-team"),
    ]
    denied: list[tuple[str, ...]] = [
        ("list", "nodes"),
        ("create", "jobs.batch", "-n", "default"),
        ("delete", "pods", "-n", "ml-team"),
        ("create", "pods", "-n", "ml-team"),
        ("list", "trainingbudgets.gpubudget.dev", "-A"),
        ("list", "secrets", "-n", "ml-team"),
    ]
    for args in allowed:
        assert_can_i(cluster, "alice", True, *args)
    for args in denied:
        assert_can_i(cluster, "alice", False, *args)

    # Real requests.
    assert forbidden(cluster.kubectl("get", "nodes", context="alice", check=False))
    res = cluster.kubectl(
        "-n", "default", "create", "-f", "-", input=ALICE_JOB, context="alice", check=False
    )
    assert forbidden(res), res.stderr
    res = cluster.kubectl("-n", "ml-team", "delete", "pod", "any-pod", context="alice", check=False)
    assert forbidden(res), res.stderr
    cluster.kubectl("-n", "ml-team", "get", "pods", context="alice")
    cluster.kubectl("-n", "ml-team", "delete", "job", "alice-smoke", "--ignore-not-found")
    try:
        created = cluster.kubectl(
            "-n", "ml-team", "create", "-f", "-", input=ALICE_JOB, context="alice"
        )
        assert "job.batch/alice-smoke created" in created.stdout
        job = cluster.kubectl.json("-n", "ml-team", "get", "job", "alice-smoke", context="alice")
        assert job["spec"]["suspend"] is True
    finally:
        cluster.kubectl(
            "-n", "ml-team", "delete", "job", "alice-smoke", "--ignore-not-found", context="alice"
        )


def test_bob_rbac(cluster: E2ECluster) -> None:
    for verb in ("get", "list", "watch", "patch"):
        assert_can_i(cluster, "bob", True, verb, "trainingbudgets.gpubudget.dev", "-A")
        assert_can_i(cluster, "bob", True, verb, "trainingbudgets.gpubudget.dev", "-n", "ml-team")
    for args in [
        ("create", "trainingbudgets.gpubudget.dev", "-n", "ml-team"),
        ("delete", "trainingbudgets.gpubudget.dev", "-n", "ml-team"),
        ("create", "jobs.batch", "-n", "ml-team"),
        ("create", "jobs.batch", "-n", "default"),
        ("list", "pods", "-n", "ml-team"),
        ("list", "nodes"),
    ]:
        assert_can_i(cluster, "bob", False, *args)
    res = cluster.kubectl(
        "-n", "ml-team", "create", "-f", "-", input=ALICE_JOB, context="bob", check=False
    )
    assert forbidden(res), res.stderr
    assert forbidden(cluster.kubectl("-n", "ml-team", "get", "pods", context="bob", check=False))


def test_validating_admission_policy_denies(cluster: E2ECluster, namespace: str) -> None:
    name = f"{namespace}-deny-labelled"
    message = "configmaps labelled gpubudget.dev/e2e-deny are not allowed"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["configmaps"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": "!has(object.metadata.labels) || "
                    "!('gpubudget.dev/e2e-deny' in object.metadata.labels)",
                    "message": message,
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    cluster.kubectl(
        "create",
        "-f",
        "-",
        input=json.dumps({"kind": "List", "apiVersion": "v1", "items": [policy, binding]}),
    )
    try:
        n = 0

        def try_labelled() -> str:
            # A fresh name each time: until the policy is active the create succeeds.
            nonlocal n
            n += 1
            cm = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"bad-{n}", "labels": {"gpubudget.dev/e2e-deny": "yes"}},
                "data": {"a": "b"},
            }
            res = cluster.kubectl(
                "-n", namespace, "create", "-f", "-", input=json.dumps(cm), check=False
            )
            return res.stderr if res.returncode != 0 else ""

        err = wait_for(
            try_labelled, 30, "the ValidatingAdmissionPolicy to deny a labelled ConfigMap"
        )
        assert message in err, err
        assert name in err, err
        cluster.kubectl("-n", namespace, "create", "configmap", "fine", "--from-literal=a=b")
    finally:
        cluster.kubectl(
            "delete", "validatingadmissionpolicybinding", name, "--ignore-not-found", check=False
        )
        cluster.kubectl(
            "delete", "validatingadmissionpolicy", name, "--ignore-not-found", check=False
        )


# -- admission webhooks ---------------------------------------------------------


class _WebhookHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        req = review["request"]
        labels = (req["object"].get("metadata") or {}).get("labels") or {}
        response: dict[str, Any] = {"uid": req["uid"], "allowed": True}
        if self.path.startswith("/validate") and "gpubudget.dev/webhook-deny" in labels:
            response = {
                "uid": req["uid"],
                "allowed": False,
                "status": {"code": 403, "message": "denied by the e2e validating webhook"},
            }
        elif self.path.startswith("/mutate"):
            ops = [] if labels else [{"op": "add", "path": "/metadata/labels", "value": {}}]
            ops.append(
                {"op": "add", "path": "/metadata/labels/gpubudget.dev~1mutated", "value": "yes"}
            )
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
        body = json.dumps(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def webhook_server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """An HTTPS admission webhook on an ephemeral loopback port: (base URL, caBundle)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
            "-out", "ca.crt", "-days", "1", "-subj", "/CN=e2e-webhook-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign")  # fmt: skip
    (tmp_path / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "tls.key", "-out", "tls.csr",
            "-subj", "/CN=127.0.0.1")  # fmt: skip
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", "ext.cnf", "-out", "tls.crt")  # fmt: skip
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _WebhookHandler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        ca = base64.b64encode((tmp_path / "ca.crt").read_bytes()).decode()
        yield f"https://127.0.0.1:{server.server_address[1]}", ca
    finally:
        server.shutdown()
        server.server_close()


def test_admission_webhooks_are_called(
    cluster: E2ECluster, namespace: str, webhook_server: tuple[str, str]
) -> None:
    url, ca = webhook_server
    name = f"{namespace}.e2e.gpubudget.dev"

    def hook(path: str) -> dict[str, Any]:
        return {
            "name": name,
            "clientConfig": {"url": f"{url}{path}", "caBundle": ca},
            "rules": [
                {
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE"],
                    "resources": ["configmaps"],
                }
            ],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5,
        }

    configs = {
        "kind": "List",
        "apiVersion": "v1",
        "items": [
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": name},
                "webhooks": [hook("/validate")],
            },
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": name},
                "webhooks": [hook("/mutate")],
            },
        ],
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(configs))
    try:
        n = 0

        def mutated() -> bool:
            nonlocal n
            n += 1
            cm = f"plain-{n}"
            cluster.kubectl("-n", namespace, "create", "configmap", cm, "--from-literal=a=b")
            got = cluster.kubectl.json("-n", namespace, "get", "configmap", cm)
            return (got["metadata"].get("labels") or {}).get("gpubudget.dev/mutated") == "yes"

        wait_for(mutated, 30, "the mutating webhook to label a new ConfigMap")

        def denied() -> str:
            nonlocal n
            n += 1
            bad = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"bad-{n}", "labels": {"gpubudget.dev/webhook-deny": "yes"}},
            }
            res = cluster.kubectl(
                "-n", namespace, "create", "-f", "-", input=json.dumps(bad), check=False
            )
            return res.stderr if res.returncode != 0 else ""

        err = wait_for(denied, 30, "the validating webhook to deny a labelled ConfigMap")
        assert "denied by the e2e validating webhook" in err, err
    finally:
        cluster.kubectl(
            "delete", "validatingwebhookconfiguration", name, "--ignore-not-found", check=False
        )
        cluster.kubectl(
            "delete", "mutatingwebhookconfiguration", name, "--ignore-not-found", check=False
        )
