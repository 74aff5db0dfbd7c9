"""Where things are: the repository's cluster configuration, and the state directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HACK = REPO / "hack"
CLUSTER_CONFIG = HACK / "cluster"


@dataclass(frozen=True)
class Layout:
    """The state directory: PKI, tokens, kubeconfig, data, logs and pid files."""

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
