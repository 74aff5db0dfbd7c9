"""The whole cluster: its components in order, and `up`, `down`, `status` over them."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from localcluster import controlplane, kwoknodes, metrics, net, pki
from localcluster.context import Context
from localcluster.layout import Layout
from localcluster.metrics import DCGM_URL, PROMETHEUS_URL
from localcluster.pki import APISERVER_URL
from localcluster.processes import Component, Processes, proc_cmdline, terminate
from localcluster.report import ClusterError, progress
from localcluster.tools import tool_path

# A new component's module goes here. The order of the components is also the
# stop order, reversed.
COMPONENT_MODULES = (controlplane, kwoknodes, metrics)


class Cluster:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.processes = Processes(layout)
        self.ctx = Context(layout, self.processes)
        self.components = [c for m in COMPONENT_MODULES for c in m.components(self.ctx)]
        self.processes.components = {c.name: c for c in self.components}

    def statuses(self) -> dict[str, bool]:
        return {c.name: self.processes.up(c.name) for c in self.components}

    def all_healthy(self) -> bool:
        return self.layout.bootstrapped.exists() and all(self.statuses().values())

    def up(self, started_file: Path | None) -> None:
        if self.all_healthy():
            progress("cluster already up and healthy")
            self.print_info()
            return
        self.ctx.tools  # noqa: B018 - fail early, before touching anything, if binaries are missing
        self.layout.root.mkdir(parents=True, exist_ok=True)
        (self.layout.root / ".gitignore").write_text("*\n")
        progress(f"state directory {self.layout.root}")
        pki.ensure(self.layout, self.ctx.tools["openssl"])
        progress("PKI, tokens and kubeconfig ready")
        if not net.reserve_ports({port for c in self.components for port in c.ports}):
            progress("could not reserve the cluster's ports (not root): a start may collide")

        for phase in sorted({c.phase for c in self.components}):
            comps = [c for c in self.components if c.phase == phase]
            for comp in comps:
                if comp.prepare is not None:
                    comp.prepare()
            self._start_phase(comps, started_file)
            for comp in comps:
                if comp.settle is not None:
                    comp.settle()
        self.layout.bootstrapped.write_text(time.strftime("%F %T\n"))
        self.print_info()

    def _start_phase(self, comps: list[Component], started_file: Path | None) -> None:
        """Start what is not running, then wait for all of ``comps`` to be healthy."""
        waiting: list[tuple[Component, Callable[[], None] | None]] = []
        for comp in comps:

            def start(comp: Component = comp) -> None:
                self.processes.start(comp)
                if started_file is not None:
                    with started_file.open("a") as f:
                        f.write(comp.name + "\n")

            if self.processes.up(comp.name):
                progress(f"{comp.name}: already running")
            elif self.processes.alive(comp.name):
                # Starting, or shutting down after a signal: wait, and start
                # it again should it exit.
                progress(f"{comp.name}: running but not healthy, waiting")
                waiting.append((comp, start))
            else:
                start()
                waiting.append((comp, None))
        for comp, restart in waiting:
            self.processes.wait_healthy(comp, restart)
            progress(f"{comp.name}: healthy")

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
            if self.processes.stop(name):
                progress(f"{name}: stopped")
        if only and set(only) != set(names):
            return
        for pid in self.processes.stray_pids():
            progress(f"stopping leftover process {pid}: {shlex.join(proc_cmdline(pid))[:120]}")
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
            pid = self.processes.read_pid(c.name) if self.processes.alive(c.name) else None
            rss, peak = self.processes.rss_kib(c.name)
            total_rss += rss
            total_peak += peak
            state = "up" if st[c.name] else ("unhealthy" if pid else "down")
            extra = f"pid {pid:<7} rss {rss / 1024:6.0f} MiB" if pid else ""
            ports = ",".join(str(p) for p in c.ports) or "-"
            print(f"  {c.name:<24} {state:<9} ports {ports:<12} {extra}")
        if st["kube-apiserver"]:
            print(f"  {kwoknodes.nodes_ready_line(self.ctx)}")
        print(
            f"  total RSS {total_rss / 1024:.0f} MiB "
            f"(sum of per-process peaks {total_peak / 1024:.0f} MiB)"
        )
        ok = all(st.values()) and self.layout.bootstrapped.exists()
        print(f"cluster: {'up' if ok else ('down' if not any(st.values()) else 'partially up')}")
        return ok


@contextlib.contextmanager
def lock(layout: Layout) -> Iterator[None]:
    """Serialise up/down on the same state directory."""
    digest = hashlib.sha256(str(layout.root).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"gpubudget-localcluster-{digest}.lock"
    with path.open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress("another localcluster up/down is running on this state dir; waiting")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield
