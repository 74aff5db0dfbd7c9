"""The built-in price list: what clouds publish for their GPU instance types.

The catalog is data shipped in the package (``data/catalog.json``, with the
source and date of every figure), read and validated once per process. It is
the last priced source before the fallback, for nodes and estimates alike:
a figure the platform team wrote in the policy, or on the node, always beats
a list price (see :mod:`gpu_budget.node_pricing` and :mod:`gpu_budget.estimate`).
"""

from __future__ import annotations

from datetime import date
from functools import cache
from importlib import resources
from typing import Literal

from pydantic import Field, model_validator

from gpu_budget.models import ApiModel, CapacityType

CATALOG_RESOURCE = "data/catalog.json"


def name_key(name: str) -> str:
    """How instance types, regions and GPU products compare: trimmed and case-folded.

    Clouds are not consistent about the case of these names in node labels
    (``Standard_ND96asr_v4`` against ``standard_nd96asr_v4``), so the catalog
    and the policy's overrides both match names through this one key.
    """
    return name.strip().casefold()


class CatalogEntry(ApiModel):
    """One instance type in one region, as published by its cloud."""

    cloud: Literal["aws", "gcp", "azure"]
    instance_type: str = Field(min_length=1)
    region: str = Field(min_length=1)
    gpus: int = Field(ge=1, description="GPUs in one instance.")
    gpu_product: str = Field(min_length=1, description="nvidia.com/gpu.product of the GPUs.")
    on_demand: float = Field(gt=0, description="Whole instance, USD per hour.")
    spot: float | None = Field(default=None, gt=0, description="Whole instance, USD per hour.")
    source: str = Field(min_length=1)
    as_of: date

    def hourly_price(self, capacity: CapacityType) -> tuple[float, bool]:
        """Instance price for ``capacity`` and whether spot fell back to on-demand.

        A spot node with no recorded spot figure is charged on-demand: that
        over-states spend rather than under-states it, which is the safe side
        for a hard budget.
        """
        if capacity == CapacityType.SPOT:
            if self.spot is not None:
                return self.spot, False
            return self.on_demand, True
        return self.on_demand, False

    def label(self) -> str:
        return f"{self.cloud} {self.instance_type} {self.region}"


class Catalog(ApiModel):
    """The built-in price list: a description and entries, with lookups.

    The catalog is small (tens of entries), so lookups are linear scans; names
    are compared with :func:`name_key`.
    """

    description: str = ""
    entries: list[CatalogEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> Catalog:
        """Two prices for the same instance in the same region would make lookups ambiguous."""
        seen: set[tuple[str, str, str]] = set()
        for entry in self.entries:
            key = (entry.cloud, name_key(entry.instance_type), name_key(entry.region))
            if key in seen:
                raise ValueError(f"duplicate catalog entry {entry.label()}")
            seen.add(key)
        return self

    def for_instance_type(self, instance_type: str) -> list[CatalogEntry]:
        """All regions of ``instance_type``, in catalog order (reference region first)."""
        wanted = name_key(instance_type)
        return [e for e in self.entries if name_key(e.instance_type) == wanted]

    def lookup(self, instance_type: str, region: str | None) -> CatalogEntry | None:
        """The entry for exactly this instance type and region, if any."""
        if region is None:
            return None
        wanted = name_key(region)
        for entry in self.for_instance_type(instance_type):
            if name_key(entry.region) == wanted:
                return entry
        return None

    def find(self, instance_type: str, region: str | None) -> tuple[CatalogEntry, bool] | None:
        """The entry for this instance type, preferring ``region``.

        Returns the entry and whether it is from the requested region. When the
        region is missing or unknown, the first-listed region of the instance
        type stands in: a list price from another region is a better guess
        than the generic fallback.
        """
        exact = self.lookup(instance_type, region)
        if exact is not None:
            return exact, True
        candidates = self.for_instance_type(instance_type)
        if candidates:
            return candidates[0], False
        return None

    def gpus_for(self, instance_type: str) -> int | None:
        """GPUs in one ``instance_type``, or ``None`` when the catalog does not know it."""
        candidates = self.for_instance_type(instance_type)
        return candidates[0].gpus if candidates else None

    def product_for(self, instance_type: str) -> str | None:
        """The GPU product of ``instance_type``, or ``None`` when unknown."""
        candidates = self.for_instance_type(instance_type)
        return candidates[0].gpu_product if candidates else None

    def for_gpu_product(self, gpu_product: str) -> list[CatalogEntry]:
        """All entries whose GPUs are ``gpu_product``."""
        wanted = name_key(gpu_product)
        return [e for e in self.entries if name_key(e.gpu_product) == wanted]


@cache
def load_catalog() -> Catalog:
    """The catalog shipped in the package, read and validated once per process."""
    text = resources.files("gpu_budget").joinpath(CATALOG_RESOURCE).read_text(encoding="utf-8")
    return Catalog.model_validate_json(text)
