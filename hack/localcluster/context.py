"""What a component module's ``components(ctx)`` may use."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from localcluster.kubectl import Kubectl
from localcluster.layout import Layout
from localcluster.pki import read_tokens
from localcluster.processes import Processes
from localcluster.tools import CLUSTER_TOOLS, require_tools


@dataclass
class Context:
    layout: Layout
    processes: Processes
    _tools: dict[str, Path] = field(default_factory=dict)

    @property
    def tools(self) -> dict[str, Path]:
        """Every binary `up` needs; looked up on first use, so `status` and `down` work without."""
        if not self._tools:
            self._tools.update(require_tools(CLUSTER_TOOLS))
        return self._tools

    def tool(self, name: str) -> str:
        return str(self.tools[name])

    @property
    def kubectl(self) -> Kubectl:
        return Kubectl(str(self.layout.kubeconfig), self.tool("kubectl"))

    def admin_token(self) -> str:
        return read_tokens(self.layout).get("admin", "")
