"""Rows as a table (the default), JSON, YAML or CSV: one renderer per format.

Every verb hands over the same thing, a list of flat rows with the columns in
order, so each format is written once and a verb only chooses its columns.
Tables show values as the verb formatted them; the machine formats keep
numbers as numbers so a script need not parse ``$1,234.50``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

FORMATS = ("table", "json", "yaml", "csv")

Cell = str | int | float | bool | None


@dataclass(frozen=True)
class Column:
    """A column: its key in a row, its table header, and how the table shows a value."""

    key: str
    header: str
    show: Callable[[Any], str] = str


def usd(value: Any) -> str:
    return "-" if value is None else f"${value:,.2f}"


def number(value: Any) -> str:
    return "-" if value is None else f"{value:,.2f}"


def ratio(value: Any) -> str:
    return "-" if value is None else f"{value:.0%}"


def text(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def render(rows: Sequence[Mapping[str, Cell]], columns: Sequence[Column], fmt: str) -> str:
    """The rows in ``fmt`` (one of :data:`FORMATS`), ending in a newline."""
    if fmt == "table":
        return table(rows, columns)
    picked = [{c.key: row.get(c.key) for c in columns} for row in rows]
    if fmt == "json":
        return json.dumps(picked, indent=2) + "\n"
    if fmt == "yaml":
        return str(yaml.safe_dump(picked, sort_keys=False))
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, [c.key for c in columns], lineterminator="\n")
        writer.writeheader()
        writer.writerows(picked)
        return buffer.getvalue()
    raise ValueError(f"unknown output format {fmt!r}")


def table(rows: Sequence[Mapping[str, Cell]], columns: Sequence[Column]) -> str:
    """kubectl's look: upper-case headers, columns padded by three spaces, no borders."""
    cells = [[c.header.upper() for c in columns]]
    cells += [[c.show(row.get(c.key)) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["   ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in cells]
    return "".join(line.rstrip() + "\n" for line in lines)
