"""Utilisation: one cluster-wide query, every label and metric spelling accepted."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gpu_budget.utilization import parse_samples, utilization_query


def sample(value: str, **labels: str) -> dict[str, object]:
    return {"metric": labels, "value": [1700000000.0, value]}


def test_pod_samples_are_keyed_by_namespace_and_pod() -> None:
    snapshot = parse_samples(
        [
            sample("0.37", gb_namespace="ml-team", gb_pod="train-0", gb_host="p5-spot-0"),
            sample("1", gb_namespace="ml-team", gb_pod="train-1", gb_host="p5-spot-1"),
        ]
    )
    assert snapshot.by_pod == {("ml-team", "train-0"): 0.37, ("ml-team", "train-1"): 1.0}
    assert snapshot.for_pod("ml-team", "train-0", "p5-spot-0") == 0.37


def test_series_without_pod_become_the_node_fallback() -> None:
    snapshot = parse_samples(
        [sample("0.2", gb_host="g5-spot-0"), sample("0.4", gb_host="g5-spot-0", gb_pod="")]
    )
    assert snapshot.by_pod == {}
    assert snapshot.by_node == {"g5-spot-0": pytest.approx(0.3)}
    assert snapshot.for_pod("ml-team", "anything", "g5-spot-0") == pytest.approx(0.3)
    assert snapshot.for_pod("ml-team", "anything", "elsewhere") is None


def test_first_series_for_a_pod_wins_like_promql_or() -> None:
    snapshot = parse_samples(
        [
            sample("0.5", gb_namespace="ns", gb_pod="p"),
            sample("0.9", gb_namespace="ns", gb_pod="p"),
        ]
    )
    assert snapshot.by_pod[("ns", "p")] == 0.5


@pytest.mark.parametrize("raw", ["NaN", "garbage", None])
def test_unreadable_values_are_skipped(raw: str | None) -> None:
    bad = {"metric": {"gb_namespace": "ns", "gb_pod": "p"}, "value": [0, raw]}
    assert parse_samples([bad]).by_pod == {}


def test_values_are_clamped_to_a_ratio() -> None:
    snapshot = parse_samples([sample("1.7", gb_namespace="ns", gb_pod="p")])
    assert snapshot.by_pod[("ns", "p")] == 1.0


def test_query_covers_every_metric_and_label_spelling() -> None:
    query = utilization_query()
    for name in (
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_GPU_UTIL_RATIO",
        '"exported_pod"',
        '"exported_namespace"',
        '"pod_name"',
        '"pod_namespace"',
        '"Hostname"',
        '"hostname"',
    ):
        assert name in query
    assert "DCGM_FI_DEV_GPU_UTIL / 100" in query
    # The preferred metric comes first, so PromQL's "or" keeps it.
    assert query.index("GR_ENGINE_ACTIVE") < query.index("DCGM_FI_DEV_GPU_UTIL /")


def test_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with Debian's prometheus package: run `make system-deps`"
    rules = {
        "groups": [{"name": "g", "rules": [{"record": "gb:util", "expr": utilization_query()}]}]
    }
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "answer",
    ["not a list", {"result": []}, [1, "two", None], [{"metric": "x", "value": [0, "1"]}], None],
)
def test_an_answer_of_the_wrong_shape_reads_as_unavailable_or_empty(answer: object) -> None:
    """A Prometheus answer of the wrong shape never raises: the poller must keep running."""
    snapshot = parse_samples(answer)
    assert snapshot.by_pod == {} and snapshot.by_node == {}
    assert snapshot.available == isinstance(answer, list)
