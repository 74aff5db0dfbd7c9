"""Components, and the processes that run them: start, health, stop, pid files.

A component is one long-running process of the cluster. A module that adds one
(controlplane, kwoknodes, dcgm, prometheus; later Kueue, JobSet, a real
kubelet...) defines a ``components(ctx)`` function returning
:class:`Component` values, and cluster.py lists that module. ``up`` starts the
components phase by phase, ``down`` stops them in reverse order, ``status``
shows them; nothing else needs to know about a new component.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from localcluster.layout import Layout
from localcluster.net import HOST, port_open
from localcluster.report import ClusterError, progress, tail


@dataclass
class Component:
    """How to run one process of the cluster and how to tell it works.

    ``prepare`` and ``settle`` must be idempotent: they run on every ``up``, also
    when the component is already running (resuming a partial cluster).
    """

    name: str
    program: str
    """Basename of the executable or script in its command line; finds leftover processes."""
    argv: Callable[[], list[str]]
    healthy: Callable[[], bool]
    ports: tuple[int, ...] = ()
    timeout: float = 60.0
    phase: int = 0
    """Components of one phase start together, once every earlier phase is healthy."""
    env: dict[str, str] = field(default_factory=dict)
    """Added to the environment; values under the state directory are created as directories."""
    prepare: Callable[[], None] | None = None
    """Before its phase starts: write its configuration, create what it acts on."""
    settle: Callable[[], None] | None = None
    """Once its phase is healthy: wait for (or create) what later phases rely on."""


def proc_cmdline(pid: int) -> list[str]:
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


def _gone(pid: int) -> bool:
    return _proc_state(pid) in ("", "Z", "X")


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
        if _gone(pid):
            _reap(pid)
            return True
        time.sleep(0.1)
    send(signal.SIGKILL)
    for _ in range(50):
        if _gone(pid):
            break
        time.sleep(0.1)
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


class Processes:
    """The components' processes, found through pid files in the state directory.

    A process counts as a component's only while its command line mentions the
    state directory, so a recycled pid is never signalled.
    """

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.components: dict[str, Component] = {}
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    def component(self, name: str) -> Component:
        try:
            return self.components[name]
        except KeyError:
            raise ClusterError(f"unknown component {name!r}") from None

    def read_pid(self, name: str) -> int | None:
        try:
            return int(self.layout.pidfile(name).read_text().strip())
        except (OSError, ValueError):
            return None

    def _is_ours(self, pid: int) -> bool:
        cmd = proc_cmdline(pid)
        if not cmd or _gone(pid):
            return False
        return any(str(self.layout.root) in a for a in cmd)

    def alive(self, name: str) -> bool:
        child = self._children.get(name)
        if child is not None:
            # Started by this process: trust the handle (right after exec,
            # /proc/<pid>/cmdline can briefly read empty).
            return child.poll() is None
        pid = self.read_pid(name)
        return pid is not None and self._is_ours(pid)

    def up(self, name: str) -> bool:
        return self.alive(name) and self.component(name).healthy()

    def rss_kib(self, name: str) -> tuple[int, int]:
        """(current RSS, peak RSS) of the component's process, in KiB."""
        pid = self.read_pid(name)
        if pid is None or not self.alive(name):
            return 0, 0
        return _proc_status_kib(pid, "VmRSS"), _proc_status_kib(pid, "VmHWM")

    def stray_pids(self) -> list[int]:
        """Processes of a component's program whose command line mentions the state directory.

        Catches components whose pid file was lost (e.g. the state directory
        was removed by hand while they ran).
        """
        needle = str(self.layout.root) + "/"
        programs = {c.program for c in self.components.values()}
        me = os.getpid()
        out: list[int] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            pid = int(entry.name)
            cmd = proc_cmdline(pid)
            if not cmd or _proc_state(pid) in ("Z", "X"):
                continue
            # cmd[1]: a script run by an interpreter (python hack/dcgm_sim.py).
            runs_program = any(Path(a).name in programs for a in cmd[:2])
            if runs_program and any(needle in a for a in cmd[1:]):
                out.append(pid)
        return out

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
            if time.monotonic() >= deadline or not self.alive(comp.name):
                if restart is None:
                    alive = self.alive(comp.name)
                    what = f"not healthy after {comp.timeout:.0f}s" if alive else "exited"
                    raise ClusterError(self.failure(comp.name, what))
                progress(f"{comp.name}: not healthy; restarting it")
                self.stop(comp.name)
                restart()
                restart = None
                deadline = time.monotonic() + comp.timeout
                continue
            if comp.healthy():
                return
            time.sleep(0.25)

    def failure(self, name: str, what: str) -> str:
        """An error message about component ``name``, with the end of its log."""
        return (
            f"{name} {what}. Last lines of {self.layout.log(name)}:\n"
            + tail(self.layout.log(name))
            + "\n(`make cluster-down` removes everything; `make cluster-up` starts again.)"
        )

    def stop(self, name: str, grace: float = 10.0) -> bool:
        """SIGTERM the component's process group, SIGKILL after ``grace``."""
        pid = self.read_pid(name)
        stopped = False
        if pid is not None and self._is_ours(pid):
            stopped = terminate(pid, grace)
        with contextlib.suppress(FileNotFoundError):
            self.layout.pidfile(name).unlink()
        return stopped
