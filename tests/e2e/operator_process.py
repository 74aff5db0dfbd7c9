"""Run the operator as a real process against the local cluster, as a user would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from localcluster.net import free_port

REPO = Path(__file__).resolve().parents[2]


class OperatorProcess:
    """``python -m gpu_budget`` with its logs in a file the test can show on failure."""

    def __init__(
        self,
        kubeconfig: str,
        prometheus_url: str | None,
        log_path: Path,
        accounting_interval: float = 1.0,
        port: int | None = None,
        extra_args: tuple[str, ...] = (),
        extra_env: dict[str, str] | None = None,
        peering_name: str | None = None,
        priority: int = 0,
    ) -> None:
        """Standalone unless ``peering_name`` is given: then a replica that takes
        part in kopf peering with that priority, as the chart's replicas do."""
        self.kubeconfig = kubeconfig
        self.prometheus_url = prometheus_url
        self.log_path = log_path
        self.accounting_interval = accounting_interval
        # A port of its own: operators of tests running side by side must not collide.
        self.port = free_port() if port is None else port
        self.extra_args = extra_args
        self.extra_env = extra_env or {}
        self.peering_name = peering_name
        self.priority = priority
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def healthz(self) -> str:
        return f"http://127.0.0.1:{self.port}/healthz"

    def start(self, timeout: float = 60) -> None:
        args = [
            sys.executable,
            "-m",
            "gpu_budget",
            *(
                ("--standalone",)
                if self.peering_name is None
                else (f"--peering-name={self.peering_name}", f"--priority={self.priority}")
            ),
            f"--accounting-interval={self.accounting_interval}",
            f"--liveness-endpoint={self.healthz}",
            *self.extra_args,
        ]
        if self.prometheus_url:
            args.append(f"--prometheus-url={self.prometheus_url}")
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, **self.extra_env}
        env.pop("GPUBUDGET_STANDALONE", None)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"operator exited with {self.process.returncode}:\n{self.tail()}"
                )
            try:
                with urllib.request.urlopen(self.healthz, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"operator not healthy after {timeout}s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: the hardest stop, nothing gets flushed."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.process = None

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def active(self) -> bool:
        """kopf logs each pause and resume; the last one says where the replica is."""
        lines = [
            line
            for line in self.log_text().splitlines()
            if "Resuming operations" in line or "Pausing" in line
        ]
        return bool(lines) and "Resuming operations" in lines[-1]
