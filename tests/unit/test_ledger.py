"""Ledger arithmetic: the integral of rate over time, however it is sliced."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu_budget.ledger import ChargeRates, PodObservation, advance, totals
from gpu_budget.models import CostModel, Ledger, TrainingBudgetStatus

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
PRICE = 6.88  # USD per GPU-hour, p5.48xlarge on-demand / 8


def pod(
    uid: str = "u1",
    gpus: int = 8,
    start: datetime = T0,
    ended: datetime | None = None,
    node: str | None = "p5-spot-0",
) -> PodObservation:
    return PodObservation(
        uid=uid, name=f"pod-{uid}", node=node, gpus=gpus, running_since=start, ended_at=ended
    )


def rates(
    uid: str = "u1", price: float = PRICE, util: float | None = None
) -> dict[str, ChargeRates]:
    return {uid: ChargeRates(gpu_hourly_price=price, utilization=util)}


def run_ticks(
    offsets: list[float],
    cost_model: CostModel = CostModel.ALLOCATION,
    util: float | None = None,
    restart_after: int | None = None,
) -> Ledger:
    ledger = Ledger()
    for i, offset in enumerate(offsets):
        now = T0 + timedelta(seconds=offset)
        ledger = advance(ledger, [pod()], rates(util=util), now, cost_model).ledger
        if restart_after is not None and i == restart_after:
            # What the operator writes to status and reads back after a restart.
            status = TrainingBudgetStatus(ledger=ledger).model_dump(mode="json", by_alias=True)
            ledger = TrainingBudgetStatus.model_validate(status).ledger
    return ledger


def test_one_hour_of_eight_gpus_costs_eight_gpu_hours() -> None:
    ledger = run_ticks([3600])
    assert totals(ledger).spent == pytest.approx(8 * PRICE)
    assert totals(ledger).gpu_seconds == pytest.approx(8 * 3600)


def test_pod_not_started_costs_nothing() -> None:
    pending = PodObservation(
        uid="u1", name="p", node=None, gpus=8, running_since=None, ended_at=None
    )
    result = advance(Ledger(), [pending], rates(), T0 + timedelta(hours=1), CostModel.ALLOCATION)
    assert result.totals.spent == 0
    assert result.ledger.pods == []


def test_burn_rate_is_sum_of_open_pod_rates() -> None:
    observed = [pod("a", gpus=8), pod("b", gpus=4)]
    all_rates = {**rates("a"), **rates("b", price=2.0)}
    result = advance(Ledger(), observed, all_rates, T0 + timedelta(minutes=5), CostModel.ALLOCATION)
    assert result.totals.burn_rate_per_hour == pytest.approx(8 * PRICE + 4 * 2.0)
    assert result.totals.open_pods == 2


def test_finished_pod_is_charged_to_its_end_only() -> None:
    end = T0 + timedelta(minutes=30)
    ledger = advance(
        Ledger(), [pod(ended=end)], rates(), T0 + timedelta(hours=2), CostModel.ALLOCATION
    ).ledger
    assert totals(ledger).spent == pytest.approx(8 * PRICE / 2)
    again = advance(
        ledger, [pod(ended=end)], rates(), T0 + timedelta(hours=3), CostModel.ALLOCATION
    )
    assert again.totals.spent == pytest.approx(8 * PRICE / 2)
    assert again.totals.burn_rate_per_hour == 0


def test_deleted_pod_is_charged_to_its_observed_deletion_and_folded() -> None:
    ledger = advance(
        Ledger(), [pod()], rates(), T0 + timedelta(minutes=10), CostModel.ALLOCATION
    ).ledger
    gone = T0 + timedelta(minutes=15)
    result = advance(
        ledger,
        [],
        rates(),
        T0 + timedelta(minutes=20),
        CostModel.ALLOCATION,
        deleted_at={"u1": gone},
    )
    assert result.totals.spent == pytest.approx(8 * PRICE * 15 / 60)
    assert result.ledger.pods == []
    assert result.ledger.closed.pods == 1
    assert result.newly_estimated == []


def test_pod_vanished_while_operator_down_is_charged_up_to_now_and_flagged() -> None:
    ledger = advance(
        Ledger(), [pod()], rates(), T0 + timedelta(minutes=10), CostModel.ALLOCATION
    ).ledger
    result = advance(ledger, [], rates(), T0 + timedelta(minutes=40), CostModel.ALLOCATION)
    assert result.totals.spent == pytest.approx(8 * PRICE * 40 / 60)
    assert result.newly_estimated == ["pod-u1"]
    assert result.totals.estimated_pods == 1


def test_restarted_pod_is_a_new_line_and_both_count() -> None:
    first_end = T0 + timedelta(minutes=10)
    second_start = T0 + timedelta(minutes=12)
    now = T0 + timedelta(minutes=30)
    ledger = advance(
        Ledger(), [pod("a", ended=first_end)], rates("a"), first_end, CostModel.ALLOCATION
    ).ledger
    result = advance(
        ledger,
        [pod("b", start=second_start, node="p5-ondemand-0")],
        {**rates("a"), **rates("b", price=2 * PRICE)},
        now,
        CostModel.ALLOCATION,
    )
    expected = 8 * PRICE * 10 / 60 + 8 * 2 * PRICE * 18 / 60
    assert result.totals.spent == pytest.approx(expected)
    assert result.ledger.closed.pods == 1
    assert result.ledger.first_started_at == T0


def test_time_while_operator_was_down_is_charged_on_return() -> None:
    ledger = run_ticks([60, 120])
    later = advance(ledger, [pod()], rates(), T0 + timedelta(hours=1), CostModel.ALLOCATION)
    assert later.totals.spent == pytest.approx(8 * PRICE)


def test_utilization_model_charges_work_done_and_idle_is_valued_at_allocation() -> None:
    result = advance(
        Ledger(), [pod()], rates(util=0.25), T0 + timedelta(hours=1), CostModel.UTILIZATION
    )
    assert result.totals.spent == pytest.approx(8 * PRICE * 0.25)
    assert result.totals.idle_spend == pytest.approx(8 * PRICE * 0.75)
    assert result.totals.gpu_utilization == pytest.approx(0.25)
    assert result.totals.burn_rate_per_hour == pytest.approx(8 * PRICE * 0.25)


def test_unknown_utilization_charges_in_full_and_is_not_averaged() -> None:
    half = advance(
        Ledger(), [pod()], rates(util=0.5), T0 + timedelta(hours=1), CostModel.UTILIZATION
    ).ledger
    result = advance(
        half, [pod()], rates(util=None), T0 + timedelta(hours=2), CostModel.UTILIZATION
    )
    assert result.totals.spent == pytest.approx(8 * PRICE * 1.5)
    assert result.totals.gpu_utilization == pytest.approx(0.5)
    assert result.totals.idle_spend == pytest.approx(8 * PRICE * 0.5)


def test_allocation_model_ignores_utilization_for_spend() -> None:
    result = advance(
        Ledger(), [pod()], rates(util=0.1), T0 + timedelta(hours=1), CostModel.ALLOCATION
    )
    assert result.totals.spent == pytest.approx(8 * PRICE)
    assert result.totals.idle_spend == pytest.approx(8 * PRICE * 0.9)


def test_clock_going_backwards_charges_nothing_negative() -> None:
    ledger = run_ticks([600])
    result = advance(ledger, [pod()], rates(), T0 + timedelta(seconds=300), CostModel.ALLOCATION)
    assert result.totals.spent == pytest.approx(8 * PRICE * 600 / 3600)


tick_offsets = st.lists(
    st.floats(min_value=0.001, max_value=7200, allow_nan=False), min_size=1, max_size=40
).map(lambda deltas: [sum(deltas[: i + 1]) for i in range(len(deltas))])


@settings(max_examples=200, deadline=None)
@given(tick_offsets, st.sampled_from(list(CostModel)), st.floats(min_value=0, max_value=1))
def test_any_slicing_into_ticks_gives_the_same_total(
    offsets: list[float], cost_model: CostModel, util: float
) -> None:
    sliced = totals(run_ticks(offsets, cost_model, util))
    whole = totals(run_ticks([offsets[-1]], cost_model, util))
    assert sliced.spent == pytest.approx(whole.spent, rel=1e-9, abs=1e-9)
    assert sliced.idle_spend == pytest.approx(whole.idle_spend, rel=1e-9, abs=1e-9)
    assert sliced.gpu_seconds == pytest.approx(whole.gpu_seconds, rel=1e-9)


@settings(max_examples=200, deadline=None)
@given(tick_offsets, st.data())
def test_a_restart_in_the_middle_changes_nothing(offsets: list[float], data: st.DataObject) -> None:
    restart_after = data.draw(st.integers(min_value=0, max_value=len(offsets) - 1))
    with_restart = totals(run_ticks(offsets, restart_after=restart_after))
    without = totals(run_ticks(offsets))
    assert with_restart.spent == pytest.approx(without.spent, rel=1e-9, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(min_value=1, max_value=8), st.floats(min_value=0, max_value=3600)),
        min_size=1,
        max_size=12,
    )
)
def test_total_is_sum_of_pod_integrals(pods: list[tuple[int, float]]) -> None:
    observed = [
        pod(str(i), gpus=gpus, start=T0 + timedelta(seconds=delay))
        for i, (gpus, delay) in enumerate(pods)
    ]
    all_rates = {
        str(i): ChargeRates(gpu_hourly_price=PRICE, utilization=None) for i in range(len(pods))
    }
    now = T0 + timedelta(hours=2)
    result = advance(Ledger(), observed, all_rates, now, CostModel.ALLOCATION)
    expected = sum(gpus * PRICE * (7200 - delay) / 3600 for gpus, delay in pods)
    assert result.totals.spent == pytest.approx(expected, rel=1e-9)


def test_fractional_gpus_are_charged_by_their_share() -> None:
    """A MIG slice (3 of 7 compute slices) costs 3/7 of its GPU's price."""
    share = 3 / 7
    mig = PodObservation(
        uid="u1", name="mig", node="n", gpus=share, running_since=T0, ended_at=None
    )
    result = advance(Ledger(), [mig], rates(), T0 + timedelta(hours=2), CostModel.ALLOCATION)
    assert result.totals.spent == pytest.approx(2 * share * PRICE)
    assert result.totals.burn_rate_per_hour == pytest.approx(share * PRICE)
    assert result.ledger.pods[0].gpus == pytest.approx(share)
    assert result.totals.gpu_seconds == pytest.approx(2 * 3600 * share)


def test_ten_thousand_finished_pods_keep_the_status_small_and_are_charged_once() -> None:
    """A Job that keeps 10,000 finished pods: their lines fold, the status stays < 256 KiB."""
    finished = [
        pod(uid=f"u{i}", gpus=1, start=T0, ended=T0 + timedelta(seconds=60 + i % 7))
        for i in range(10_000)
    ]
    all_rates = {p.uid: ChargeRates(gpu_hourly_price=PRICE, utilization=None) for p in finished}
    expected = sum((p.ended_at - T0).total_seconds() for p in finished if p.ended_at) * PRICE / 3600
    ledger = Ledger()
    for minute in (2, 3, 4):  # the same pods, seen pass after pass
        result = advance(
            ledger, finished, all_rates, T0 + timedelta(minutes=minute), CostModel.ALLOCATION
        )
        ledger = result.ledger
        assert result.totals.spent == pytest.approx(expected)
    assert ledger.pods == []
    assert ledger.closed.pods == 10_000
    status = TrainingBudgetStatus(ledger=ledger).model_dump_json(by_alias=True)
    assert len(status.encode()) < 256 * 1024


def test_a_finished_pod_first_seen_after_the_watermark_is_still_charged() -> None:
    """Only pods that ended by the watermark are taken as folded; a later one is charged."""
    early = pod(uid="a", ended=T0 + timedelta(minutes=10))
    ledger = advance(
        Ledger(), [early], rates("a"), T0 + timedelta(minutes=20), CostModel.ALLOCATION
    ).ledger
    late = pod(uid="b", start=T0 + timedelta(minutes=15), ended=T0 + timedelta(minutes=45))
    both = {**rates("a"), **rates("b")}
    result = advance(ledger, [early, late], both, T0 + timedelta(hours=1), CostModel.ALLOCATION)
    assert result.totals.spent == pytest.approx(8 * PRICE * (10 + 30) / 60)
