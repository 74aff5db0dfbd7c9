"""Whether the accounting passes are alive: the rule behind the operator's liveness probe.

A stuck operator must be restarted by Kubernetes, not left answering 200 while
no budget is accounted. Two symptoms count as stuck: a pass that has been
running for longer than the allowance (wedged on a call that never returns),
and passes that have only failed, with no success, for longer than the
allowance. A standby replica (paused by peering) runs no passes and stays
healthy; so does an operator with no budgets.

Pure: the shell records starts and ends in :class:`PassTracker` and asks
:func:`stuck` with the clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

INTERVALS_ALLOWED = 6
"""Accounting intervals a pass may take, or passes may keep failing, before the operator
counts as stuck."""
MIN_ALLOWANCE = timedelta(seconds=30)
"""Never less than this: a slow API server is not a stuck operator."""


@dataclass
class PassTracker:
    """Starts and ends of accounting passes, keyed by budget uid."""

    in_flight: dict[str, datetime] = field(default_factory=dict)
    last_success: datetime | None = None
    failing_since: datetime | None = None
    """Start of the current run of failures; None after a success."""

    def started(self, key: str, now: datetime) -> None:
        self.in_flight[key] = now

    def succeeded(self, key: str, now: datetime) -> None:
        self.in_flight.pop(key, None)
        self.last_success = now
        self.failing_since = None

    def failed(self, key: str, now: datetime) -> None:
        self.in_flight.pop(key, None)
        if self.failing_since is None:
            self.failing_since = now


def allowance(interval_seconds: float) -> timedelta:
    return max(MIN_ALLOWANCE, timedelta(seconds=interval_seconds * INTERVALS_ALLOWED))


def stuck(tracker: PassTracker, now: datetime, interval_seconds: float) -> str | None:
    """Why the operator counts as stuck, or None while it is healthy."""
    limit = allowance(interval_seconds)
    oldest = min(tracker.in_flight.values(), default=None)
    if oldest is not None and now - oldest > limit:
        return (
            f"an accounting pass has been running for {(now - oldest).total_seconds():.0f}s "
            f"(allowed {limit.total_seconds():.0f}s)"
        )
    if tracker.failing_since is not None and now - tracker.failing_since > limit:
        since = "never" if tracker.last_success is None else tracker.last_success.isoformat()
        failing = (now - tracker.failing_since).total_seconds()
        return f"every accounting pass has failed for {failing:.0f}s (last success: {since})"
    return None
