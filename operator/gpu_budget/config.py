"""Operator settings: command-line flags, each with an environment variable."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_WEBHOOK_PORT = 38443
DEFAULT_WEBHOOK_CONFIG_NAME = "gpubudget.dev"


class OperatorConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    namespaces: tuple[str, ...] = Field(
        default=(), description="Namespaces to serve; empty means all namespaces."
    )
    prometheus_url: str | None = Field(
        default=None, description="Prometheus with DCGM exporter metrics; None disables metrics."
    )
    accounting_interval: float = Field(
        default=5.0, gt=0, description="Seconds between accounting passes of a budget."
    )
    outcome_interval: float = Field(
        default=30.0,
        gt=0,
        description="Seconds between evaluations of one budget's outcome query (spec.outcome).",
    )
    policy_name: str = "default"
    stop_at_pass_only: bool = Field(
        default=False,
        description="Stop runs only at a pass, not at the predicted instant: how cost tools "
        "evaluate budgets on a schedule; for comparison (hack/bench) only.",
    )
    standalone: bool = Field(default=False, description="Run without kopf peering (no HA).")
    peering_name: str = Field(
        default="gpu-budget-operator",
        description="ClusterKopfPeering object the replicas coordinate through.",
    )
    priority: int = Field(
        default=0, description="Peering priority; the highest-priority live replica is active."
    )
    peering_lifetime: int = Field(
        default=15,
        ge=5,
        description="Seconds after its last keep-alive that a silent replica counts as dead; "
        "bounds failover time.",
    )
    liveness_endpoint: str | None = None
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="Port of the operator's own /metrics."
    )

    # Admission webhooks (gpu_budget.admission). Off unless a serving certificate is given:
    # the accounting-only operator needs no webhooks, and Kubernetes only calls HTTPS ones.
    webhook_address: str = Field(
        default="0.0.0.0", description="Address the webhook server listens on."
    )
    webhook_port: int = Field(
        default=DEFAULT_WEBHOOK_PORT, ge=1, le=65535, description="Webhook server port."
    )
    webhook_host: str | None = Field(
        default=None,
        description="Host name or IP the API server uses to reach the webhook server, for "
        "managed webhook configurations; None derives it from the listening address.",
    )
    webhook_cert_file: Path | None = Field(
        default=None, description="PEM serving certificate (chain); setting it enables webhooks."
    )
    webhook_key_file: Path | None = Field(default=None, description="PEM private key.")
    webhook_ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle that signed the serving certificate; becomes the caBundle "
        "of managed webhook configurations.",
    )
    manage_webhook_config: bool = Field(
        default=False,
        description="Create and keep up to date the Mutating/ValidatingWebhookConfiguration "
        "(dev mode: the API server reaches the operator at webhook_host:webhook_port).",
    )
    webhook_config_name: str = Field(
        default=DEFAULT_WEBHOOK_CONFIG_NAME,
        min_length=1,
        description="Name of the managed webhook configurations.",
    )

    @property
    def webhooks_enabled(self) -> bool:
        return self.webhook_cert_file is not None

    @model_validator(mode="after")
    def _webhook_flags_consistent(self) -> OperatorConfig:
        if (self.webhook_cert_file is None) != (self.webhook_key_file is None):
            raise ValueError(
                "--webhook-cert-file and --webhook-key-file go together: give both to serve "
                "admission webhooks, or neither to run without them"
            )
        if not self.webhooks_enabled:
            given = [
                flag
                for flag, value in (
                    ("--webhook-ca-file", self.webhook_ca_file),
                    ("--webhook-host", self.webhook_host),
                    ("--manage-webhook-config", self.manage_webhook_config or None),
                )
                if value is not None
            ]
            if given:
                raise ValueError(
                    f"{' and '.join(given)} {'needs' if len(given) == 1 else 'need'} "
                    "--webhook-cert-file and --webhook-key-file: "
                    "webhooks are served over HTTPS only (make one with hack/webhook-certs.sh)"
                )
        if self.manage_webhook_config and self.webhook_ca_file is None:
            raise ValueError(
                "--manage-webhook-config needs --webhook-ca-file: the API server verifies the "
                "webhook server's certificate against that CA (the caBundle of the webhook "
                "configuration)"
            )
        return self


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


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
        "--outcome-interval",
        type=float,
        default=float(env.get("GPUBUDGET_OUTCOME_INTERVAL", "30")),
        help="Seconds between evaluations of a budget's outcome query, spec.outcome (env "
        "GPUBUDGET_OUTCOME_INTERVAL; default 30).",
    )
    parser.add_argument(
        "--standalone",
        action="store_true",
        default=env.get("GPUBUDGET_STANDALONE", "") == "true",
        help="Do not coordinate with other replicas (env GPUBUDGET_STANDALONE=true).",
    )
    parser.add_argument(
        "--peering-name",
        default=env.get("GPUBUDGET_PEERING_NAME", "gpu-budget-operator"),
        help="ClusterKopfPeering the replicas share (env GPUBUDGET_PEERING_NAME).",
    )
    parser.add_argument(
        "--priority",
        type=int,
        default=int(env.get("GPUBUDGET_PRIORITY", "0")),
        help="Peering priority of this replica (env GPUBUDGET_PRIORITY; default 0). The "
        "highest-priority live replica is active; kopf pauses replicas of equal priority "
        "alike, so give each replica its own (the chart uses the StatefulSet pod index).",
    )
    parser.add_argument(
        "--peering-lifetime",
        type=int,
        default=int(env.get("GPUBUDGET_PEERING_LIFETIME", "15")),
        help="Seconds before a silent replica is taken for dead (env GPUBUDGET_PEERING_LIFETIME).",
    )
    parser.add_argument(
        "--liveness-endpoint",
        default=env.get("GPUBUDGET_LIVENESS_ENDPOINT") or None,
        help="e.g. http://0.0.0.0:8080/healthz (env GPUBUDGET_LIVENESS_ENDPOINT).",
    )
    parser.add_argument(
        "--stop-at-pass-only",
        action="store_true",
        default=env.get("GPUBUDGET_STOP_AT_PASS_ONLY") == "true",
        help="Stop runs only at a pass, not at the predicted instant (a polling baseline for "
        "benchmarks; env GPUBUDGET_STOP_AT_PASS_ONLY=true).",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(env["GPUBUDGET_METRICS_PORT"]) if env.get("GPUBUDGET_METRICS_PORT") else None,
        help="Serve the operator's Prometheus metrics on this port at /metrics "
        "(env GPUBUDGET_METRICS_PORT; default: not served).",
    )
    webhooks = parser.add_argument_group(
        "admission webhooks",
        "Served only when --webhook-cert-file and --webhook-key-file are given; without them "
        "the operator meters and enforces but does not hold workloads at creation.",
    )
    webhooks.add_argument(
        "--webhook-address",
        default=env.get("GPUBUDGET_WEBHOOK_ADDRESS") or "0.0.0.0",
        help="Address to listen on (env GPUBUDGET_WEBHOOK_ADDRESS; default 0.0.0.0).",
    )
    webhooks.add_argument(
        "--webhook-port",
        type=int,
        default=int(env.get("GPUBUDGET_WEBHOOK_PORT") or DEFAULT_WEBHOOK_PORT),
        help=f"HTTPS port (env GPUBUDGET_WEBHOOK_PORT; default {DEFAULT_WEBHOOK_PORT}).",
    )
    webhooks.add_argument(
        "--webhook-host",
        default=env.get("GPUBUDGET_WEBHOOK_HOST") or None,
        help="Host the API server calls, in managed webhook configurations; must be in the "
        "certificate's SANs (env GPUBUDGET_WEBHOOK_HOST; default: the listening address, "
        "127.0.0.1 for 0.0.0.0).",
    )
    webhooks.add_argument(
        "--webhook-cert-file",
        type=Path,
        default=_env_path("GPUBUDGET_WEBHOOK_CERT_FILE"),
        help="PEM serving certificate (env GPUBUDGET_WEBHOOK_CERT_FILE). Re-read when it "
        "changes, so a rotated certificate is picked up without a restart.",
    )
    webhooks.add_argument(
        "--webhook-key-file",
        type=Path,
        default=_env_path("GPUBUDGET_WEBHOOK_KEY_FILE"),
        help="PEM private key of the serving certificate (env GPUBUDGET_WEBHOOK_KEY_FILE).",
    )
    webhooks.add_argument(
        "--webhook-ca-file",
        type=Path,
        default=_env_path("GPUBUDGET_WEBHOOK_CA_FILE"),
        help="PEM CA that signed the serving certificate; the caBundle of managed "
        "configurations (env GPUBUDGET_WEBHOOK_CA_FILE).",
    )
    webhooks.add_argument(
        "--manage-webhook-config",
        action="store_true",
        default=env.get("GPUBUDGET_MANAGE_WEBHOOK_CONFIG", "") == "true",
        help="Dev mode: create and maintain the Mutating/ValidatingWebhookConfiguration "
        "pointing at https://<webhook-host>:<webhook-port>/ (env "
        "GPUBUDGET_MANAGE_WEBHOOK_CONFIG=true). Needs RBAC to create and patch them.",
    )
    webhooks.add_argument(
        "--webhook-config-name",
        default=env.get("GPUBUDGET_WEBHOOK_CONFIG_NAME") or DEFAULT_WEBHOOK_CONFIG_NAME,
        help="Name of the managed webhook configurations (env GPUBUDGET_WEBHOOK_CONFIG_NAME; "
        f"default {DEFAULT_WEBHOOK_CONFIG_NAME}).",
    )
    args = parser.parse_args(argv)
    try:
        return OperatorConfig(
            namespaces=tuple(args.namespace),
            prometheus_url=args.prometheus_url,
            accounting_interval=args.accounting_interval,
            outcome_interval=args.outcome_interval,
            standalone=args.standalone,
            peering_name=args.peering_name,
            priority=args.priority,
            peering_lifetime=args.peering_lifetime,
            liveness_endpoint=args.liveness_endpoint,
            metrics_port=args.metrics_port,
            stop_at_pass_only=args.stop_at_pass_only,
            webhook_address=args.webhook_address,
            webhook_port=args.webhook_port,
            webhook_host=args.webhook_host,
            webhook_cert_file=args.webhook_cert_file,
            webhook_key_file=args.webhook_key_file,
            webhook_ca_file=args.webhook_ca_file,
            manage_webhook_config=args.manage_webhook_config,
            webhook_config_name=args.webhook_config_name,
        )
    except ValueError as error:
        parser.error(str(error))
