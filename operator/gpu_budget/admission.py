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
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
import structlog
from pydantic import BaseModel, ConfigDict

from gpu_budget import (
    ADMITTED_ANNOTATION,
    APPROVAL_REASON_ANNOTATION,
    APPROVED_AMOUNT_ANNOTATION,
    APPROVED_AT_ANNOTATION,
    APPROVED_BY_ANNOTATION,
    APPROVED_CAP_ANNOTATION,
    BUDGET_LABEL,
    GROUP,
    VERSION,
)
from gpu_budget.config import OperatorConfig
from gpu_budget.formats import rfc3339
from gpu_budget.kube import ClusterClient
from gpu_budget.workloads import (
    ADAPTERS,
    CONTROLLERS,
    HELD_ANNOTATION,
    HELD_AT_ADMISSION,
    KILLED_ANNOTATION,
    SchedulingGated,
    SuspendSwitch,
)
from gpu_budget.workloads.base import controller_of
from gpu_budget.workloads.pod import SCHEDULING_GATE

log = structlog.get_logger("gpu_budget.admission")

MergePatch = dict[str, Any]

BUDGETED_CONTROLLERS = frozenset((a.group, a.kind) for a in CONTROLLERS)
"""(API group, kind) of the controllers whose children they hold and stop themselves."""


class Rejection(Exception):
    """The request must be denied; the message tells the user what to change."""


class OwnerReference(BaseModel):
    """A controller reference that names an adapted workload kind, to be checked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_version: str
    kind: str
    name: str
    uid: str


def _annotations(body: Mapping[str, Any] | None) -> Mapping[str, str]:
    if body is None:
        return {}
    return (body.get("metadata") or {}).get("annotations") or {}


def _labels(body: Mapping[str, Any] | None) -> Mapping[str, str]:
    if body is None:
        return {}
    return (body.get("metadata") or {}).get("labels") or {}


def budgeted_owner(body: Mapping[str, Any]) -> OwnerReference | None:
    """The controller reference that would exempt ``body`` from its own hold, if any.

    Only a controller of an adapted kind (a JobSet's Job, a Job's pod) exempts:
    that controller is held and stopped instead. Whether the reference is true
    is :func:`owner_vouches`' business.
    """
    owner = controller_of(body)
    if owner is None:
        return None
    api_version = str(owner.get("apiVersion", ""))
    if (api_version.rpartition("/")[0], owner.get("kind")) not in BUDGETED_CONTROLLERS:
        return None
    return OwnerReference(
        api_version=api_version,
        kind=str(owner.get("kind")),
        name=str(owner.get("name", "")),
        uid=str(owner.get("uid", "")),
    )


def owner_vouches(
    body: Mapping[str, Any], reference: OwnerReference, owner: Mapping[str, Any] | None
) -> bool:
    """The named owner exists, is the one named (uid), and spends from the same budget.

    Anyone may write an ownerReference; only a real, budgeted owner makes the
    object its owner's business rather than a workload to hold.
    """
    if owner is None:
        return False
    meta = owner.get("metadata") or {}
    return meta.get("uid") == reference.uid and (
        _labels(owner).get(BUDGET_LABEL) == _labels(body).get(BUDGET_LABEL)
    )


def hold_on_create(
    adapter: SuspendSwitch, body: Mapping[str, Any], owner_is_budgeted: bool
) -> MergePatch | None:
    """Suspend a new labelled workload; None when the user created it suspended.

    ``owner_is_budgeted``: its controller reference was checked by
    :func:`owner_vouches` (a JobSet's Job is held through its JobSet).
    """
    if adapter.is_suspended(body) or owner_is_budgeted:
        return None
    return adapter.admission_hold()


def hold_on_unsuspend(
    adapter: SuspendSwitch,
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    owner_is_budgeted: bool,
) -> MergePatch | None:
    """Turn a user's unsuspend of a workload its budget never admitted into a hold.

    The operator then releases it when the budget allows, as for a new one.
    Workloads the operator holds or killed are the hold guard policy's
    business (only the operator may release them), so they pass unchanged; so
    do workloads a budget admitted, which their owner may pause and resume.
    """
    if not (adapter.is_suspended(old) and not adapter.is_suspended(new)):
        return None
    old_annotations = _annotations(old)
    if any(
        key in old_annotations for key in (HELD_ANNOTATION, KILLED_ANNOTATION, ADMITTED_ANNOTATION)
    ):
        return None
    if owner_is_budgeted:
        return None
    return adapter.admission_hold()


def gate_pod(body: Mapping[str, Any], owner_is_budgeted: bool) -> MergePatch | None:
    """Hold a new labelled pod with the budget's scheduling gate.

    Pods of an adapted workload (``owner_is_budgeted``) are held through it. A
    labelled pod whose controller reference names an adapted kind that does
    not vouch for it is refused (a forged reference). Any other labelled pod
    (bare, or a ReplicaSet's) is gated and released by the operator.

    Raises :class:`Rejection` for a forged owner, and for a pod that names its
    node: such a pod skips the scheduler, so a gate cannot hold it (the API
    server refuses gates on it), and admitting it would run it unbudgeted.
    """
    meta = body.get("metadata") or {}
    display = f"{meta.get('namespace')}/{meta.get('name') or meta.get('generateName', '')}"
    budget = _labels(body).get(BUDGET_LABEL)
    if owner_is_budgeted:
        return None
    reference = budgeted_owner(body)
    if reference is not None:
        raise Rejection(
            f"Pod {display} is labelled for TrainingBudget {budget!r} and names "
            f"{reference.kind} {reference.name} (uid {reference.uid}) as its controller, but "
            f"no such {reference.kind} spends from that budget. Pods are charged to the "
            f"workload that really owns them: create the {reference.kind} with the "
            f"{BUDGET_LABEL} label and let its controller create the pods."
        )
    spec = body.get("spec") or {}
    gates = list(spec.get("schedulingGates") or [])
    if any(gate.get("name") == SCHEDULING_GATE for gate in gates):
        return None
    if spec.get("nodeName"):
        raise Rejection(
            f"Pod {display} is attached to TrainingBudget {budget!r} "
            f"but sets spec.nodeName, which skips the scheduler and so the budget's hold. "
            f"Select the node with spec.nodeSelector or affinity instead."
        )
    return {
        "metadata": {"annotations": {HELD_ANNOTATION: HELD_AT_ADMISSION}},
        "spec": {"schedulingGates": [*gates, {"name": SCHEDULING_GATE}]},
    }


RECORD_ANNOTATIONS = (
    APPROVED_BY_ANNOTATION,
    APPROVED_AT_ANNOTATION,
    APPROVED_CAP_ANNOTATION,
    APPROVAL_REASON_ANNOTATION,
)
"""The approval's record: who, when, the cap finance approved, and why; it changes only
with the amount."""


def approval_record(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    username: str,
    now: datetime,
) -> tuple[MergePatch | None, list[str]]:
    """Record who approved, when, and for what cap, from the request that sets the amount.

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
        desired = dict.fromkeys(RECORD_ANNOTATIONS)
    elif old is None or amount != before.get(APPROVED_AMOUNT_ANNOTATION):
        cap = (new.get("spec") or {}).get("costCap")
        desired = {
            APPROVED_BY_ANNOTATION: username,
            APPROVED_AT_ANNOTATION: rfc3339(now),
            APPROVED_CAP_ANNOTATION: None if cap is None else str(cap),
            # Finance's own words, given with this amount (or none given).
            APPROVAL_REASON_ANNOTATION: after.get(APPROVAL_REASON_ANNOTATION),
        }
    else:
        desired = {key: before.get(key) for key in RECORD_ANNOTATIONS}
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


class OwnerLookup:
    """Reads the owner a new object names, from the API server (never from a cache).

    A JobSet creates its Jobs, and a Job its pods, moments after it is created
    itself: a watch-fed cache may not have it yet, and a wrong "no such owner"
    would hold or refuse a legitimate child.
    """

    def __init__(self) -> None:
        self._client: ClusterClient | None = None

    async def vouches(self, body: Mapping[str, Any]) -> bool:
        reference = budgeted_owner(body)
        if reference is None:
            return False
        if self._client is None:
            self._client = ClusterClient()
        namespace = str((body.get("metadata") or {}).get("namespace", ""))
        owner = await self._client.get(
            reference.api_version, reference.kind, namespace, reference.name
        )
        return owner_vouches(body, reference, owner)


def _hold_on_create_handler(
    adapter: SuspendSwitch, owners: OwnerLookup
) -> Callable[..., Awaitable[None]]:
    async def hold_new_workload(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        merge = hold_on_create(adapter, body, await owners.vouches(body))
        if merge is not None:
            _apply(patch, merge)

    return hold_new_workload


def _hold_on_unsuspend_handler(
    adapter: SuspendSwitch, owners: OwnerLookup
) -> Callable[..., Awaitable[None]]:
    async def hold_unsuspended_workload(
        old: kopf.Body | None, new: kopf.Body | None, patch: kopf.Patch, **_: Any
    ) -> None:
        if old is None or new is None:
            return
        merge = hold_on_unsuspend(adapter, old, new, await owners.vouches(new))
        if merge is not None:
            _apply(patch, merge)

    return hold_unsuspended_workload


def _gate_new_pod_handler(owners: OwnerLookup) -> Callable[..., Awaitable[None]]:
    async def gate_new_pod(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        try:
            merge = gate_pod(body, await owners.vouches(body))
        except Rejection as rejection:
            raise kopf.AdmissionError(str(rejection), code=422) from None
        if merge is not None:
            _apply(patch, merge)

    return gate_new_pod


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
    owners = OwnerLookup()
    labelled = {BUDGET_LABEL: kopf.PRESENT}
    # Each kind is held the way its capabilities say: a suspend switch is patched at
    # creation and on a user's unsuspend, a scheduling-gated kind is gated at creation.
    for adapter in ADAPTERS:
        if isinstance(adapter, SuspendSwitch):
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
            )(_hold_on_create_handler(adapter, owners))
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
            )(_hold_on_unsuspend_handler(adapter, owners))
        if isinstance(adapter, SchedulingGated):
            kopf.on.mutate(
                adapter.group,
                adapter.version,
                adapter.plural,
                id=f"gate-{adapter.plural}",
                operations=["CREATE"],
                labels=labelled,
                when=serves,
                persistent=True,
                registry=registry,
            )(_gate_new_pod_handler(owners))
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
