"""How many GPUs a pod or a node holds, across every GPU extended resource.

This is the one place that turns Kubernetes resource quantities into GPU
counts. Budgets are charged for GPUs held, so the rules here lean one way: a
GPU is never free because its quantity is unreadable or its name is odd. Which
resources are GPUs, and how much of a GPU one unit is, comes from the policy's
:class:`~gpu_budget.models.GpuResource` rules (``DEFAULT_GPU_RESOURCES`` unless
the policy says otherwise).

Everything is a pure function of plain dicts (camelCase JSON, as kopf and the
API give objects), so admission, accounting and pricing count the same way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

from gpu_budget.models import GpuResource, GpuShare

__all__ = [
    "MAX_QUANTITY",
    "NON_EXTENDED",
    "QuantityError",
    "dra_claims",
    "gpu_count",
    "gpu_share",
    "is_extended",
    "node_gpu_capacity",
    "parse_quantity",
    "pod_resources",
]

# ------------------------------------------------------------------------ quantities


class QuantityError(ValueError):
    """A value that is not a non-negative Kubernetes quantity.

    A subclass of ``ValueError`` so callers that already guard against bad
    numbers keep working; ``value`` is the offending input, for messages.
    """

    def __init__(self, value: object, why: str | None = None) -> None:
        self.value = value
        self.why = why
        detail = f" ({why})" if why else ""
        super().__init__(f"{value!r} is not a Kubernetes quantity{detail}")


_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<binary>[KMGTPE])i|[eE](?P<exponent>[+-]?[0-9]+)|(?P<decimal>[numkMGTPE]))?"
)
"""The serialisation grammar of apimachinery's ``resource.Quantity``.

ASCII digits only (``\\d`` would take other scripts' digits), case-sensitive
suffixes (``k`` is kilo, ``K`` is not a suffix, ``Ki`` is kibi), and either a
suffix or an exponent, never both. ``1E`` is exa; ``1E3`` is an exponent.
"""

_DECIMAL_POWERS = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_POWERS = {"K": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}

MAX_QUANTITY = 2**63 - 1
"""The largest quantity Kubernetes keeps exactly (an int64); anything larger is refused.

A larger amount of any resource cannot be scheduled anyway, and refusing it
keeps every count finite for the float arithmetic of prices.
"""

_NANO = 10**9
_MAX_DIGITS = 30
"""Bound on a number's decimal exponent, checked before exact arithmetic.

A value of ``10**30`` is far beyond :data:`MAX_QUANTITY` and ``10**-30`` is far
below the nano resolution, so exponents outside it are decided without
building the huge integers ``1e-99999999`` would need.
"""


def parse_quantity(value: object) -> Decimal:
    """The amount a Kubernetes quantity stands for, exactly, as a ``Decimal``.

    Accepts what the API server accepts for a resource amount: ints and floats
    (as JSON gives them) and strings in the ``resource.Quantity`` grammar: a
    plain number (``"8"``, ``"2.5"``), a decimal SI suffix (``n u m k M G T P
    E``, so ``"1k"`` is 1000 and ``"500m"`` is 0.5), a binary one (``Ki Mi Gi
    Ti Pi Ei``) or a decimal exponent (``"1e3"``, ``"1E3"``). As the API server
    does, a non-zero amount finer than a nano-unit is rounded *up* to ``1n``
    (whoever asks for some of a resource gets some).

    Raises :class:`QuantityError` for everything else: negative, empty, NaN or
    infinite amounts, amounts above 2^63-1, bools (``True`` is not one GPU:
    it is a YAML mistake), ``None``, other types and malformed strings. The
    kubernetes client's own ``parse_quantity`` is not used: it accepts ``1K``,
    ``1_000``, ``" 1 "``, ``"NaN"``, ``"inf"``, ``"1e3k"``, non-ASCII digits
    and bools, and turns floats into their binary expansion.
    """
    if isinstance(value, bool):
        raise QuantityError(value, "a bool, not a number")
    if isinstance(value, int):
        exact = Fraction(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError(value, "not finite")
        # repr() is the shortest text that round-trips: 0.1 means 0.1, not 0.1000000000000000055.
        exact = _exact(Decimal(repr(value)), 0)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise QuantityError(value, "not finite")
        exact = _exact(value, 0)
    elif isinstance(value, str):
        exact = _parse_text(value)
    elif value is None:
        raise QuantityError(value, "missing")
    else:
        raise QuantityError(value, f"a {type(value).__name__}")
    return _finish(value, exact)


def _parse_text(text: str) -> Fraction:
    if not text:
        raise QuantityError(text, "empty")
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise QuantityError(text)
    number = Decimal(match["number"])
    if match["binary"] is not None:
        return _exact(number, 0) * Fraction(1024) ** _BINARY_POWERS[match["binary"]]
    if match["exponent"] is not None:
        digits = match["exponent"].lstrip("+-").lstrip("0")
        if len(digits) > _MAX_DIGITS:  # int() of a huge digit string is slow or refused
            negative = match["exponent"].startswith("-")
            return _out_of_range(number, -(10**_MAX_DIGITS) if negative else 10**_MAX_DIGITS)
        return _exact(number, int(match["exponent"]))
    if match["decimal"] is not None:
        return _exact(number, _DECIMAL_POWERS[match["decimal"]])
    return _exact(number, 0)


def _exact(number: Decimal, power: int) -> Fraction:
    """``number * 10**power`` as an exact fraction, without building absurd integers."""
    if number.is_zero():
        return Fraction(0)
    if abs(number.adjusted() + power) > _MAX_DIGITS:
        return _out_of_range(number, number.adjusted() + power)
    return Fraction(number) * Fraction(10) ** power


def _out_of_range(number: Decimal, magnitude: int) -> Fraction:
    """A number too large to keep (refused) or too small to matter (rounded up to 1n)."""
    if number.is_zero():
        return Fraction(0)
    if magnitude > 0:
        return Fraction(MAX_QUANTITY + 1)  # refused by _finish
    return Fraction(-1 if number < 0 else 1, _NANO)


def _finish(original: object, exact: Fraction) -> Decimal:
    if exact < 0:
        raise QuantityError(original, "negative")
    if exact > MAX_QUANTITY:
        raise QuantityError(original, "larger than 2^63-1")
    if exact.denominator == 1:
        return Decimal(exact.numerator)
    nanos = math.ceil(exact * _NANO)  # round up to the nano resolution, as Kubernetes does
    return (Decimal(nanos) / _NANO).normalize()


# ------------------------------------------------------------------------- resources


NON_EXTENDED = ("cpu", "memory", "ephemeral-storage", "storage")
"""Native resources, never GPUs; with ``hugepages-*`` they are all a container
may ask for besides extended resources."""


def is_extended(resource: str) -> bool:
    """Whether ``resource`` is an extended resource (a device plugin's, typically)."""
    return resource not in NON_EXTENDED and not resource.startswith("hugepages-")


def pod_resources(pod_spec: Mapping[str, Any]) -> tuple[dict[str, Decimal], list[str]]:
    """What a pod holds of each extended resource, and what could not be read.

    The pod's effective amount follows the scheduler, resource by resource:
    each container asks for its ``limits[r]``, else its ``requests[r]``
    (extended resources cannot be overcommitted, so a lone limit is the
    request). Main containers add up. Init containers with ``restartPolicy:
    Always`` are sidecars: they keep running beside the main containers, so
    they add to the main sum. A regular init container runs alone, beside only
    the sidecars declared before it, so it needs its own amount plus theirs.
    The pod holds the larger of the main containers plus all sidecars and the
    largest regular init container's need: devices are allocated for the
    whole pod up front, so an init container's GPUs are held throughout.

    Never raises. A quantity that cannot be read counts as 1 unit for that
    container, so a GPU is never free because of a typo, and a problem naming
    the container, resource and value is returned for the caller to surface.
    Missing or malformed parts of the spec count as empty.
    """
    spec = _mapping(pod_spec)
    problems: list[str] = []

    main: dict[str, Decimal] = {}
    for index, container in enumerate(_mappings(spec.get("containers"))):
        _add(main, _container_resources(container, "container", index, problems))

    sidecars: dict[str, Decimal] = {}
    init_needs: dict[str, Decimal] = {}
    for index, container in enumerate(_mappings(spec.get("initContainers"))):
        amounts = _container_resources(container, "init container", index, problems)
        if container.get("restartPolicy") == "Always":
            _add(sidecars, amounts)
            continue
        for resource, amount in amounts.items():
            need = amount + sidecars.get(resource, Decimal(0))
            init_needs[resource] = max(need, init_needs.get(resource, Decimal(0)))

    running = dict(main)
    _add(running, sidecars)
    pod = {r: max(running.get(r, Decimal(0)), init_needs.get(r, Decimal(0))) for r in running}
    for resource, need in init_needs.items():
        pod.setdefault(resource, need)
    return pod, problems


def _container_resources(
    container: Mapping[str, Any], kind: str, index: int, problems: list[str]
) -> dict[str, Decimal]:
    resources = _mapping(container.get("resources"))
    limits = _mapping(resources.get("limits"))
    requests = _mapping(resources.get("requests"))
    name = container.get("name")
    label = f"{kind} {name}" if isinstance(name, str) and name else f"{kind} #{index}"
    amounts: dict[str, Decimal] = {}
    for resource in _extended_names((*limits, *requests)):
        raw = limits.get(resource)
        if raw is None:
            raw = requests.get(resource)
        if raw is None:  # a JSON null in both places: asks for nothing
            continue
        try:
            amounts[resource] = parse_quantity(raw)
        except QuantityError as error:
            amounts[resource] = Decimal(1)
            problems.append(f"{label}: {resource}={error}")
    return amounts


def _extended_names(names: Iterable[object]) -> list[str]:
    """Distinct extended resource names, in first-seen order; non-string keys dropped."""
    seen: dict[str, None] = {}
    for name in names:
        if isinstance(name, str) and is_extended(name):
            seen.setdefault(name, None)
    return list(seen)


def _add(total: dict[str, Decimal], amounts: Mapping[str, Decimal]) -> None:
    for resource, amount in amounts.items():
        total[resource] = total.get(resource, Decimal(0)) + amount


# ------------------------------------------------------------------------------ GPUs


_MIG_PROFILE = re.compile(r"(?:(?P<compute>[0-9]+)c\.)?(?P<slices>[0-9]+)g(?:[.+-]|$)")
"""A MIG profile after ``mig-``: ``3g.20gb``, ``1g.10gb+me``, or a compute
instance ``1c.3g.20gb`` (one compute slice of a three-slice GPU instance)."""


def gpu_share(resource: str, rules: Sequence[GpuResource]) -> float | None:
    """How many GPUs one unit of ``resource`` stands for; ``None`` when it is no GPU.

    The first rule whose ``resource`` matches decides (a trailing ``*``
    matches by prefix), so a policy reads top to bottom and a specific entry
    listed before a wildcard overrides it. ``PerUnit`` rules give their
    ``gpusPerUnit``. ``MigComputeSlices`` rules read the profile from the
    resource name: ``nvidia.com/mig-3g.20gb`` is 3 of ``migSlicesPerGpu``
    compute slices; a compute-instance profile (``mig-1c.3g.20gb``) counts
    its own compute slices. A name whose profile cannot be read counts as a
    whole GPU, never as free.
    """
    for rule in rules:
        pattern = rule.resource
        if pattern.endswith("*"):
            if not resource.startswith(pattern[:-1]):
                continue
        elif resource != pattern:
            continue
        if GpuShare(rule.share) is GpuShare.MIG_SLICES:
            return _mig_share(resource, rule.mig_slices_per_gpu)
        return rule.gpus_per_unit
    return None


def _mig_share(resource: str, slices_per_gpu: int) -> float:
    profile = resource.rpartition("/")[2].removeprefix("mig-")
    match = _MIG_PROFILE.match(profile)
    if match is None:
        return 1.0
    slices = int(match["compute"] or match["slices"])
    if slices == 0:
        return 1.0
    # A profile never holds more than its GPU; cap in case migSlicesPerGpu is set too low.
    return min(slices / slices_per_gpu, 1.0)


def gpu_count(resources: Mapping[str, Decimal | float], rules: Sequence[GpuResource]) -> float:
    """GPU-equivalents of an amount of resources: each quantity times its GPU share.

    Resources no rule names (CPU, memory, FPGAs, ...) add nothing.
    """
    total = 0.0
    for resource, quantity in resources.items():
        share = gpu_share(resource, rules)
        if share is not None:
            total += float(quantity) * share
    return total


def dra_claims(pod_spec: Mapping[str, Any]) -> int:
    """How many Dynamic Resource Allocation claims a pod makes (``spec.resourceClaims``).

    What device a claim is given is decided by the DRA driver and not visible
    from the pod, so callers charge each claim as one GPU at the fallback
    price and flag it; this only counts them, malformed entries included.
    """
    claims = _mapping(pod_spec).get("resourceClaims")
    return len(claims) if isinstance(claims, list | tuple) else 0


def node_gpu_capacity(status: Mapping[str, Any], rules: Sequence[GpuResource]) -> float:
    """GPU-equivalents a Node offers, to spread the node's price over.

    ``status.allocatable`` is preferred, as it counts the GPUs pods can be
    given (an unhealthy GPU is not sold); ``status.capacity`` is the fallback
    when allocatable yields no GPUs (device plugin not reporting yet, or its
    values unreadable). Unreadable quantities count 0: the price is spread over
    what can be read, and pricing has its own fallback for a node with none.
    """
    node_status = _mapping(status)
    gpus = _node_gpus(_mapping(node_status.get("allocatable")), rules)
    if gpus > 0:
        return gpus
    return _node_gpus(_mapping(node_status.get("capacity")), rules)


def _node_gpus(resources: Mapping[str, Any], rules: Sequence[GpuResource]) -> float:
    readable: dict[str, Decimal] = {}
    for resource in _extended_names(resources):
        try:
            readable[resource] = parse_quantity(resources[resource])
        except QuantityError:
            continue
    return gpu_count(readable, rules)


# --------------------------------------------------------------------------- helpers


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _mappings(value: object) -> list[Mapping[str, Any]]:
    if not isinstance(value, list | tuple):
        return []
    return [item for item in value if isinstance(item, Mapping)]
