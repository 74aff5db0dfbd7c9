#!/usr/bin/env python3
"""A local Kubernetes cluster with a simulated GPU node pool, for development and e2e tests.

Real components, run as local processes on loopback ports:

    etcd                      127.0.0.1:32379 (client), :32380 (peer)
    kube-apiserver            https://127.0.0.1:36443   token auth, RBAC, admission
    kube-controller-manager   https://127.0.0.1:36257   (/healthz)
    kube-scheduler            https://127.0.0.1:36259   (/healthz)
    kwok                      plays the kubelet of the simulated GPU nodes
    dcgm-sim                  http://127.0.0.1:39400    hack/dcgm_sim.py, fake DCGM exporter
    prometheus                http://127.0.0.1:39090    scrapes dcgm-sim

Subcommands:

    up      start whatever is not running, bootstrap namespaces/RBAC/nodes (idempotent)
    down    stop everything and delete the state directory (idempotent)
    env     print `export KUBECONFIG=... PROMETHEUS_URL=...` for eval
    status  print each component up/down (exit 0 only when all are up)
    nodes   print the generated Node manifests of the simulated GPU pool
    which   print the path of a cached tool, e.g. `which kubectl`

State (PKI, tokens, kubeconfig, data, logs, pid files) lives in
$GPUBUDGET_CLUSTER_DIR (default <repo>/.local/cluster). Binaries come from
hack/build-tools.sh's cache ($GPUBUDGET_TOOLS_CACHE, default
~/.cache/gpu-budget-operator/tools), versions from hack/versions.env.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
HACK = REPO / "hack"
CLUSTER_CONFIG = HACK / "cluster"

HOST = "127.0.0.1"
ETCD_PORT = 32379
ETCD_PEER_PORT = 32380
APISERVER_PORT = 36443
KCM_PORT = 36257
SCHEDULER_PORT = 36259
PROMETHEUS_PORT = 39090
DCGM_PORT = 39400
APISERVER_URL = f"https://{HOST}:{APISERVER_PORT}"
PROMETHEUS_URL = f"http://{HOST}:{PROMETHEUS_PORT}"
DCGM_URL = f"http://{HOST}:{DCGM_PORT}"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"

# user -> (uid, groups). The kubeconfig gets one context per user.
USERS: dict[str, tuple[str, list[str]]] = {
    "admin": ("1000", ["system:masters"]),
    "alice": ("1001", ["ml-engineers"]),
    "bob": ("1002", ["finance"]),
}

REQUIRED_TOOLS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
)
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
FIELD_MANAGER = "gpubudget-localcluster"

STARTED_AT = time.monotonic()


class ClusterError(Exception):
    """A failure to report to the user (no traceback)."""


def progress(msg: str) -> None:
    print(f"[{time.monotonic() - STARTED_AT:6.1f}s] {msg}", flush=True)


# --------------------------------------------------------------------------
# Tools


def read_versions(path: Path = HACK / "versions.env") -> dict[str, str]:
    versions: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        versions[key.strip()] = value.strip().strip("\"'")
    return versions


def tools_cache() -> Path:
    """Same rule as hack/build-tools.sh."""
    env = os.environ.get("GPUBUDGET_TOOLS_CACHE")
    return Path(env) if env else Path.home() / ".cache/gpu-budget-operator/tools"


# binary -> (component directory prefix, versions.env key)
TOOL_COMPONENTS = {
    "etcd": ("etcd", "ETCD_VERSION"),
    "kube-apiserver": ("kubernetes", "KUBERNETES_VERSION"),
    "kube-controller-manager": ("kubernetes", "KUBERNETES_VERSION"),
    "kube-scheduler": ("kubernetes", "KUBERNETES_VERSION"),
    "kubectl": ("kubernetes", "KUBERNETES_VERSION"),
    "kwok": ("kwok", "KWOK_VERSION"),
    "kwokctl": ("kwok", "KWOK_VERSION"),
    "helm": ("helm", "HELM_VERSION"),
}


def tool_path(name: str) -> Path:
    """Where hack/build-tools.sh puts ``name`` (which may not exist yet)."""
    component, key = TOOL_COMPONENTS[name]
    version = read_versions()[key]
    return tools_cache() / f"{component}-{version}" / "bin" / name


def require_tools(names: Sequence[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in names:
        p = tool_path(name)
        if os.access(p, os.X_OK):
            found[name] = p
        else:
            missing.append(str(p))
    if missing:
        raise ClusterError(
            "missing binaries:\n  "
            + "\n  ".join(missing)
            + "\nRun `make tools` (hack/build-tools.sh) to build them."
        )
    for cmd in ("prometheus", "openssl"):
        p_str = shutil.which(cmd)
        if p_str is None:
            raise ClusterError(f"`{cmd}` not found on PATH. Run `make system-deps`.")
        found[cmd] = Path(p_str)
    return found


# --------------------------------------------------------------------------
# State directory layout


@dataclass(frozen=True)
class Layout:
    root: Path

    @classmethod
    def default(cls) -> Layout:
        env = os.environ.get("GPUBUDGET_CLUSTER_DIR")
        return cls(Path(env).resolve() if env else REPO / ".local" / "cluster")

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def tokens(self) -> Path:
        return self.pki / "tokens.csv"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def bootstrapped(self) -> Path:
        return self.root / "bootstrapped"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def pidfile(self, name: str) -> Path:
        return self.run / f"{name}.pid"


# --------------------------------------------------------------------------
# HTTP probes


def _ssl_context(ca: Path | None) -> ssl.SSLContext:
    if ca is None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=str(ca))


def http_get(
    url: str, *, ca: Path | None = None, token: str | None = None, timeout: float = 2.0
) -> tuple[int, str]:
    """(status, body); status 0 when nothing answers."""
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    ctx = _ssl_context(ca) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (OSError, ssl.SSLError):
        return 0, ""


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


# --------------------------------------------------------------------------
# Processes


def _proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _proc_state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


def _proc_status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


@dataclass
class Component:
    name: str
    argv: Callable[[], list[str]]
    healthy: Callable[[], bool]
    ports: tuple[int, ...]
    timeout: float = 60.0
    phase: int = 0
    env: dict[str, str] = field(default_factory=dict)
    # Text that identifies our process in /proc/<pid>/cmdline.
    marker: str = ""


class Cluster:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._tools: dict[str, Path] | None = None
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self.components = self._components()

    # -- tools, tokens -----------------------------------------------------
    @property
    def tools(self) -> dict[str, Path]:
        if self._tools is None:
            self._tools = require_tools(REQUIRED_TOOLS)
        return self._tools

    def tokens(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if not self.layout.tokens.exists():
            return out
        for line in self.layout.tokens.read_text().splitlines():
            parts = line.split(",", 2)
            if len(parts) >= 2:
                out[parts[1]] = parts[0]
        return out

    def admin_token(self) -> str:
        return self.tokens().get("admin", "")

    # -- component definitions ---------------------------------------------
    def _components(self) -> list[Component]:
        lay = self.layout
        pki = lay.pki
        kc = str(lay.kubeconfig)

        def tool(name: str) -> str:
            return str(self.tools[name])

        def etcd() -> list[str]:
            return [
                tool("etcd"),
                "--name=gpubudget",
                f"--data-dir={lay.root / 'etcd'}",
                f"--listen-client-urls=http://{HOST}:{ETCD_PORT}",
                f"--advertise-client-urls=http://{HOST}:{ETCD_PORT}",
                f"--listen-peer-urls=http://{HOST}:{ETCD_PEER_PORT}",
                f"--initial-advertise-peer-urls=http://{HOST}:{ETCD_PEER_PORT}",
                f"--initial-cluster=gpubudget=http://{HOST}:{ETCD_PEER_PORT}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ]

        def apiserver() -> list[str]:
            return [
                tool("kube-apiserver"),
                f"--etcd-servers=http://{HOST}:{ETCD_PORT}",
                f"--bind-address={HOST}",
                f"--advertise-address={HOST}",
                # The loopback address may not be published as the endpoints of
                # the `kubernetes` Service; nothing in-cluster needs them.
                "--endpoint-reconciler-type=none",
                f"--secure-port={APISERVER_PORT}",
                f"--cert-dir={lay.root / 'apiserver'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--token-auth-file={lay.tokens}",
                f"--requestheader-client-ca-file={pki / 'ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # Added to the default set (which already has them): spelled
                # out because the operator depends on them.
                "--enable-admission-plugins=ServiceAccount,MutatingAdmissionWebhook,"
                "ValidatingAdmissionPolicy,ValidatingAdmissionWebhook",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ]

        def kcm() -> list[str]:
            return [
                tool("kube-controller-manager"),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                f"--bind-address={HOST}",
                f"--secure-port={KCM_PORT}",
                f"--cert-dir={lay.root / 'kube-controller-manager'}",
                "--leader-elect=false",
                "--controllers=*",
                "--use-service-account-credentials=false",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--profiling=false",
                "--v=1",
            ]

        def scheduler() -> list[str]:
            return [
                tool("kube-scheduler"),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                f"--bind-address={HOST}",
                f"--secure-port={SCHEDULER_PORT}",
                f"--cert-dir={lay.root / 'kube-scheduler'}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ]

        def kwok() -> list[str]:
            return [
                tool("kwok"),
                f"--kubeconfig={kc}",
                f"--config={CLUSTER_CONFIG / 'kwok.yaml'}",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            ]

        def dcgm() -> list[str]:
            return [
                sys.executable,
                str(HACK / "dcgm_sim.py"),
                f"--kubeconfig={kc}",
                "--context=admin",
                f"--listen={HOST}:{DCGM_PORT}",
            ]

        def prometheus() -> list[str]:
            return [
                str(self.tools["prometheus"]),
                f"--config.file={lay.root / 'prometheus.yml'}",
                f"--storage.tsdb.path={lay.root / 'prometheus'}",
                "--storage.tsdb.retention.time=2d",
                f"--web.listen-address={HOST}:{PROMETHEUS_PORT}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ]

        def etcd_ok() -> bool:
            status, body = http_get(f"http://{HOST}:{ETCD_PORT}/health")
            return status == 200 and '"health":"true"' in body.replace(" ", "")

        def apiserver_ok() -> bool:
            status, _ = http_get(
                f"{APISERVER_URL}/readyz", ca=pki / "ca.crt", token=self.admin_token()
            )
            return status == 200

        def kcm_ok() -> bool:
            return http_get(f"https://{HOST}:{KCM_PORT}/healthz")[0] == 200

        def scheduler_ok() -> bool:
            return http_get(f"https://{HOST}:{SCHEDULER_PORT}/healthz")[0] == 200

        def kwok_ok() -> bool:
            # kwok serves nothing (no --server-address); alive is all we can probe
            # cheaply. `up` additionally waits for the nodes it manages to be Ready.
            return self.pid_alive("kwok")

        def dcgm_ok() -> bool:
            status, body = http_get(f"{DCGM_URL}/metrics")
            return status == 200 and "dcgm_sim_synced 1.0" in body

        def prometheus_ok() -> bool:
            return http_get(f"{PROMETHEUS_URL}/-/ready")[0] == 200

        root = str(lay.root)
        # Components of one phase start together; a phase starts once the
        # previous one is healthy. The list order is also the stop order, reversed.
        return [
            Component("etcd", etcd, etcd_ok, (ETCD_PORT, ETCD_PEER_PORT), 30, 0, marker=root),
            # Needs nothing but its config; starting it early overlaps its first
            # scrapes with the rest of the start-up.
            Component(
                "prometheus", prometheus, prometheus_ok, (PROMETHEUS_PORT,), 60, 0, marker=root
            ),
            Component(
                "kube-apiserver", apiserver, apiserver_ok, (APISERVER_PORT,), 120, 1, marker=root
            ),
            Component("kube-controller-manager", kcm, kcm_ok, (KCM_PORT,), 60, 2, marker=root),
            Component(
                "kube-scheduler", scheduler, scheduler_ok, (SCHEDULER_PORT,), 60, 2, marker=root
            ),
            Component(
                "kwok",
                kwok,
                kwok_ok,
                (),
                30,
                2,
                # kwok reads ~/.kwok/kwok.yaml too when it exists; keep a
                # developer's kwokctl settings out of this cluster.
                env={"HOME": str(lay.root / "kwok-home")},
                marker=root,
            ),
            Component("dcgm-sim", dcgm, dcgm_ok, (DCGM_PORT,), 60, 2, marker=root),
        ]

    def component(self, name: str) -> Component:
        for c in self.components:
            if c.name == name:
                return c
        raise ClusterError(f"unknown component {name!r}")

    # -- pid bookkeeping -----------------------------------------------------
    def read_pid(self, name: str) -> int | None:
        try:
            return int(self.layout.pidfile(name).read_text().strip())
        except (OSError, ValueError):
            return None

    def _is_ours(self, pid: int, comp: Component) -> bool:
        cmd = _proc_cmdline(pid)
        if not cmd or _proc_state(pid) in ("Z", "X", ""):
            return False
        return any(comp.marker in a for a in cmd)

    def pid_alive(self, name: str) -> bool:
        child = self._children.get(name)
        if child is not None:
            # Started by this process: trust the handle (right after exec,
            # /proc/<pid>/cmdline can briefly read empty).
            return child.poll() is None
        pid = self.read_pid(name)
        return pid is not None and self._is_ours(pid, self.component(name))

    def rss_kib(self, name: str) -> tuple[int, int]:
        """(current RSS, peak RSS) of the component's process, in KiB."""
        pid = self.read_pid(name)
        if pid is None or not self.pid_alive(name):
            return 0, 0
        return _proc_status_kib(pid, "VmRSS"), _proc_status_kib(pid, "VmHWM")

    def stray_pids(self) -> list[int]:
        """Processes whose command line mentions this state directory.

        Catches components whose pid file was lost (e.g. the state directory
        was removed by hand while they ran).
        """
        needle = str(self.layout.root) + "/"
        me = os.getpid()
        out: list[int] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            pid = int(entry.name)
            cmd = _proc_cmdline(pid)
            if not cmd or _proc_state(pid) in ("Z", "X"):
                continue
            exe = Path(cmd[0]).name
            known = set(REQUIRED_TOOLS) - {"kubectl"} | {"prometheus"}
            is_dcgm = any(a.endswith("hack/dcgm_sim.py") for a in cmd[:2])
            if (exe in known or is_dcgm) and any(needle in a for a in cmd[1:]):
                out.append(pid)
        return out

    # -- start / stop --------------------------------------------------------
    def start(self, comp: Component) -> None:
        self.layout.logs.mkdir(parents=True, exist_ok=True)
        self.layout.run.mkdir(parents=True, exist_ok=True)
        for port in comp.ports:
            if port_open(port):
                raise ClusterError(
                    f"{comp.name}: port {HOST}:{port} is already in use by a process this "
                    f"cluster did not start (see `ss -ltnp | grep :{port}`)."
                )
        argv = comp.argv()
        env = dict(os.environ)
        env.update(comp.env)
        for v in comp.env.values():
            if v.startswith(str(self.layout.root)):
                Path(v).mkdir(parents=True, exist_ok=True)
        logf = self.layout.log(comp.name)
        with logf.open("ab") as out:
            out.write(f"\n--- {time.strftime('%F %T')} {shlex.join(argv)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.layout.root,
                env=env,
                start_new_session=True,
            )
        self._children[comp.name] = proc
        self.layout.pidfile(comp.name).write_text(f"{proc.pid}\n")
        progress(f"{comp.name}: started (pid {proc.pid}, log {logf})")

    def wait_healthy(self, comp: Component, restart: Callable[[], None] | None = None) -> None:
        """Wait for ``comp`` to be healthy.

        With ``restart`` (a process this run did not start, found unhealthy): if
        it exits, or is still unhealthy after 20 s (e.g. an apiserver draining
        connections after SIGTERM), stop it and call ``restart`` once.
        """
        deadline = time.monotonic() + (min(comp.timeout, 20.0) if restart else comp.timeout)
        while True:
            if time.monotonic() >= deadline or not self.pid_alive(comp.name):
                if restart is None:
                    alive = self.pid_alive(comp.name)
                    what = f"not healthy after {comp.timeout:.0f}s" if alive else "exited"
                    raise ClusterError(self._failure(comp, what))
                progress(f"{comp.name}: not healthy; restarting it")
                self.stop(comp.name)
                restart()
                restart = None
                deadline = time.monotonic() + comp.timeout
                continue
            if comp.healthy():
                return
            time.sleep(0.25)

    def _failure(self, comp: Component, what: str) -> str:
        return (
            f"{comp.name} {what}. Last lines of {self.layout.log(comp.name)}:\n"
            + tail(self.layout.log(comp.name))
            + "\n(`make cluster-down` removes everything; `make cluster-up` starts again.)"
        )

    def stop(self, name: str, grace: float = 10.0) -> bool:
        """SIGTERM the component's process group, SIGKILL after ``grace``."""
        comp = self.component(name)
        pid = self.read_pid(name)
        stopped = False
        if pid is not None and self._is_ours(pid, comp):
            stopped = terminate(pid, grace)
        with contextlib.suppress(FileNotFoundError):
            self.layout.pidfile(name).unlink()
        return stopped

    # -- PKI, tokens, kubeconfig, configs -------------------------------------
    def ensure_pki(self) -> None:
        """CA, apiserver serving cert, service-account keys, front-proxy client cert.

        Each piece is generated only when missing, so restarting a cluster keeps
        its identities.
        """
        pki = self.layout.pki
        openssl = str(self.tools["openssl"])
        pki.mkdir(parents=True, exist_ok=True)
        os.chmod(pki, 0o700)

        def run(*args: str) -> None:
            res = subprocess.run([openssl, *args], cwd=pki, capture_output=True, text=True)
            if res.returncode != 0:
                raise ClusterError(f"openssl {shlex.join(args)} failed:\n{res.stderr}")

        def genkey(path: str) -> None:
            # P-256 keys: instant to generate, accepted everywhere Kubernetes
            # takes a key (serving, CA, service-account signing).
            run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)

        def signed_cert(name: str, cn: str, extensions: str) -> None:
            (pki / f"{name}.ext").write_text(extensions)
            genkey(f"{name}.key")
            run("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={cn}", "-out", f"{name}.csr")
            run(
                "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "3650", "-sha256", "-extfile", f"{name}.ext",
                "-out", f"{name}.crt",
            )  # fmt: skip

        if not (pki / "ca.crt").exists():
            genkey("ca.key")
            run(
                "req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "3650",
                "-subj", "/CN=gpubudget-local-ca",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
                "-out", "ca.crt",
            )  # fmt: skip
        if not (pki / "apiserver.crt").exists():
            sans = [
                f"IP:{HOST}",
                f"IP:{SERVICE_IP}",
                "DNS:localhost",
                "DNS:kubernetes",
                "DNS:kubernetes.default",
                "DNS:kubernetes.default.svc",
                "DNS:kubernetes.default.svc.cluster.local",
            ]
            signed_cert(
                "apiserver",
                "kube-apiserver",
                "basicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\n"
                f"subjectAltName={','.join(sans)}\n",
            )
        if not (pki / "sa.pub").exists():
            # ES256 service-account tokens.
            genkey("sa.key")
            run("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub")
        if not (pki / "front-proxy-client.crt").exists():
            # What the apiserver presents to aggregated API servers (--proxy-client-*).
            signed_cert(
                "front-proxy-client",
                "front-proxy-client",
                "basicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=clientAuth\n",
            )

    def ensure_tokens(self) -> None:
        if self.layout.tokens.exists():
            return
        rows = []
        for user, (uid, groups) in USERS.items():
            rows.append(f'{secrets.token_hex(20)},{user},{uid},"{",".join(groups)}"')
        self.layout.tokens.write_text("\n".join(rows) + "\n")
        os.chmod(self.layout.tokens, 0o600)

    def ensure_kubeconfig(self) -> None:
        import base64

        ca = base64.b64encode((self.layout.pki / "ca.crt").read_bytes()).decode()
        tokens = self.tokens()
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "gpubudget-local",
                    "cluster": {"server": APISERVER_URL, "certificate-authority-data": ca},
                }
            ],
            "users": [{"name": u, "user": {"token": tokens[u]}} for u in USERS],
            "contexts": [
                {"name": u, "context": {"cluster": "gpubudget-local", "user": u}} for u in USERS
            ],
            "current-context": "admin",
            "preferences": {},
        }
        text = yaml.safe_dump(cfg, sort_keys=False)
        kc = self.layout.kubeconfig
        if not kc.exists() or kc.read_text() != text:
            kc.write_text(text)
            os.chmod(kc, 0o600)

    def ensure_prometheus_config(self) -> None:
        interval = os.environ.get("GPUBUDGET_SCRAPE_INTERVAL", "5s")
        tmpl = string.Template((CLUSTER_CONFIG / "prometheus.yml.tmpl").read_text())
        text = tmpl.substitute(
            SCRAPE_INTERVAL=interval,
            DCGM_TARGET=f"{HOST}:{DCGM_PORT}",
            PROMETHEUS_TARGET=f"{HOST}:{PROMETHEUS_PORT}",
        )
        (self.layout.root / "prometheus.yml").write_text(text)

    # -- kubectl ------------------------------------------------------------
    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, context: str = "admin"
    ) -> subprocess.CompletedProcess[str]:
        argv = [
            str(self.tools["kubectl"]),
            f"--kubeconfig={self.layout.kubeconfig}",
            f"--context={context}",
            *args,
        ]
        res = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=120)
        if check and res.returncode != 0:
            raise ClusterError(
                f"`kubectl {shlex.join(args)}` failed ({res.returncode}):\n"
                f"{res.stderr.strip() or res.stdout.strip()}"
            )
        return res

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    # -- bootstrap ------------------------------------------------------------
    def bootstrap(self) -> None:
        self.kubectl(
            "apply",
            "--server-side",
            f"--field-manager={FIELD_MANAGER}",
            "--force-conflicts",
            "-f",
            str(CLUSTER_CONFIG / "bootstrap.yaml"),
        )
        progress("bootstrap: namespace ml-team and RBAC for alice/bob applied")
        nodes = generate_nodes()
        # Client-side apply: the first apply creates the Node with its status
        # (capacity/allocatable, addresses); server-side apply would drop status.
        manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes})
        self.kubectl("apply", "-f", "-", input=manifest)
        existing = {n["metadata"]["name"]: n for n in self.kubectl_json("get", "nodes")["items"]}
        for node in nodes:
            name = node["metadata"]["name"]
            got = existing.get(name, {})
            if "nvidia.com/gpu" not in (got.get("status", {}).get("allocatable") or {}):
                patch = json.dumps({"status": node["status"]})
                self.kubectl(
                    "patch", "node", name, "--subresource=status", "--type=merge", "-p", patch
                )
        progress(f"bootstrap: {len(nodes)} simulated GPU nodes registered")

    def wait_nodes_ready(self, timeout: float = 90.0) -> None:
        want = {n["metadata"]["name"] for n in generate_nodes()}
        deadline = time.monotonic() + timeout
        pending: set[str] = set(want)
        while time.monotonic() < deadline:
            items = self.kubectl_json("get", "nodes", "-l", "type=kwok")["items"]
            pending = set(want)
            for n in items:
                conds = {c["type"]: c["status"] for c in n.get("status", {}).get("conditions", [])}
                if conds.get("Ready") == "True" and not n.get("spec", {}).get("taints"):
                    pending.discard(n["metadata"]["name"])
            if not pending:
                return
            if not self.pid_alive("kwok"):
                raise ClusterError(self._failure(self.component("kwok"), "exited"))
            time.sleep(0.5)
        raise ClusterError(
            f"nodes not Ready and untainted after {timeout:.0f}s: {sorted(pending)}\n"
            + tail(self.layout.log("kwok"))
        )

    def wait_service_accounts(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        missing: list[str] = []
        while time.monotonic() < deadline:
            missing = [
                ns
                for ns in ("default", "ml-team")
                if self.kubectl(
                    "-n", ns, "get", "serviceaccount", "default", check=False
                ).returncode
            ]
            if not missing:
                return
            time.sleep(0.5)
        raise ClusterError(
            f"no default ServiceAccount in {missing} after {timeout:.0f}s\n"
            + tail(self.layout.log("kube-controller-manager"))
        )

    def wait_scraped(self, timeout: float = 60.0) -> None:
        query = urllib.parse.urlencode({"query": 'up{job="dcgm-exporter"}'})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = http_get(f"{PROMETHEUS_URL}/api/v1/query?{query}")
            if status == 200:
                result = json.loads(body)["data"]["result"]
                if result and result[0]["value"][1] == "1":
                    return
            time.sleep(0.5)
        raise ClusterError(
            f"Prometheus has not scraped dcgm-sim after {timeout:.0f}s\n"
            + tail(self.layout.log("prometheus"))
        )

    # -- high level -------------------------------------------------------------
    def statuses(self) -> dict[str, bool]:
        return {c.name: self.pid_alive(c.name) and c.healthy() for c in self.components}

    def all_healthy(self) -> bool:
        return self.layout.bootstrapped.exists() and all(self.statuses().values())

    def up(self, started_file: Path | None) -> None:
        if self.all_healthy():
            progress("cluster already up and healthy")
            self.print_info()
            return
        self.tools  # noqa: B018 - fail early, before touching anything, if binaries are missing
        self.layout.root.mkdir(parents=True, exist_ok=True)
        (self.layout.root / ".gitignore").write_text("*\n")
        progress(f"state directory {self.layout.root}")
        self.ensure_pki()
        self.ensure_tokens()
        self.ensure_kubeconfig()
        self.ensure_prometheus_config()
        progress("PKI, tokens, kubeconfig and prometheus.yml ready")

        for phase in sorted({c.phase for c in self.components}):
            comps = [c for c in self.components if c.phase == phase]
            waiting: list[tuple[Component, Callable[[], None] | None]] = []
            for comp in comps:

                def start(comp: Component = comp) -> None:
                    self.start(comp)
                    if started_file is not None:
                        with started_file.open("a") as f:
                            f.write(comp.name + "\n")

                if self.pid_alive(comp.name) and comp.healthy():
                    progress(f"{comp.name}: already running")
                elif self.pid_alive(comp.name):
                    # Starting, or shutting down after a signal: wait, and start
                    # it again should it exit.
                    progress(f"{comp.name}: running but not healthy, waiting")
                    waiting.append((comp, start))
                else:
                    start()
                    waiting.append((comp, None))
            for comp, restart in waiting:
                self.wait_healthy(comp, restart)
                progress(f"{comp.name}: healthy")
            # Idempotent follow-up steps, also run when resuming a partial cluster.
            names = {c.name for c in comps}
            if "kube-apiserver" in names:
                self.bootstrap()
            if "kwok" in names:
                self.wait_nodes_ready()
                progress("nodes: all simulated GPU nodes Ready, no taints")
                self.wait_service_accounts()
                progress("service accounts: default ServiceAccounts exist")
        self.wait_scraped()
        progress("prometheus: scraping dcgm-sim")
        self.layout.bootstrapped.write_text(time.strftime("%F %T\n"))
        self.print_info()

    def down(self, only: Sequence[str] | None = None) -> None:
        names = [c.name for c in self.components]
        if only:
            unknown = sorted(set(only) - set(names))
            if unknown:
                raise ClusterError(f"unknown components {unknown}; known: {names}")
        targets = [n for n in reversed(names) if not only or n in only]
        if not self.layout.root.exists():
            progress(f"nothing to do: {self.layout.root} does not exist")
            return
        for name in targets:
            if self.stop(name):
                progress(f"{name}: stopped")
        if only and set(only) != set(names):
            return
        strays = self.stray_pids()
        for pid in strays:
            progress(f"stopping leftover process {pid}: {shlex.join(_proc_cmdline(pid))[:120]}")
            terminate(pid, 5.0)
        shutil.rmtree(self.layout.root, ignore_errors=True)
        progress(f"removed {self.layout.root}")

    def print_info(self) -> None:
        lay = self.layout
        print()
        print(f"Local GPU cluster is up (state in {lay.root})")
        print(f"  kubeconfig:  {lay.kubeconfig}")
        print("  contexts:    admin (current; system:masters), alice (ml-engineers), bob (finance)")
        print(f"  apiserver:   {APISERVER_URL}")
        print(f"  prometheus:  {PROMETHEUS_URL}")
        print(f"  dcgm-sim:    {DCGM_URL}/metrics")
        print(f"  kubectl:     {tool_path('kubectl')} (matches the server version)")
        print("Use it from your shell with:")
        print('  eval "$(make -s cluster-env)"')
        print(f"  {tool_path('kubectl')} --context alice -n ml-team get pods")

    def print_status(self) -> bool:
        st = self.statuses()
        total_rss = total_peak = 0
        for c in self.components:
            pid = self.read_pid(c.name) if self.pid_alive(c.name) else None
            rss, peak = self.rss_kib(c.name)
            total_rss += rss
            total_peak += peak
            state = "up" if st[c.name] else ("unhealthy" if pid else "down")
            extra = f"pid {pid:<7} rss {rss / 1024:6.0f} MiB" if pid else ""
            ports = ",".join(str(p) for p in c.ports) or "-"
            print(f"  {c.name:<24} {state:<9} ports {ports:<12} {extra}")
        if st["kube-apiserver"]:
            res = self.kubectl(
                "get",
                "nodes",
                "-l",
                "type=kwok",
                "-o",
                "jsonpath={range .items[*]}"
                '{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}',
                check=False,
            )
            lines = res.stdout.split()
            print(f"  nodes: {lines.count('True')}/{len(lines)} simulated GPU nodes Ready")
        print(
            f"  total RSS {total_rss / 1024:.0f} MiB "
            f"(sum of per-process peaks {total_peak / 1024:.0f} MiB)"
        )
        ok = all(st.values()) and self.layout.bootstrapped.exists()
        print(f"cluster: {'up' if ok else ('down' if not any(st.values()) else 'partially up')}")
        return ok


def terminate(pid: int, grace: float) -> bool:
    """SIGTERM the process group led by ``pid`` (or just ``pid``), SIGKILL after grace."""

    def send(sig: int) -> None:
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    send(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if _proc_state(pid) in ("", "Z", "X"):
            _reap(pid)
            return True
        time.sleep(0.1)
    send(signal.SIGKILL)
    for _ in range(50):
        if _proc_state(pid) in ("", "Z", "X"):
            break
        time.sleep(0.1)
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"  (no log at {path})"
    return "\n".join("  | " + ln for ln in text.splitlines()[-lines:])


# --------------------------------------------------------------------------
# Simulated GPU node pool


def generate_nodes(path: Path = CLUSTER_CONFIG / "nodepool.yaml") -> list[dict[str, Any]]:
    spec = yaml.safe_load(path.read_text())
    region = spec["region"]
    kube_version = read_versions()["KUBERNETES_VERSION"]
    nodes: list[dict[str, Any]] = []
    ip = 10
    for pool in spec["pools"]:
        for capacity_type, count_key in (("spot", "spot"), ("on-demand", "onDemand")):
            for i in range(int(pool.get(count_key, 0))):
                name = f"{pool['name']}-{capacity_type.replace('-', '')}-{i}"
                zone = pool["zones"][i % len(pool["zones"])]
                gpus = str(pool["gpuCount"])
                machine_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.gpubudget.local"))
                resources = {
                    "cpu": str(pool["cpu"]),
                    "memory": str(pool["memory"]),
                    "pods": str(pool["pods"]),
                    "ephemeral-storage": "500Gi",
                    "nvidia.com/gpu": gpus,
                }
                nodes.append(
                    {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "metadata": {
                            "name": name,
                            "annotations": {
                                KWOK_NODE_ANNOTATION: "fake",
                                "node.alpha.kubernetes.io/ttl": "0",
                            },
                            "labels": {
                                "type": "kwok",
                                "kubernetes.io/arch": "amd64",
                                "kubernetes.io/os": "linux",
                                "kubernetes.io/hostname": name,
                                "node.kubernetes.io/instance-type": pool["instanceType"],
                                "topology.kubernetes.io/region": region,
                                "topology.kubernetes.io/zone": zone,
                                "karpenter.sh/capacity-type": capacity_type,
                                "eks.amazonaws.com/capacityType": (
                                    "SPOT" if capacity_type == "spot" else "ON_DEMAND"
                                ),
                                "nvidia.com/gpu.present": "true",
                                "nvidia.com/gpu.product": pool["gpuProduct"],
                                "nvidia.com/gpu.count": gpus,
                                "nvidia.com/gpu.memory": str(pool["gpuMemoryMiB"]),
                            },
                        },
                        "spec": {"podCIDR": f"10.244.{ip}.0/24", "podCIDRs": [f"10.244.{ip}.0/24"]},
                        "status": {
                            "capacity": resources,
                            "allocatable": dict(resources),
                            "addresses": [
                                {"type": "InternalIP", "address": f"10.0.0.{ip}"},
                                {"type": "Hostname", "address": name},
                            ],
                            "nodeInfo": {
                                "architecture": "amd64",
                                "operatingSystem": "linux",
                                "osImage": "Simulated GPU node (kwok)",
                                "kernelVersion": "kwok",
                                "containerRuntimeVersion": "kwok",
                                "kubeletVersion": kube_version,
                                "kubeProxyVersion": kube_version,
                                "machineID": machine_id,
                                "systemUUID": machine_id,
                                "bootID": machine_id,
                            },
                        },
                    }
                )
                ip += 1
    return nodes


# --------------------------------------------------------------------------
# CLI


def cmd_env(layout: Layout) -> None:
    print(f"export KUBECONFIG={shlex.quote(str(layout.kubeconfig))}")
    print(f"export PROMETHEUS_URL={PROMETHEUS_URL}")


@contextlib.contextmanager
def _lock(layout: Layout) -> Iterator[None]:
    """Serialise up/down on the same state directory."""
    import fcntl

    lock_dir = Path(tempfile.gettempdir())
    digest = hashlib.sha256(str(layout.root).encode()).hexdigest()[:16]
    name = f"gpubudget-localcluster-{digest}.lock"
    with (lock_dir / name).open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress("another localcluster up/down is running on this state dir; waiting")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Local Kubernetes cluster with a simulated GPU node pool.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start the cluster (idempotent)")
    p_up.add_argument(
        "--started-file",
        type=Path,
        help="append the name of each component this run starts to FILE (for with-cluster.sh)",
    )
    p_down = sub.add_parser("down", help="stop the cluster and delete its state (idempotent)")
    p_down.add_argument(
        "--only",
        default="",
        help="comma-separated components to stop; the state is kept unless all are listed",
    )
    sub.add_parser("env", help="print export lines for KUBECONFIG and PROMETHEUS_URL")
    p_status = sub.add_parser("status", help="show each component; exit 0 only if all are up")
    p_status.add_argument("-q", "--quiet", action="store_true", help="only set the exit status")
    sub.add_parser("nodes", help="print the generated Node manifests")
    p_which = sub.add_parser("which", help="print the path of a tool (kubectl, helm, ...)")
    p_which.add_argument("tool", choices=sorted(TOOL_COMPONENTS))
    args = parser.parse_args(argv)

    layout = Layout.default()
    try:
        if args.command == "env":
            cmd_env(layout)
            return 0
        if args.command == "which":
            path = tool_path(args.tool)
            if not os.access(path, os.X_OK):
                raise ClusterError(f"{path} is missing; run `make tools`.")
            print(path)
            return 0
        if args.command == "nodes":
            print(yaml.safe_dump_all(generate_nodes(), sort_keys=False), end="")
            return 0
        cluster = Cluster(layout)
        if args.command == "status":
            if args.quiet:
                return 0 if cluster.all_healthy() else 1
            return 0 if cluster.print_status() else 1
        with _lock(layout):
            if args.command == "up":
                cluster.up(args.started_file)
            elif args.command == "down":
                only = [s for s in args.only.split(",") if s.strip()]
                cluster.down([s.strip() for s in only] or None)
        return 0
    except ClusterError as e:
        print(f"\nERROR: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
