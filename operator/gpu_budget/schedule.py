"""The instants the accounting loop must wake at: predicted stops and warning thresholds.

One heap for the whole operator instead of a sleeping handler per budget: the
loop sleeps until the earliest entry (or its next pass) and then passes over
just the budgets that are due.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import datetime

BudgetKey = tuple[str, str]
"""(namespace, budget name)."""


@dataclass(order=True)
class Due:
    when: datetime
    key: BudgetKey = field(compare=False)


@dataclass
class Schedule:
    heap: list[Due] = field(default_factory=list)

    def add(self, when: datetime, key: BudgetKey) -> None:
        heapq.heappush(self.heap, Due(when, key))

    def earliest(self) -> datetime | None:
        return self.heap[0].when if self.heap else None

    def pop_due(self, now: datetime) -> set[BudgetKey]:
        due: set[BudgetKey] = set()
        while self.heap and self.heap[0].when <= now:
            due.add(heapq.heappop(self.heap).key)
        return due
