"""The CRDs in crds/ are generated from models.py, are structural, and agree with pydantic.

Besides the drift test, this module holds a small validator and defaulter for the
subset of structural OpenAPI v3 that the CRDs use, written after the API server's
(k8s.io/apiextensions-apiserver) behaviour and error messages. It lets the unit
tests check, without a cluster, that every manifest in tests/e2e/invalid_budgets/
is rejected by the schema (or by a CEL rule, whose pydantic mirror must then reject
it with the same message), that pydantic rejects all of them too, and that the
API server's defaulting yields exactly pydantic's defaults.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gpu_budget import crdgen
from gpu_budget.models import (
    BudgetPolicySpec,
    TrainingBudgetSpec,
    TrainingBudgetStatus,
)

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
INVALID = ROOT / "tests" / "e2e" / "invalid_budgets"
TB_FILE = "gpubudget.dev_trainingbudgets.yaml"
BP_FILE = "gpubudget.dev_budgetpolicies.yaml"

Schema = dict[str, Any]


def _root_schema(crd: Schema) -> Schema:
    (version,) = crd["spec"]["versions"]
    schema: Schema = version["schema"]["openAPIV3Schema"]
    return schema


TB = crdgen.training_budget_crd()
BP = crdgen.budget_policy_crd()
TB_ROOT = _root_schema(TB)
BP_ROOT = _root_schema(BP)
TB_SPEC = TB_ROOT["properties"]["spec"]


# ------------------------------------------------------------ a structural validator


def _fmt(value: Any) -> str:
    """Go's %v of a float64, for the bounds in our schemas."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return str(value)


def _go_value(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return _fmt(value)


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
}


def _type_name(value: Any) -> str:
    for name in ("boolean", "integer", "number", "string", "array", "object"):
        if isinstance(value, _TYPES[name]):
            return name
    return "null"


def validate(value: Any, schema: Schema, path: str) -> list[str]:
    """Errors the API server reports for ``value`` at ``path``, CEL rules aside.

    Unknown fields are errors, as under kubectl's default strict field validation.
    """
    errors: list[str] = []
    type_ = schema.get("type")
    if type_ is not None:
        ok = isinstance(value, _TYPES[type_]) and not (
            type_ in ("number", "integer") and isinstance(value, bool)
        )
        # Like the API server, take a float without fraction for an integer.
        ok = ok or (type_ == "integer" and isinstance(value, float) and value.is_integer())
        if not ok:
            got = _type_name(value)
            return [
                f'{path}: Invalid value: "{got}": {path} in body must be of type {type_}: "{got}"'
            ]
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(_go_value(v) for v in schema["enum"])
        errors.append(
            f"{path}: Unsupported value: {_go_value(value)}: supported values: {supported}"
        )
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema:
            lo = schema["minimum"]
            if schema.get("exclusiveMinimum") and value <= lo:
                errors.append(
                    f"{path}: Invalid value: {_fmt(value)}: {path} in body should be "
                    f"greater than {_fmt(lo)}"
                )
            elif value < lo:
                errors.append(
                    f"{path}: Invalid value: {_fmt(value)}: {path} in body should be "
                    f"greater than or equal to {_fmt(lo)}"
                )
        if "maximum" in schema:
            hi = schema["maximum"]
            if schema.get("exclusiveMaximum") and value >= hi:
                errors.append(
                    f"{path}: Invalid value: {_fmt(value)}: {path} in body should be "
                    f"less than {_fmt(hi)}"
                )
            elif value > hi:
                errors.append(
                    f"{path}: Invalid value: {_fmt(value)}: {path} in body should be "
                    f"less than or equal to {_fmt(hi)}"
                )
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: Too long: may not be more than {schema['maxLength']} bytes")
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(
                f'{path}: Invalid value: "{value}": {path} in body should be at least '
                f"{schema['minLength']} chars long"
            )
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(
                f"{path}: Too many: {len(value)}: must have at most {schema['maxItems']} items"
            )
        for i, item in enumerate(value):
            errors += validate(item, schema.get("items", {}), f"{path}[{i}]")
    if isinstance(value, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return errors
        props: dict[str, Schema] = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{path}.{name}: Required value".removeprefix("."))
        for name, item in value.items():
            sub = f"{path}.{name}".removeprefix(".")
            if name in props:
                errors += validate(item, props[name], sub)
            elif "additionalProperties" in schema:
                errors += validate(item, schema["additionalProperties"], sub)
            elif path != "metadata":
                errors.append(f'unknown field "{sub}"')
    return errors


def apply_defaults(value: Any, schema: Schema) -> Any:
    """The API server's structural defaulting: top-down, recursing into defaulted values."""
    value = copy.deepcopy(value)
    if isinstance(value, dict):
        props: dict[str, Schema] = schema.get("properties", {})
        for name, sub in props.items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
        for name in list(value):
            if name in props:
                value[name] = apply_defaults(value[name], props[name])
    elif isinstance(value, list) and "items" in schema:
        value = [apply_defaults(item, schema["items"]) for item in value]
    return value


def _walk(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


def _cel_messages(schema: Schema) -> list[str]:
    return [
        rule["message"]
        for _, node in _walk(schema)
        for rule in node.get("x-kubernetes-validations", [])
    ]


# ---------------------------------------------------------------- drift and CLI


def test_crds_match_models() -> None:
    """Fails when someone edits models.py without running `make crds`."""
    problems = crdgen.check(CRDS)
    assert not problems, "crds/ is stale; run `make crds`:\n" + "".join(problems)


def test_generated_files_are_the_rendered_crds() -> None:
    assert set(crdgen.rendered()) == {TB_FILE, BP_FILE}
    for name, text in crdgen.rendered().items():
        assert text.startswith("# generated by gpu_budget.crdgen from models.py; do not edit\n"), (
            name
        )
        assert yaml.safe_load(text) == crdgen.crds()[name]


def test_check_reports_an_edited_or_missing_file(tmp_path: Path) -> None:
    crdgen.write(tmp_path)
    assert crdgen.check(tmp_path) == []
    path = tmp_path / TB_FILE
    path.write_text(path.read_text().replace("maxLength: 63", "maxLength: 64", 1))
    (tmp_path / BP_FILE).unlink()
    (tmp_path / "gpubudget.dev_stale.yaml").write_text("{}\n")
    problems = crdgen.check(tmp_path)
    assert len(problems) == 3
    assert "-                      maxLength: 64" in problems[0]
    assert "+                      maxLength: 63" in problems[0]
    assert "(missing)" in problems[1]
    assert "gpubudget.dev_stale.yaml" in problems[2]


def test_cli_write_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert crdgen.main(["--write", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([BP_FILE, TB_FILE])
    assert crdgen.main(["--check", str(tmp_path)]) == 0
    capsys.readouterr()
    path = tmp_path / BP_FILE
    path.write_text(path.read_text().replace("default: 10000", "default: 20000"))
    assert crdgen.main(["--check", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert "-                  default: 20000" in out.out
    assert "+                  default: 10000" in out.out
    assert "out of date" in out.err


# ------------------------------------------------------------------- the CRDs


def test_training_budget_names_and_subresources() -> None:
    spec = TB["spec"]
    assert TB["metadata"]["name"] == "trainingbudgets.gpubudget.dev"
    assert spec["group"] == "gpubudget.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "TrainingBudget",
        "listKind": "TrainingBudgetList",
        "plural": "trainingbudgets",
        "singular": "trainingbudget",
        "shortNames": ["tb"],
        "categories": ["gpubudget"],
    }
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    assert TB_ROOT["required"] == ["spec"]


def test_budget_policy_names_and_name_rule() -> None:
    spec = BP["spec"]
    assert BP["metadata"]["name"] == "budgetpolicies.gpubudget.dev"
    assert spec["scope"] == "Cluster"
    assert spec["names"]["plural"] == "budgetpolicies"
    assert spec["names"]["shortNames"] == ["bp"]
    assert spec["names"]["categories"] == ["gpubudget"]
    assert spec["versions"][0]["subresources"] == {"status": {}}
    status = BP_ROOT["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True
    assert [r["rule"] for r in BP_ROOT["x-kubernetes-validations"]] == [
        "self.metadata.name == 'default'"
    ]
    # An empty or absent spec gets every default, and those are pydantic's.
    bp_spec = BP_ROOT["properties"]["spec"]
    assert bp_spec["default"] == {}
    defaulted = apply_defaults({}, BP_ROOT)["spec"]
    assert defaulted == BudgetPolicySpec().model_dump(mode="json", by_alias=True, exclude_none=True)


def test_printer_columns() -> None:
    columns = {
        c["name"]: (c["jsonPath"], c["type"], c.get("priority", 0))
        for c in TB["spec"]["versions"][0]["additionalPrinterColumns"]
    }
    assert columns == {
        "Phase": (".status.phase", "string", 0),
        "Spent": (".status.spent", "number", 0),
        "Cap": (".spec.costCap", "number", 0),
        "Burn/h": (".status.burnRatePerHour", "number", 0),
        "Util": (".status.gpuUtilization", "number", 0),
        "Approved": (".metadata.annotations.gpubudget\\.dev/approved-amount", "string", 1),
        "Age": (".metadata.creationTimestamp", "date", 0),
    }
    # Every column's path exists in the schema (metadata aside).
    for path, _, _ in columns.values():
        if path.startswith(".metadata"):
            continue
        node = TB_ROOT
        for part in path.strip(".").split("."):
            node = node["properties"][part]


FORBIDDEN_KEYS = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "title", "const"}


@pytest.mark.parametrize("crd", [TB, BP], ids=["TrainingBudget", "BudgetPolicy"])
def test_schema_is_structural(crd: Schema) -> None:
    root = _root_schema(crd)
    for path, node in _walk(root):
        assert not FORBIDDEN_KEYS & set(node), f"{path}: {FORBIDDEN_KEYS & set(node)}"
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        assert node.get("additionalProperties") is not False, path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert "nullable" not in node, path  # None means absent; nulls are pruned
        assert node.get("uniqueItems") is not True, path
        for bound in ("Minimum", "Maximum"):
            if f"exclusive{bound}" in node:
                assert node[f"exclusive{bound}"] is True, path
                assert bound.lower() in node, path
        if node.get("type") == "array":
            assert "items" in node, path
        for required in node.get("required", []):
            assert required in node.get("properties", {}), f"{path}: {required}"
        if "default" in node:
            assert validate(node["default"], node, path) == [], f"{path}: default is invalid"
    yaml_text = crdgen.render(crd)
    for word in ("$ref", "anyOf", "'null'", "title:"):
        assert word not in yaml_text


def test_no_defaults_in_status() -> None:
    for path, node in _walk(TB_ROOT["properties"]["status"], "status"):
        assert "default" not in node, path


def test_conditions_are_a_map_keyed_by_type() -> None:
    conditions = TB_ROOT["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"]
    assert conditions["items"]["properties"]["lastTransitionTime"]["format"] == "date-time"


def test_status_schema_accepts_what_the_operator_writes() -> None:
    status = TrainingBudgetStatus.model_validate(
        {
            "phase": "Running",
            "spent": 12.5,
            "estimate": {
                "gpus": 8,
                "hours": 2,
                "gpuHourlyPrice": 4,
                "baseCost": 64,
                "contingency": 0.5,
                "total": 96,
                "pricedFrom": "catalog p5.48xlarge spot",
            },
            "gpuUtilization": 0.7,
            "workloads": [{"kind": "Job", "name": "train", "state": "Running"}],
            "lastAccountedAt": "2025-01-01T00:00:00Z",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Metering",
                    "lastTransitionTime": "2025-01-01T00:00:00Z",
                }
            ],
        }
    )
    for exclude_none in (True, False):
        dumped = status.model_dump(mode="json", by_alias=True, exclude_none=exclude_none)
        if not exclude_none:
            # The API server prunes nulls of non-nullable fields before validating.
            dumped = _prune_nulls(dumped)
        schema = TB_ROOT["properties"]["status"]
        assert validate(dumped, schema, "status") == []


def _prune_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _prune_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_prune_nulls(v) for v in value]
    return value


def _undescribed(schema: Schema, path: str) -> list[str]:
    return [
        f"{p}.{name}"
        for p, node in _walk(schema, path)
        for name, sub in node.get("properties", {}).items()
        if not sub.get("description")
    ]


def test_every_spec_field_is_described() -> None:
    """`kubectl explain trainingbudget.spec` documents every field."""
    assert TB_SPEC.get("description")
    assert _undescribed(TB_SPEC, "spec") == []
    assert _undescribed(BP_ROOT["properties"]["spec"], "spec") == []
    for name in ("spec", "status", "apiVersion", "kind"):
        assert TB_ROOT["properties"][name].get("description"), name


def test_cel_rules_are_cheap() -> None:
    """Rules that iterate a list need maxItems, or the API server rejects the CRD as too costly."""
    for crd in (TB, BP):
        for path, node in _walk(_root_schema(crd)):
            for rule in node.get("x-kubernetes-validations", []):
                assert rule["message"], path
                if re.search(r"\.(all|exists|exists_one|map|filter)\(", rule["rule"]):
                    assert node.get("type") == "array", path
                    assert "maxItems" in node, f"{path}: {rule['rule']} over an unbounded list"
                    items = node["items"]
                    if items.get("type") == "string":
                        assert "maxLength" in items, path


def test_spec_defaults_match_pydantic() -> None:
    enforcement = TB_SPEC["properties"]["enforcement"]
    assert enforcement["default"] == {}
    props = enforcement["properties"]
    assert props["action"]["default"] == "Suspend"
    # Absent on purpose: the BudgetPolicy's defaultWarnAt applies then.
    assert "default" not in props["warnAt"]
    assert TB_SPEC["properties"]["costModel"]["default"] == "Allocation"
    assert "default" not in TB_SPEC["properties"]["costCap"]


# --------------------------------------------------- valid and invalid manifests

VALID_SPECS: list[Schema] = [
    {"costCap": 100},
    {"costCap": 0.01, "enforcement": {}},
    {
        "costCap": 25000,
        "estimate": {"gpus": 8, "hours": 12.5, "instanceType": "p5.48xlarge"},
        "enforcement": {
            "action": "Kill",
            "warnAt": [0.25, 0.75],
            "checkpointLeadSeconds": 0,
            "idle": {"belowUtilization": 0.05, "forMinutes": 0.5, "action": "Suspend"},
        },
        "owner": {"team": "t" * 63, "costCenter": "cc-42", "project": "llm"},
        "costModel": "Utilization",
    },
    {
        "costCap": 5,
        "estimate": {"hours": 1, "gpuProduct": "NVIDIA-H100-80GB-HBM3", "capacityType": "spot"},
        "enforcement": {"warnAt": [], "idle": {}, "checkpointLeadSeconds": 86400},
        "owner": {},
    },
]


@pytest.mark.parametrize("spec", VALID_SPECS)
def test_valid_specs_accepted_and_defaulted_alike(spec: Schema) -> None:
    model = TrainingBudgetSpec.model_validate(spec)
    assert validate(spec, TB_SPEC, "spec") == []
    defaulted = apply_defaults({"spec": spec}, TB_ROOT)["spec"]
    assert defaulted == model.model_dump(mode="json", by_alias=True, exclude_none=True)


def test_minimal_spec_gets_the_documented_defaults() -> None:
    defaulted = apply_defaults({"spec": {"costCap": 100}}, TB_ROOT)["spec"]
    assert defaulted["enforcement"]["action"] == "Suspend"
    assert "warnAt" not in defaulted["enforcement"]
    assert defaulted["enforcement"]["checkpointLeadSeconds"] == 300
    assert defaulted["costModel"] == "Allocation"
    assert "idle" not in defaulted["enforcement"]


def _invalid_manifests() -> list[Path]:
    return sorted(INVALID.glob("*.yaml"))


def _expect(path: Path) -> str:
    found = re.findall(r"^# expect: (.+)$", path.read_text(), flags=re.MULTILINE)
    assert len(found) == 1, f"{path.name}: needs exactly one '# expect: <substring>' line"
    return str(found[0]).strip()


def validate_manifest_with_pydantic(doc: Schema) -> None:
    """What the pure core does with a TrainingBudget: the spec through the model."""
    unknown = set(doc) - {"apiVersion", "kind", "metadata", "spec", "status"}
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    if "spec" not in doc:
        raise ValueError("spec: Required value")
    TrainingBudgetSpec.model_validate(doc["spec"])


def test_there_are_enough_invalid_manifests() -> None:
    paths = _invalid_manifests()
    assert len(paths) >= 18
    names = [yaml.safe_load(p.read_text())["metadata"]["name"] for p in paths]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("path", _invalid_manifests(), ids=lambda p: p.stem)
def test_invalid_manifest_rejected_by_schema_or_cel_and_by_pydantic(path: Path) -> None:
    expect = _expect(path)
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == "gpubudget.dev/v1alpha1"
    assert doc["kind"] == "TrainingBudget"

    with pytest.raises((ValidationError, ValueError)) as pydantic_error:
        validate_manifest_with_pydantic(doc)

    schema_errors = validate(doc, TB_ROOT, "")
    cel = [m for m in _cel_messages(TB_ROOT) if expect in m]
    if cel:
        # Only a CEL rule catches it: the schema passes it, the pydantic mirror must not.
        assert schema_errors == [], schema_errors
        assert expect in str(pydantic_error.value)
    else:
        assert schema_errors, "the schema accepts it: the API server would too"
        assert any(expect in e for e in schema_errors), (expect, schema_errors)


# ------------------------------------------------ property: schema and pydantic agree

_positive = st.one_of(st.floats(min_value=0.001, max_value=1e6), st.integers(1, 10**6))
_fraction = st.floats(min_value=0.01, max_value=0.99)
_name = st.text(alphabet="abc-1", min_size=1, max_size=63)

_valid_specs = st.fixed_dictionaries(
    {"costCap": _positive},
    optional={
        "estimate": st.fixed_dictionaries(
            {"hours": _positive},
            optional={
                "gpus": st.integers(1, 64),
                "instanceType": st.just("p5.48xlarge"),
                "capacityType": st.sampled_from(["spot", "on-demand"]),
            },
        ),
        "enforcement": st.fixed_dictionaries(
            {},
            optional={
                "action": st.sampled_from(["Suspend", "Kill", "Alert"]),
                "warnAt": st.lists(_fraction, max_size=10, unique=True),
                "checkpointLeadSeconds": st.integers(0, 86400),
                "idle": st.fixed_dictionaries(
                    {},
                    optional={
                        "belowUtilization": _fraction,
                        "forMinutes": _positive,
                        "action": st.sampled_from(["Alert", "Suspend"]),
                    },
                ),
            },
        ),
        "owner": st.fixed_dictionaries(
            {}, optional={"team": _name, "costCenter": _name, "project": _name}
        ),
        "costModel": st.sampled_from(["Allocation", "Utilization"]),
    },
)

_DELETE = object()
_boundary_numbers = st.sampled_from([-1, 0, -0.0, 1e-9, 0.5, 1, 1.5, 86400, 86401, "lots"])
# No numeric strings ("2"): pydantic's lax mode takes them, the API server does not.
# That gap is harmless (the operator only parses what the API server accepted); the
# API-server-accepts => pydantic-accepts direction, which matters, is checked below.
_boundary_ints = st.sampled_from([-1, 0, 1, 2, 2.0, 1.5, 86400, 86401, "two"])
_boundary_fractions = st.sampled_from([-0.1, 0, 1e-9, 0.5, 0.999, 1, 2])
_MUTATIONS: list[tuple[tuple[str, ...], st.SearchStrategy[Any]]] = [
    (("costCap",), st.one_of(_boundary_numbers, st.just(_DELETE))),
    (("estimate", "hours"), st.one_of(_boundary_numbers, st.just(_DELETE))),
    (("estimate", "gpus"), _boundary_ints),
    (("estimate", "instanceType"), st.sampled_from(["", "p4d.24xlarge", _DELETE])),
    (("estimate", "gpuProduct"), st.sampled_from(["", "NVIDIA-A100-SXM4-80GB", _DELETE])),
    (("estimate", "capacityType"), st.sampled_from(["spot", "preemptible", "Spot"])),
    (("enforcement", "action"), st.sampled_from(["Suspend", "Explode", "suspend"])),
    (
        ("enforcement", "warnAt"),
        st.lists(st.one_of(_boundary_fractions, _fraction), max_size=12),
    ),
    (("enforcement", "checkpointLeadSeconds"), _boundary_ints),
    (("enforcement", "idle", "belowUtilization"), _boundary_fractions),
    (("enforcement", "idle", "forMinutes"), _boundary_numbers),
    (("enforcement", "idle", "action"), st.sampled_from(["Alert", "Kill"])),
    (("owner", "team"), st.text(alphabet="ab", min_size=60, max_size=70)),
    (("owner", "project"), st.sampled_from(["", "x" * 63, "x" * 64])),
    (("costModel",), st.sampled_from(["Utilization", "PerToken"])),
    (("maxSpend",), st.just(5)),
    (("enforcement", "actoin"), st.just("Kill")),
]


@st.composite
def _specs(draw: st.DrawFn) -> Schema:
    """A valid spec with up to two fields set to boundary, invalid or wrongly typed values."""
    spec: Schema = draw(_valid_specs)
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        path, values = draw(st.sampled_from(_MUTATIONS))
        value = draw(values)
        node = spec
        for key in path[:-1]:
            node = node.setdefault(key, {})
        if value is _DELETE:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    return spec


def _pydantic(spec: Schema) -> tuple[TrainingBudgetSpec | None, list[Any]]:
    try:
        return TrainingBudgetSpec.model_validate(spec), []
    except ValidationError as e:
        return None, list(e.errors())


@settings(max_examples=400, deadline=None)
@given(spec=_specs())
def test_schema_and_pydantic_agree(spec: Schema) -> None:
    schema_errors = validate(spec, TB_SPEC, "spec")
    model, pydantic_errors = _pydantic(spec)
    if model is None:
        if schema_errors:
            return  # both reject
        # The schema passes it: only a CEL rule may reject it, and its mirror did.
        cel_messages = _cel_messages(TB_SPEC)
        for error in pydantic_errors:
            assert error["type"] == "value_error", (spec, pydantic_errors)
            assert any(m in error["msg"] for m in cel_messages), (spec, pydantic_errors)
        return
    assert schema_errors == [], (spec, "pydantic accepts what the API server rejects")
    defaulted = apply_defaults({"spec": spec}, TB_ROOT)["spec"]
    assert defaulted == model.model_dump(mode="json", by_alias=True, exclude_none=True)


def test_pydantic_mirrors_the_cel_rules() -> None:
    with pytest.raises(ValidationError, match="warnAt entries must be unique"):
        TrainingBudgetSpec.model_validate({"costCap": 1, "enforcement": {"warnAt": [0.5, 0.5]}})
    with pytest.raises(ValidationError, match="defaultWarnAt entries must be unique"):
        BudgetPolicySpec.model_validate({"defaultWarnAt": [0.9, 0.9]})
    with pytest.raises(ValidationError, match="mutually exclusive"):
        TrainingBudgetSpec.model_validate(
            {"costCap": 1, "estimate": {"hours": 1, "instanceType": "a", "gpuProduct": "b"}}
        )
    # Every CEL rule of the spec schemas is one of these.
    messages = sorted(_cel_messages(TB_SPEC) + _cel_messages(BP_ROOT["properties"]["spec"]))
    assert messages == sorted(
        [
            "spec.enforcement.warnAt entries must be unique",
            "estimate.instanceType and estimate.gpuProduct are mutually exclusive: set one of them",
            "spec.defaultWarnAt entries must be unique",
        ]
    )
