"""Operator settings: command-line flags, each with an environment variable."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field


class OperatorConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    namespaces: tuple[str, ...] = Field(
        default=(), description="Namespaces to serve; empty means all namespaces."
    )
    prometheus_url: str | None = Field(
        default=None, description="Prometheus with DCGM exporter metrics; None disables metrics."
    )
    accounting_interval: float = Field(
        default=5.0, gt=0, description="Seconds between accounting passes of a budget."
    )
    policy_name: str = "default"
    standalone: bool = Field(default=False, description="Run without kopf peering (no HA).")
    liveness_endpoint: str | None = None


def parse_args(argv: Sequence[str] | None = None) -> OperatorConfig:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="gpu-budget-operator",
        description="Meter GPU spend of training runs and enforce TrainingBudgets.",
    )
    parser.add_argument(
        "--namespace",
        action="append",
        default=[n for n in env.get("GPUBUDGET_NAMESPACES", "").split(",") if n],
        help="Namespace to serve (repeatable; env GPUBUDGET_NAMESPACES, comma-separated). "
        "Default: all namespaces.",
    )
    parser.add_argument(
        "--prometheus-url",
        default=env.get("GPUBUDGET_PROMETHEUS_URL") or None,
        help="Prometheus base URL with DCGM exporter metrics (env GPUBUDGET_PROMETHEUS_URL).",
    )
    parser.add_argument(
        "--accounting-interval",
        type=float,
        default=float(env.get("GPUBUDGET_ACCOUNTING_INTERVAL", "5")),
        help="Seconds between accounting passes of each budget (env "
        "GPUBUDGET_ACCOUNTING_INTERVAL; default 5).",
    )
    parser.add_argument(
        "--standalone",
        action="store_true",
        default=env.get("GPUBUDGET_STANDALONE", "") == "true",
        help="Do not coordinate with other replicas (env GPUBUDGET_STANDALONE=true).",
    )
    parser.add_argument(
        "--liveness-endpoint",
        default=env.get("GPUBUDGET_LIVENESS_ENDPOINT") or None,
        help="e.g. http://0.0.0.0:8080/healthz (env GPUBUDGET_LIVENESS_ENDPOINT).",
    )
    args = parser.parse_args(argv)
    try:
        return OperatorConfig(
            namespaces=tuple(args.namespace),
            prometheus_url=args.prometheus_url,
            accounting_interval=args.accounting_interval,
            standalone=args.standalone,
            liveness_endpoint=args.liveness_endpoint,
        )
    except ValueError as error:
        parser.error(str(error))
