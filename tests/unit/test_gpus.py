"""Counting GPUs: quantities, a pod's effective resources, GPU shares, nodes."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes.utils import parse_quantity as client_parse_quantity

from gpu_budget.gpus import (
    MAX_QUANTITY,
    NON_EXTENDED,
    QuantityError,
    dra_claims,
    gpu_count,
    gpu_share,
    is_extended,
    node_gpu_capacity,
    parse_quantity,
    pod_resources,
)
from gpu_budget.models import DEFAULT_GPU_RESOURCES, GpuResource, GpuShare

GPU = "nvidia.com/gpu"
RULES = DEFAULT_GPU_RESOURCES


def gpus(limits: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    """A container asking for ``limits`` (plus any other container fields)."""
    return {"resources": {"limits": limits or {}}, **more}


def sidecar(limits: dict[str, Any]) -> dict[str, Any]:
    return gpus(limits, restartPolicy="Always")


# ------------------------------------------------------------------ parse_quantity


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1k", 1000),
        ("2", 2),
        (2, 2),
        ("8", 8),
        ("0", 0),
        ("-0", 0),
        ("+1", 1),
        (".5", Decimal("0.5")),
        ("1.", 1),
        (2.5, Decimal("2.5")),
        (0.1, Decimal("0.1")),  # the float's shortest text, not its binary expansion
        (Decimal("3"), 3),
        ("500m", Decimal("0.5")),
        ("100u", Decimal("0.0001")),
        ("1n", Decimal("1e-9")),
        ("1M", 10**6),
        ("1G", 10**9),
        ("2T", 2 * 10**12),
        ("1P", 10**15),
        ("1E", 10**18),  # exa, not an exponent
        ("1Ki", 1024),
        ("1.5Ki", 1536),
        ("1Mi", 1024**2),
        ("1Gi", 1024**3),
        ("1Ti", 1024**4),
        ("1Pi", 1024**5),
        ("1Ei", 1024**6),
        ("1e3", 1000),
        ("1E3", 1000),
        ("1e+3", 1000),
        ("2.5e2", 250),
        ("1e-3", Decimal("0.001")),
        ("9223372036854775807", MAX_QUANTITY),
    ],
)
def test_parse_quantity_reads_kubernetes_quantities(value: object, expected: object) -> None:
    assert parse_quantity(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.1n", Decimal("1e-9")),
        ("1e-20", Decimal("1e-9")),
        ("1e-99999999999999999999999999999999999999", Decimal("1e-9")),
        ("1.0000000001", Decimal("1.000000001")),
    ],
)
def test_amounts_finer_than_a_nano_unit_round_up_as_the_api_server_does(
    value: str, expected: Decimal
) -> None:
    assert parse_quantity(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "lots",
        "-1",
        "-1k",
        -1,
        -0.5,
        "1K",  # kilo is k; K only exists as Ki
        "1ki",
        "1mi",
        " 1",
        "1 ",
        "1 k",
        "1_000",
        "NaN",
        "nan",
        "inf",
        "Infinity",
        float("nan"),
        float("inf"),
        Decimal("NaN"),
        "1e3k",  # an exponent or a suffix, not both
        "1e3Ki",
        "\u0661",  # ARABIC-INDIC DIGIT ONE
        "0x10",
        "1e",
        "e3",
        ".",
        "1..2",
        "9223372036854775808",
        "8Ei",
        "1e40",
        "1e99999999999999999999999999999999999999",
        1e300,
        True,
        False,
        None,
        [1],
        {"value": 1},
        b"1",
    ],
)
def test_parse_quantity_refuses_what_kubernetes_refuses(value: object) -> None:
    with pytest.raises(QuantityError) as caught:
        parse_quantity(value)
    assert repr(value) in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert caught.value.value is value


@pytest.mark.parametrize("value", ["1K", "1_000", " 1 ", "NaN", "inf", "1e3k", "\u0661", True])
def test_the_kubernetes_clients_parser_is_looser_than_the_api_server(value: object) -> None:
    """Why gpus.py has its own parser: the client's accepts all of these."""
    client_parse_quantity(value)
    with pytest.raises(QuantityError):
        parse_quantity(value)


@given(st.integers(min_value=0, max_value=10**15))
def test_suffixes_scale_whole_numbers(n: int) -> None:
    assert parse_quantity(f"{n}k") == 1000 * n
    assert parse_quantity(f"{n}Ki") == 1024 * n
    assert parse_quantity(f"{n}m") == Decimal(n) / 1000
    assert parse_quantity(f"{n}e3") == parse_quantity(f"{n}k")
    assert parse_quantity(n) == parse_quantity(str(n)) == n


canonical_quantities = st.builds(
    lambda whole, fraction, suffix: f"{whole}{'.' + fraction if fraction else ''}{suffix}",
    st.integers(min_value=0, max_value=10**6),
    st.text(alphabet="0123456789", max_size=3),
    st.sampled_from(["", "u", "m", "k", "M", "G", "Ki", "Mi", "Gi", "e3", "E2", "e-3"]),
)


@given(canonical_quantities)
def test_agrees_with_the_kubernetes_client_on_canonical_quantities(text: str) -> None:
    assert parse_quantity(text) == client_parse_quantity(text)


# ------------------------------------------------------------------ pod_resources


def test_non_extended_resources_are_ignored() -> None:
    limits = {name: "1" for name in NON_EXTENDED} | {"hugepages-2Mi": "1Gi"}
    assert pod_resources({"containers": [gpus(limits)]}) == ({}, [])
    assert not any(is_extended(name) for name in limits)
    assert is_extended(GPU)


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"containers": None},
        {"containers": "trainer"},
        {"containers": [None, 1, "x", []]},
        {"containers": [{"resources": None}]},
        {"containers": [{"resources": {"limits": "8", "requests": ["1"]}}]},
        {"containers": [{"resources": {"limits": {GPU: None}}}]},
        {"initContainers": {"name": "setup"}},
        {"containers": [{"resources": {"limits": {7: "1", None: "2"}}}]},
    ],
)
def test_missing_or_malformed_parts_count_as_empty(spec: dict[str, Any]) -> None:
    assert pod_resources(spec) == ({}, [])


def test_pod_spec_that_is_not_a_mapping_counts_as_empty() -> None:
    assert pod_resources(None) == ({}, [])  # type: ignore[arg-type]


def test_main_containers_add_up() -> None:
    spec = {
        "containers": [
            gpus({GPU: 2}),
            {"resources": {"requests": {GPU: "1"}}},
            gpus({"cpu": "4"}),
        ]
    }
    assert pod_resources(spec) == ({GPU: Decimal(3)}, [])


def test_limits_are_preferred_over_requests_resource_by_resource() -> None:
    container = {
        "resources": {
            "limits": {GPU: "2"},
            "requests": {GPU: "1", "example.com/fpga": "1"},
        }
    }
    expected = {GPU: Decimal(2), "example.com/fpga": Decimal(1)}
    assert pod_resources({"containers": [container]}) == (expected, [])


def test_a_null_limit_falls_back_to_the_request() -> None:
    container = {"resources": {"limits": {GPU: None}, "requests": {GPU: "2"}}}
    assert pod_resources({"containers": [container]}) == ({GPU: Decimal(2)}, [])


def test_sidecars_add_to_the_main_containers() -> None:
    spec = {
        "containers": [gpus({GPU: 2})],
        "initContainers": [sidecar({GPU: 1}), gpus({"cpu": "1"})],
    }
    assert pod_resources(spec) == ({GPU: Decimal(3)}, [])


def test_a_regular_init_container_bigger_than_main_and_sidecars_decides() -> None:
    spec = {
        "containers": [gpus({GPU: 1})],
        "initContainers": [gpus({GPU: 4}), sidecar({GPU: 1})],
    }
    # The sidecar starts after the init container: 4 alone beats 1 + 1.
    assert pod_resources(spec) == ({GPU: Decimal(4)}, [])


def test_sidecars_declared_before_an_init_container_run_beside_it() -> None:
    before = {
        "containers": [gpus({GPU: 1})],
        "initContainers": [sidecar({GPU: 1}), gpus({GPU: 3})],
    }
    after = {
        "containers": [gpus({GPU: 1})],
        "initContainers": [gpus({GPU: 3}), sidecar({GPU: 1})],
    }
    assert pod_resources(before) == ({GPU: Decimal(4)}, [])
    assert pod_resources(after) == ({GPU: Decimal(3)}, [])


def test_regular_init_containers_run_one_at_a_time() -> None:
    spec = {"initContainers": [gpus({GPU: 2}), gpus({GPU: 3}), gpus({GPU: 1})]}
    assert pod_resources(spec) == ({GPU: Decimal(3)}, [])


def test_each_resource_is_taken_independently() -> None:
    spec = {
        "containers": [gpus({GPU: 1, "amd.com/gpu": 1})],
        "initContainers": [gpus({GPU: 4}), gpus({"amd.com/gpu": 2, "example.com/fpga": 1})],
    }
    resources, problems = pod_resources(spec)
    assert resources == {GPU: 4, "amd.com/gpu": 2, "example.com/fpga": 1}
    assert problems == []


def test_a_malformed_quantity_counts_one_unit_and_is_reported() -> None:
    spec = {
        "containers": [gpus({GPU: "lots"}, name="trainer"), gpus({GPU: 2}, name="eval")],
        "initContainers": [gpus({"amd.com/gpu": True})],
    }
    resources, problems = pod_resources(spec)
    assert resources == {GPU: 3, "amd.com/gpu": 1}
    assert problems == [
        "container trainer: nvidia.com/gpu='lots' is not a Kubernetes quantity",
        "init container #0: amd.com/gpu=True is not a Kubernetes quantity (a bool, not a number)",
    ]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
quantities = (
    json_values
    | st.sampled_from(["1", "1k", "500m", "lots", "-1", "1e3", "1Ki", "9e99", ""])
    | st.integers()
    | st.floats()
)
resource_names = st.sampled_from([GPU, "amd.com/gpu", "nvidia.com/mig-1g.10gb", "cpu"]) | st.text(
    max_size=12
)
resource_maps = st.dictionaries(resource_names, quantities, max_size=4) | json_values
containers = st.fixed_dictionaries(
    {"resources": st.fixed_dictionaries({"limits": resource_maps, "requests": resource_maps})},
    optional={
        "name": st.text(max_size=8) | st.none(),
        "restartPolicy": st.sampled_from(["Always", "Never", None]),
    },
)
pod_specs = st.fixed_dictionaries(
    {},
    optional={
        "containers": st.lists(containers | json_values, max_size=4) | json_values,
        "initContainers": st.lists(containers | json_values, max_size=4) | json_values,
        "resourceClaims": json_values,
    },
)


@settings(max_examples=300)
@given(pod_specs | st.dictionaries(st.text(max_size=8), json_values, max_size=4))
def test_pod_resources_never_raises(spec: dict[str, Any]) -> None:
    resources, problems = pod_resources(spec)
    assert all(isinstance(v, Decimal) and v.is_finite() and v >= 0 for v in resources.values())
    assert all(isinstance(p, str) for p in problems)
    count = gpu_count(resources, RULES)
    assert math.isfinite(count) and count >= 0
    assert dra_claims(spec) >= 0


# ----------------------------------------------------------------------- gpu_share


@pytest.mark.parametrize(
    ("resource", "share"),
    [
        (GPU, 1.0),
        ("nvidia.com/gpu.shared", 1.0),
        ("amd.com/gpu", 1.0),
        ("gpu.intel.com/millicores", 0.001),
        ("gpu.intel.com/memory.max", 0.0),
        ("gpu.intel.com/i915", 1.0),
        ("gpu.intel.com/xe", 1.0),
        ("nvidia.com/mig-3g.20gb", 3 / 7),
        ("nvidia.com/mig-2g.20gb", 2 / 7),
        ("nvidia.com/mig-1g.10gb+me", 1 / 7),
        ("nvidia.com/mig-1g.12gb-me", 1 / 7),
        ("nvidia.com/mig-7g.80gb", 1.0),
        ("nvidia.com/mig-1c.3g.20gb", 1 / 7),  # a compute instance: one of the GI's slices
        ("nvidia.com/mig-unknown", 1.0),  # unreadable profile: a whole GPU, never free
        ("nvidia.com/mig-", 1.0),
        ("nvidia.com/mig-0g.5gb", 1.0),
        ("example.com/fpga", None),
        ("cpu", None),
        ("nvidia.com/gpux", None),
    ],
)
def test_gpu_share_with_the_default_rules(resource: str, share: float | None) -> None:
    assert gpu_share(resource, RULES) == (None if share is None else pytest.approx(share))


def test_the_first_matching_rule_wins() -> None:
    wildcard = GpuResource(resource="example.com/*", gpus_per_unit=0.5)
    exact = GpuResource(resource="example.com/gpu", gpus_per_unit=2)
    assert gpu_share("example.com/gpu", [wildcard, exact]) == 0.5
    assert gpu_share("example.com/gpu", [exact, wildcard]) == 2
    assert gpu_share("example.com/other", [exact, wildcard]) == 0.5


def test_a_rule_without_a_star_matches_exactly() -> None:
    rules = [GpuResource(resource=GPU)]
    assert gpu_share(GPU, rules) == 1.0
    assert gpu_share("nvidia.com/gpu.shared", rules) is None
    assert gpu_share(GPU, []) is None


def test_mig_share_uses_the_rules_slices_per_gpu_and_never_exceeds_a_gpu() -> None:
    rules = [
        GpuResource(resource="nvidia.com/mig-*", share=GpuShare.MIG_SLICES, mig_slices_per_gpu=4)
    ]
    assert gpu_share("nvidia.com/mig-2g.12gb", rules) == 0.5
    assert gpu_share("nvidia.com/mig-7g.80gb", rules) == 1.0


def test_a_rule_built_from_the_wire_keeps_its_share() -> None:
    rule = GpuResource.model_validate(
        {"resource": "example.com/mig-*", "share": "MigComputeSlices"}
    )
    assert gpu_share("example.com/mig-1g.5gb", [rule]) == pytest.approx(1 / 7)


# ----------------------------------------------------------------------- gpu_count


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ({"gpu.intel.com/millicores": 500}, 0.5),
        ({"gpu.intel.com/memory.max": 16 * 1024**3}, 0.0),
        ({"gpu.intel.com/i915": 1}, 1.0),
        ({"amd.com/gpu": 2}, 2.0),
        ({"nvidia.com/gpu.shared": 1}, 1.0),
        ({"example.com/fpga": 4}, 0.0),
        ({GPU: Decimal(8), "cpu": Decimal(96), "nvidia.com/mig-3g.40gb": Decimal(2)}, 8 + 6 / 7),
        ({}, 0.0),
    ],
)
def test_gpu_count_weighs_each_resource_by_its_share(
    resources: dict[str, Decimal | float], expected: float
) -> None:
    assert gpu_count(resources, RULES) == pytest.approx(expected)


def test_a_pods_gpus_across_resources() -> None:
    spec = {
        "containers": [
            gpus({GPU: "2", "gpu.intel.com/millicores": "500"}),
            gpus({"nvidia.com/mig-1g.10gb": "1k"}),  # the bug this module fixes: int("1k")
        ],
        "initContainers": [sidecar({"amd.com/gpu": 1})],
    }
    resources, problems = pod_resources(spec)
    assert problems == []
    assert gpu_count(resources, RULES) == pytest.approx(2 + 0.5 + 1000 / 7 + 1)


# ---------------------------------------------------------------------- dra_claims


@pytest.mark.parametrize(
    ("spec", "claims"),
    [
        ({}, 0),
        ({"resourceClaims": None}, 0),
        ({"resourceClaims": []}, 0),
        ({"resourceClaims": "gpu"}, 0),
        ({"resourceClaims": {"name": "gpu"}}, 0),
        ({"resourceClaims": [{"name": "gpu", "resourceClaimName": "a"}]}, 1),
        ({"resourceClaims": [{"name": "a"}, {"name": "b"}, "odd"]}, 3),
    ],
)
def test_dra_claims_counts_resource_claims(spec: dict[str, Any], claims: int) -> None:
    assert dra_claims(spec) == claims


# --------------------------------------------------------------- node_gpu_capacity


def test_node_allocatable_is_preferred_over_capacity() -> None:
    status = {"allocatable": {GPU: "7", "cpu": "190"}, "capacity": {GPU: "8", "cpu": "192"}}
    assert node_gpu_capacity(status, RULES) == 7


@pytest.mark.parametrize(
    "allocatable",
    [None, {}, {"cpu": "190"}, {GPU: "lots"}, {GPU: "0"}, {"example.com/fpga": "2"}],
)
def test_node_capacity_is_the_fallback(allocatable: dict[str, Any] | None) -> None:
    status = {"allocatable": allocatable, "capacity": {GPU: "8"}}
    assert node_gpu_capacity(status, RULES) == 8


@pytest.mark.parametrize(
    "status",
    [
        {},
        {"allocatable": {GPU: "-1"}, "capacity": {GPU: "many"}},
        {"allocatable": "8", "capacity": [GPU]},
        {"capacity": {"cpu": "8"}},
    ],
)
def test_a_node_without_readable_gpus_has_none(status: dict[str, Any]) -> None:
    assert node_gpu_capacity(status, RULES) == 0


def test_node_status_that_is_not_a_mapping_has_no_gpus() -> None:
    assert node_gpu_capacity(None, RULES) == 0  # type: ignore[arg-type]


def test_malformed_node_quantities_count_zero_beside_readable_ones() -> None:
    status = {"allocatable": {GPU: "4", "amd.com/gpu": "lots"}}
    assert node_gpu_capacity(status, RULES) == 4


@pytest.mark.parametrize(
    ("allocatable", "expected"),
    [
        ({"nvidia.com/mig-1g.10gb": "7"}, 1.0),
        ({"nvidia.com/mig-3g.40gb": "2", "nvidia.com/mig-1g.10gb": "1"}, 1.0),
        ({GPU: "4", "nvidia.com/mig-7g.80gb": "4"}, 8.0),
        ({"gpu.intel.com/i915": "1", "gpu.intel.com/memory.max": "16Gi"}, 1.0),
        ({"gpu.intel.com/millicores": "1k"}, 1.0),
    ],
)
def test_node_gpus_across_resources(allocatable: dict[str, Any], expected: float) -> None:
    assert node_gpu_capacity({"allocatable": allocatable}, RULES) == pytest.approx(expected)
