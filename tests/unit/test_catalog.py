"""Unit tests for gpu_budget.catalog: the built-in price list and its lookups.

``entry`` and ``small_catalog`` are shared with the node-pricing and estimate tests.
"""

from __future__ import annotations

import json
from datetime import date
from importlib import resources

import pytest
from pydantic import ValidationError

from gpu_budget.catalog import Catalog, CatalogEntry, load_catalog, name_key
from gpu_budget.models import CapacityType

SPOT = CapacityType.SPOT
ON_DEMAND = CapacityType.ON_DEMAND


def entry(
    instance_type: str = "x8.big",
    region: str = "r1",
    *,
    gpus: int = 8,
    product: str = "NVIDIA-TEST",
    on_demand: float = 80.0,
    spot: float | None = 40.0,
    cloud: str = "aws",
) -> CatalogEntry:
    return CatalogEntry.model_validate(
        {
            "cloud": cloud,
            "instanceType": instance_type,
            "region": region,
            "gpus": gpus,
            "gpuProduct": product,
            "onDemand": on_demand,
            "spot": spot,
            "source": "test",
            "asOf": "2026-01-01",
        }
    )


def small_catalog() -> Catalog:
    """A tiny catalog with round numbers, so expected prices are easy to read."""
    return Catalog(
        description="test",
        entries=[
            entry("x8.big", "r1", on_demand=80.0, spot=40.0),
            entry("x8.big", "r2", on_demand=96.0, spot=None),
            entry("x1.small", "r1", gpus=1, product="NVIDIA-SMALL", on_demand=2.0, spot=1.0),
            entry("g9.huge", "east", gpus=8, product="NVIDIA-TEST", on_demand=160.0, cloud="azure"),
        ],
    )


REQUIRED = [
    ("aws", "p4d.24xlarge", "us-east-1"),
    ("aws", "p4de.24xlarge", "us-east-1"),
    ("aws", "p5.48xlarge", "us-east-1"),
    ("aws", "g5.xlarge", "us-east-1"),
    ("aws", "g5.48xlarge", "us-east-1"),
    ("aws", "g6.xlarge", "us-east-1"),
    ("gcp", "a2-highgpu-1g", "us-central1"),
    ("gcp", "a2-highgpu-8g", "us-central1"),
    ("azure", "Standard_ND96asr_v4", "eastus"),
    ("azure", "Standard_ND96isr_H100_v5", "eastus"),
]

KNOWN_PRODUCTS = {
    "NVIDIA-H100-80GB-HBM3",
    "NVIDIA-A100-SXM4-40GB",
    "NVIDIA-A100-SXM4-80GB",
    "NVIDIA-A10G",
    "NVIDIA-L4",
}


def test_catalog_file_is_plain_json_with_description_and_entries() -> None:
    text = resources.files("gpu_budget").joinpath("data/catalog.json").read_text("utf-8")
    data = json.loads(text)
    assert set(data) == {"description", "entries"}
    assert data["description"].strip()
    assert isinstance(data["entries"], list)
    fields = {
        "cloud",
        "instanceType",
        "region",
        "gpus",
        "gpuProduct",
        "onDemand",
        "spot",
        "source",
        "asOf",
    }
    for raw in data["entries"]:
        assert set(raw) == fields, raw.get("instanceType")


def test_catalog_loads_and_is_cached() -> None:
    assert load_catalog() is load_catalog()
    assert load_catalog().entries


@pytest.mark.parametrize(("cloud", "instance_type", "region"), REQUIRED)
def test_catalog_has_required_entries(cloud: str, instance_type: str, region: str) -> None:
    found = load_catalog().lookup(instance_type, region)
    assert found is not None
    assert found.cloud == cloud


def test_catalog_entries_are_sane() -> None:
    for e in load_catalog().entries:
        assert e.source.strip(), e.label()
        assert date(2025, 1, 1) <= e.as_of <= date(2027, 1, 1), e.label()
        assert e.on_demand > 0, e.label()
        assert e.spot is None or 0 < e.spot < e.on_demand, e.label()
        assert e.gpus >= 1, e.label()
        assert e.gpu_product in KNOWN_PRODUCTS, e.label()
        # Spot figures are ranges in reality; the source must say how one was chosen.
        if e.spot is not None:
            assert "spot" in e.source.lower(), e.label()


def test_catalog_has_no_duplicate_keys() -> None:
    keys = [(e.cloud, e.instance_type, e.region) for e in load_catalog().entries]
    assert len(keys) == len(set(keys))


def test_catalog_instance_types_have_one_gpu_shape() -> None:
    # GPU count and product are properties of the instance type, not the region.
    shapes: dict[str, tuple[int, str]] = {}
    for e in load_catalog().entries:
        shape = (e.gpus, e.gpu_product)
        assert shapes.setdefault(e.instance_type, shape) == shape, e.instance_type


def test_catalog_model_rejects_duplicates() -> None:
    with pytest.raises(ValidationError, match="duplicate"):
        Catalog(entries=[entry("x", "r"), entry("X", "R")])


def test_catalog_entry_rejects_bad_values() -> None:
    with pytest.raises(ValidationError):
        entry(gpus=0)
    with pytest.raises(ValidationError):
        entry(on_demand=0)
    with pytest.raises(ValidationError):
        entry(spot=-1.0)


def test_catalog_lookups() -> None:
    catalog = small_catalog()
    assert catalog.lookup("x8.big", "r2") is not None
    assert catalog.lookup("x8.big", None) is None
    assert catalog.lookup("x8.big", "r9") is None
    found = catalog.find("X8.BIG", "R2")
    assert found is not None
    assert (found[0].region, found[1]) == ("r2", True)
    assert catalog.find("nope", "r1") is None
    assert catalog.gpus_for("x1.small") == 1
    assert catalog.gpus_for("nope") is None
    assert catalog.product_for("g9.huge") == "NVIDIA-TEST"
    assert {e.instance_type for e in catalog.for_gpu_product("nvidia-test")} == {
        "x8.big",
        "g9.huge",
    }


def test_catalog_entry_hourly_price() -> None:
    assert entry(spot=40.0).hourly_price(SPOT) == (40.0, False)
    assert entry(spot=None).hourly_price(SPOT) == (80.0, True)
    assert entry(spot=40.0).hourly_price(ON_DEMAND) == (80.0, False)


def test_names_compare_trimmed_and_case_folded() -> None:
    assert name_key(" Standard_ND96asr_v4 ") == name_key("standard_nd96asr_v4")
    assert name_key("EastUS") == "eastus"
