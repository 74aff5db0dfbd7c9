"""kubectl on the local cluster, and waiting for it: the one client the cluster's own
bootstrap, the end-to-end tests, the demo and the benchmark share."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from localcluster.layout import Layout
from localcluster.tools import tool_path

T = TypeVar("T")


def kubectl_binary() -> str:
    """$KUBECTL, else the kubectl built for the cluster's Kubernetes version."""
    return os.environ.get("KUBECTL") or str(tool_path("kubectl"))


class KubectlError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        # cmd[3:]: what the caller asked for, without binary, --kubeconfig and --context.
        return (
            f"kubectl {' '.join(self.cmd[3:])} exited {self.returncode}:\n"
            f"{(self.stderr or '').strip() or (self.output or '').strip()}"
        )


@dataclass(frozen=True)
class Kubectl:
    """kubectl with one kubeconfig; every call names its context (a user: admin, alice, bob)."""

    kubeconfig: str
    binary: str = field(default_factory=kubectl_binary)

    @classmethod
    def from_env(cls) -> Kubectl:
        """$KUBECONFIG (as `make cluster-env` exports it), else the default state directory's."""
        return cls(os.environ.get("KUBECONFIG") or str(Layout.default().kubeconfig))

    def __call__(
        self,
        *args: str,
        context: str = "admin",
        check: bool = True,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.binary, f"--kubeconfig={self.kubeconfig}", f"--context={context}", *args]
        res = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=120)
        if check and res.returncode != 0:
            raise KubectlError(res.returncode, cmd, res.stdout, res.stderr)
        return res

    def json(self, *args: str, context: str = "admin", input: str | None = None) -> Any:
        """The output of ``kubectl ARGS -o json``, parsed."""
        return json.loads(self(*args, "-o", "json", context=context, input=input).stdout)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        return dict(self.json("get", kind, name, "-n", namespace))

    def apply(self, manifest: dict[str, Any], context: str = "admin") -> None:
        """Server-side apply, taking over fields other managers set (tests re-apply freely)."""
        self(
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            "-",
            input=json.dumps(manifest),
            context=context,
        )


class WaitTimeout(TimeoutError):
    """What ``wait_for`` waited for did not happen in time."""


def wait_for(fn: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
    """Poll ``fn`` until it returns something truthy, and return that.

    ``fn`` runs at least once, and once more at the deadline, so a slow first
    call does not use up the whole timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise WaitTimeout(
                f"timed out after {timeout:.0f}s waiting for {what}; last value: {last!r}"
            )
        time.sleep(interval)
