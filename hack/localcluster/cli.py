"""`python -m localcluster SUBCOMMAND` (with hack/ on PYTHONPATH, as the Makefile runs it)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from localcluster.cluster import Cluster, lock
from localcluster.kubectl import KubectlError
from localcluster.kwoknodes import generate_nodes
from localcluster.layout import Layout
from localcluster.metrics import PROMETHEUS_URL
from localcluster.report import ClusterError
from localcluster.tools import TOOL_COMPONENTS, tool_path


def cmd_env(layout: Layout) -> None:
    print(f"export KUBECONFIG={shlex.quote(str(layout.kubeconfig))}")
    print(f"export PROMETHEUS_URL={PROMETHEUS_URL}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="localcluster",
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
        with lock(layout):
            if args.command == "up":
                cluster.up(args.started_file)
            elif args.command == "down":
                only = [s for s in args.only.split(",") if s.strip()]
                cluster.down([s.strip() for s in only] or None)
        return 0
    except (ClusterError, KubectlError) as e:
        print(f"\nERROR: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
