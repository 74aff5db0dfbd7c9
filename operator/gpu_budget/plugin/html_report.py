"""``report --html``: one self-contained page: spend over time by team, top budgets, idle.

Everything is inline (styles and SVG from :mod:`.charts`), so the page can be
mailed or attached to a ticket and opens the same anywhere, offline.
"""

from __future__ import annotations

from html import escape

from gpu_budget.plugin.charts import horizontal_bars, stacked_columns
from gpu_budget.plugin.history import History, Usage
from gpu_budget.plugin.report import DIMENSIONS, columns, footer, report_rows

TOP = 10

STYLE = (
    "body{font-family:sans-serif;margin:24px;color:#222}"
    "table{border-collapse:collapse;margin:12px 0}"
    "td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}"
    "td:first-child,th:first-child{text-align:left}"
    ".chart{display:block;margin:16px 0}"
)


def render_html(history: History, by: str = "team") -> str:
    """The page for ``history`` (its periods are the columns of the time chart)."""
    group = DIMENSIONS[by]
    labels = [p.start.strftime("%m-%d %H:%M") for p in history.periods]
    stacks: dict[str, list[float]] = {}
    budgets: dict[str, Usage] = {}
    for (who, index), usage in history.usage.items():
        stacks.setdefault(group(who), [0.0] * len(labels))[index] += usage.spent
        budgets.setdefault(f"{who.namespace}/{who.budget}", Usage()).add(usage)
    ranked = sorted(budgets.items(), key=lambda item: -item[1].spent)[:TOP]
    idle = sorted(budgets.items(), key=lambda item: -item[1].idle)[:TOP]
    charts = [
        stacked_columns(f"Spend over time by {by}", labels, dict(sorted(stacks.items()))),
        horizontal_bars(
            f"Top {len(ranked)} budgets by spend",
            [(name, [u.spent]) for name, u in ranked],
            ["spend"],
        ),
        horizontal_bars(
            "Idle spend (GPU time that did no work) against busy spend",
            [(name, [u.idle, max(0.0, u.spent - u.idle)]) for name, u in idle],
            ["idle", "busy"],
        ),
    ]
    rows = report_rows(history, by)
    shown = columns(by)
    table = "".join(
        "<tr>" + "".join(f"<td>{escape(c.show(r.get(c.key)))}</td>" for c in shown) + "</tr>"
        for r in rows
    )
    header = "".join(f"<th>{escape(c.header)}</th>" for c in shown)
    notes = escape(footer(history)).replace("\n", "<br>")
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>GPU budget report</title><style>{STYLE}</style></head><body>"
        f"<h1>GPU budget report</h1><p>{notes}</p>"
        f"<table><tr>{header}</tr>{table}</table>" + "".join(charts) + "</body></html>\n"
    )
