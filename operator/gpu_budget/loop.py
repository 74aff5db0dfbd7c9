"""One accounting loop for the whole cluster.

Every ``accounting_interval`` the loop makes one pass: it groups the watch-fed
caches' pods by budget once, then charges, decides and acts for each budget
that has something to do (pods holding GPUs, or a change to it, its workloads
or the policy since it was last looked at). Predicted stops and warning
thresholds go into one schedule (a heap) that wakes the loop at the earliest
of them, for just the budgets due, so a stop lands on time without a sleeping
handler per budget. Each budget's pass is its own: an exception in one is
counted and the others go on.

The loop also keeps the operator's finalizer on every budget and takes it off a
deleted one once its workloads are held with its spend record, so deletions need
no watch of their own (kopf's per-object handling of every status write was a
second cost per write).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import kopf
import structlog
from pydantic import ValidationError

from gpu_budget import BUDGET_LABEL, FINALIZER, metrics
from gpu_budget.accounting import AccountingInput
from gpu_budget.actions import (
    carry_out,
    hold_and_record,
    reference,
    report_invalid,
    workload_reference,
)
from gpu_budget.attribution import effective_owner
from gpu_budget.formats import parse_time
from gpu_budget.inheritance import record_for
from gpu_budget.models import (
    BudgetPolicySpec,
    BudgetPolicyStatus,
    DepartedSpend,
    Phase,
    TrainingBudgetSpec,
    TrainingBudgetStatus,
)
from gpu_budget.node_pricing import NodeFacts
from gpu_budget.outcomes import OutcomeReading, OutcomeRequest, due_requests, evaluate
from gpu_budget.periods import BudgetShare, PeriodTerms, departures, keep_current, standings
from gpu_budget.plan import Plan, plan_pass
from gpu_budget.pods import PodFacts
from gpu_budget.reasons import Reason
from gpu_budget.runtime import Runtime, current_policy, newest_status
from gpu_budget.schedule import BudgetKey
from gpu_budget.view import utcnow
from gpu_budget.workloads import ADAPTERS_BY_KIND, WorkloadFacts
from gpu_budget.writes import needs_write, staleness_bound

log = structlog.get_logger("gpu_budget.loop")

TOMBSTONE_TTL = timedelta(hours=1)


@dataclass(frozen=True)
class PassFacts:
    """What one pass of the loop reads, gathered once for every budget."""

    bodies: Mapping[BudgetKey, dict[str, Any]]
    deleting: Mapping[BudgetKey, dict[str, Any]]
    workloads: Mapping[BudgetKey, list[WorkloadFacts]]
    pods: Mapping[BudgetKey, list[PodFacts]]
    owners: Mapping[str, str]
    nodes: Mapping[str, NodeFacts]
    namespace_labels: Mapping[str, dict[str, str]]
    policy: BudgetPolicySpec
    policy_version: str
    periods: Mapping[str, PeriodTerms]
    """Budget uid -> what the limits per period say for it (empty without limits)."""
    departed: list[DepartedSpend]
    """Spend deleted budgets left in the current periods (the policy's status)."""
    now: datetime
    outcomes: Mapping[str, OutcomeReading]
    """Per budget uid, the latest answer to its outcome query."""


def gather_pass(state: Runtime) -> PassFacts:
    view = state.view
    workloads = view.workloads_by_budget()
    bodies = view.budget_bodies()
    owners = view.owner_map()
    policy_body = next(
        (b for b in view.policies if b["metadata"]["name"] == state.config.policy_name), None
    )
    policy = current_policy(state)
    now = utcnow()
    departed = departed_spend(state, now)
    periods: dict[str, PeriodTerms] = {}
    if policy.period_limits:
        labels = dict(view.namespace_labels)
        shares = [budget_share(state, body, labels) for body in bodies.values()]
        periods, standing = standings(policy.period_limits, shares, departed, now)
        metrics.observe_periods(standing)
    return PassFacts(
        # A budget being deleted is only released (release_deleted): the loop neither
        # accounts it (and so never resumes what it holds) nor calls its workloads budgetless.
        bodies={k: b for k, b in bodies.items() if not b["metadata"].get("deletionTimestamp")},
        deleting={k: b for k, b in bodies.items() if b["metadata"].get("deletionTimestamp")},
        workloads=workloads,
        pods=view.pods_by_budget(workloads, owners),
        owners=owners,
        nodes=view.nodes_by_name(),
        namespace_labels=dict(view.namespace_labels),
        policy=policy,
        policy_version=str((policy_body or {}).get("metadata", {}).get("resourceVersion", "")),
        periods=periods,
        departed=departed,
        now=now,
        outcomes=dict(state.outcomes),
    )


def departed_spend(state: Runtime, now: datetime) -> list[DepartedSpend]:
    """The policy's record of deleted budgets' spend in the current periods."""
    raw = state.view.policy_status(state.config.policy_name)
    try:
        recorded = BudgetPolicyStatus.model_validate(raw).departed
    except ValidationError as error:
        metrics.INVALID_OBJECTS.labels("BudgetPolicy").inc()
        log.error(
            "unreadable BudgetPolicy status; deleted budgets' spend not counted", error=str(error)
        )
        return []
    return keep_current(recorded, now)


def budget_share(
    state: Runtime, body: Mapping[str, Any], namespace_labels: Mapping[str, Mapping[str, str]]
) -> BudgetShare:
    """What a budget brings to the period totals, from its newest status."""
    meta = body["metadata"]
    uid = str(meta["uid"])
    status = newest_status(state, uid, body.get("status") or {})
    spec = TrainingBudgetSpec.model_validate(body.get("spec") or {})
    namespace = str(meta.get("namespace", ""))
    return BudgetShare(
        uid=uid,
        namespace=namespace,
        owner=effective_owner(spec.owner, namespace_labels.get(namespace, {})),
        created=parse_time(meta.get("creationTimestamp")),
        cost_cap=spec.cost_cap,
        spent=status.spent,
        burn_per_hour=status.burn_rate_per_hour,
        accounted_at=status.last_accounted_at,
        marks=tuple(status.periods),
        claims=status.phase not in (Phase.AWAITING_APPROVAL, Phase.KILLED),
        inherited_from=tuple(status.ledger.inherited_from),
    )


def query_outcomes(state: Runtime, facts: PassFacts) -> None:
    """Start the outcome queries that are due, in the background: the pass does not wait
    for Prometheus; the answers are facts of a later pass."""
    wanted = []
    for key, body in facts.bodies.items():
        query = ((body.get("spec") or {}).get("outcome") or {}).get("query")
        if isinstance(query, str) and query:
            running = any(pod.holds_gpus for pod in facts.pods.get(key, []))
            wanted.append(
                OutcomeRequest(uid=str(body["metadata"]["uid"]), query=query, running=running)
            )
    asked = {request.uid for request in wanted}
    for uid in [uid for uid in state.outcomes if uid not in asked]:
        del state.outcomes[uid]  # budget gone, or its outcome removed
    if state.outcome_queries is not None and not state.outcome_queries.done():
        return
    every = timedelta(seconds=state.config.outcome_interval)
    due = due_requests(wanted, state.outcomes, facts.now, every)
    if due:
        state.outcome_queries = asyncio.create_task(
            evaluate(
                state.outcome_source,
                due,
                state.outcomes,
                utcnow,
                observe=lambda reason: metrics.OUTCOME_QUERIES.labels(reason).inc(),
            )
        )


def accounting_input(
    state: Runtime, facts: PassFacts, key: BudgetKey, previous: TrainingBudgetStatus
) -> AccountingInput:
    body = facts.bodies.get(key) or facts.deleting[key]
    meta = body["metadata"]
    return AccountingInput(
        namespace=key[0],
        name=key[1],
        uid=str(meta["uid"]),
        generation=meta.get("generation"),
        spec=TrainingBudgetSpec.model_validate(body.get("spec") or {}),
        status=previous,
        policy=facts.policy,
        pods=facts.pods.get(key, []),
        workloads=facts.workloads.get(key, []),
        owners=facts.owners,
        nodes=facts.nodes,
        utilization=state.utilization,
        deleted_at=state.view.deleted_at,
        period=facts.periods.get(str(meta["uid"]), PeriodTerms()),
        now=utcnow(),
        outcome=facts.outcomes.get(str(meta["uid"])),
    )


def fingerprint(facts: PassFacts, key: BudgetKey, policy_version: str) -> tuple[object, ...]:
    """What, when unchanged and nothing runs, means a budget has nothing to do."""
    body = facts.bodies[key]
    workloads = facts.workloads.get(key, [])
    return (
        body["metadata"].get("resourceVersion"),
        policy_version,
        tuple(
            sorted(
                (w.uid, w.state, w.suspended, w.held, w.killed, w.spend_record) for w in workloads
            )
        ),
        # A pod that starts or ends changes the burn rate, and so the predicted stop.
        tuple(
            sorted((pod.uid, pod.running_since, pod.ended_at) for pod in facts.pods.get(key, []))
        ),
        # A new answer to the outcome query (at most one per --outcome-interval).
        getattr(facts.outcomes.get(str(body["metadata"]["uid"])), "at", None),
        # Another budget of a limit's scope that starts or stops moves this one's share.
        _period_fingerprint(facts.periods.get(str(body["metadata"]["uid"]))),
    )


def _period_fingerprint(terms: PeriodTerms | None) -> tuple[object, ...]:
    if terms is None or terms.spend_limit is None:
        return ()
    return (round(terms.spend_limit, 1), terms.shortfall is None)


def next_due(plan: Plan) -> datetime | None:
    """The budget's next instant that needs a pass: its stop, a threshold, a checkpoint warning."""
    decision = plan.decision
    checkpoint = None if decision.checkpoint else decision.checkpoint_at
    moments = [m for m in (decision.record.stop_at, decision.next_threshold_at, checkpoint) if m]
    return min(moments, default=None)


async def sleep_until(moment: datetime, stopped: Callable[[], bool], woken: asyncio.Event) -> None:
    """Sleep until ``moment``, or until something changed, or until asked to stop."""
    while not stopped() and not woken.is_set():
        left = (moment - utcnow()).total_seconds()
        if left <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), timeout=min(left, 0.5))


def has_work(state: Runtime, facts: PassFacts, key: BudgetKey) -> bool:
    """Whether a full pass must account this budget.

    When something changed since it was last accounted; or it runs and either its
    written spend is getting old or it has an idle rule (utilisation is read at
    every pass). A running budget with none of these is left alone: its stop, its
    next threshold, its checkpoint warning and its rewrite are in the schedule,
    which wakes the loop for it at those instants.
    """
    body = facts.bodies[key]
    uid = str(body["metadata"]["uid"])
    if state.seen.get(uid) != fingerprint(facts, key, facts.policy_version):
        return True
    if not any(pod.holds_gpus for pod in facts.pods.get(key, [])):
        return False
    if ((body.get("spec") or {}).get("enforcement") or {}).get("idle"):
        return True
    written = state.written.get(uid)
    last = None if written is None else written.last_accounted_at
    return last is None or facts.now - last >= staleness_bound(state.config.accounting_interval)


async def account_budget(state: Runtime, facts: PassFacts, key: BudgetKey) -> Plan:
    """One budget's part of a pass: charge, decide, act, and write status if it matters."""
    body = facts.bodies[key]
    uid = str(body["metadata"]["uid"])
    previous = newest_status(state, uid, body.get("status") or {})
    spec_input = accounting_input(state, facts, key, previous)
    plan = plan_pass(spec_input, body["metadata"].get("annotations") or {})
    await carry_out(state, plan, reference(body), key[0], key[1])
    state.computed[uid] = plan.status
    staleness = staleness_bound(state.config.accounting_interval)
    written = state.written.get(uid)
    if uid not in state.writing and needs_write(written, plan.status, spec_input.now, staleness):
        # Written in the background, a few at a time: a pass over a thousand budgets
        # must not wait on a thousand round trips, and a stop must not wait on any.
        state.writing[uid] = asyncio.create_task(write_status(state, key, uid, plan.status))
        if plan.status.burn_rate_per_hour > 0 and not state.config.stop_at_pass_only:
            # Rewrite when the written spend would get too old, not a pass later; on a
            # whole second, so the rewrites of many budgets share one wake of the loop.
            rewrite = (spec_input.now + staleness).replace(microsecond=0)
            state.schedule.add(rewrite + timedelta(seconds=1), key)
    state.seen[uid] = fingerprint(facts, key, facts.policy_version)
    metrics.observe_budget(
        key[0],
        key[1],
        spec_input.spec,
        effective_owner(spec_input.spec.owner, facts.namespace_labels.get(key[0], {})),
        plan.status,
    )
    return plan


async def write_status(
    state: Runtime, key: BudgetKey, uid: str, status: TrainingBudgetStatus
) -> None:
    # A write that hangs is a pass that hangs: the liveness probe sees both.
    tracked = f"status:{uid}"
    try:
        async with state.write_slots:
            state.passes.started(tracked, utcnow())  # waiting for a slot is not hanging
            await state.client.patch_status(
                key[0], key[1], status.model_dump(mode="json", by_alias=True)
            )
    except Exception as error:  # not recorded as written: the next pass writes again
        state.passes.failed(tracked, utcnow())
        log.warning("status write failed", namespace=key[0], budget=key[1], error=str(error))
    else:
        state.passes.succeeded(tracked, utcnow())
        state.written[uid] = status
        metrics.STATUS_WRITES.inc()
    finally:
        state.writing.pop(uid, None)


async def hold_budgetless(state: Runtime, facts: PassFacts) -> None:
    """A labelled workload whose budget does not exist is held, and told why once."""
    for key, workloads in facts.workloads.items():
        if key in facts.bodies or key in facts.deleting:
            continue
        for workload in workloads:
            adapter = ADAPTERS_BY_KIND[workload.kind]
            operation = adapter.suspend(workload, Reason.BUDGET_NOT_FOUND)
            if operation is not None:
                await state.client.apply(adapter, workload, operation)
            if workload.uid in state.reported_missing:
                continue
            state.reported_missing.add(workload.uid)
            kopf.event(
                workload_reference(workload),
                type="Warning",
                reason=Reason.BUDGET_NOT_FOUND,
                message=f"No TrainingBudget {workload.budget} in namespace {workload.namespace}; "
                f"held until one exists. Create it, or fix the {BUDGET_LABEL} label.",
            )


async def hold_vanished(state: Runtime, facts: PassFacts) -> None:
    """Budgets gone without their finalizer (an admin's, or before it was added): hold and
    record their workloads."""
    while state.view.vanished:
        obj = state.view.vanished.pop()
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        uid = str(meta.get("uid", ""))
        status = newest_status(state, uid, obj.get("status") or {})
        await hold_and_record(
            state,
            facts.workloads.get(key, []) if key not in facts.bodies else [],
            record_for(status, uid, facts.now),
            Reason.BUDGET_DELETED,
            f"TrainingBudget {key[1]} is gone; held until a budget {key[1]} allows it.",
        )
        for memory in (state.computed, state.written, state.seen, state.finalizing):
            memory.pop(uid, None)


async def keep_finalizers(state: Runtime, facts: PassFacts) -> None:
    """Put the operator's finalizer on every budget that lacks it.

    The patch names the resourceVersion it read, so it never drops a finalizer
    someone added meanwhile (a conflict is tried again at the next pass).
    """
    for key, body in facts.bodies.items():
        meta = body["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        uid = str(meta["uid"])
        version = str(meta.get("resourceVersion", ""))
        if FINALIZER in finalizers or state.finalizing.get(uid) == version:
            continue
        state.finalizing[uid] = version  # one patch per version, not per pass
        # In the background, a few at a time like status writes: a thousand new budgets
        # must not hold up their first pass behind a thousand round trips.
        state.adding_finalizers[uid] = asyncio.create_task(
            add_finalizer(state, key, uid, [*finalizers, FINALIZER], version)
        )


async def add_finalizer(
    state: Runtime, key: BudgetKey, uid: str, finalizers: list[str], version: str
) -> None:
    try:
        async with state.write_slots:
            await state.client.patch_finalizers(key[0], key[1], finalizers, version)
    except Exception as error:
        state.finalizing.pop(uid, None)  # tried again at the next pass
        log.warning("finalizer not added", namespace=key[0], budget=key[1], error=str(error))
    finally:
        state.adding_finalizers.pop(uid, None)


async def release_deleted(state: Runtime, facts: PassFacts) -> None:
    """A deleted budget leaves no workload unbudgeted, and no spend forgotten.

    A last pass charges the budget up to now; its workloads are held and carry
    its spend record, so a budget of the same name created later carries on
    from there (with the same stop, if it was stopped). Killed workloads stay
    killed. The finalizer comes off only once that has succeeded; a failure is
    tried again at the next pass.
    """
    for key, body in facts.deleting.items():
        meta = body["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        uid = str(meta["uid"])
        version = str(meta.get("resourceVersion", ""))
        if FINALIZER not in finalizers or state.finalizing.get(uid) == version:
            continue
        try:
            previous = newest_status(state, uid, body.get("status") or {})
            plan = plan_pass(
                accounting_input(state, facts, key, previous), meta.get("annotations") or {}
            )
            await record_departure(state, facts, key, uid, plan.status)
            await hold_and_record(
                state,
                facts.workloads.get(key, []),
                record_for(plan.status, uid, utcnow()),
                Reason.BUDGET_DELETED,
                f"TrainingBudget {key[1]} was deleted; held until a budget {key[1]} allows it. "
                "What it spent stays on record: a new budget of that name carries it on.",
            )
            # No precondition: nobody can add a finalizer to an object being deleted, and a
            # status write in between must not make the release fail.
            rest = [f for f in finalizers if f != FINALIZER]
            await state.client.patch_finalizers(key[0], key[1], rest, None)
        except Exception as error:
            metrics.RECONCILE_ERRORS.inc()
            log.exception(
                "deleted budget not released", namespace=key[0], budget=key[1], error=str(error)
            )
            continue
        state.finalizing[uid] = version
        metrics.forget_budget(key[0], key[1])
        for memory in (state.computed, state.written, state.seen):
            memory.pop(uid, None)


async def record_departure(
    state: Runtime, facts: PassFacts, key: BudgetKey, uid: str, status: TrainingBudgetStatus
) -> None:
    """A deleted budget's spend in the current periods stays counted: it goes into the
    policy's status before the finalizer comes off (by uid, so a retry adds nothing)."""
    if not status.periods:
        return
    body = facts.deleting[key]
    spec = TrainingBudgetSpec.model_validate(body.get("spec") or {})
    owner = effective_owner(spec.owner, facts.namespace_labels.get(key[0], {}))
    gone = departures(uid, key[0], owner, status.periods, status.spent, facts.now)
    kept = [d for d in facts.departed if d.budget_uid != uid]
    record = BudgetPolicyStatus(departed=[*kept, *gone])
    await state.client.patch_policy_status(
        state.config.policy_name, record.model_dump(mode="json", by_alias=True)
    )


def report_unreadable(state: Runtime, facts: PassFacts) -> None:
    """Pods and workloads the operator cannot fully read: an Event on each, once, and a count."""
    for workloads in facts.workloads.values():
        for workload in workloads:
            if workload.problems and workload.uid not in state.reported_invalid:
                report_invalid(state, workload_reference(workload), list(workload.problems))
    for pods in facts.pods.values():
        for pod in pods:
            if pod.problems and pod.uid not in state.reported_invalid:
                report_invalid(
                    state,
                    kopf.Body(
                        {
                            "apiVersion": "v1",
                            "kind": "Pod",
                            "metadata": {
                                "name": pod.name,
                                "namespace": pod.namespace,
                                "uid": pod.uid,
                            },
                        }
                    ),
                    list(pod.problems),
                )


YIELD_EVERY = 50
"""Budgets a full pass accounts between looks at the schedule and the watches."""


async def account_one(state: Runtime, facts: PassFacts, key: BudgetKey) -> int:
    """Account one budget, isolated: an exception is this budget's alone (counted, retried)."""
    try:
        with metrics.RECONCILE_SECONDS.time():
            plan = await account_budget(state, facts, key)
    except Exception as error:
        metrics.RECONCILE_ERRORS.inc()
        log.exception("budget pass failed", namespace=key[0], budget=key[1], error=str(error))
        return 0
    due = None if state.config.stop_at_pass_only else next_due(plan)
    if due is not None:
        state.schedule.add(due, key)
    return 1


async def run_pass(state: Runtime, only: set[BudgetKey] | None) -> int:
    """One pass over every budget with something to do (or just ``only``); budgets accounted."""
    facts = gather_pass(state)
    query_outcomes(state, facts)
    await release_deleted(state, facts)
    await hold_vanished(state, facts)
    await keep_finalizers(state, facts)
    await hold_budgetless(state, facts)
    report_unreadable(state, facts)
    keys = list(facts.bodies) if only is None else [k for k in only if k in facts.bodies]
    accounted = 0
    for index, key in enumerate(keys):
        if only is None and not has_work(state, facts, key):
            continue
        if index % YIELD_EVERY == 0:
            await asyncio.sleep(0)  # let watch events in during a long pass
            # A stop due meanwhile is not left for the end of the pass.
            for urgent in state.schedule.pop_due(utcnow()) & facts.bodies.keys():
                accounted += await account_one(state, facts, urgent)
        accounted += await account_one(state, facts, key)
    state.view.forget_deletions_before(facts.now - TOMBSTONE_TTL)
    return accounted


async def run_loop(state: Runtime, stopped: Callable[[], bool]) -> None:
    """Pass every interval, and at every scheduled instant in between, until stopped."""
    await state.view.ready()
    log.info("accounting loop started", budgets=len(state.view.budget_bodies()))
    interval = timedelta(seconds=state.config.accounting_interval)
    next_full = utcnow()
    while not stopped():
        now = utcnow()
        full = now >= next_full
        due = state.schedule.pop_due(now) | state.view.take_dirty()
        if full or due:
            state.passes.started("loop", now)
            try:
                await run_pass(state, None if full else due)
            except Exception:
                state.passes.failed("loop", utcnow())
                log.exception("accounting pass failed")
            else:
                state.passes.succeeded("loop", utcnow())
            if full:
                next_full = now + interval
        wake = min(next_full, state.schedule.earliest() or next_full)
        await sleep_until(wake, stopped, state.view.changed)
