"""Cost per outcome: what a run produced (tokens, epochs, checkpoints) and what each unit cost.

A budget's ``spec.outcome`` names a PromQL expression its training job exports.
Each budget's query is its own (no one batched query could hold them, and one
bad query must not fail the others), so it is rate-limited instead: the loop
asks for the queries that are due (:func:`due_requests`: at most every
``--outcome-interval`` seconds per budget, only while the run holds GPUs, and
once after it stops), and :func:`evaluate` runs them in threads, off the event
loop and without holding up the pass. Their answers are readings the next pass
hands to the pure core as facts: :func:`outcome_status` and
:func:`outcome_findings` turn a reading into ``status.outcome`` and the
``OutcomeMeasured`` condition.

The API server cannot validate PromQL, so a query that does not parse is just
a failing query: it shows in the condition, never as an exception.
"""

from __future__ import annotations

import ast
import asyncio
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from gpu_budget.conditions import find
from gpu_budget.findings import BudgetEvent, ConditionChange, Findings
from gpu_budget.models import Condition, InternalModel, Outcome, OutcomeStatus
from gpu_budget.reasons import ConditionType, Reason
from gpu_budget.utilization import prometheus_client

NO_PROMETHEUS = "no Prometheus URL configured (--prometheus-url)"


class OutcomeRequest(InternalModel):
    """A budget whose outcome query may be due."""

    uid: str
    query: str
    running: bool
    """Whether the budget's pods hold GPUs now."""


class OutcomeReading(InternalModel):
    """What Prometheus answered to one budget's outcome query (unscaled)."""

    query: str
    value: float | None
    """The sum of the answer's samples; None when it failed or found none."""
    reason: Reason
    """QueryAnswered, NoSamples or QueryFailed."""
    error: str | None = None
    at: datetime
    while_running: bool
    """Taken while the run held GPUs: one more reading is due after it stops."""


class Answer(InternalModel):
    value: float | None
    reason: Reason
    error: str | None = None


def due_requests(
    wanted: Iterable[OutcomeRequest],
    readings: Mapping[str, OutcomeReading],
    now: datetime,
    every: timedelta,
) -> list[OutcomeRequest]:
    """The queries to evaluate now: new or changed ones, and every ``every`` while the run
    holds GPUs, plus one after it stopped (the final figure). A budget that does not run
    costs no queries."""
    due = []
    for request in wanted:
        last = readings.get(request.uid)
        fresh = last is None or last.query != request.query
        if fresh or (
            last is not None and (request.running or last.while_running) and now - last.at >= every
        ):
            due.append(request)
    return due


def parse_answer(result: object) -> Answer:
    """The value of a query's ``data.result``: an instant vector (summed) or a scalar."""
    if (
        isinstance(result, list)
        and len(result) == 2
        and isinstance(result[0], int | float)
        and isinstance(result[1], str)
    ):
        samples: list[Any] = [{"value": result}]  # a scalar: [time, "value"]
    elif isinstance(result, list):
        samples = result
    else:
        return Answer(
            value=None,
            reason=Reason.QUERY_FAILED,
            error=f"Prometheus answered {type(result).__name__}, not samples",
        )
    values = []
    for sample in samples:
        if not isinstance(sample, Mapping):
            continue
        if "values" in sample and "value" not in sample:
            return Answer(
                value=None,
                reason=Reason.QUERY_FAILED,
                error="the query is a range vector; wrap it, e.g. max_over_time(...[5m])",
            )
        try:
            value = float(sample["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if math.isfinite(value):
            values.append(value)
    if not values:
        return Answer(value=None, reason=Reason.NO_SAMPLES)
    return Answer(value=sum(values), reason=Reason.QUERY_ANSWERED)


def describe_query_failure(error: Exception) -> str:
    """One line for a condition: Prometheus's own error (a parse error names the column)."""
    text = str(error)
    # prometheus_api_client says "HTTP Status Code 400 (b'{...}')": the body as a bytes literal.
    found = re.search(r"\((b(['\"]).*\2)\)\s*$", text, re.DOTALL)
    if found is not None:
        try:
            body = json.loads(ast.literal_eval(found.group(1)))
        except (ValueError, SyntaxError):
            body = None
        if isinstance(body, dict) and body.get("error"):
            return f"Prometheus refused the query: {str(body['error'])[:200]}"
    detail = text.split("(Caused by ", 1)[1].rstrip(")") if "(Caused by " in text else text
    return f"{type(error).__name__} querying Prometheus: {detail[:200]}"


class OutcomeSource(Protocol):
    def evaluate(self, query: str) -> Answer: ...


class PrometheusOutcomeSource:
    """Evaluates outcome queries in Prometheus (blocking; run it in a thread)."""

    def __init__(self, url: str, timeout_seconds: float = 3.0) -> None:
        self.url = url
        self._client = prometheus_client(url, timeout_seconds)

    def evaluate(self, query: str) -> Answer:
        try:
            result = self._client.custom_query(query)
        except Exception as error:  # unreachable, refused, not PromQL: a failing query
            return Answer(
                value=None, reason=Reason.QUERY_FAILED, error=describe_query_failure(error)
            )
        return parse_answer(result)


async def evaluate(
    source: OutcomeSource | None,
    requests: Sequence[OutcomeRequest],
    readings: dict[str, OutcomeReading],
    now: Callable[[], datetime],
    concurrency: int = 4,
    observe: Callable[[Reason], None] | None = None,
) -> None:
    """Evaluate ``requests`` in threads, a few at a time, into ``readings``."""
    slots = asyncio.Semaphore(concurrency)

    async def one(request: OutcomeRequest) -> None:
        async with slots:
            at = now()
            if source is None:
                answer = Answer(value=None, reason=Reason.QUERY_FAILED, error=NO_PROMETHEUS)
            else:
                try:
                    answer = await asyncio.to_thread(source.evaluate, request.query)
                except Exception as error:  # never let one query end the others
                    answer = Answer(value=None, reason=Reason.QUERY_FAILED, error=str(error))
            readings[request.uid] = OutcomeReading(
                query=request.query,
                value=answer.value,
                reason=answer.reason,
                error=answer.error,
                at=at,
                while_running=request.running,
            )
            if observe is not None:
                observe(answer.reason)

    await asyncio.gather(*(one(request) for request in requests))


# ------------------------------------------------------------------ the pure part


def _figure(value: float) -> float:
    """Twelve significant digits: a stable figure in the status, however small the unit."""
    return float(f"{value:.12g}")


def outcome_status(
    spec: Outcome | None,
    reading: OutcomeReading | None,
    previous: OutcomeStatus | None,
    spent: float,
) -> OutcomeStatus | None:
    """``status.outcome``: the reading scaled into units, and the spend per unit.

    A reading that found nothing (the job's series are gone once its pods are)
    keeps the last value measured; the cost per unit follows the spend.
    """
    if spec is None:
        return None
    if reading is not None and reading.query == spec.query and reading.value is not None:
        value, observed_at = _figure(reading.value * spec.scale), reading.at
    elif previous is not None and previous.unit == spec.unit:
        value, observed_at = previous.value, previous.observed_at
    else:
        return None
    return OutcomeStatus(
        value=value,
        unit=spec.unit,
        cost_per_unit=_figure(spent / value) if value > 0 else None,
        observed_at=observed_at,
    )


def outcome_findings(
    conditions: list[Condition], spec: Outcome | None, reading: OutcomeReading | None
) -> Findings:
    """OutcomeMeasured, with an Event when the query starts failing."""
    if spec is None:
        return Findings()
    seen = find(conditions, ConditionType.OUTCOME_MEASURED)
    if reading is None or reading.query != spec.query:
        if seen is not None:  # e.g. after a restart: keep what was said until a reading
            return Findings()
        return Findings(
            conditions=(
                ConditionChange(
                    type=ConditionType.OUTCOME_MEASURED,
                    status="Unknown",
                    reason=Reason.NOT_QUERIED_YET,
                    message="The outcome query has not been evaluated yet.",
                ),
            )
        )
    if reading.reason == Reason.QUERY_ANSWERED:
        return Findings(
            conditions=(
                ConditionChange(
                    type=ConditionType.OUTCOME_MEASURED,
                    status="True",
                    reason=Reason.QUERY_ANSWERED,
                    message=f"Prometheus answers the outcome query ({spec.unit}).",
                ),
            )
        )
    if reading.reason == Reason.NO_SAMPLES:
        return Findings(
            conditions=(
                ConditionChange(
                    type=ConditionType.OUTCOME_MEASURED,
                    status="False",
                    reason=Reason.NO_SAMPLES,
                    message="The outcome query finds no samples (not exported yet, or the "
                    "job's series are gone); status.outcome keeps the last value measured.",
                ),
            )
        )
    message = f"The outcome query fails: {reading.error}"
    started = seen is None or seen.reason != Reason.QUERY_FAILED
    return Findings(
        conditions=(
            ConditionChange(
                type=ConditionType.OUTCOME_MEASURED,
                status="False",
                reason=Reason.QUERY_FAILED,
                message=message,
            ),
        ),
        events=(BudgetEvent(type="Warning", reason=Reason.OUTCOME_QUERY_FAILED, message=message),)
        if started
        else (),
    )
