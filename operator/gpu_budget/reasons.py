"""The words of the status language: condition types and reasons, each one enum.

Conditions, Events, stop records and notifications all speak these words, and
several modules compare them; an enum makes a misspelt reason a type error
instead of a condition that never matches. Values are the API's CamelCase.
"""

from __future__ import annotations

from enum import StrEnum


class ConditionType(StrEnum):
    """The types of a TrainingBudget's ``status.conditions``."""

    METRICS_AVAILABLE = "MetricsAvailable"
    """True while Prometheus answers the utilisation query."""
    PRICED = "Priced"
    """False while a pod of the budget runs on a node with no known price."""
    SPEND_ESTIMATED = "SpendEstimated"
    """True once any spend was estimated rather than observed (never goes back)."""
    APPROVED = "Approved"
    """Present when the budget needs finance: False while approval is missing or short."""
    CAP_REACHED = "CapReached"
    """True while the run is stopped at (or, alert-only, past) its limit."""
    THRESHOLD_REACHED = "ThresholdReached"
    """True once spend passed a warning threshold; the reason names the highest."""
    IDLE = "GPUsIdle"
    """With an idle rule: True while the GPUs are below its utilisation threshold."""
    INHERITED = "Inherited"
    """True once the budget took over the spend (and stop) of an earlier budget of its name."""
    PERIOD_LIMIT = "PeriodLimit"
    """With a limit per period in scope: False while the budget does not fit what is left of
    the period, or is stopped at its limit."""
    VALID = "Valid"
    """False while something the budget depends on cannot be read (a workload, an
    annotation, the action at the cap); the message says what and how to fix it."""
    OUTCOME_MEASURED = "OutcomeMeasured"
    """With ``spec.outcome``: True while its PromQL query answers with a value."""


class Reason(StrEnum):
    """Why: the reason of a condition, an Event, a stop record or a notification."""

    # Metrics
    PROMETHEUS_ANSWERED = "PrometheusAnswered"
    PROMETHEUS_UNREACHABLE = "PrometheusUnreachable"
    METRICS_RECOVERED = "MetricsRecovered"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    # Prices
    ALL_NODES_PRICED = "AllNodesPriced"
    UNKNOWN_NODE_PRICE = "UnknownNodePrice"
    DEVICE_CLAIMS = "DeviceClaims"
    # Ledger
    SPEND_ESTIMATED = "SpendEstimated"
    POD_END_NOT_OBSERVED = "PodEndNotObserved"
    INHERITED = "Inherited"
    EARLIER_BUDGET = "EarlierBudget"
    WORKLOAD_ATTACHED = "WorkloadAttached"
    # Readability
    ALL_READABLE = "AllReadable"
    UNREADABLE_OBJECTS = "UnreadableObjects"
    INVALID_OBJECTS = "InvalidObjects"
    UNREADABLE = "Unreadable"
    # Approval
    BELOW_CEILING = "BelowCeiling"
    AWAITING_APPROVAL = "AwaitingApproval"
    APPROVAL_BELOW_CAP = "ApprovalBelowCap"
    APPROVED = "Approved"
    # Thresholds and idle GPUs
    THRESHOLD_REACHED = "ThresholdReached"
    GPUS_IDLE = "GPUsIdle"
    BELOW_THRESHOLD = "BelowThreshold"
    BUSY = "Busy"
    # The cap, and why a run is held or stopped (the reasons a stop record carries)
    WITHIN_BUDGET = "WithinBudget"
    CAP_EXCEEDED = "CapExceeded"
    CAP_REACHED = "CapReached"
    APPROVAL_EXHAUSTED = "ApprovalExhausted"
    IDLE_GPUS = "IdleGPUs"
    BUDGET_DELETED = "BudgetDeleted"
    BUDGET_NOT_FOUND = "BudgetNotFound"
    PERIOD_LIMIT_REACHED = "PeriodLimitReached"
    # Limits per period
    WITHIN_PERIOD_LIMIT = "WithinPeriodLimit"
    DOES_NOT_FIT_PERIOD = "DoesNotFitPeriod"
    # The outcome query (spec.outcome)
    QUERY_ANSWERED = "QueryAnswered"
    QUERY_FAILED = "QueryFailed"
    NO_SAMPLES = "NoSamples"
    NOT_QUERIED_YET = "NotQueriedYet"
    OUTCOME_QUERY_FAILED = "OutcomeQueryFailed"
    # What was done to a workload
    ADMITTED = "Admitted"
    RESUMED = "Resumed"
    SUSPENDED = "Suspended"
    KILLED = "Killed"


def threshold_reason(fraction: float) -> str:
    """The ThresholdReached condition's reason names the highest threshold passed."""
    return f"Above{round(fraction * 100)}Percent"
