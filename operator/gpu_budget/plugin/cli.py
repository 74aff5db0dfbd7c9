"""``kubectl gpubudget``: the command line, its flags and the one place errors are shown.

Installed as the console script ``kubectl-gpubudget``, so kubectl finds it on
PATH as a plugin. Cluster flags follow kubectl's (``--kubeconfig``,
``--context``, ``-n``, ``-A``); ``-o`` picks the output format. A
:class:`PluginError` is printed as one line on stderr with exit code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import yaml

from gpu_budget import APPROVED_AMOUNT_ANNOTATION
from gpu_budget.catalog import Catalog, load_catalog
from gpu_budget.models import BudgetPolicySpec, CapacityType, Estimate, TrainingBudgetSpec
from gpu_budget.plugin import approve as approving
from gpu_budget.plugin import estimate as estimating
from gpu_budget.plugin import focus, pending, report, top
from gpu_budget.plugin.cluster import Cluster
from gpu_budget.plugin.errors import PluginError
from gpu_budget.plugin.history import History, fetch
from gpu_budget.plugin.html_report import render_html
from gpu_budget.plugin.manifest import read_manifest
from gpu_budget.plugin.output import FORMATS, Column, render
from gpu_budget.plugin.periods import (
    GRANULARITIES,
    Period,
    charge_periods,
    even_periods,
    parse_instant,
)
from gpu_budget.plugin.prometheus import Prometheus

HTML_COLUMNS = 24
"""Columns of the spend-over-time chart, whatever the period's length."""


def parser() -> argparse.ArgumentParser:
    cluster = argparse.ArgumentParser(add_help=False)
    cluster.add_argument(
        "--kubeconfig", help="kubeconfig file (default: KUBECONFIG, ~/.kube/config)"
    )
    cluster.add_argument("--context", help="kubeconfig context (default: the current one)")
    cluster.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("-o", "--output", choices=FORMATS, default="table", help="output format")
    history = argparse.ArgumentParser(add_help=False)
    history.add_argument("--since", default="30d", help="start: RFC 3339, a date, or ago (7d, 36h)")
    history.add_argument("--until", default="now", help="end: RFC 3339, a date, 'now', or ago")
    history.add_argument(
        "--prometheus",
        default=os.environ.get("PROMETHEUS_URL"),
        help="Prometheus that scrapes the operator (default: PROMETHEUS_URL)",
    )

    root = argparse.ArgumentParser(
        prog="kubectl gpubudget",
        description="GPU budgets: estimate a run, watch spend, approve, report and export.",
    )
    verbs = root.add_subparsers(dest="verb", required=True, metavar="VERB")

    est = verbs.add_parser(
        "estimate",
        parents=[cluster, output],
        help="what a run would cost, on every cloud and region, on-demand and spot",
        description="Price a run from flags or a manifest with the operator's own pricing: "
        "the cluster's BudgetPolicy default when one is reachable, else the built-in "
        "catalog and the default policy (stated in the output).",
    )
    est.add_argument("-f", "--filename", help="manifest: a TrainingBudget and/or its workloads")
    est.add_argument("--gpus", type=float, help="GPUs the run uses (default: one instance)")
    est.add_argument("--hours", type=float, help="expected wall-clock hours")
    kind = est.add_mutually_exclusive_group()
    kind.add_argument("--instance-type", help="e.g. p5.48xlarge")
    kind.add_argument("--gpu-product", help="e.g. NVIDIA-H100-80GB-HBM3")
    est.add_argument("--capacity-type", choices=[c.value for c in CapacityType])
    est.add_argument("--region", help="only compare this region")
    est.add_argument("--cap", type=float, help="the budget's cap, for the finance check")
    est.add_argument("--offline", action="store_true", help="do not read the cluster's policy")

    tp = verbs.add_parser(
        "top",
        parents=[cluster, output],
        help="budgets by spend, with burn rate and time left to the cap",
        description="Budgets by spend: burn rate, time left to the cap ((cap - spent) / burn) "
        "and phase.",
    )
    tp.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")

    pd = verbs.add_parser(
        "pending",
        parents=[cluster, output],
        help="budgets awaiting finance approval",
        description="Budgets in phase AwaitingApproval with cap, estimate and time waited.",
    )
    pd.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")

    ap = verbs.add_parser(
        "approve",
        parents=[cluster],
        help="approve a budget (finance)",
        description="Set gpubudget.dev/approved-amount and gpubudget.dev/approval-reason, as "
        "finance's `kubectl annotate` does; the cluster's approval guard decides who may.",
    )
    ap.add_argument("name", help="the TrainingBudget")
    ap.add_argument("--amount", required=True, help="USD approved, e.g. 50000 or $50,000")
    ap.add_argument("--reason", required=True, help="why; recorded with the approval")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing approval")

    rp = verbs.add_parser(
        "report",
        parents=[history, output],
        help="spend, GPU-hours, idle spend and utilisation per group, from Prometheus",
        description="Spend, GPU-hours, idle spend and utilisation per group over a period, "
        "budgets deleted in the period included, from the operator's metrics in Prometheus.",
    )
    rp.add_argument("--by", choices=list(report.DIMENSIONS), default="team")
    rp.add_argument("--html", metavar="FILE", help="write a self-contained HTML page instead")

    ex = verbs.add_parser(
        "export",
        parents=[history],
        help="FOCUS 1.0 CSV, one row per budget per charge period",
        description="FinOps FOCUS 1.0 CSV from the operator's metrics in Prometheus.",
    )
    ex.add_argument("--format", choices=["focus"], default="focus")
    ex.add_argument("--granularity", choices=list(GRANULARITIES), default="daily")
    ex.add_argument("--file", help="write here instead of stdout")
    ex.add_argument("--billing-account", default=focus.Issuer.billing_account)
    ex.add_argument("--invoice-issuer", default=focus.Issuer.invoice_issuer)
    ex.add_argument("--provider", default=focus.Issuer.provider)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        out = VERBS[args.verb](args)
    except PluginError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    sys.stdout.write(out)
    return 0


def _cluster(args: argparse.Namespace) -> Cluster:
    return Cluster(args.kubeconfig, args.context)


def _namespace(args: argparse.Namespace, cluster: Cluster) -> str | None:
    if getattr(args, "all_namespaces", False):
        return None
    return str(args.namespace or cluster.namespace)


def run_estimate(args: argparse.Namespace) -> str:
    catalog = load_catalog()
    cluster: Cluster | None = None
    policy: BudgetPolicySpec | None = None
    source = ""
    if not args.offline:
        try:
            cluster = _cluster(args)
            policy = cluster.policy()
            source = f"BudgetPolicy default of context {cluster.context}"
        except PluginError as error:
            cluster, source = None, f"no cluster ({error})"
    if policy is None:
        policy = BudgetPolicySpec()
        source = (
            f"{source or 'offline'}: built-in catalog and default policy (contingency "
            f"{policy.contingency:.0%}, approval ceiling ${policy.approval_ceiling:,.2f})"
        )
    request = _request(args, catalog, cluster)
    quote = estimating.quote(request, policy, catalog)
    if args.output == "table":
        body = render(quote.options, estimating.COLUMNS, "table") if quote.options else ""
        return estimating.summary(quote, source) + ("\n" + body if body else "")
    if args.output == "csv":
        return render(quote.options, estimating.COLUMNS, "csv")
    document = {
        "policy": source,
        "estimate": quote.estimate.model_dump(by_alias=True),
        "needsFinance": quote.needs_finance,
        "approvalCeiling": quote.ceiling,
        "options": quote.options,
    }
    if args.output == "json":
        return json.dumps(document, indent=2) + "\n"
    return str(yaml.safe_dump(document, sort_keys=False))


def _request(
    args: argparse.Namespace, catalog: Catalog, cluster: Cluster | None
) -> estimating.Request:
    if args.filename is None:
        if args.hours is None:
            raise PluginError("say how long the run takes (--hours), or pass a manifest (-f)")
        capacity = CapacityType(args.capacity_type) if args.capacity_type else None
        estimate = Estimate(
            hours=args.hours,
            instance_type=args.instance_type,
            gpu_product=args.gpu_product,
            capacity_type=capacity,
        )
        return estimating.Request(
            estimate=estimate,
            gpus=estimating.gpus_for(estimate, args.gpus, catalog),
            cap=args.cap,
            region=args.region,
        )
    path = Path(args.filename)
    try:
        text = sys.stdin.read() if args.filename == "-" else path.read_text()
    except OSError as error:
        raise PluginError(f"cannot read {args.filename}: {error.strerror}") from None
    manifest = read_manifest(text, args.filename)
    spec = manifest.spec
    if spec is None:
        if cluster is None:
            raise PluginError(
                f"{args.filename} names budget {manifest.budget} but holds no TrainingBudget, "
                "and no cluster is reachable to read it from"
            )
        namespace = manifest.namespace or args.namespace or cluster.namespace
        body = cluster.budget(namespace, str(manifest.budget))
        spec = TrainingBudgetSpec.model_validate(body.get("spec") or {})
    if spec.estimate is None:
        raise PluginError(f"TrainingBudget {manifest.budget} has no spec.estimate to price")
    gpus = args.gpus if args.gpus is not None else spec.estimate.gpus or manifest.workload_gpus
    return estimating.Request(
        estimate=spec.estimate,
        gpus=estimating.gpus_for(spec.estimate, gpus, catalog),
        cap=spec.cost_cap if args.cap is None else args.cap,
        region=args.region,
    )


def run_top(args: argparse.Namespace) -> str:
    cluster = _cluster(args)
    return render(
        top.top_rows(cluster.budgets(_namespace(args, cluster))), top.COLUMNS, args.output
    )


def run_pending(args: argparse.Namespace) -> str:
    cluster = _cluster(args)
    budgets = cluster.budgets(_namespace(args, cluster))
    rows = pending.pending_rows(budgets, datetime.now(UTC))
    if not rows and args.output == "table":
        return "No budgets are awaiting approval.\n"
    return render(rows, pending.COLUMNS, args.output)


def run_approve(args: argparse.Namespace) -> str:
    cluster = _cluster(args)
    namespace = str(args.namespace or cluster.namespace)
    body = cluster.budget(namespace, args.name)
    plan = approving.plan_approval(body, args.amount, args.reason, args.overwrite)
    cluster.annotate_budget(namespace, args.name, plan.annotations, plan.resource_version)
    amount = plan.annotations[APPROVED_AMOUNT_ANNOTATION]
    lines = [f"trainingbudget.gpubudget.dev/{args.name} approved for {amount} USD"]
    lines += [f"note: {note}" for note in plan.notes]
    return "".join(line + "\n" for line in lines)


def _period(args: argparse.Namespace) -> Period:
    now = datetime.now(UTC)
    return Period(parse_instant(args.since, now), parse_instant(args.until, now))


def _prometheus(args: argparse.Namespace) -> Prometheus:
    if not args.prometheus:
        raise PluginError("say where Prometheus is: --prometheus URL or PROMETHEUS_URL")
    return Prometheus(args.prometheus)


def run_report(args: argparse.Namespace) -> str:
    period = _period(args)
    prometheus = _prometheus(args)
    if args.html:
        history = fetch(prometheus, even_periods(period, HTML_COLUMNS))
        _write(args.html, render_html(history, args.by))
        return f"wrote {args.html}\n"
    history = fetch(prometheus, [period])
    rows = report.report_rows(history, args.by)
    out = render(rows, report.columns(args.by), args.output)
    return out + report.footer(history) if args.output == "table" else out


def run_export(args: argparse.Namespace) -> str:
    history: History = fetch(
        _prometheus(args), list(charge_periods(_period(args), args.granularity))
    )
    issuer = focus.Issuer(args.billing_account, args.invoice_issuer, args.provider)
    rows = focus.focus_rows(history, issuer)
    columns = [Column(name, name) for name in focus.HEADER]
    text = render(rows, columns, "csv")
    if args.file:
        _write(args.file, text)
        return f"wrote {len(rows)} FOCUS rows to {args.file}\n"
    return text


def _write(path: str, text: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as error:
        raise PluginError(f"cannot write {path}: {error.strerror}") from None


VERBS = {
    "estimate": run_estimate,
    "top": run_top,
    "pending": run_pending,
    "approve": run_approve,
    "report": run_report,
    "export": run_export,
}


def console() -> None:
    """The console script ``kubectl-gpubudget``."""
    sys.exit(main())
