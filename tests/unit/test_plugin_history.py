"""Unit tests for ``report`` and ``export``: history from Prometheus, groups, FOCUS rows.

A fake Prometheus answers the plugin's queries from fixed series, so the whole
path from query results to report rows and FOCUS CSV runs without a server;
the FOCUS CSV is then checked by the FinOps Foundation's ``focus-validator``.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gpu_budget.plugin.focus import HEADER, Issuer, focus_rows
from gpu_budget.plugin.history import fetch
from gpu_budget.plugin.increments import Series
from gpu_budget.plugin.output import Column, render
from gpu_budget.plugin.periods import Period, charge_periods
from gpu_budget.plugin.prometheus import Prometheus
from gpu_budget.plugin.report import footer, report_rows

START = datetime(2026, 6, 1, tzinfo=UTC)
T0 = START.timestamp()
HOUR = 3600.0


def labels(budget: str, team: str, cost_center: str = "cc1") -> dict[str, str]:
    return {"namespace": "ml", "budget": budget, "team": team, "cost_center": cost_center}


SPENT = [
    # Runs across the whole day; had spent 100 before it.
    Series(labels("llama", "nlp"), [(T0 + h * HOUR, 100 + 50 * h) for h in range(0, 25)]),
    # Created at 06:00, deleted at 10:00.
    Series(labels("short", "vision"), [(T0 + h * HOUR, 30 * (h - 6)) for h in range(7, 11)]),
]
GPU_HOURS = [
    Series(labels("llama", "nlp"), [(T0 + h * HOUR, 10 + 8 * h) for h in range(0, 25)]),
    Series(labels("short", "vision"), [(T0 + h * HOUR, 4 * (h - 6)) for h in range(7, 11)]),
]


class FakePrometheus(Prometheus):
    def __init__(self, gpu_hours: bool = True) -> None:
        super().__init__("http://prometheus.invalid")
        self.gpu_hours = gpu_hours

    def _answer(self, query: str, at_start: bool) -> list[Series]:
        if "gpubudget_budget_info" in query:
            return [
                Series(
                    {
                        "namespace": "ml",
                        "budget": "llama",
                        "gpu_product": "NVIDIA-H100-80GB-HBM3",
                        "capacity_type": "spot",
                        "instance_type": "p5.48xlarge",
                        "region": "us-east-1",
                    },
                    [(T0, 1.0)],
                )
            ]
        if "gpubudget_approved_usd" in query:
            return [Series({"namespace": "ml", "budget": "llama"}, [(T0, 50_000.0)])]
        if "gpubudget_gpu_utilization_ratio" in query:
            # Utilisation x GPU-hours: llama's GPUs were busy three quarters of the time.
            weights = GPU_HOURS if self.gpu_hours else SPENT
            source = [Series(s.labels, [(t, 0.75 * v) for t, v in s.points]) for s in weights[:1]]
            return self._at(source, at_start)
        if "gpubudget_gpu_hours" in query:
            source = GPU_HOURS if self.gpu_hours else []
        elif "gpubudget_idle_spend_usd" in query:
            source = [Series(s.labels, [(t, v / 10) for t, v in s.points]) for s in SPENT]
        else:
            source = SPENT
        return self._at(source, at_start)

    @staticmethod
    def _at(source: list[Series], at_start: bool) -> list[Series]:
        if at_start:
            return [Series(s.labels, s.points[:1]) for s in source if s.points[0][0] <= T0]
        return list(source)

    def range(self, query: str, start: datetime, end: datetime, step: float) -> list[Series]:
        return self._answer(query, at_start=False)

    def instant(self, query: str, at: datetime) -> list[Series]:
        return self._answer(query, at_start=True)


DAY = Period(START, START + timedelta(days=1))


def test_report_by_team_counts_a_budget_deleted_in_the_period() -> None:
    rows = report_rows(fetch(FakePrometheus(), [DAY]), "team")
    assert rows == [
        {
            "group": "nlp",
            "spent": 1200.0,
            "gpu_hours": 192.0,
            "idle_spent": 120.0,
            "utilization": 0.75,
            "budgets": 1,
        },
        {
            "group": "vision",
            "spent": 120.0,
            "gpu_hours": 16.0,
            "idle_spent": 12.0,
            "utilization": None,
            "budgets": 1,
        },
    ]


def test_report_by_cost_center_groups_both_and_says_when_gpu_hours_are_unknown() -> None:
    history = fetch(FakePrometheus(gpu_hours=False), [DAY])
    rows = report_rows(history, "cost-center")
    assert [(r["group"], r["spent"], r["gpu_hours"], r["budgets"]) for r in rows] == [
        ("cc1", 1320.0, None, 2)
    ]
    assert "not exported" in footer(history)


def test_report_formats() -> None:
    rows = report_rows(fetch(FakePrometheus(), [DAY]), "budget")
    columns = [Column("group", "budget"), Column("spent", "spent")]
    assert json.loads(render(rows, columns, "json"))[0] == {"group": "ml/llama", "spent": 1200.0}
    assert render(rows, columns, "csv").splitlines() == [
        "group,spent",
        "ml/llama,1200.0",
        "ml/short,120.0",
    ]


def focus_csv() -> str:
    history = fetch(FakePrometheus(), list(charge_periods(DAY, "hourly")))
    rows = focus_rows(history, Issuer())
    return render(rows, [Column(name, name) for name in HEADER], "csv")


def test_focus_rows_one_per_budget_per_charge_period() -> None:
    rows = list(csv.DictReader(io.StringIO(focus_csv())))
    llama = [r for r in rows if r["ResourceName"] == "llama"]
    short = [r for r in rows if r["ResourceName"] == "short"]
    assert len(llama) == 24 and len(short) == 4
    assert sum(float(r["BilledCost"]) for r in rows) == pytest.approx(1320)
    first = llama[0]
    assert (first["ChargePeriodStart"], first["ChargePeriodEnd"]) == (
        "2026-06-01T00:00:00Z",
        "2026-06-01T01:00:00Z",
    )
    assert (first["BillingPeriodStart"], first["BillingPeriodEnd"]) == (
        "2026-06-01T00:00:00Z",
        "2026-07-01T00:00:00Z",
    )
    assert first["PricingCategory"] == "Dynamic"
    assert first["ListUnitPrice"] == "6.250000"  # $50 for 8 GPU-hours
    assert json.loads(first["Tags"]) == {
        "namespace": "ml",
        "budget": "llama",
        "team": "nlp",
        "cost-center": "cc1",
    }
    assert (first["x_GpuProduct"], first["x_ApprovedAmount"]) == (
        "NVIDIA-H100-80GB-HBM3",
        "50000.000000",
    )
    assert short[0]["PricingCategory"] == ""  # how it was priced is not known
    assert list(rows[0])[-6:] == [
        "x_GpuProduct",
        "x_InstanceType",
        "x_CapacityType",
        "x_GpuUtilization",
        "x_IdleCost",
        "x_ApprovedAmount",
    ]


def test_focus_export_passes_the_finops_foundation_validator(tmp_path: Path) -> None:
    """focus-validator 1.0.0 with --validate-version 1.0 must say the file validates."""
    validator = Path(sys.executable).with_name("focus-validator")
    if not validator.exists():
        pytest.fail("focus-validator is not installed: pip install -e '.[dev]'")
    data = tmp_path / "focus.csv"
    data.write_text(focus_csv())
    import focus_validator

    # The validator reads its currency list from a path relative to the working directory.
    package_parent = Path(focus_validator.__file__).resolve().parents[1]
    result = subprocess.run(
        [str(validator), "--data-file", str(data), "--validate-version", "1.0"],
        cwd=package_parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation succeeded." in result.stdout, result.stdout
