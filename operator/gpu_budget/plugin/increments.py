"""Spend within a period from a cumulative gauge: the pure maths behind ``report`` and ``export``.

The operator exports each budget's spend so far (``gpubudget_spent_usd``) and
its idle spend and GPU-hours the same way. What a budget spent in a period is
how much that figure grew between the period's bounds, which needs care
because a budget's series is not one unbroken line:

* it **starts inside** the period (a budget created then): it grew from 0;
* it **ends inside** the period (a budget deleted then, or an operator that
  stopped): its growth up to its last sample counts, nothing after;
* it has **gaps** (an operator restart, a budget deleted and created again,
  which carries its spend on): growth resumes from the last value seen, so
  the time it was away is counted once, on its first sample back;
* it **moves** to new labels (the owner edited, a failover to another replica):
  points are followed per budget (namespace and name) across label sets, and
  each increase is attributed to the labels of the sample that shows it;
* it **drops** (a new run under an old name with no spend carried on): like
  a Prometheus counter reset, the new value is all growth.

The growth up to each sample falls in the charge period (bucket) the sample is
in (a sample on a boundary closes the period before it); samples at or before
the period's start only set the starting value, which is the budget's last
known value before the period (``baseline``) when the series existed then.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

ATTRIBUTION_LABELS = ("namespace", "budget", "team", "cost_center")


class Attribution(NamedTuple):
    """Whose spend it is: the labels every per-budget series carries."""

    namespace: str
    budget: str
    team: str
    cost_center: str

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.budget

    @classmethod
    def of(cls, labels: Mapping[str, str]) -> Attribution:
        return cls(*(labels.get(name, "") for name in ATTRIBUTION_LABELS))


@dataclass(frozen=True)
class Series:
    """One series of a range query: its labels and (unix seconds, value) points."""

    labels: Mapping[str, str]
    points: Sequence[tuple[float, float]]


Growth = dict[tuple[Attribution, int], float]
"""Growth per (attribution, charge period index)."""


def growth(
    series: Sequence[Series],
    baseline: Mapping[tuple[str, str], float],
    bounds: Sequence[float],
) -> Growth:
    """How much each budget's gauge grew in each charge period ``bounds[i]..bounds[i+1]``.

    ``bounds`` are ascending unix seconds; ``baseline`` is each budget's last
    value at or before ``bounds[0]``, where known. Samples later than
    ``bounds[-1]`` are ignored. See the module docstring for the rules.
    """
    timelines: dict[tuple[str, str], dict[float, tuple[float, Attribution]]] = defaultdict(dict)
    for one in series:
        who = Attribution.of(one.labels)
        timeline = timelines[who.key]
        for t, value in one.points:
            # Two series of one budget at one instant (a standby replica's stale gauge,
            # a move between label sets): spend only grows, so the larger is current.
            if t not in timeline or value > timeline[t][0]:
                timeline[t] = (value, who)
    result: Growth = defaultdict(float)
    for key, timeline in timelines.items():
        previous = baseline.get(key, 0.0)
        for t in sorted(timeline):
            value, who = timeline[t]
            if t > bounds[-1]:
                break
            step = value - previous if value >= previous else value
            previous = value
            if t <= bounds[0]:
                continue
            result[(who, bisect_left(bounds, t) - 1)] += step
    return dict(result)
