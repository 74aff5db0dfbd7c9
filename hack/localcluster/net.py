"""Loopback networking: the address every component listens on, probes, free ports."""

from __future__ import annotations

import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"


def _ssl_context(ca: Path | None) -> ssl.SSLContext:
    if ca is None:
        # The controller-manager and scheduler serve self-signed certificates.
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


RESERVED_PORTS = Path("/proc/sys/net/ipv4/ip_local_reserved_ports")


def reserve_ports(ports: set[int]) -> bool:
    """Keep the kernel from handing the cluster's fixed ports out as ephemeral ones.

    The fixed ports lie in Linux's ephemeral range (32768-60999), so a client
    connection (the API server's to etcd, say) could take one of them before the
    component that listens there starts. Root only; False when not allowed.
    """
    try:
        current = RESERVED_PORTS.read_text().strip()
        reserved = {int(p) for p in current.split(",") if p and "-" not in p}
        missing = sorted(ports - reserved)
        if missing:
            RESERVED_PORTS.write_text(",".join(filter(None, [current, *map(str, missing)])))
    except (OSError, ValueError):
        return False
    return True


def free_port() -> int:
    """A loopback port nothing listens on now, for a process started next to the cluster."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])
