"""Notifications to an optional webhook URL from the BudgetPolicy.

The payload is Slack-compatible (``text``) and carries the same facts as
structured JSON under ``gpubudget`` for other receivers. Delivery is best
effort: a slow or failing receiver is logged, and never delays enforcement.
"""

from __future__ import annotations

from typing import Any

import requests
import structlog

log = structlog.get_logger("gpu_budget.notify")

TIMEOUT_SECONDS = 5.0


def payload(
    namespace: str, budget: str, reason: str, message: str, spent: float, cap: float
) -> dict[str, Any]:
    share = spent / cap if cap else 0.0
    return {
        "text": f":money_with_wings: TrainingBudget {namespace}/{budget}: {message} "
        f"(${spent:,.2f} of ${cap:,.2f}, {share:.0%})",
        "gpubudget": {
            "namespace": namespace,
            "budget": budget,
            "reason": reason,
            "message": message,
            "spent": round(spent, 2),
            "cap": cap,
        },
    }


def send(url: str, body: dict[str, Any]) -> bool:
    """POST ``body``; blocking, so call it from a thread."""
    try:
        response = requests.post(url, json=body, timeout=TIMEOUT_SECONDS)
        response.raise_for_status()
    except requests.RequestException as error:
        log.warning("notification failed", url=url, error=str(error))
        return False
    return True
