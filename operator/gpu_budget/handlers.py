"""The kopf shell: lifecycle, the host of the accounting loop, liveness.

Facts come from the operator's own watch-fed caches (:mod:`gpu_budget.view`),
which start with the process (a standby replica keeps them warm, so a failover
does not wait for a listing); one accounting loop (:mod:`gpu_budget.loop`)
passes over every budget, and holds the workloads of deleted ones before it
takes its finalizer off them. kopf provides what it is good at: peering (one
active replica), admission webhooks, the liveness endpoint. What the operator
knows that must outlive it is written to the TrainingBudget's status and the
workloads' annotations; the in-memory state (caches, the utilisation snapshot,
statuses not yet written) is rebuilt from the cluster on start.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import Any

import kopf
import structlog

from gpu_budget import GROUP, metrics
from gpu_budget.config import OperatorConfig
from gpu_budget.liveness import stuck
from gpu_budget.loop import run_loop
from gpu_budget.outcomes import PrometheusOutcomeSource
from gpu_budget.runtime import Runtime, runtime
from gpu_budget.utilization import PrometheusUtilizationSource, UtilizationSnapshot
from gpu_budget.view import utcnow

log = structlog.get_logger("gpu_budget")

LOOP_HOST = "default"
"""The Namespace whose kopf daemon runs the accounting loop. Every cluster has it and the
API server refuses to delete it, and kopf stops daemons on a standby replica, so exactly
the active replica runs the loop."""


# ----------------------------------------------------------------- lifecycle


async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf's bookkeeping in annotations, so status has one owner.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Our own Events say what was decided; kopf's per-handler Events would drown them.
    settings.posting.level = logging.WARNING
    # Two active replicas would enforce twice: without --standalone, run only
    # when peering works, and notice a dead peer within the configured lifetime.
    state = runtime(memo)
    settings.peering.mandatory = not state.config.standalone
    settings.peering.lifetime = state.config.peering_lifetime
    if state.config.metrics_port is not None:
        metrics.serve(state.config.metrics_port)
    state.view.start()
    await state.notifier.start()
    if state.config.prometheus_url is None:
        state.utilization = UtilizationSnapshot(
            available=False, error="no Prometheus URL configured (--prometheus-url)"
        )
    else:
        source = PrometheusUtilizationSource(state.config.prometheus_url)
        state.poller = asyncio.create_task(poll_utilization(state, source))
        state.outcome_source = PrometheusOutcomeSource(state.config.prometheus_url)
    log.info("operator started", config=state.config.model_dump())


async def stop(memo: kopf.Memo, **_: Any) -> None:
    state = runtime(memo)
    await state.notifier.stop()
    await state.view.stop()
    await state.client.close()
    for task in (state.poller, state.outcome_queries):
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def poll_utilization(state: Runtime, source: PrometheusUtilizationSource) -> None:
    """Refresh the cluster-wide utilisation snapshot once per accounting interval."""
    was_available: bool | None = None
    while True:
        started = asyncio.get_running_loop().time()
        try:
            with metrics.QUERY_SECONDS.time():
                snapshot = await asyncio.to_thread(source.fetch)
        except Exception as error:  # a bad answer must not end the poller
            snapshot = UtilizationSnapshot(available=False, error=f"unreadable answer: {error}")
        state.utilization = snapshot
        metrics.METRICS_SOURCE_UP.set(1 if snapshot.available else 0)
        if snapshot.available != was_available:
            log.info(
                "metrics source",
                available=snapshot.available,
                error=snapshot.error,
                pods=len(snapshot.by_pod),
            )
            was_available = snapshot.available
        elapsed = asyncio.get_running_loop().time() - started
        await asyncio.sleep(max(0.0, state.config.accounting_interval - elapsed))


def is_loop_host(name: str, **_: Any) -> bool:
    return name == LOOP_HOST


async def accounting(stopped: kopf.DaemonStopped, memo: kopf.Memo, **_: Any) -> None:
    """The accounting loop, for as long as this replica is the active one."""
    await run_loop(runtime(memo), lambda: bool(stopped))


# ------------------------------------------------------------------ liveness


def probe_accounting(memo: kopf.Memo, **_: Any) -> str:
    """Liveness: fails while a pass is wedged or every pass keeps failing."""
    state = runtime(memo)
    reason = stuck(state.passes, utcnow(), state.config.accounting_interval)
    if reason is not None:
        raise RuntimeError(reason)
    return "ok"


# -------------------------------------------------------------- registration


def host_the_loop(registry: kopf.OperatorRegistry) -> None:
    """The loop as a daemon of the Namespace ``default``, without a finalizer on it.

    kopf gives every daemon a finalizer on its object, so that it can stop the
    daemon before the object goes; the Namespace ``default`` never goes, and a
    finalizer on it would need the right to patch namespaces, which the
    operator must not have (namespace labels attribute spend). So the daemon is
    registered as kopf registers it, then without that requirement.
    """
    kopf.daemon("", "v1", "namespaces", when=is_loop_host, registry=registry)(accounting)
    spawning = registry._spawning
    spawning._handlers = [
        dataclasses.replace(handler, requires_finalizer=False)
        if handler.fn is accounting
        else handler
        for handler in spawning._handlers
    ]


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
    """Attach every handler to ``registry``."""
    # A registry of our own does not inherit kopf's default login handlers.
    kopf.on.login(registry=registry)(kopf.login_via_client)
    kopf.on.startup(registry=registry)(start)
    kopf.on.cleanup(registry=registry)(stop)
    # A failed probe is an answer (the endpoint says 500 and why), not something to
    # retry while the kubelet waits.
    kopf.on.probe(id="accounting", errors=kopf.ErrorsMode.PERMANENT, registry=registry)(
        probe_accounting
    )
    host_the_loop(registry)
