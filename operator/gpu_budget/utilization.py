"""GPU utilisation from DCGM exporter metrics in Prometheus.

One accounting tick costs two PromQL queries for the whole cluster, never one
per pod: the aggregation happens in Prometheus, and the result is a snapshot
the budgets' accounting passes read from memory.

dcgm-exporter has changed its names over the years, so the queries accept all
of them: ``DCGM_FI_PROF_GR_ENGINE_ACTIVE`` (ratio, preferred: it is what
OpenCost uses and it works where the older counter reads only 0 or 100),
``DCGM_FI_DEV_GPU_UTIL`` (percent) and ``DCGM_FI_DEV_GPU_UTIL_RATIO`` (ratio,
exporter 4.9+); pod labels as ``pod``/``namespace``, as ``pod_name``/
``pod_namespace`` (``--use-old-namespace``) or as ``exported_pod``/
``exported_namespace`` (scraped with ``honor_labels: false``); node labels as
``Hostname`` or ``hostname`` (renamed in 2026 releases).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_api_client import PrometheusConnect
from pydantic import BaseModel, ConfigDict
from urllib3.util.retry import Retry

RATIO_METRICS = ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_DEV_GPU_UTIL_RATIO")
PERCENT_METRICS = ("DCGM_FI_DEV_GPU_UTIL",)

# The first label that is present and non-empty wins, so a pod label that the
# scrape renamed is found under its new name.
POD_LABELS = ("exported_pod", "pod", "pod_name")
NAMESPACE_LABELS = ("exported_namespace", "namespace", "pod_namespace")
HOST_LABELS = ("Hostname", "hostname")


def _normalised(metric: str, scale: float) -> str:
    """Series of ``metric`` as a 0-1 ratio, with pod identity in ``gb_pod``/``gb_namespace``."""
    expr = metric if scale == 1 else f"({metric} / {scale:g})"
    # label_replace copies the first matching source label; applied from the
    # least to the most preferred so the preferred label's value wins.
    for target, sources in (("gb_pod", POD_LABELS), ("gb_namespace", NAMESPACE_LABELS)):
        for source in reversed(sources):
            expr = f'label_replace({expr}, "{target}", "$1", "{source}", "(.+)")'
    for source in reversed(HOST_LABELS):
        expr = f'label_replace({expr}, "gb_host", "$1", "{source}", "(.+)")'
    return expr


def utilization_query() -> str:
    """One query for the whole cluster: average utilisation per pod (and node).

    Series with no pod label come from an exporter not in Kubernetes mode;
    they group under an empty ``gb_pod`` and serve as the per-node fallback.
    ``or`` keeps the first metric's series for each group, which gives the
    preference order of the metric lists above.
    """
    series = [_normalised(m, 1) for m in RATIO_METRICS] + [
        _normalised(m, 100) for m in PERCENT_METRICS
    ]
    return " or ".join(f"avg by (gb_namespace, gb_pod, gb_host) ({s})" for s in series)


class UtilizationSnapshot(BaseModel):
    """Utilisation (0-1) of every pod and node that Prometheus reported."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    by_pod: dict[tuple[str, str], float] = {}
    by_node: dict[str, float] = {}
    available: bool = True
    error: str | None = None

    def for_pod(self, namespace: str, pod: str, node: str | None) -> float | None:
        value = self.by_pod.get((namespace, pod))
        if value is None and node is not None:
            value = self.by_node.get(node)
        return value


def _sample_value(sample: Mapping[str, Any]) -> float | None:
    try:
        value = float(sample["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    if value != value:  # NaN: the exporter had no reading
        return None
    return min(1.0, max(0.0, value))


def parse_samples(samples: object) -> UtilizationSnapshot:
    """Turn the result of ``utilization_query`` into a snapshot.

    An answer of the wrong shape (not a list of samples, samples without labels)
    reads as "metrics unavailable", never as an exception that would end the poller.
    """
    if not isinstance(samples, list):
        return UtilizationSnapshot(
            available=False, error=f"Prometheus answered {type(samples).__name__}, not samples"
        )
    by_pod: dict[tuple[str, str], float] = {}
    node_values: dict[str, list[float]] = {}
    for sample in samples:
        if not isinstance(sample, Mapping) or not isinstance(sample.get("metric"), Mapping):
            continue
        labels = sample["metric"]
        value = _sample_value(sample)
        if value is None:
            continue
        pod, namespace, host = (
            labels.get("gb_pod"),
            labels.get("gb_namespace"),
            labels.get("gb_host"),
        )
        if pod and namespace:
            by_pod.setdefault((namespace, pod), value)
        elif host:
            node_values.setdefault(host, []).append(value)
    by_node = {host: sum(values) / len(values) for host, values in node_values.items()}
    return UtilizationSnapshot(by_pod=by_pod, by_node=by_node)


def describe_failure(url: str, error: Exception) -> str:
    """A one-line reason fit for a condition message (no query strings, no stack)."""
    text = str(error)
    # urllib3 puts the whole query URL in its message; keep only the cause.
    detail = text.split("(Caused by ", 1)[1].rstrip(")") if "(Caused by " in text else text
    return f"{type(error).__name__} querying Prometheus at {url}: {detail[:160]}"


def prometheus_client(url: str, timeout_seconds: float) -> PrometheusConnect:
    """The operator's one way to reach Prometheus (utilisation and outcome queries)."""
    return PrometheusConnect(
        url=url,
        disable_ssl=True,
        # One quick retry: a query that fails is simply asked again at the next tick,
        # and a long backoff would delay the pass behind it.
        retry=Retry(total=1, backoff_factor=0.1, status_forcelist=(502, 503, 504)),
        timeout=timeout_seconds,
    )


class PrometheusUtilizationSource:
    """Reads the utilisation snapshot from Prometheus (blocking; run it in a thread)."""

    def __init__(self, url: str, timeout_seconds: float = 3.0) -> None:
        self.url = url
        self._client = prometheus_client(url, timeout_seconds)

    def fetch(self) -> UtilizationSnapshot:
        try:
            samples = self._client.custom_query(utilization_query())
        except Exception as error:  # any failure means "metrics unavailable"
            return UtilizationSnapshot(available=False, error=describe_failure(self.url, error))
        return parse_samples(samples)
