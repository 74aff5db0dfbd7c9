"""The instants the accounting loop must wake at: predicted stops, thresholds, rewrites.

One heap for the whole operator instead of a sleeping handler per budget: the
loop sleeps until the earliest entry (or its next pass) and then passes over
just the budgets that are due. Each budget has at most one live entry, its
earliest: accounting a budget schedules everything it needs again, so a later
instant dropped here comes back when the earlier one is taken. That keeps the
heap as large as the number of budgets, however often they are accounted.
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
    earliest_of: dict[BudgetKey, datetime] = field(default_factory=dict)
    """Each budget's live entry; heap entries that disagree with it are superseded."""

    def add(self, when: datetime, key: BudgetKey) -> None:
        current = self.earliest_of.get(key)
        if current is not None and current <= when:
            return
        self.earliest_of[key] = when
        heapq.heappush(self.heap, Due(when, key))
        if len(self.heap) > 4 * len(self.earliest_of) + 64:
            self._compact()

    def earliest(self) -> datetime | None:
        self._drop_superseded()
        return self.heap[0].when if self.heap else None

    def pop_due(self, now: datetime) -> set[BudgetKey]:
        due: set[BudgetKey] = set()
        self._drop_superseded()
        while self.heap and self.heap[0].when <= now:
            entry = heapq.heappop(self.heap)
            del self.earliest_of[entry.key]
            due.add(entry.key)
            self._drop_superseded()
        return due

    def _live(self, entry: Due) -> bool:
        return self.earliest_of.get(entry.key) == entry.when

    def _drop_superseded(self) -> None:
        while self.heap and not self._live(self.heap[0]):
            heapq.heappop(self.heap)

    def _compact(self) -> None:
        self.heap = [entry for entry in self.heap if self._live(entry)]
        heapq.heapify(self.heap)
