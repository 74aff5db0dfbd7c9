"""Unit tests for the command line: help on every verb, errors as one line, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpu_budget.plugin.cli import VERBS, main


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_verb_has_help(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([verb, "--help"])
    assert exit_.value.code == 0
    assert f"kubectl gpubudget {verb}" in capsys.readouterr().out


def test_estimate_offline_states_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", "--offline", "--hours", "10", "--instance-type", "p5.48xlarge"]) == 0
    out = capsys.readouterr().out
    assert "contingency 50%" in out and "ceiling $10,000.00" in out and "azure" in out


def test_estimate_json(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["estimate", "--offline", "--hours", "1", "--gpus", "2", "--gpu-product", "NVIDIA-L4"]
    assert main([*args, "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["estimate"]["gpus"] == 2 and document["options"]


def test_estimate_without_a_cluster_falls_back_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope"
    assert (
        main(
            [
                "estimate",
                "--kubeconfig",
                str(missing),
                "--hours",
                "1",
                "--instance-type",
                "g5.xlarge",
            ]
        )
        == 0
    )
    assert "no cluster" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["top", "--kubeconfig", "/nonexistent/kubeconfig"], "no usable kubeconfig"),
        (["report", "--prometheus", "http://127.0.0.1:9"], "cannot reach Prometheus"),
        (["report", "--prometheus", "", "--since", "1d"], "--prometheus URL or PROMETHEUS_URL"),
        (["report", "--prometheus", "http://x", "--since", "soon"], "duration ago"),
        (["estimate", "--offline", "--hours", "1", "--gpu-product", "X"], "--gpus"),
        (["estimate", "--offline", "-f", "/nonexistent.yaml"], "cannot read"),
    ],
)
def test_errors_are_one_line_without_a_traceback(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_an_unreachable_cluster_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u, namespace: ml}}]\n"
    )
    assert main(["top", "--kubeconfig", str(kubeconfig)]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the cluster at https://127.0.0.1:9 (context c)" in err
    assert main(["pending", "--kubeconfig", str(kubeconfig), "--context", "other"]) == 1
    assert "context 'other' is not in the kubeconfig" in capsys.readouterr().err
