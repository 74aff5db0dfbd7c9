"""``estimate -f``: the run a manifest describes, read the way the operator reads it.

A manifest holds a TrainingBudget, its workloads (any kind the operator
budgets, labelled ``gpubudget.dev/budget``), or both. The budget's
``spec.estimate`` is validated by the operator's own model; GPUs come from
``spec.estimate.gpus`` or, as the operator derives them, from the workloads'
requests (:func:`gpu_budget.workloads.base.requested`). A workload alone names
its budget by label, which the caller then reads from the cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from gpu_budget import API_VERSION, BUDGET_LABEL
from gpu_budget.models import TrainingBudgetSpec
from gpu_budget.plugin.errors import PluginError
from gpu_budget.workloads import ADAPTERS_BY_KIND
from gpu_budget.workloads.base import requested


@dataclass(frozen=True)
class Manifest:
    """What a manifest says about one run."""

    budget: str | None
    """The budget's name: the TrainingBudget's, else the workloads' label."""
    namespace: str | None
    spec: TrainingBudgetSpec | None
    """None when the manifest has only workloads (read the budget from the cluster)."""
    workload_gpus: float | None
    """GPUs the workloads request when all their pods run; None without workloads."""


def read_manifest(text: str, source: str) -> Manifest:
    try:
        documents = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as error:
        raise PluginError(f"{source} is not YAML: {error}") from None
    objects = list(_flatten(documents))
    budgets = [o for o in objects if o.get("kind") == "TrainingBudget"]
    if len(budgets) > 1:
        raise PluginError(f"{source} holds {len(budgets)} TrainingBudgets; estimate one at a time")
    workloads = [o for o in objects if _budget_label(o) is not None]
    spec, name, namespace = None, None, None
    if budgets:
        body = budgets[0]
        if body.get("apiVersion") != API_VERSION:
            raise PluginError(f"{source}: TrainingBudget apiVersion must be {API_VERSION}")
        meta = body.get("metadata") or {}
        name, namespace = meta.get("name"), meta.get("namespace")
        try:
            spec = TrainingBudgetSpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            raise PluginError(f"{source}: TrainingBudget {name}: {_first(error)}") from None
        workloads = [w for w in workloads if _budget_label(w) == name]
    elif workloads:
        names = {_budget_label(w) for w in workloads}
        if len(names) > 1:
            raise PluginError(
                f"{source}: workloads name several budgets: {sorted(map(str, names))}"
            )
        name = names.pop()
        namespace = (workloads[0].get("metadata") or {}).get("namespace")
    else:
        raise PluginError(
            f"{source} has neither a TrainingBudget nor a workload labelled {BUDGET_LABEL}"
        )
    return Manifest(
        budget=name,
        namespace=namespace,
        spec=spec,
        workload_gpus=sum(_gpus(w) for w in workloads) if workloads else None,
    )


def _flatten(documents: Iterable[Any]) -> Iterable[Mapping[str, Any]]:
    """Documents, with ``kind: List`` (what ``kubectl get -o yaml`` writes) opened up."""
    for document in documents:
        if not isinstance(document, Mapping):
            continue
        if document.get("kind") == "List":
            yield from _flatten(document.get("items") or [])
        else:
            yield document


def _budget_label(body: Mapping[str, Any]) -> str | None:
    if body.get("kind") not in ADAPTERS_BY_KIND:
        return None
    label = ((body.get("metadata") or {}).get("labels") or {}).get(BUDGET_LABEL)
    return str(label) if label else None


def _gpus(body: Mapping[str, Any]) -> float:
    gpus, problems = requested(ADAPTERS_BY_KIND[str(body["kind"])].pod_sets(body))
    if problems:
        raise PluginError(f"{body['kind']} {body['metadata'].get('name')}: {'; '.join(problems)}")
    return gpus


def _first(error: ValidationError) -> str:
    detail = error.errors()[0]
    where = ".".join(str(p) for p in detail["loc"])
    return f"spec.{where}: {detail['msg']}" if where else str(detail["msg"])
