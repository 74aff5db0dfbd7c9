"""Fixtures for end-to-end tests on the local cluster (hack/localcluster/).

Contract other tests code against:

* ``cluster`` (session): an :class:`E2ECluster` with ``kubeconfig: str``,
  ``prometheus_url: str``, ``state_dir: Path``, ``kubectl`` (a
  :class:`localcluster.kubectl.Kubectl`: ``kubectl(*args, context="admin",
  check=True, input=None)``, ``.json``, ``.get``, ``.apply``) and
  ``api(user="admin") -> kubernetes.client.ApiClient``.
  It reads ``KUBECONFIG``/``PROMETHEUS_URL`` from the environment when set
  (``hack/with-cluster.sh`` and ``eval "$(make -s cluster-env)"`` set them), else
  uses the default state directory, and FAILS (does not skip) when the cluster
  is not reachable.
* ``namespace`` (function): a fresh namespace whose default ServiceAccount
  exists, deleted afterwards.

Waiting, manifests and Prometheus queries: ``localcluster.kubectl.wait_for``,
``localcluster.manifests``, ``localcluster.metrics.prom_query``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
import yaml

from localcluster.kubectl import Kubectl, wait_for
from localcluster.layout import Layout
from localcluster.metrics import PROMETHEUS_URL
from localcluster.pki import APISERVER_URL

REPO = Path(__file__).resolve().parents[2]


class E2ECluster:
    """Handle on the running local cluster."""

    def __init__(self, kubeconfig: str, prometheus_url: str, state_dir: Path, kubectl: Kubectl):
        self.kubeconfig = kubeconfig
        self.prometheus_url = prometheus_url.rstrip("/")
        self.state_dir = state_dir
        self.kubectl = kubectl
        self._clients: dict[str, kubernetes.client.ApiClient] = {}

    def api(self, user: str = "admin") -> kubernetes.client.ApiClient:
        if user not in self._clients:
            self._clients[user] = kubernetes.config.new_client_from_config(
                config_file=self.kubeconfig, context=user
            )
        return self._clients[user]

    def close(self) -> None:
        for c in self._clients.values():
            c.close()


def _fail(msg: str) -> None:
    pytest.fail(
        msg
        + '\nStart the local cluster with `make cluster-up` (then `eval "$(make -s cluster-env)"`),'
        " or run the tests through `make test-e2e` / `hack/with-cluster.sh`.",
        pytrace=False,
    )


def _check_kubeconfig(path: str) -> None:
    try:
        cfg = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        _fail(f"cannot read kubeconfig {path}: {e}")
        return
    contexts = {c["name"] for c in cfg.get("contexts") or []}
    servers = {c["cluster"].get("server") for c in cfg.get("clusters") or []}
    if not {"admin", "alice", "bob"} <= contexts or servers != {APISERVER_URL}:
        _fail(
            f"KUBECONFIG={path} is not the local gpu-budget cluster (expected contexts "
            f"admin/alice/bob on {APISERVER_URL}; found {sorted(contexts)} on {sorted(servers)})."
            " Refusing to run end-to-end tests against it."
        )


@pytest.fixture(scope="session")
def cluster() -> Iterator[E2ECluster]:
    env_kc = os.environ.get("KUBECONFIG")
    if env_kc:
        if os.pathsep in env_kc:
            _fail(f"KUBECONFIG={env_kc} lists several files; point it at the local cluster's.")
        kubeconfig = str(Path(env_kc).resolve())
        state_dir = Path(kubeconfig).parent
    else:
        state_dir = Layout.default().root
        kubeconfig = str(state_dir / "kubeconfig")
    prometheus_url = os.environ.get("PROMETHEUS_URL") or PROMETHEUS_URL
    if not Path(kubeconfig).exists():
        _fail(f"the local cluster is not up: {kubeconfig} does not exist.")
    _check_kubeconfig(kubeconfig)
    kubectl = Kubectl(kubeconfig)
    if not os.access(kubectl.binary, os.X_OK):
        _fail(f"kubectl not found at {kubectl.binary}; run `make tools`.")

    c = E2ECluster(kubeconfig, prometheus_url, state_dir, kubectl)
    res = c.kubectl("get", "--raw", "/readyz", "--request-timeout=5s", check=False)
    if res.returncode != 0 or res.stdout.strip() != "ok":
        _fail(
            f"the Kubernetes API at {APISERVER_URL} is not ready "
            f"(kubeconfig {kubeconfig}): {res.stderr.strip() or res.stdout.strip()}"
        )
    try:
        with urllib.request.urlopen(f"{c.prometheus_url}/-/ready", timeout=5) as resp:
            ready = resp.status == 200
    except (urllib.error.URLError, OSError) as e:
        ready = False
        prom_err = str(e)
    else:
        prom_err = ""
    if not ready:
        _fail(f"Prometheus at {c.prometheus_url} is not ready {prom_err}")
    yield c
    c.close()


@pytest.fixture
def namespace(cluster: E2ECluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace (with its default ServiceAccount), deleted afterwards."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")
    name = f"e2e-{base[:40].strip('-')}-{secrets.token_hex(3)}"
    manifest = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"gpubudget.dev/e2e": "true"}},
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(manifest))
    try:
        wait_for(
            lambda: (
                cluster.kubectl(
                    "-n", name, "get", "serviceaccount", "default", check=False
                ).returncode
                == 0
            ),
            30,
            f"the default ServiceAccount in namespace {name}",
        )
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.e2e)


# The operator fixtures live with the helpers they use; importing them here
# makes them available to every e2e module.
from tests.e2e.support import crds_and_policy, operator, receiver  # noqa: E402, F401
