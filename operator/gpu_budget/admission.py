"""Mutating admission webhooks: hold budgeted workloads at creation, record approvals.

Kueue-style create-time suspension: a labelled workload is admitted suspended
(and a bare pod with a scheduling gate), marked ``gpubudget.dev/held:
Admission``, so no GPU is used before the operator has checked its budget; the
operator releases it when the budget allows (only the operator may: see the
hold guard in :mod:`gpu_budget.admission_policies`). A workload the user
created suspended is left alone, since the operator never resumes what a user
suspended; when that user later unsuspends it, the request is turned into a
hold, so a budget cannot be skipped by creating suspended and resuming.

Failure policies follow what a failure would cost:

* Holding at creation fails closed (``failurePolicy: Fail``, and kept in the
  webhook configuration when the operator stops): a hard budget must not be
  bypassed while the operator is down. Only labelled objects are sent to the
  webhook (objectSelector on the budget label), so nothing else depends on it.
* Holding on unsuspend and recording approvals fail open (``Ignore``): while
  the operator is down users can still update their workloads and budgets.
  A workload resumed meanwhile is caught by the operator's enforcement when
  it is back; an approval cannot slip through unrecorded, because the approval
  guard policy refuses an approval whose record does not name the approver.

Consequences of failing closed, by design: while the operator is down no
labelled workload can be created, anywhere (kopf's managed configurations have
no namespaceSelector, so ``--namespace`` narrows what the operator mutates, not
what the API server sends it); that includes pods a Job creates from a pod
template that carries the budget label, so put the label on the workload, not
on its pod template.

Wiring. Webhooks are served only when ``--webhook-cert-file`` and
``--webhook-key-file`` are given. In dev mode (local cluster)::

    hack/webhook-certs.sh .local/webhook
    python -m gpu_budget --webhook-cert-file .local/webhook/tls.crt \\
        --webhook-key-file .local/webhook/tls.key \\
        --webhook-ca-file .local/webhook/ca.crt --manage-webhook-config

kopf then creates and maintains the Mutating/ValidatingWebhookConfiguration
``gpubudget.dev`` (``--webhook-config-name``), pointing at
``https://<--webhook-host>:<--webhook-port>/<handler id>`` with the CA as
caBundle; on exit it keeps only the create-time holds, so delete the
configuration when done with the operator for good. Deployed, the webhook
configuration can be static (a Service as clientConfig, the handler ids below as
paths, the certificate from cert-manager), with no RBAC on webhook
configurations for the operator.

The decisions are pure functions from objects to JSON merge patches, tested
without a cluster; the kopf handlers only apply them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
import structlog

from gpu_budget import (
    APPROVED_AMOUNT_ANNOTATION,
    APPROVED_AT_ANNOTATION,
    APPROVED_BY_ANNOTATION,
    BUDGET_LABEL,
    GROUP,
    VERSION,
)
from gpu_budget.config import OperatorConfig
from gpu_budget.workloads import (
    ADAPTERS,
    ADAPTERS_BY_KIND,
    HELD_ANNOTATION,
    KILLED_ANNOTATION,
    PodAdapter,
    WorkloadAdapter,
)
from gpu_budget.workloads.pod import SCHEDULING_GATE

log = structlog.get_logger("gpu_budget.admission")

HELD_AT_ADMISSION = "Admission"
"""Value of ``gpubudget.dev/held`` on a workload the webhook suspended."""

MergePatch = dict[str, Any]

SUSPENDABLE: tuple[WorkloadAdapter, ...] = tuple(
    adapter for adapter in ADAPTERS if not isinstance(adapter, PodAdapter)
)
"""Workload kinds with a suspend switch (Job, JobSet, PyTorchJob)."""

BUDGETED_CONTROLLERS = frozenset((a.group, a.kind) for a in SUSPENDABLE)


class Rejection(Exception):
    """The request must be denied; the message tells the user what to change."""


def _annotations(body: Mapping[str, Any] | None) -> Mapping[str, str]:
    if body is None:
        return {}
    return (body.get("metadata") or {}).get("annotations") or {}


def _controller(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    owners = (body.get("metadata") or {}).get("ownerReferences") or []
    return next((owner for owner in owners if owner.get("controller")), None)


def owned_by_budgeted_workload(body: Mapping[str, Any]) -> bool:
    """A Job a JobSet created: the JobSet is the unit that is held, not its Jobs."""
    owner = _controller(body)
    if owner is None:
        return False
    group = str(owner.get("apiVersion", "")).rpartition("/")[0]
    return (group, owner.get("kind")) in BUDGETED_CONTROLLERS


def is_bare_pod(body: Mapping[str, Any]) -> bool:
    """A pod no controller owns; a controller's pods are held through the controller."""
    return _controller(body) is None


def _held(adapter: WorkloadAdapter) -> MergePatch:
    patch = adapter.suspend_fields(True)
    patch["metadata"] = {"annotations": {HELD_ANNOTATION: HELD_AT_ADMISSION}}
    return patch


def hold_on_create(adapter: WorkloadAdapter, body: Mapping[str, Any]) -> MergePatch | None:
    """Suspend a new labelled workload; None when the user created it suspended."""
    if adapter.is_suspended(body) or owned_by_budgeted_workload(body):
        return None
    return _held(adapter)


def hold_on_unsuspend(
    adapter: WorkloadAdapter, old: Mapping[str, Any], new: Mapping[str, Any]
) -> MergePatch | None:
    """Turn a user's unsuspend of a workload the operator never held into a hold.

    The operator then releases it when the budget allows, as for a new one.
    Workloads the operator holds or killed are the hold guard policy's
    business (only the operator may release them), so they pass unchanged.
    """
    if not (adapter.is_suspended(old) and not adapter.is_suspended(new)):
        return None
    old_annotations = _annotations(old)
    if HELD_ANNOTATION in old_annotations or KILLED_ANNOTATION in old_annotations:
        return None
    if owned_by_budgeted_workload(new):
        return None
    return _held(adapter)


def gate_bare_pod(body: Mapping[str, Any]) -> MergePatch | None:
    """Hold a new labelled bare pod with the budget's scheduling gate.

    Raises :class:`Rejection` for a pod that names its node: such a pod skips
    the scheduler, so a gate cannot hold it (the API server refuses gates on
    it), and admitting it would run it unbudgeted.
    """
    if not is_bare_pod(body):
        return None
    spec = body.get("spec") or {}
    gates = list(spec.get("schedulingGates") or [])
    if any(gate.get("name") == SCHEDULING_GATE for gate in gates):
        return None
    if spec.get("nodeName"):
        meta = body.get("metadata") or {}
        raise Rejection(
            f"Pod {meta.get('namespace')}/{meta.get('name') or meta.get('generateName', '')} "
            f"is attached to TrainingBudget {(meta.get('labels') or {}).get(BUDGET_LABEL)!r} "
            f"but sets spec.nodeName, which skips the scheduler and so the budget's hold. "
            f"Select the node with spec.nodeSelector or affinity instead."
        )
    return {
        "metadata": {"annotations": {HELD_ANNOTATION: HELD_AT_ADMISSION}},
        "spec": {"schedulingGates": [*gates, {"name": SCHEDULING_GATE}]},
    }


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def approval_record(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    username: str,
    now: datetime,
) -> tuple[MergePatch | None, list[str]]:
    """Record who approved and when, from the request that sets the approved amount.

    Returns the patch and warnings for the user. The record follows the
    amount: set when the amount is added or changed, removed with it, and
    otherwise kept as it was, so it can be neither forged nor lost by edits
    that do not touch the amount. (Who may change the amount at all is the
    approval guard policy's business.)
    """
    before, after = _annotations(old), _annotations(new)
    amount = after.get(APPROVED_AMOUNT_ANNOTATION)
    desired: dict[str, str | None]
    if amount is None:
        desired = {APPROVED_BY_ANNOTATION: None, APPROVED_AT_ANNOTATION: None}
    elif old is None or amount != before.get(APPROVED_AMOUNT_ANNOTATION):
        desired = {APPROVED_BY_ANNOTATION: username, APPROVED_AT_ANNOTATION: rfc3339(now)}
    else:
        desired = {key: before.get(key) for key in (APPROVED_BY_ANNOTATION, APPROVED_AT_ANNOTATION)}
    changes = {key: value for key, value in desired.items() if after.get(key) != value}
    warnings = [
        f"{key} is recorded by gpu-budget-operator from the request that sets "
        f"{APPROVED_AMOUNT_ANNOTATION}; the value in this request was replaced"
        for key in changes
        if key in after and after.get(key) != before.get(key)
    ]
    if not changes:
        return None, warnings
    return {"metadata": {"annotations": changes}}, warnings


# ------------------------------------------------------------------------ kopf shell


def _apply(patch: kopf.Patch, merge: Mapping[str, Any]) -> None:
    """Merge a JSON merge patch into kopf's patch (which kopf turns into a JSON patch)."""

    def into(target: Any, source: Mapping[str, Any]) -> None:
        for key, value in source.items():
            if isinstance(value, Mapping):
                if not isinstance(target.get(key), Mapping):
                    target[key] = {}
                into(target[key], value)
            else:
                target[key] = value

    into(patch, merge)


def in_namespaces(config: OperatorConfig) -> Callable[..., bool]:
    """Serve only the operator's namespaces; other namespaces' requests pass unchanged."""

    def serves(namespace: str | None, **_: Any) -> bool:
        return not config.namespaces or namespace in config.namespaces

    return serves


def _hold_on_create_handler(adapter: WorkloadAdapter) -> Callable[..., None]:
    def hold_new_workload(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        merge = hold_on_create(adapter, body)
        if merge is not None:
            _apply(patch, merge)

    return hold_new_workload


def _hold_on_unsuspend_handler(adapter: WorkloadAdapter) -> Callable[..., None]:
    def hold_unsuspended_workload(
        old: kopf.Body | None, new: kopf.Body | None, patch: kopf.Patch, **_: Any
    ) -> None:
        if old is None or new is None:
            return
        merge = hold_on_unsuspend(adapter, old, new)
        if merge is not None:
            _apply(patch, merge)

    return hold_unsuspended_workload


def gate_new_pod(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    try:
        merge = gate_bare_pod(body)
    except Rejection as rejection:
        raise kopf.AdmissionError(str(rejection), code=422) from None
    if merge is not None:
        _apply(patch, merge)


def record_approval(
    *,
    userinfo: kopf.UserInfo,
    patch: kopf.Patch,
    warnings: list[str],
    old: kopf.Body | None = None,
    new: kopf.Body | None = None,
    **_: Any,
) -> None:
    if new is None:
        return
    merge, notes = approval_record(old, new, str(userinfo.get("username", "")), datetime.now(UTC))
    warnings.extend(notes)
    if merge is not None:
        _apply(patch, merge)


def _configure_server(config: OperatorConfig) -> Callable[..., None]:
    def configure_admission(settings: kopf.OperatorSettings, **_: Any) -> None:
        """Serve HTTPS with the given certificate; manage the configurations in dev mode.

        kopf's own certificate generation is not used: its optional
        dependencies do not work with OpenSSL 3. hack/webhook-certs.sh makes
        a CA and a serving certificate for local use; a cluster uses
        cert-manager or the chart's. kopf re-reads the files when they change.
        """
        settings.admission.server = kopf.WebhookServer(
            addr=config.webhook_address,
            port=config.webhook_port,
            host=config.webhook_host,
            certfile=config.webhook_cert_file,
            pkeyfile=config.webhook_key_file,
            cafile=config.webhook_ca_file,
        )
        settings.admission.managed = (
            config.webhook_config_name if config.manage_webhook_config else None
        )
        # One access-log line per admission request (every update of every budget)
        # is noise next to kopf's own line per handler; errors are still logged.
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
        log.info(
            "admission webhooks",
            port=config.webhook_port,
            managed=settings.admission.managed,
            namespaces=list(config.namespaces) or "all",
        )

    return configure_admission


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
    """Attach the admission webhooks to ``registry``; nothing without a serving certificate.

    Handler ids are the URL paths of the webhooks (``/hold-jobs``, ...), stable
    for webhook configurations rendered outside kopf.
    """
    if not config.webhooks_enabled:
        return
    kopf.on.startup(registry=registry)(_configure_server(config))
    serves = in_namespaces(config)
    labelled = {BUDGET_LABEL: kopf.PRESENT}
    for adapter in SUSPENDABLE:
        kopf.on.mutate(
            adapter.group,
            adapter.version,
            adapter.plural,
            id=f"hold-{adapter.plural}",
            operations=["CREATE"],
            labels=labelled,
            when=serves,
            persistent=True,
            registry=registry,
        )(_hold_on_create_handler(adapter))
        kopf.on.mutate(
            adapter.group,
            adapter.version,
            adapter.plural,
            id=f"hold-unsuspended-{adapter.plural}",
            operations=["UPDATE"],
            labels=labelled,
            when=serves,
            ignore_failures=True,
            registry=registry,
        )(_hold_on_unsuspend_handler(adapter))
    pods = ADAPTERS_BY_KIND["Pod"]
    kopf.on.mutate(
        pods.group,
        pods.version,
        pods.plural,
        id="gate-pods",
        operations=["CREATE"],
        labels=labelled,
        when=serves,
        persistent=True,
        registry=registry,
    )(gate_new_pod)
    kopf.on.mutate(
        GROUP,
        VERSION,
        "trainingbudgets",
        id="record-approval",
        operations=["CREATE", "UPDATE"],
        when=serves,
        ignore_failures=True,
        registry=registry,
    )(record_approval)
