"""The real API server enforces the API generated from models.py (schema + CEL rules).

Each manifest in invalid_budgets/ carries a ``# expect: <substring>`` line: the part
of the API server's error that names the field. Every one is sent twice, as
``kubectl create`` and as ``kubectl apply --server-side`` (both with kubectl's
default strict field validation, and ``--dry-run=server`` so that nothing is
stored), and must be rejected with that substring both times. The same manifests
are checked against pydantic and the schema in tests/unit/test_crdgen.py.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpu_budget.models import BudgetPolicySpec, TrainingBudgetSpec

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
INVALID = Path(__file__).parent / "invalid_budgets"
CRD_NAMES = ("trainingbudgets.gpubudget.dev", "budgetpolicies.gpubudget.dev")

GOOD_BUDGET = """\
apiVersion: gpubudget.dev/v1alpha1
kind: TrainingBudget
metadata:
  name: {name}
spec:
  costCap: 2500
  estimate:
    gpus: 8
    hours: 6
    instanceType: p5.48xlarge
    capacityType: spot
  owner:
    team: ml-research
    project: llm-pretrain
"""

FULL_BUDGET = """\
apiVersion: gpubudget.dev/v1alpha1
kind: TrainingBudget
metadata:
  name: {name}
spec:
  costCap: 99.5
  estimate:
    hours: 0.5
    gpuProduct: NVIDIA-H100-80GB-HBM3
  enforcement:
    action: Kill
    warnAt: [0.25, 0.75]
    checkpointLeadSeconds: 0
    idle:
      belowUtilization: 0.05
      forMinutes: 10
      action: Suspend
  owner:
    team: {team}
    costCenter: cc-1
  costModel: Utilization
"""


def _invalid_manifests() -> list[Path]:
    return sorted(INVALID.glob("*.yaml"))


def _expect(path: Path) -> str:
    found = re.findall(r"^# expect: (.+)$", path.read_text(), flags=re.MULTILINE)
    assert len(found) == 1, f"{path.name}: needs exactly one '# expect: <substring>' line"
    return str(found[0]).strip()


@pytest.fixture(scope="module")
def crds(cluster: Any) -> None:
    """The generated CRDs, applied server-side and established."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *(f"crd/{name}" for name in CRD_NAMES),
    )


@pytest.fixture(scope="module")
def budget_ns(cluster: Any, crds: None) -> Iterator[str]:
    name = f"e2e-budget-validation-{secrets.token_hex(3)}"
    manifest = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"gpubudget.dev/e2e": "true"}},
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(manifest))
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_crds_are_accepted_as_structural(cluster: Any, crds: None) -> None:
    for name in CRD_NAMES:
        crd = json.loads(cluster.kubectl("get", "crd", name, "-o", "json").stdout)
        conditions = {c["type"]: c for c in crd["status"]["conditions"]}
        assert conditions["Established"]["status"] == "True", conditions
        assert conditions["NamesAccepted"]["status"] == "True", conditions
        assert "NonStructuralSchema" not in conditions, conditions["NonStructuralSchema"]


def test_there_are_enough_invalid_manifests() -> None:
    assert len(_invalid_manifests()) >= 18


SUBMIT = {
    "create": ("create", "--dry-run=server", "--validate=strict"),
    "apply-server-side": ("apply", "--server-side", "--dry-run=server", "--validate=strict"),
}


@pytest.mark.parametrize("how", SUBMIT)
@pytest.mark.parametrize("path", _invalid_manifests(), ids=lambda p: p.stem)
def test_invalid_budget_is_rejected(cluster: Any, budget_ns: str, path: Path, how: str) -> None:
    expect = _expect(path)
    res = cluster.kubectl(*SUBMIT[how], "-n", budget_ns, "-f", str(path), check=False)
    assert res.returncode != 0, f"the API server accepted {path.name}:\n{res.stdout}"
    assert expect in res.stderr, f"{path.name}: expected {expect!r} in:\n{res.stderr}"


def _get(cluster: Any, ns: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("-n", ns, "get", "trainingbudget", name, "-o", "json").stdout
    obj: dict[str, Any] = json.loads(out)
    return obj


def test_good_budget_is_accepted_and_defaulted(cluster: Any, budget_ns: str) -> None:
    name = f"good-{secrets.token_hex(3)}"
    cluster.kubectl(
        "apply", "--server-side", "-n", budget_ns, "-f", "-", input=GOOD_BUDGET.format(name=name)
    )
    try:
        spec = _get(cluster, budget_ns, name)["spec"]
        assert spec["enforcement"]["action"] == "Suspend"
        assert "warnAt" not in spec["enforcement"]  # the policy's defaultWarnAt applies
        assert spec["enforcement"]["checkpointLeadSeconds"] == 300
        assert spec["costModel"] == "Allocation"
        assert "idle" not in spec["enforcement"]
        # What the API server stored is exactly what pydantic makes of the manifest.
        sent = yaml.safe_load(GOOD_BUDGET.format(name=name))["spec"]
        model = TrainingBudgetSpec.model_validate(sent)
        assert spec == model.model_dump(mode="json", by_alias=True, exclude_none=True)
        assert TrainingBudgetSpec.model_validate(spec) == model
    finally:
        cluster.kubectl("-n", budget_ns, "delete", "trainingbudget", name, "--wait=false")


def test_every_field_set_is_accepted(cluster: Any, budget_ns: str) -> None:
    manifest = FULL_BUDGET.format(name=f"full-{secrets.token_hex(3)}", team="t" * 63)
    res = cluster.kubectl(
        "create", "--dry-run=server", "-n", budget_ns, "-o", "json", "-f", "-", input=manifest
    )
    spec = json.loads(res.stdout)["spec"]
    model = TrainingBudgetSpec.model_validate(yaml.safe_load(manifest)["spec"])
    assert spec == model.model_dump(mode="json", by_alias=True, exclude_none=True)


def test_idle_rule_gets_its_defaults(cluster: Any, budget_ns: str) -> None:
    manifest = GOOD_BUDGET.format(name=f"idle-{secrets.token_hex(3)}")
    doc = yaml.safe_load(manifest)
    doc["spec"]["enforcement"] = {"idle": {}}
    res = cluster.kubectl(
        "create", "--dry-run=server", "-n", budget_ns, "-o", "json", "-f", "-",
        input=json.dumps(doc),
    )  # fmt: skip
    idle = json.loads(res.stdout)["spec"]["enforcement"]["idle"]
    assert idle == {"belowUtilization": 0.1, "forMinutes": 30, "action": "Alert"}


def test_kubectl_explain_documents_every_spec_field(cluster: Any, crds: None) -> None:
    fields = TrainingBudgetSpec.model_json_schema(by_alias=True)["properties"]

    def explained() -> str:
        res = cluster.kubectl("explain", "trainingbudgets.spec", check=False)
        return res.stdout if res.returncode == 0 else ""

    # The OpenAPI document the API server publishes lags CRD changes by a few seconds.
    deadline = time.monotonic() + 60
    text = explained()
    while "costCap" not in text and time.monotonic() < deadline:
        time.sleep(1)
        text = explained()
    flat = " ".join(text.split())
    for name, field in fields.items():
        assert re.search(rf"^\s+{name}\s", text, flags=re.MULTILINE), f"{name} not in:\n{text}"
        assert " ".join(field["description"].split()) in flat, name


def test_budget_policy_must_be_named_default(cluster: Any, crds: None) -> None:
    manifest = {
        "apiVersion": "gpubudget.dev/v1alpha1",
        "kind": "BudgetPolicy",
        "metadata": {"name": "not-default"},
        "spec": {},
    }
    res = cluster.kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(manifest), check=False
    )
    assert res.returncode != 0
    assert "metadata.name must be 'default'" in res.stderr, res.stderr


def test_budget_policy_rules(cluster: Any, crds: None) -> None:
    manifest = {
        "apiVersion": "gpubudget.dev/v1alpha1",
        "kind": "BudgetPolicy",
        "metadata": {"name": "default"},
        "spec": {"defaultWarnAt": [0.9, 0.9], "contingency": 11},
    }
    # Server-side dry run: never touches the policy other tests rely on.
    res = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "--force-conflicts",
        "--field-manager=e2e-budget-validation", "-f", "-",
        input=json.dumps(manifest), check=False,
    )  # fmt: skip
    assert res.returncode != 0
    assert "spec.defaultWarnAt entries must be unique" in res.stderr, res.stderr
    assert "spec.contingency in body should be less than or equal to 10" in res.stderr
    with pytest.raises(ValueError, match="defaultWarnAt entries must be unique"):
        BudgetPolicySpec.model_validate(manifest["spec"])
