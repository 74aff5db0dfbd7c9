"""Mutating admission: objects in, merge patches out; the flags; the webhooks kopf builds."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import kopf
import pytest
from kopf._cogs.structs import references
from kopf._core.engines.admission import build_webhooks

from gpu_budget import (
    ADMITTED_ANNOTATION,
    APPROVAL_REASON_ANNOTATION,
    APPROVED_AMOUNT_ANNOTATION,
    APPROVED_AT_ANNOTATION,
    APPROVED_BY_ANNOTATION,
    APPROVED_CAP_ANNOTATION,
    BUDGET_LABEL,
)
from gpu_budget.admission import (
    HELD_AT_ADMISSION,
    OwnerLookup,
    Rejection,
    _apply,
    approval_record,
    budgeted_owner,
    gate_pod,
    hold_on_create,
    hold_on_unsuspend,
    owner_vouches,
    register,
)
from gpu_budget.config import OperatorConfig, parse_args
from gpu_budget.workloads import ADAPTERS_BY_KIND, HELD_ANNOTATION, KILLED_ANNOTATION
from gpu_budget.workloads.pod import SCHEDULING_GATE

JOB = ADAPTERS_BY_KIND["Job"]
JOBSET = ADAPTERS_BY_KIND["JobSet"]
PYTORCHJOB = ADAPTERS_BY_KIND["PyTorchJob"]
NOW = datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=UTC)
GPU_POD_SPEC = {"containers": [{"name": "t", "resources": {"limits": {"nvidia.com/gpu": 8}}}]}


def meta(**annotations: str) -> dict[str, Any]:
    return {
        "name": "train",
        "namespace": "ml-team",
        "labels": {BUDGET_LABEL: "run"},
        "annotations": annotations,
    }


def job(suspend: bool | None = None, **annotations: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"template": {"spec": GPU_POD_SPEC}}
    if suspend is not None:
        spec["suspend"] = suspend
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta(**annotations), "spec": spec}


def pytorchjob(suspend: bool | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"pytorchReplicaSpecs": {"Master": {"template": {"spec": GPU_POD_SPEC}}}}
    if suspend is not None:
        spec["runPolicy"] = {"suspend": suspend}
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": meta(), "spec": spec}


def owned_by(body: dict[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    body = copy.deepcopy(body)
    body["metadata"]["ownerReferences"] = [
        {"apiVersion": api_version, "kind": kind, "name": "o", "uid": "u", "controller": True}
    ]
    return body


HELD = {"metadata": {"annotations": {HELD_ANNOTATION: HELD_AT_ADMISSION}}}


def owner(kind: str, uid: str = "u", budget: str | None = "run") -> dict[str, Any]:
    """The controller an object names, as the API server returns it."""
    labels = {} if budget is None else {BUDGET_LABEL: budget}
    return {"kind": kind, "metadata": {"name": "o", "uid": uid, "labels": labels}}


def vouched(body: dict[str, Any], controller: dict[str, Any] | None) -> bool:
    """What the webhook's owner lookup finds, given the controller the API server returns."""
    reference = budgeted_owner(body)
    return reference is not None and owner_vouches(body, reference, controller)


# --------------------------------------------------------------- hold at creation


def test_new_labelled_job_is_suspended_and_marked_held() -> None:
    assert hold_on_create(JOB, job(), False) == {"spec": {"suspend": True}, **HELD}
    assert hold_on_create(JOB, job(suspend=False), False) == {"spec": {"suspend": True}, **HELD}


def test_each_kind_is_held_by_its_own_switch() -> None:
    jobset = {"metadata": meta(), "spec": {"replicatedJobs": []}}
    assert hold_on_create(JOBSET, jobset, False) == {"spec": {"suspend": True}, **HELD}
    assert hold_on_create(PYTORCHJOB, pytorchjob(), False) == {
        "spec": {"runPolicy": {"suspend": True}},
        **HELD,
    }


def test_workload_created_suspended_is_the_users_and_left_alone() -> None:
    assert hold_on_create(JOB, job(suspend=True), False) is None
    assert hold_on_create(PYTORCHJOB, pytorchjob(suspend=True), False) is None


def test_jobs_of_a_jobset_are_held_through_the_jobset_but_a_cronjobs_are_held() -> None:
    of_jobset = owned_by(job(), "jobset.x-k8s.io/v1alpha2", "JobSet")
    assert vouched(of_jobset, owner("JobSet"))
    assert hold_on_create(JOB, of_jobset, vouched(of_jobset, owner("JobSet"))) is None
    of_cronjob = owned_by(job(), "batch/v1", "CronJob")
    assert not vouched(of_cronjob, owner("CronJob"))  # not an adapted kind: never exempts
    assert hold_on_create(JOB, of_cronjob, vouched(of_cronjob, owner("CronJob"))) is not None


# ------------------------------------------------------------- hold on unsuspend


def test_user_resuming_their_own_suspension_gets_a_hold_instead() -> None:
    old, new = job(suspend=True), job(suspend=False)
    assert hold_on_unsuspend(JOB, old, new, False) == {"spec": {"suspend": True}, **HELD}
    assert hold_on_unsuspend(PYTORCHJOB, pytorchjob(True), pytorchjob(False), False) == {
        "spec": {"runPolicy": {"suspend": True}},
        **HELD,
    }


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param(job(True, **{HELD_ANNOTATION: "Admission"}), job(False), id="held"),
        pytest.param(job(True, **{KILLED_ANNOTATION: "CapReached"}), job(False), id="killed"),
        pytest.param(job(True), job(True), id="stays-suspended"),
        pytest.param(job(False), job(True), id="suspending"),
        pytest.param(job(False), job(False), id="running"),
    ],
)
def test_other_updates_pass_unchanged(old: dict[str, Any], new: dict[str, Any]) -> None:
    """Held and killed workloads are the hold guard policy's business, not a mutation's."""
    assert hold_on_unsuspend(JOB, old, new, False) is None


def test_only_a_vouching_owner_exempts_an_unsuspend_from_the_hold() -> None:
    """A JobSet's Job is resumed by its JobSet; a forged owner reference gets the hold."""
    forged = owned_by(job(suspend=False), "jobset.x-k8s.io/v1alpha2", "JobSet")
    assert hold_on_unsuspend(JOB, job(suspend=True), forged, False) == {
        "spec": {"suspend": True},
        **HELD,
    }
    assert hold_on_unsuspend(JOB, job(suspend=True), forged, True) is None


# ---------------------------------------------------------------------- bare pods


def bare_pod(**spec: Any) -> dict[str, Any]:
    return {"metadata": meta(), "spec": {**GPU_POD_SPEC, **spec}}


def test_bare_pod_is_gated_and_marked_held() -> None:
    assert gate_pod(bare_pod(), False) == {
        "metadata": {"annotations": {HELD_ANNOTATION: HELD_AT_ADMISSION}},
        "spec": {"schedulingGates": [{"name": SCHEDULING_GATE}]},
    }


def test_other_scheduling_gates_are_kept() -> None:
    patch = gate_pod(bare_pod(schedulingGates=[{"name": "example.com/quota"}]), False)
    assert patch is not None
    assert patch["spec"]["schedulingGates"] == [
        {"name": "example.com/quota"},
        {"name": SCHEDULING_GATE},
    ]


def test_already_gated_or_controlled_pods_pass() -> None:
    assert gate_pod(bare_pod(schedulingGates=[{"name": SCHEDULING_GATE}]), False) is None
    of_job = owned_by(bare_pod(), "batch/v1", "Job")
    assert vouched(of_job, owner("Job"))
    assert gate_pod(of_job, vouched(of_job, owner("Job"))) is None


def test_pod_pinned_to_a_node_is_rejected_with_a_way_out() -> None:
    with pytest.raises(Rejection, match=r"Pod ml-team/train .* sets spec.nodeName.*nodeSelector"):
        gate_pod(bare_pod(nodeName="g5-spot-0"), False)


# ---------------------------------------------------------------- approval record


def budget(**annotations: str) -> dict[str, Any]:
    return {"metadata": {"name": "run", "namespace": "ml-team", "annotations": annotations}}


AMOUNT, BY, AT = APPROVED_AMOUNT_ANNOTATION, APPROVED_BY_ANNOTATION, APPROVED_AT_ANNOTATION
CAP, REASON = APPROVED_CAP_ANNOTATION, APPROVAL_REASON_ANNOTATION
RECORDED = {AMOUNT: "50000", BY: "carol", AT: "2026-02-01T00:00:00Z"}


def test_approval_records_approver_and_time() -> None:
    patch, warnings = approval_record(budget(), budget(**{AMOUNT: "50000"}), "bob", NOW)
    assert patch == {"metadata": {"annotations": {BY: "bob", AT: "2026-03-01T12:30:05Z"}}}
    assert warnings == []


def test_changed_amount_is_a_new_approval() -> None:
    patch, _ = approval_record(
        budget(**RECORDED), budget(**{**RECORDED, AMOUNT: "9e4"}), "bob", NOW
    )
    assert patch == {"metadata": {"annotations": {BY: "bob", AT: "2026-03-01T12:30:05Z"}}}


def test_created_with_an_amount_is_recorded_too() -> None:
    """Who may do that is the policy's question; the record is true either way."""
    patch, _ = approval_record(None, budget(**{AMOUNT: "1"}), "alice", NOW)
    assert patch == {"metadata": {"annotations": {BY: "alice", AT: "2026-03-01T12:30:05Z"}}}


def test_withdrawn_approval_takes_its_record_along() -> None:
    new = budget(**{BY: "carol", AT: "2026-02-01T00:00:00Z"})
    patch, _ = approval_record(budget(**RECORDED), new, "bob", NOW)
    assert patch == {"metadata": {"annotations": {BY: None, AT: None}}}


def test_record_cannot_be_rewritten_without_a_new_approval() -> None:
    forged = budget(**{**RECORDED, BY: "mallory"})
    patch, warnings = approval_record(budget(**RECORDED), forged, "mallory", NOW)
    assert patch == {"metadata": {"annotations": {BY: "carol"}}}
    assert warnings == [
        f"{BY} is recorded by gpu-budget-operator from the request that sets {AMOUNT}; "
        "the value in this request was replaced"
    ]


def test_the_reason_goes_with_the_amount() -> None:
    """Finance's reason is kept as given with a new amount, and only then."""
    why = "Q4 LLM pretraining, approved by the CFO"
    given = budget(**{AMOUNT: "50000", REASON: why})
    patch, warnings = approval_record(budget(), given, "bob", NOW)
    assert patch == {"metadata": {"annotations": {BY: "bob", AT: "2026-03-01T12:30:05Z"}}}
    assert warnings == []
    recorded = {**RECORDED, REASON: why}
    reworded = budget(**{**recorded, REASON: "because I said so"})
    patch, warnings = approval_record(budget(**recorded), reworded, "mallory", NOW)
    assert patch == {"metadata": {"annotations": {REASON: why}}}
    assert len(warnings) == 1 and REASON in warnings[0]
    withdrawn, _ = approval_record(budget(**recorded), budget(**{REASON: why}), "bob", NOW)
    assert withdrawn == {"metadata": {"annotations": {REASON: None}}}


def test_unrelated_updates_leave_the_record_alone() -> None:
    """The operator's own annotation patches go through this webhook on every pass."""
    new = budget(**RECORDED, **{"gpubudget.dev/last-handled-configuration": "{}"})
    assert approval_record(budget(**RECORDED), new, "admin", NOW) == (None, [])
    assert approval_record(budget(), budget(), "alice", NOW) == (None, [])


# ------------------------------------------------------------- patches in kopf's hands


def test_merge_patch_becomes_the_json_patch_kopf_sends() -> None:
    body = kopf.Body(cast(kopf.RawBody, job()))
    patch = kopf.Patch(body=body)
    merge = hold_on_create(JOB, body, False)
    assert merge is not None
    _apply(patch, merge)
    ops = patch.as_json_patch()
    assert {"op": "add", "path": "/spec/suspend", "value": True} in ops
    assert {
        "op": "add",
        "path": "/metadata/annotations/gpubudget.dev~1held",
        "value": "Admission",
    } in ops


def test_removal_becomes_a_json_patch_remove() -> None:
    body = kopf.Body(cast(kopf.RawBody, budget(**{BY: "carol", AT: "x", "team": "ml"})))
    patch = kopf.Patch(body=body)
    merge, _ = approval_record(budget(**RECORDED), body, "bob", NOW)
    assert merge is not None
    _apply(patch, merge)
    assert sorted(op["path"] for op in patch.as_json_patch() if op["op"] == "remove") == [
        "/metadata/annotations/gpubudget.dev~1approved-at",
        "/metadata/annotations/gpubudget.dev~1approved-by",
    ]


# ------------------------------------------------------------------------- config


def certs(tmp_path: Path) -> list[str]:
    return [
        f"--webhook-cert-file={tmp_path / 'tls.crt'}",
        f"--webhook-key-file={tmp_path / 'tls.key'}",
    ]


def test_no_webhook_flags_no_webhooks(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CERT_FILE", "KEY_FILE", "CA_FILE", "HOST", "PORT", "MANAGE_WEBHOOK_CONFIG"):
        monkeypatch.delenv(f"GPUBUDGET_WEBHOOK_{name}", raising=False)
    config = parse_args([])
    assert not config.webhooks_enabled
    assert config.webhook_port == 38443
    registry = kopf.OperatorRegistry()
    register(registry, config)
    assert registry._webhooks.get_all_handlers() == []
    assert registry._activities.get_all_handlers() == []


def test_webhook_flags_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUBUDGET_WEBHOOK_PORT", "9443")
    monkeypatch.setenv("GPUBUDGET_WEBHOOK_CA_FILE", str(tmp_path / "ca.crt"))
    monkeypatch.setenv("GPUBUDGET_MANAGE_WEBHOOK_CONFIG", "true")
    config = parse_args([*certs(tmp_path), "--webhook-host=localhost"])
    assert config.webhooks_enabled
    assert config.webhook_port == 9443
    assert config.webhook_ca_file == tmp_path / "ca.crt"
    assert config.manage_webhook_config
    assert config.webhook_config_name == "gpubudget.dev"
    assert config.webhook_host == "localhost"


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"webhook_cert_file": Path("tls.crt")}, "go together"),
        ({"webhook_key_file": Path("tls.key")}, "go together"),
        ({"manage_webhook_config": True}, "needs --webhook-cert-file"),
        ({"webhook_host": "h"}, "needs --webhook-cert-file"),
        (
            {
                "webhook_cert_file": Path("tls.crt"),
                "webhook_key_file": Path("tls.key"),
                "manage_webhook_config": True,
            },
            "needs --webhook-ca-file",
        ),
    ],
)
def test_inconsistent_webhook_flags_are_refused(kwargs: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        OperatorConfig(**kwargs)


# --------------------------------------------------------- the webhooks kopf builds

RESOURCES = [
    references.Resource("batch", "v1", "jobs", kind="Job", namespaced=True),
    references.Resource("jobset.x-k8s.io", "v1alpha2", "jobsets", kind="JobSet", namespaced=True),
    references.Resource("kubeflow.org", "v1", "pytorchjobs", kind="PyTorchJob", namespaced=True),
    references.Resource("", "v1", "pods", kind="Pod", namespaced=True),
    references.Resource(
        "gpubudget.dev", "v1alpha1", "trainingbudgets", kind="TrainingBudget", namespaced=True
    ),
]


def webhooks_config(tmp_path: Path) -> OperatorConfig:
    return OperatorConfig(
        webhook_cert_file=tmp_path / "tls.crt", webhook_key_file=tmp_path / "tls.key"
    )


def built_webhooks(tmp_path: Path, persistent_only: bool = False) -> dict[str, dict[str, Any]]:
    """The webhook configuration entries kopf writes in managed mode."""
    registry = kopf.OperatorRegistry()
    register(registry, webhooks_config(tmp_path))
    webhooks = build_webhooks(
        registry._webhooks.get_all_handlers(),
        resources=RESOURCES,
        name_suffix="gpubudget.dev",
        client_config={"url": "https://127.0.0.1:38443"},
        persistent_only=persistent_only,
    )
    return {webhook["name"]: webhook for webhook in webhooks}


def test_holds_fail_closed_and_only_see_labelled_objects(tmp_path: Path) -> None:
    webhooks = built_webhooks(tmp_path)
    for name, resource, operation in [
        ("hold-jobs", "jobs", "CREATE"),
        ("hold-jobsets", "jobsets", "CREATE"),
        ("hold-pytorchjobs", "pytorchjobs", "CREATE"),
        ("gate-pods", "pods", "CREATE"),
    ]:
        webhook = webhooks[f"{name}.gpubudget.dev"]
        assert webhook["failurePolicy"] == "Fail"
        assert webhook["sideEffects"] == "None"
        assert webhook["objectSelector"] == {
            "matchExpressions": [{"key": BUDGET_LABEL, "operator": "Exists"}]
        }
        assert [(r["resources"], r["operations"]) for r in webhook["rules"]] == [
            ([resource], [operation])
        ]
        assert webhook["clientConfig"]["url"] == f"https://127.0.0.1:38443/{name}"


def test_update_holds_and_approval_records_fail_open(tmp_path: Path) -> None:
    webhooks = built_webhooks(tmp_path)
    for plural in ("jobs", "jobsets", "pytorchjobs"):
        webhook = webhooks[f"hold-unsuspended-{plural}.gpubudget.dev"]
        assert webhook["failurePolicy"] == "Ignore"
        assert webhook["rules"][0]["operations"] == ["UPDATE"]
    record = webhooks["record-approval.gpubudget.dev"]
    assert record["failurePolicy"] == "Ignore"
    assert record["objectSelector"] is None
    assert record["rules"] == [
        {
            "apiGroups": ["gpubudget.dev"],
            "apiVersions": ["v1alpha1"],
            "resources": ["trainingbudgets"],
            "operations": ["CREATE", "UPDATE"],
            "scope": "*",
        }
    ]


def test_only_holds_on_creation_stay_registered_while_the_operator_is_down(
    tmp_path: Path,
) -> None:
    assert sorted(built_webhooks(tmp_path, persistent_only=True)) == [
        "gate-pods.gpubudget.dev",
        "hold-jobs.gpubudget.dev",
        "hold-jobsets.gpubudget.dev",
        "hold-pytorchjobs.gpubudget.dev",
    ]


async def test_startup_configures_the_server_and_managed_mode(tmp_path: Path) -> None:
    registry = kopf.OperatorRegistry()
    config = webhooks_config(tmp_path).model_copy(
        update={
            "webhook_ca_file": tmp_path / "ca.crt",
            "manage_webhook_config": True,
            "webhook_config_name": "dev.gpubudget.dev",
            "webhook_port": 9443,
        }
    )
    register(registry, config)
    settings = kopf.OperatorSettings()
    for handler in registry._activities.get_all_handlers():
        cast(Any, handler.fn)(settings=settings)
    server = settings.admission.server
    assert isinstance(server, kopf.WebhookServer)
    assert (server.port, server.certfile, server.cafile) == (
        9443,
        tmp_path / "tls.crt",
        tmp_path / "ca.crt",
    )
    assert settings.admission.managed == "dev.gpubudget.dev"


# ----------------------------------------------------------------- owner checks


def test_only_a_controller_of_an_adapted_kind_is_a_budgeted_owner() -> None:
    reference = budgeted_owner(owned_by(job(), "jobset.x-k8s.io/v1alpha2", "JobSet"))
    assert reference is not None
    assert (reference.api_version, reference.kind, reference.name, reference.uid) == (
        "jobset.x-k8s.io/v1alpha2",
        "JobSet",
        "o",
        "u",
    )
    assert budgeted_owner(job()) is None
    assert budgeted_owner(owned_by(job(), "batch/v1", "CronJob")) is None
    assert budgeted_owner(owned_by(bare_pod(), "apps/v1", "ReplicaSet")) is None
    not_controller = owned_by(job(), "jobset.x-k8s.io/v1alpha2", "JobSet")
    not_controller["metadata"]["ownerReferences"][0]["controller"] = False
    assert budgeted_owner(not_controller) is None


def test_a_real_owner_of_the_same_budget_vouches() -> None:
    body = owned_by(bare_pod(), "batch/v1", "Job")
    assert vouched(body, owner("Job"))


@pytest.mark.parametrize(
    "controller",
    [
        pytest.param(None, id="missing"),
        pytest.param(owner("Job", uid="another-uid"), id="wrong-uid"),
        pytest.param(owner("Job", budget="other-budget"), id="other-budget"),
        pytest.param(owner("Job", budget=None), id="unlabelled"),
    ],
)
def test_an_owner_that_is_not_the_one_named_or_not_budgeted_alike_does_not_vouch(
    controller: dict[str, Any] | None,
) -> None:
    body = owned_by(bare_pod(), "batch/v1", "Job")
    assert not vouched(body, controller)
    # A workload whose owner does not vouch is held itself.
    of_jobset = owned_by(job(), "jobset.x-k8s.io/v1alpha2", "JobSet")
    assert hold_on_create(JOB, of_jobset, vouched(of_jobset, controller)) == {
        "spec": {"suspend": True},
        **HELD,
    }


def test_a_pod_naming_an_owner_that_does_not_vouch_is_refused_naming_it() -> None:
    forged = owned_by(bare_pod(), "batch/v1", "Job")
    forged["metadata"]["ownerReferences"][0].update({"name": "ghost", "uid": "ghost-uid"})
    with pytest.raises(Rejection) as refused:
        gate_pod(forged, vouched(forged, None))
    message = str(refused.value)
    assert "Job ghost (uid ghost-uid)" in message
    assert "ml-team/train" in message and "'run'" in message
    assert BUDGET_LABEL in message


def test_a_replicaset_pod_is_gated_like_a_bare_pod() -> None:
    pod = owned_by(bare_pod(), "apps/v1", "ReplicaSet")
    assert not vouched(pod, owner("ReplicaSet"))
    assert gate_pod(pod, False) == {
        "metadata": {"annotations": {HELD_ANNOTATION: HELD_AT_ADMISSION}},
        "spec": {"schedulingGates": [{"name": SCHEDULING_GATE}]},
    }


def test_a_pod_of_a_vouching_owner_is_not_gated_even_if_pinned_to_a_node() -> None:
    """Its Job is held (and stopped) instead; the pod is not this webhook's to hold."""
    pod = owned_by(bare_pod(nodeName="g5-spot-0"), "batch/v1", "Job")
    assert gate_pod(pod, True) is None


def test_unsuspending_a_workload_its_budget_admitted_is_the_owners_right() -> None:
    old = job(True, **{ADMITTED_ANNOTATION: "budget-uid"})
    assert hold_on_unsuspend(JOB, old, job(False), False) is None


async def test_the_owner_lookup_reads_the_named_owner_from_the_api_server() -> None:
    calls: list[tuple[str, str, str, str]] = []

    class Client:
        async def get(
            self, api_version: str, kind: str, namespace: str, name: str
        ) -> dict[str, Any] | None:
            calls.append((api_version, kind, namespace, name))
            return owner(kind) if name == "o" else None

    lookup = OwnerLookup()
    lookup._client = cast(Any, Client())
    assert await lookup.vouches(owned_by(bare_pod(), "batch/v1", "Job"))
    assert calls == [("batch/v1", "Job", "ml-team", "o")]
    assert not await lookup.vouches(bare_pod())  # names no owner: nothing to look up
    assert not await lookup.vouches(owned_by(bare_pod(), "apps/v1", "ReplicaSet"))
    assert len(calls) == 1
    missing = owned_by(bare_pod(), "batch/v1", "Job")
    missing["metadata"]["ownerReferences"][0]["name"] = "gone"
    assert not await lookup.vouches(missing)


# ----------------------------------------------------------- the approved cap


def priced_budget(cost_cap: object, **annotations: str) -> dict[str, Any]:
    body = budget(**annotations)
    body["spec"] = {"costCap": cost_cap}
    return body


def test_approval_records_the_cap_it_approves() -> None:
    patch, warnings = approval_record(
        priced_budget(20000), priced_budget(20000, **{AMOUNT: "20000"}), "bob", NOW
    )
    assert patch == {
        "metadata": {"annotations": {BY: "bob", AT: "2026-03-01T12:30:05Z", CAP: "20000"}}
    }
    assert warnings == []
    patch, _ = approval_record(None, priced_budget(1500.5, **{AMOUNT: "2000"}), "alice", NOW)
    assert patch is not None and patch["metadata"]["annotations"][CAP] == "1500.5"


def test_raising_the_cap_does_not_move_the_recorded_cap() -> None:
    approved = {**RECORDED, CAP: "50000"}
    patch, warnings = approval_record(
        priced_budget(50000, **approved), priced_budget(80000, **approved), "alice", NOW
    )
    assert (patch, warnings) == (None, [])


def test_a_forged_recorded_cap_is_put_back() -> None:
    approved = {**RECORDED, CAP: "50000"}
    patch, warnings = approval_record(
        priced_budget(50000, **approved),
        priced_budget(80000, **{**approved, CAP: "80000"}),
        "mallory",
        NOW,
    )
    assert patch == {"metadata": {"annotations": {CAP: "50000"}}}
    assert len(warnings) == 1 and warnings[0].startswith(CAP)


def test_a_new_amount_records_the_cap_of_that_moment() -> None:
    approved = {**RECORDED, CAP: "50000"}
    patch, _ = approval_record(
        priced_budget(50000, **approved),
        priced_budget(80000, **{**approved, AMOUNT: "80000"}),
        "bob",
        NOW,
    )
    assert patch == {
        "metadata": {"annotations": {BY: "bob", AT: "2026-03-01T12:30:05Z", CAP: "80000"}}
    }


def test_a_withdrawn_approval_takes_the_recorded_cap_along() -> None:
    approved = {**RECORDED, CAP: "50000"}
    new = priced_budget(50000, **{BY: "carol", AT: "2026-02-01T00:00:00Z", CAP: "50000"})
    patch, _ = approval_record(priced_budget(50000, **approved), new, "bob", NOW)
    assert patch == {"metadata": {"annotations": {BY: None, AT: None, CAP: None}}}
