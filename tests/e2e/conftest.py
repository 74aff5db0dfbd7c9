"""Fixtures for end-to-end tests on the local cluster (hack/localcluster/).

Contract other tests code against:

* ``cluster`` (session): an :class:`E2ECluster` with ``kubeconfig: str``,
  ``prometheus_url: str``, ``state_dir: Path``, ``kubectl(*args, context="admin",
  check=True, input=None)`` and ``api(user="admin") -> kubernetes.client.ApiClient``.
  It reads ``KUBECONFIG``/``PROMETHEUS_URL`` from the environment when set
  (``hack/with-cluster.sh`` and ``eval "$(make -s cluster-env)"`` set them), else
  uses the default state directory, and FAILS (does not skip) when the cluster
  is not reachable.
* ``namespace`` (function): a fresh namespace whose default ServiceAccount
  exists, deleted afterwards.

Extras: ``cluster.prom_query(promql)`` and ``cluster.wait_for(fn, timeout, what)``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
import pytest
import yaml

from localcluster.layout import Layout
from localcluster.metrics import PROMETHEUS_URL
from localcluster.tools import tool_path

REPO = Path(__file__).resolve().parents[2]
LOCAL_APISERVER = "https://127.0.0.1:36443"
T = TypeVar("T")


class KubectlError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return (
            f"kubectl {' '.join(self.cmd[3:])} exited {self.returncode}:\n"
            f"{(self.stderr or '').strip() or (self.output or '').strip()}"
        )


class E2ECluster:
    """Handle on the running local cluster."""

    def __init__(self, kubeconfig: str, prometheus_url: str, state_dir: Path, kubectl_bin: str):
        self.kubeconfig = kubeconfig
        self.prometheus_url = prometheus_url.rstrip("/")
        self.state_dir = state_dir
        self.kubectl_bin = kubectl_bin
        self._clients: dict[str, kubernetes.client.ApiClient] = {}

    def kubectl(
        self,
        *args: str,
        context: str = "admin",
        check: bool = True,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", f"--context={context}", *args]
        res = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=120)
        if check and res.returncode != 0:
            raise KubectlError(res.returncode, cmd, res.stdout, res.stderr)
        return res

    def api(self, user: str = "admin") -> kubernetes.client.ApiClient:
        if user not in self._clients:
            self._clients[user] = kubernetes.config.new_client_from_config(
                config_file=self.kubeconfig, context=user
            )
        return self._clients[user]

    # -- extras -------------------------------------------------------------
    def prom_query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; returns ``data.result`` (dicts with ``metric`` and ``value``)."""
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    @staticmethod
    def wait_for(fn: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
        """Poll ``fn`` until it returns something truthy; fail with ``what`` otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            last = fn()
            if last:
                return last
            if time.monotonic() >= deadline:
                pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
            time.sleep(interval)

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
    if not {"admin", "alice", "bob"} <= contexts or servers != {LOCAL_APISERVER}:
        _fail(
            f"KUBECONFIG={path} is not the local gpu-budget cluster (expected contexts "
            f"admin/alice/bob on {LOCAL_APISERVER}; found {sorted(contexts)} on {sorted(servers)})."
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
    kubectl_bin = os.environ.get("GPUBUDGET_KUBECTL") or str(tool_path("kubectl"))
    if not os.access(kubectl_bin, os.X_OK):
        _fail(f"kubectl not found at {kubectl_bin}; run `make tools`.")

    c = E2ECluster(kubeconfig, prometheus_url, state_dir, kubectl_bin)
    res = c.kubectl("get", "--raw", "/readyz", "--request-timeout=5s", check=False)
    if res.returncode != 0 or res.stdout.strip() != "ok":
        _fail(
            f"the Kubernetes API at {LOCAL_APISERVER} is not ready "
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
        cluster.wait_for(
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
