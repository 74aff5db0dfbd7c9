"""Cost per outcome: readings, status.outcome, OutcomeMeasured, writes, /metrics and `top`."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from gpu_budget.accounting import AccountingInput
from gpu_budget.conditions import find
from gpu_budget.metrics import forget_budget, observe_budget
from gpu_budget.models import (
    Outcome,
    OutcomeStatus,
    Owner,
    TrainingBudgetSpec,
    TrainingBudgetStatus,
)
from gpu_budget.outcomes import (
    NO_PROMETHEUS,
    Answer,
    OutcomeReading,
    OutcomeRequest,
    describe_query_failure,
    due_requests,
    evaluate,
    outcome_status,
    parse_answer,
)
from gpu_budget.plan import plan_pass
from gpu_budget.plugin.output import render
from gpu_budget.plugin.top import COLUMNS, top_rows
from gpu_budget.reasons import Reason
from gpu_budget.utilization import UtilizationSnapshot
from gpu_budget.writes import needs_write
from tests.unit.test_accounting import JOB, NODE_PRICE, NODES, POLICY, T0, folded, job_pod

QUERY = 'sum(train_tokens_total{namespace="ml-team"})'
SPEC = {"costCap": 100, "outcome": {"query": QUERY, "unit": "Mtokens", "scale": 1e-6}}


def reading(value: float | None, at_seconds: float = 0, **update: object) -> OutcomeReading:
    base = OutcomeReading(
        query=QUERY,
        value=value,
        reason=Reason.QUERY_ANSWERED if value is not None else Reason.NO_SAMPLES,
        at=T0 + timedelta(seconds=at_seconds),
        while_running=True,
    )
    return base.model_copy(update=update)


def facts(
    now_minutes: float,
    outcome: OutcomeReading | None,
    status: TrainingBudgetStatus | None = None,
    spec: dict[str, object] | None = None,
    running: bool = True,
) -> AccountingInput:
    return AccountingInput(
        namespace="ml-team",
        name="run",
        uid="budget-uid",
        generation=1,
        spec=TrainingBudgetSpec.model_validate(spec or SPEC),
        status=status or TrainingBudgetStatus(),
        policy=POLICY,
        pods=[job_pod()] if running else [],
        workloads=[JOB],
        owners={},
        nodes=NODES,
        utilization=UtilizationSnapshot(),
        deleted_at={},
        now=T0 + timedelta(minutes=now_minutes),
        outcome=outcome,
    )


# ------------------------------------------------------------------ the spec


def test_outcome_spec_is_optional_and_validated() -> None:
    assert TrainingBudgetSpec.model_validate({"costCap": 1}).outcome is None
    spec = TrainingBudgetSpec.model_validate(SPEC)
    assert spec.outcome == Outcome(query=QUERY, unit="Mtokens", scale=1e-6)
    assert Outcome(query="up", unit="epoch").scale == 1.0
    for bad in (
        {"query": "", "unit": "x"},
        {"query": "up", "unit": ""},
        {"query": "up", "unit": "x", "scale": 0},
    ):
        with pytest.raises(ValidationError):
            Outcome.model_validate(bad)


# ------------------------------------------------------------- rate limiting


def test_queries_are_due_once_per_interval_while_running_and_once_after() -> None:
    every = timedelta(seconds=30)
    running = OutcomeRequest(uid="u", query=QUERY, running=True)
    stopped = running.model_copy(update={"running": False})
    assert due_requests([running], {}, T0, every) == [running]  # never asked
    last = {"u": reading(1.0)}
    assert due_requests([running], last, T0 + timedelta(seconds=29), every) == []
    assert due_requests([running], last, T0 + timedelta(seconds=30), every) == [running]
    # Stopped: one more reading (the final figure), then none.
    assert due_requests([stopped], last, T0 + timedelta(seconds=30), every) == [stopped]
    final = {"u": reading(2.0, while_running=False)}
    assert due_requests([stopped], final, T0 + timedelta(hours=5), every) == []
    # A changed query is asked at once.
    edited = stopped.model_copy(update={"query": "sum(epochs)"})
    assert due_requests([edited], final, T0 + timedelta(seconds=1), every) == [edited]


def test_answers_are_summed_and_bad_answers_are_reasons_not_exceptions() -> None:
    vector = [{"metric": {"pod": "a"}, "value": [1.0, "1500"]}, {"metric": {}, "value": [1, "500"]}]
    assert parse_answer(vector) == Answer(value=2000.0, reason=Reason.QUERY_ANSWERED)
    assert parse_answer([1700000000.0, "42"]).value == 42.0  # a scalar
    assert parse_answer([]).reason == Reason.NO_SAMPLES
    assert parse_answer([{"metric": {}, "value": [1, "NaN"]}]).reason == Reason.NO_SAMPLES
    ranged = parse_answer([{"metric": {}, "values": [[1, "1"]]}])
    assert ranged.reason == Reason.QUERY_FAILED and "range vector" in (ranged.error or "")
    assert parse_answer({"oops": 1}).reason == Reason.QUERY_FAILED


def test_a_query_that_is_not_promql_fails_with_prometheus_own_words() -> None:
    # What prometheus_api_client raises for Prometheus's answer to `sum(x{`, verbatim.
    body = (
        b'{"status":"error","errorType":"bad_data","error":"invalid parameter \\"query\\": '
        b'1:7: parse error: unexpected end of input inside braces"}'
    )
    error = Exception(f"HTTP Status Code 400 ({body!r})")
    assert describe_query_failure(error) == (
        'Prometheus refused the query: invalid parameter "query": 1:7: parse error: '
        "unexpected end of input inside braces"
    )
    assert "ConnectionError" in describe_query_failure(ConnectionError("refused"))


def test_evaluate_runs_queries_in_threads_and_survives_a_broken_source() -> None:
    class Source:
        def evaluate(self, query: str) -> Answer:
            if query == "boom":
                raise RuntimeError("broken client")
            return Answer(value=7.0, reason=Reason.QUERY_ANSWERED)

    readings: dict[str, OutcomeReading] = {}
    seen: list[Reason] = []
    requests = [
        OutcomeRequest(uid="a", query="ok", running=True),
        OutcomeRequest(uid="b", query="boom", running=False),
    ]
    asyncio.run(evaluate(Source(), requests, readings, lambda: T0, observe=seen.append))
    assert readings["a"].value == 7.0 and readings["a"].while_running
    assert readings["b"].reason == Reason.QUERY_FAILED and readings["b"].error == "broken client"
    assert sorted(seen) == [Reason.QUERY_ANSWERED, Reason.QUERY_FAILED]
    asyncio.run(evaluate(None, requests[:1], readings, lambda: T0))
    assert readings["a"].error == NO_PROMETHEUS


# ---------------------------------------------------------- the status (pure)


def test_cost_per_unit_is_spent_over_the_scaled_value() -> None:
    spec = Outcome(query=QUERY, unit="Mtokens", scale=1e-6)
    status = outcome_status(spec, reading(2_500_000), None, spent=10.0)
    assert status == OutcomeStatus(value=2.5, unit="Mtokens", cost_per_unit=4.0, observed_at=T0)
    zero = outcome_status(spec, reading(0), None, spent=10.0)
    assert zero is not None and zero.value == 0 and zero.cost_per_unit is None
    assert outcome_status(None, reading(1), None, 1.0) is None
    assert outcome_status(spec, None, None, 1.0) is None
    # Tiny units keep their figures: a dollar a million tokens is a millionth per token.
    per_token = outcome_status(spec.model_copy(update={"scale": 1.0}), reading(1e6), None, 1.0)
    assert per_token is not None and per_token.cost_per_unit == pytest.approx(1e-6)


def test_status_outcome_and_condition_from_a_pass() -> None:
    tokens = 30 * 60 * 1_000_000  # a million tokens a second for half an hour
    accounted = folded(facts(30, reading(tokens, at_seconds=30 * 60)))
    outcome = accounted.status.outcome
    assert outcome is not None and outcome.unit == "Mtokens"
    assert outcome.value == pytest.approx(1800.0)
    assert accounted.status.spent == pytest.approx(NODE_PRICE / 2)
    assert outcome.cost_per_unit == pytest.approx(accounted.status.spent / outcome.value)
    measured = find(accounted.status.conditions, "OutcomeMeasured")
    assert measured is not None and (measured.status, measured.reason) == ("True", "QueryAnswered")


def test_no_reading_yet_is_unknown_and_a_restart_keeps_what_was_said() -> None:
    first = folded(facts(1, None))
    measured = find(first.status.conditions, "OutcomeMeasured")
    assert measured is not None and (measured.status, measured.reason) == (
        "Unknown",
        "NotQueriedYet",
    )
    answered = folded(facts(2, reading(5e6), status=first.status))
    # After a restart the readings are gone: the condition and the value stay as written.
    restarted = folded(facts(3, None, status=answered.status))
    assert find(restarted.status.conditions, "OutcomeMeasured") == find(
        answered.status.conditions, "OutcomeMeasured"
    )
    assert restarted.status.outcome is not None and restarted.status.outcome.value == 5.0


def test_no_samples_keeps_the_last_value_and_a_failing_query_warns_once() -> None:
    answered = folded(facts(1, reading(5e6)))
    empty = folded(facts(2, reading(None, at_seconds=120), status=answered.status))
    kept = empty.status.outcome
    assert kept is not None and kept.value == 5.0 and kept.observed_at == T0
    assert kept.cost_per_unit == pytest.approx(empty.status.spent / 5.0)  # follows the spend
    measured = find(empty.status.conditions, "OutcomeMeasured")
    assert measured is not None and (measured.status, measured.reason) == ("False", "NoSamples")
    assert "OutcomeQueryFailed" not in [e.reason for e in empty.events]

    broken = reading(None, reason=Reason.QUERY_FAILED, error="parse error: unexpected")
    failing = folded(facts(3, broken, status=empty.status))
    measured = find(failing.status.conditions, "OutcomeMeasured")
    assert measured is not None and (measured.status, measured.reason) == ("False", "QueryFailed")
    assert "parse error" in measured.message
    assert [e.reason for e in failing.events] == ["OutcomeQueryFailed"]
    again = folded(facts(4, broken, status=failing.status))
    assert "OutcomeQueryFailed" not in [e.reason for e in again.events]


def test_removing_the_outcome_removes_its_status_and_condition() -> None:
    answered = folded(facts(1, reading(5e6)))
    removed = folded(facts(2, reading(5e6), status=answered.status, spec={"costCap": 100}))
    assert removed.status.outcome is None
    assert find(removed.status.conditions, "OutcomeMeasured") is None


# -------------------------------------------------------------------- writes


def test_an_outcome_change_alone_does_not_write_while_the_run_burns() -> None:
    first = plan_pass(facts(1, reading(1e6)), {}).status
    later = plan_pass(facts(1.05, reading(2e6, at_seconds=63), status=first), {}).status
    assert later.outcome is not None and later.outcome.value == 2.0
    assert later.burn_rate_per_hour > 0
    assert not needs_write(first, later, T0 + timedelta(minutes=1.05))
    # ... it rides along with the next bounded-staleness write.
    assert needs_write(first, later, T0 + timedelta(minutes=1, seconds=10))


def test_the_final_reading_of_a_stopped_run_is_written_once() -> None:
    ran = plan_pass(facts(1, reading(1e6)), {}).status
    stopped = plan_pass(facts(2, reading(1e6), status=ran, running=False), {}).status
    same = plan_pass(facts(2, reading(1e6), status=stopped, running=False), {}).status
    assert not needs_write(stopped, same, T0 + timedelta(minutes=2))
    final = plan_pass(
        facts(2, reading(3e6, at_seconds=120, while_running=False), status=stopped, running=False),
        {},
    ).status
    assert final.burn_rate_per_hour == 0
    assert needs_write(stopped, final, T0 + timedelta(minutes=2))


# ------------------------------------------------------------------- /metrics


def sample(name: str, budget: str, unit: str) -> float | None:
    labels = {"namespace": "outcome-test", "budget": budget, "team": "nlp", "cost_center": ""}
    return REGISTRY.get_sample_value(name, {**labels, "unit": unit})


def test_outcome_and_cost_per_unit_are_exported_with_the_unit() -> None:
    spec = TrainingBudgetSpec.model_validate(SPEC)
    owner = Owner(team="nlp")
    status = TrainingBudgetStatus(
        spent=12.0,
        outcome=OutcomeStatus(value=3.0, unit="Mtokens", cost_per_unit=4.0, observed_at=T0),
    )
    observe_budget("outcome-test", "llm", spec, owner, status)
    assert sample("gpubudget_outcome_value", "llm", "Mtokens") == 3.0
    assert sample("gpubudget_cost_per_outcome_usd", "llm", "Mtokens") == 4.0
    # A new unit moves the series; a zero outcome has no cost per unit.
    moved = status.model_copy(
        update={"outcome": OutcomeStatus(value=0, unit="epoch", observed_at=T0)}
    )
    observe_budget("outcome-test", "llm", spec, owner, moved)
    assert sample("gpubudget_outcome_value", "llm", "Mtokens") is None
    assert sample("gpubudget_cost_per_outcome_usd", "llm", "Mtokens") is None
    assert sample("gpubudget_outcome_value", "llm", "epoch") == 0
    assert sample("gpubudget_cost_per_outcome_usd", "llm", "epoch") is None
    forget_budget("outcome-test", "llm")
    assert sample("gpubudget_outcome_value", "llm", "epoch") is None


# ------------------------------------------------------------------------ top


def test_top_shows_the_cost_per_unit() -> None:
    body = {
        "metadata": {"name": "llm", "namespace": "ml"},
        "spec": {"costCap": 100},
        "status": {
            "spent": 40.0,
            "burnRatePerHour": 3600,
            "outcome": {"value": 80.0, "unit": "Mtokens", "costPerUnit": 0.5},
        },
    }
    plain = {"metadata": {"name": "plain", "namespace": "ml"}, "spec": {"costCap": 100}}
    rows = top_rows([body, plain])
    assert (rows[0]["cost_per_unit"], rows[0]["unit"], rows[0]["outcome"]) == (0.5, "Mtokens", 80.0)
    table = render(rows, COLUMNS, "table").splitlines()
    assert "COST/UNIT" in table[0] and "UNIT" in table[0]
    assert "$0.5" in table[1] and "Mtokens" in table[1]
    assert table[2].split()[6:8] == ["-", "-"]
