"""GPU metrics: dcgm-sim (hack/dcgm_sim.py, a fake DCGM exporter for the pods on the
simulated GPUs) and the Prometheus that scrapes it.

Addresses:

    dcgm-sim                  http://127.0.0.1:39400/metrics
    prometheus                http://127.0.0.1:39090
"""

from __future__ import annotations

import json
import os
import string
import sys
import urllib.parse
import urllib.request
from typing import Any

from localcluster.context import Context
from localcluster.kubectl import WaitTimeout, wait_for
from localcluster.layout import CLUSTER_CONFIG, HACK
from localcluster.net import HOST, http_get
from localcluster.processes import Component
from localcluster.report import ClusterError, progress, tail

DCGM_PORT = 39400
DCGM_URL = f"http://{HOST}:{DCGM_PORT}"
PROMETHEUS_PORT = 39090
PROMETHEUS_URL = f"http://{HOST}:{PROMETHEUS_PORT}"


def prom_query(promql: str, url: str = PROMETHEUS_URL) -> list[dict[str, Any]]:
    """Instant query; returns ``data.result`` (dicts with ``metric`` and ``value``)."""
    query = urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(f"{url.rstrip('/')}/api/v1/query?{query}", timeout=10) as resp:
        body = json.load(resp)
    if body["status"] != "success":
        raise ValueError(f"Prometheus query {promql!r} failed: {body}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def components(ctx: Context) -> list[Component]:
    lay = ctx.layout

    def dcgm() -> list[str]:
        return [
            sys.executable,
            str(HACK / "dcgm_sim.py"),
            f"--kubeconfig={lay.kubeconfig}",
            "--context=admin",
            f"--listen={HOST}:{DCGM_PORT}",
        ]

    def dcgm_ok() -> bool:
        status, body = http_get(f"{DCGM_URL}/metrics")
        return status == 200 and "dcgm_sim_synced 1.0" in body

    def prometheus() -> list[str]:
        return [
            ctx.tool("prometheus"),
            f"--config.file={lay.root / 'prometheus.yml'}",
            f"--storage.tsdb.path={lay.root / 'prometheus'}",
            "--storage.tsdb.retention.time=2d",
            f"--web.listen-address={HOST}:{PROMETHEUS_PORT}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]

    def prometheus_ok() -> bool:
        return http_get(f"{PROMETHEUS_URL}/-/ready")[0] == 200

    def write_prometheus_config() -> None:
        interval = os.environ.get("GPUBUDGET_SCRAPE_INTERVAL", "5s")
        tmpl = string.Template((CLUSTER_CONFIG / "prometheus.yml.tmpl").read_text())
        text = tmpl.substitute(
            SCRAPE_INTERVAL=interval,
            DCGM_TARGET=f"{HOST}:{DCGM_PORT}",
            PROMETHEUS_TARGET=f"{HOST}:{PROMETHEUS_PORT}",
        )
        (lay.root / "prometheus.yml").write_text(text)

    def scraped() -> bool:
        try:
            result = prom_query('up{job="dcgm-exporter"}')
        except OSError:
            return False
        return bool(result) and result[0]["value"][1] == "1"

    def wait_scraped(timeout: float = 60.0) -> None:
        try:
            wait_for(scraped, timeout, "Prometheus to scrape dcgm-sim")
        except WaitTimeout:
            raise ClusterError(
                f"Prometheus has not scraped dcgm-sim after {timeout:.0f}s\n"
                + tail(lay.log("prometheus"))
            ) from None
        progress("prometheus: scraping dcgm-sim")

    return [
        # Needs nothing but its config; starting it early overlaps its first
        # scrapes with the rest of the start-up.
        Component(
            "prometheus",
            "prometheus",
            prometheus,
            prometheus_ok,
            (PROMETHEUS_PORT,),
            60,
            0,
            prepare=write_prometheus_config,
        ),
        Component(
            "dcgm-sim",
            "dcgm_sim.py",
            dcgm,
            dcgm_ok,
            (DCGM_PORT,),
            60,
            2,
            settle=wait_scraped,
        ),
    ]
