"""The spend ledger: where spend is computed.

Spend is the integral of each pod's hourly rate over the time it held GPUs.
The ledger keeps one line per pod (``PodCharge``) with the instant up to which
that pod has been charged (``accounted_until``); each accounting pass charges
the interval since then and moves the mark forward. Because the mark is stored
in the TrainingBudget's status, an operator restart resumes exactly where the
last written status left off: nothing is charged twice and time the operator
was down is charged on the first pass after it comes back.

Lines of pods that finished or no longer exist are folded into ``closed``
totals, with a watermark (``folded_until``) for finished pods that still exist,
so the status stays small however many pods a run goes through.

Everything here is pure: plain data in, plain data out, no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from gpu_budget.models import CostModel, Ledger, LedgerTotals, PodCharge

SECONDS_PER_HOUR = 3600.0


class PodObservation(BaseModel):
    """What the operator currently sees of one GPU pod of a budget."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    uid: str
    name: str
    node: str | None
    gpus: float
    running_since: datetime | None
    """When the pod started holding GPUs; None while it has not started."""
    ended_at: datetime | None = None
    """When its containers stopped (Succeeded or Failed); None while running."""


class ChargeRates(BaseModel):
    """Price and utilisation that apply to a pod during one accounting interval."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gpu_hourly_price: float
    utilization: float | None
    """Average utilisation (0-1) of the pod's GPUs; None when unknown."""


class LedgerTotalsView(BaseModel):
    """Budget-wide sums over open and closed pods."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spent: float
    idle_spend: float
    gpu_seconds: float
    busy_gpu_seconds: float
    metered_gpu_seconds: float
    burn_rate_per_hour: float
    open_pods: int
    estimated_pods: int

    @property
    def gpu_utilization(self) -> float | None:
        """GPU-time-weighted average utilisation over the run, where it was measured."""
        if self.metered_gpu_seconds <= 0:
            return None
        return min(1.0, self.busy_gpu_seconds / self.metered_gpu_seconds)


def charge_interval(
    line: PodCharge, until: datetime, rates: ChargeRates, cost_model: CostModel
) -> PodCharge:
    """Charge ``line`` from its ``accounted_until`` to ``until`` at ``rates``.

    Allocation bills GPUs held. Utilization bills GPU work done (rate x
    utilisation); where utilisation is unknown it bills in full, because an
    operator that cannot see must not make GPUs look free. Idle spend is
    always valued at the allocation rate: it is what the idle GPU time cost
    whoever pays for the hardware.
    """
    seconds = (until - line.accounted_until).total_seconds()
    if seconds <= 0:
        return line.model_copy(update={"gpu_hourly_price": rates.gpu_hourly_price})
    gpu_seconds = line.gpus * seconds
    allocation_cost = gpu_seconds * rates.gpu_hourly_price / SECONDS_PER_HOUR
    utilization = None if rates.utilization is None else min(1.0, max(0.0, rates.utilization))
    if cost_model == CostModel.UTILIZATION and utilization is not None:
        cost = allocation_cost * utilization
    else:
        cost = allocation_cost
    metered = gpu_seconds if utilization is not None else 0.0
    busy = gpu_seconds * utilization if utilization is not None else 0.0
    idle = allocation_cost * (1.0 - utilization) if utilization is not None else 0.0
    return line.model_copy(
        update={
            "accounted_until": until,
            "gpu_hourly_price": rates.gpu_hourly_price,
            "spent": line.spent + cost,
            "idle_spend": line.idle_spend + idle,
            "gpu_seconds": line.gpu_seconds + gpu_seconds,
            "metered_gpu_seconds": line.metered_gpu_seconds + metered,
            "busy_gpu_seconds": line.busy_gpu_seconds + busy,
        }
    )


def hourly_rate(gpus: float, rates: ChargeRates, cost_model: CostModel) -> float:
    """The pod's current burn in USD per hour under the budget's cost model."""
    rate = gpus * rates.gpu_hourly_price
    if cost_model == CostModel.UTILIZATION and rates.utilization is not None:
        rate *= min(1.0, max(0.0, rates.utilization))
    return rate


class AccountingResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    ledger: Ledger
    totals: LedgerTotalsView
    newly_estimated: list[str]
    """Pods whose end was not observed and were charged up to ``now``."""


def advance(
    ledger: Ledger,
    observed: Iterable[PodObservation],
    rates: Mapping[str, ChargeRates],
    now: datetime,
    cost_model: CostModel,
    deleted_at: Mapping[str, datetime] | None = None,
) -> AccountingResult:
    """Charge every pod of a budget up to ``now`` and return the new ledger.

    ``observed`` are the budget's pods that exist now; ``rates`` maps pod uid
    to what applies to it this interval (pods without an entry are charged at
    the price their line last had). ``deleted_at`` maps uids of pods seen
    deleted to when that was observed. A line whose pod is gone and whose end
    was never observed (it vanished while the operator was down) is charged up
    to ``now``: err on the side of counting, and flag it as estimated.
    """
    deleted_at = deleted_at or {}
    lines = {line.uid: line for line in ledger.pods}
    present: set[str] = set()
    first_started = ledger.first_started_at
    newly_estimated: list[str] = []
    closed = ledger.closed
    folded_until = ledger.folded_until

    for pod in observed:
        present.add(pod.uid)
        if pod.running_since is None or pod.node is None:
            continue
        line = lines.get(pod.uid)
        # The watermark as this pass found it: ends folded in this pass do not
        # count, since this pass has not yet seen every pod that ended by them.
        if line is None and _already_folded(pod, ledger.folded_until):
            continue
        if line is None:
            start = min(pod.running_since, now)
            if ledger.inherited_until is not None:
                # A predecessor of this budget's name charged its pods up to then.
                start = max(start, min(ledger.inherited_until, now))
            line = PodCharge(
                uid=pod.uid,
                name=pod.name,
                node=pod.node,
                gpus=pod.gpus,
                gpu_hourly_price=0.0,
                started_at=start,
                accounted_until=start,
                open=True,
            )
        if first_started is None or line.started_at < first_started:
            first_started = line.started_at
        if line.open:
            until = (
                now if pod.ended_at is None else max(line.accounted_until, min(pod.ended_at, now))
            )
            line = charge_interval(line, until, _rates_for(rates, pod.uid, line), cost_model)
        if pod.ended_at is None:
            lines[pod.uid] = line
            continue
        # A finished pod may be kept for days (a Job keeps its pods): its line is
        # folded into the totals now, and the watermark says it was, so status stays
        # small however many finished pods a run leaves.
        lines.pop(pod.uid, None)
        closed = _fold(closed, line.model_copy(update={"open": False}))
        ended = max(line.accounted_until, pod.ended_at)
        folded_until = ended if folded_until is None else max(folded_until, ended)

    kept: list[PodCharge] = []
    for uid, line in lines.items():
        if uid in present:
            kept.append(line)
            continue
        if line.open:
            gone_at = deleted_at.get(uid)
            estimated = gone_at is None
            until = now if gone_at is None else max(line.accounted_until, min(gone_at, now))
            pod_rates = _rates_for(rates, uid, line)
            line = charge_interval(line, until, pod_rates, cost_model)
            line = line.model_copy(update={"open": False, "estimated": estimated})
            if estimated:
                newly_estimated.append(line.name)
        closed = _fold(closed, line)

    kept.sort(key=lambda line: (line.started_at, line.name))
    new_ledger = ledger.model_copy(
        update={
            "first_started_at": first_started,
            "closed": closed,
            "pods": kept,
            "folded_until": folded_until,
        }
    )
    burn = sum(
        hourly_rate(
            line.gpus,
            _rates_for(rates, line.uid, line),
            cost_model,
        )
        for line in kept
        if line.open
    )
    return AccountingResult(
        ledger=new_ledger,
        totals=totals(new_ledger, burn_rate_per_hour=burn),
        newly_estimated=newly_estimated,
    )


def _already_folded(pod: PodObservation, folded_until: datetime | None) -> bool:
    """A finished pod with no line that ended by the watermark was charged and folded.

    The watermark moves only to ends seen in a pass that saw every existing pod,
    so a pod that ended by it was seen then. The one exception is a pod whose
    whole life was shorter than the watch's lag (under a second): it is skipped,
    at a cost of less than that lag's worth of GPU time.
    """
    return pod.ended_at is not None and folded_until is not None and pod.ended_at <= folded_until


def _rates_for(rates: Mapping[str, ChargeRates], uid: str, line: PodCharge) -> ChargeRates:
    """This interval's rates, or the line's last price with utilisation unknown."""
    return rates.get(uid) or ChargeRates(gpu_hourly_price=line.gpu_hourly_price, utilization=None)


def _fold(closed: LedgerTotals, line: PodCharge) -> LedgerTotals:
    return LedgerTotals(
        pods=closed.pods + 1,
        estimated_pods=closed.estimated_pods + (1 if line.estimated else 0),
        spent=closed.spent + line.spent,
        idle_spend=closed.idle_spend + line.idle_spend,
        gpu_seconds=closed.gpu_seconds + line.gpu_seconds,
        metered_gpu_seconds=closed.metered_gpu_seconds + line.metered_gpu_seconds,
        busy_gpu_seconds=closed.busy_gpu_seconds + line.busy_gpu_seconds,
    )


def totals(ledger: Ledger, burn_rate_per_hour: float = 0.0) -> LedgerTotalsView:
    """Sum the ledger: closed totals plus every pod line still kept."""
    lines = ledger.pods
    return LedgerTotalsView(
        spent=ledger.closed.spent + sum(line.spent for line in lines),
        idle_spend=ledger.closed.idle_spend + sum(line.idle_spend for line in lines),
        gpu_seconds=ledger.closed.gpu_seconds + sum(line.gpu_seconds for line in lines),
        busy_gpu_seconds=ledger.closed.busy_gpu_seconds
        + sum(line.busy_gpu_seconds for line in lines),
        metered_gpu_seconds=ledger.closed.metered_gpu_seconds
        + sum(line.metered_gpu_seconds for line in lines),
        burn_rate_per_hour=burn_rate_per_hour,
        open_pods=sum(1 for line in lines if line.open),
        estimated_pods=ledger.closed.estimated_pods + sum(1 for line in lines if line.estimated),
    )
