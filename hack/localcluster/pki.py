"""The cluster's identities: CA and certificates, the users' static tokens, the kubeconfig.

Each piece is generated only when missing, so restarting a cluster keeps them.
"""

from __future__ import annotations

import base64
import os
import secrets
import shlex
import subprocess
from pathlib import Path

import yaml

from localcluster.layout import Layout
from localcluster.net import HOST
from localcluster.report import ClusterError

APISERVER_PORT = 36443
APISERVER_URL = f"https://{HOST}:{APISERVER_PORT}"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"

# user -> (uid, groups). The kubeconfig gets one context per user.
USERS: dict[str, tuple[str, list[str]]] = {
    "admin": ("1000", ["system:masters"]),
    "alice": ("1001", ["ml-engineers"]),
    "bob": ("1002", ["finance"]),
}


def ensure_pki(pki: Path, openssl: Path) -> None:
    """CA, apiserver serving cert, service-account keys, front-proxy client cert."""
    pki.mkdir(parents=True, exist_ok=True)
    os.chmod(pki, 0o700)

    def run(*args: str) -> None:
        res = subprocess.run([str(openssl), *args], cwd=pki, capture_output=True, text=True)
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


def ensure_tokens(layout: Layout) -> None:
    """The apiserver's --token-auth-file: a random token per user."""
    if layout.tokens.exists():
        return
    rows = []
    for user, (uid, groups) in USERS.items():
        rows.append(f'{secrets.token_hex(20)},{user},{uid},"{",".join(groups)}"')
    layout.tokens.write_text("\n".join(rows) + "\n")
    os.chmod(layout.tokens, 0o600)


def read_tokens(layout: Layout) -> dict[str, str]:
    """user -> token; empty before ``ensure_tokens``."""
    out: dict[str, str] = {}
    if not layout.tokens.exists():
        return out
    for line in layout.tokens.read_text().splitlines():
        parts = line.split(",", 2)
        if len(parts) >= 2:
            out[parts[1]] = parts[0]
    return out


def ensure_kubeconfig(layout: Layout) -> None:
    """One context per user, ``admin`` current; rewritten only when it changes."""
    ca = base64.b64encode((layout.pki / "ca.crt").read_bytes()).decode()
    tokens = read_tokens(layout)
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
    kc = layout.kubeconfig
    if not kc.exists() or kc.read_text() != text:
        kc.write_text(text)
        os.chmod(kc, 0o600)


def ensure(layout: Layout, openssl: Path) -> None:
    ensure_pki(layout.pki, openssl)
    ensure_tokens(layout)
    ensure_kubeconfig(layout)
