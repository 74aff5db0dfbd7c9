"""The binaries the cluster runs: hack/build-tools.sh's cache, versions from hack/versions.env."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from localcluster.layout import HACK
from localcluster.report import ClusterError

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
CLUSTER_TOOLS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
)
"""What `up` needs built; the rest of TOOL_COMPONENTS is for developers (`which helm`)."""
SYSTEM_TOOLS = ("prometheus", "openssl")
"""From Debian packages (hack/install-system-deps.sh), found on PATH."""


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


def tool_path(name: str) -> Path:
    """Where hack/build-tools.sh puts ``name`` (which may not exist yet)."""
    component, key = TOOL_COMPONENTS[name]
    version = read_versions()[key]
    return tools_cache() / f"{component}-{version}" / "bin" / name


def require_tools(names: Sequence[str]) -> dict[str, Path]:
    """Paths of the built ``names`` and of the system tools; one error naming all missing."""
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
    for cmd in SYSTEM_TOOLS:
        p_str = shutil.which(cmd)
        if p_str is None:
            raise ClusterError(f"`{cmd}` not found on PATH. Run `make system-deps`.")
        found[cmd] = Path(p_str)
    return found
