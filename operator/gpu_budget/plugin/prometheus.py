"""Prometheus's HTTP API, as far as the plugin asks it: instant and range queries.

A failure (unreachable, a bad query, an error status) is a :class:`PluginError`
naming the URL and where it came from (``--prometheus`` or ``PROMETHEUS_URL``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import requests

from gpu_budget.plugin.errors import PluginError
from gpu_budget.plugin.increments import Series

TIMEOUT_SECONDS = 30


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def range(self, query: str, start: datetime, end: datetime, step: float) -> list[Series]:
        data = self._get(
            "query_range",
            {"query": query, "start": start.timestamp(), "end": end.timestamp(), "step": step},
        )
        return [
            Series(item["metric"], [(float(t), float(v)) for t, v in item["values"]])
            for item in data
        ]

    def instant(self, query: str, at: datetime) -> list[Series]:
        data = self._get("query", {"query": query, "time": at.timestamp()})
        return [
            Series(item["metric"], [(float(item["value"][0]), float(item["value"][1]))])
            for item in data
        ]

    def _get(self, endpoint: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            response = requests.get(
                f"{self.url}/api/v1/{endpoint}", params=params, timeout=TIMEOUT_SECONDS
            )
        except requests.RequestException as error:
            raise PluginError(
                f"cannot reach Prometheus at {self.url} (set --prometheus or PROMETHEUS_URL): "
                f"{error.__class__.__name__}"
            ) from None
        try:
            body = response.json()
        except ValueError:
            raise PluginError(
                f"Prometheus at {self.url} answered {response.status_code} without JSON "
                "(is this a Prometheus URL?)"
            ) from None
        if body.get("status") != "success":
            raise PluginError(f"Prometheus at {self.url}: {body.get('error', body)}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result
