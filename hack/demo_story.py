#!/usr/bin/env python3
"""The operator's story on the local cluster, for `make demo`.

The chart is installed in development mode (hack/chart-dev.sh: everything from
the chart, the operator as a local process with the chart's ServiceAccount),
serving namespace ml-team. Then, as the three users:

1. alice applies examples/budget.yaml and examples/training-job.yaml, a budget
   under the approval ceiling: it runs, warns, and is suspended at its cap; its
   outcome (tokens the simulated trainer exports) shows the cost per million tokens;
2. alice runs a budget whose estimate is above the ceiling: it waits for
   finance; alice cannot approve it herself; bob (finance) finds and approves
   it; it runs to its cap.

Spend moves at the demo prices of examples/policy.yaml ($1 a second per spot
p5.48xlarge node), and a live table shows it. DEMO_KEEP=1 leaves the release,
the operator and the budgets in place afterwards.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from localcluster import manifests
from localcluster.kubectl import Kubectl, KubectlError

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "ml-team"
GOVERNED = "gpubudget.dev/admission-policies"
METRICS_PORT = int(os.environ.get("METRICS_PORT", "39102"))
KUBECTL = Kubectl.from_env()


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def kubectl(*args: str, context: str = "admin", check: bool = True) -> str:
    """What kubectl shows at a terminal: its output and its messages (a refusal, too)."""
    result = KUBECTL(*args, context=context, check=check)
    return result.stdout + result.stderr


def apply(manifest: dict[str, Any]) -> None:
    """As alice: she runs the team's training."""
    KUBECTL("apply", "-f", "-", context="alice", input=json.dumps(manifest))


def budget(name: str, cap: float, **spec: Any) -> dict[str, Any]:
    return manifests.budget(
        name, NAMESPACE, cap, owner={"team": "nlp", "costCenter": "cc-4711"}, **spec
    )


def status_of(name: str) -> dict[str, Any]:
    return dict(KUBECTL.get("tb", name, NAMESPACE).get("status") or {})


def live_view(name: str, until: set[str], timeout: float = 120) -> dict[str, Any]:
    """A refreshing line per pass: phase, spend, burn, utilisation, the planned stop."""
    print(
        f"{'phase':<17}{'spent':>10}{'cap':>8}{'burn/h':>9}{'util':>6}{'$/unit':>9}  planned stop",
        flush=True,
    )
    deadline = time.monotonic() + timeout
    cap = float(KUBECTL.get("tb", name, NAMESPACE)["spec"]["costCap"])
    while True:
        status = status_of(name)
        phase = status.get("phase", "-")
        util = status.get("gpuUtilization")
        shown_util = "-" if util is None else f"{util:.2f}"
        spent, burn = status.get("spent", 0), status.get("burnRatePerHour", 0)
        stop = (status.get("enforcement") or {}).get("stopAt") or ""
        per_unit = (status.get("outcome") or {}).get("costPerUnit")
        shown_unit = "-" if per_unit is None else f"{per_unit:.3f}"
        print(
            f"{phase:<17}{spent:>10.2f}{cap:>8.0f}{burn:>9.0f}{shown_util:>6}{shown_unit:>9}  "
            f"{stop}",
            flush=True,
        )
        if phase in until:
            return status
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} did not reach {until} in {timeout:.0f}s")
        time.sleep(2)


def events(name: str) -> None:
    """The Events of this budget and its Job (by uid: an earlier run's same names are not shown)."""
    for kind in ("tb", "job"):
        uid = KUBECTL.get(kind, name, NAMESPACE)["metadata"]["uid"]
        print(
            kubectl(
                "get", "events", "-n", NAMESPACE, "--field-selector", f"involvedObject.uid={uid}",
                "--sort-by=.lastTimestamp", "--no-headers",
                "-o", "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message",
            ),
            end="",
        )  # fmt: skip


def cleanup(names: list[str]) -> None:
    for name in names:
        kubectl(
            "delete", "job", name, "-n", NAMESPACE, "--ignore-not-found", "--wait=true", check=False
        )
        kubectl(
            "delete", "tb", name, "-n", NAMESPACE, "--ignore-not-found", "--wait=true", check=False
        )


def main() -> None:
    names = ["llama-finetune", "pretrain-70b"]
    cleanup(names)

    say("alice applies examples/budget.yaml ($100, below the ceiling) and training-job.yaml")
    for example in ("budget.yaml", "training-job.yaml"):
        print(kubectl("apply", "-f", str(REPO / "examples" / example), context="alice"), end="")
    final = live_view("llama-finetune", {"Suspended"})
    print(
        f"final spend ${final['spent']:.2f} of the $100 cap ({(final['spent'] - 100) / 100:+.2%})"
    )
    outcome = status_of("llama-finetune").get("outcome") or {}
    if outcome:
        print(
            f"outcome: {outcome['value']:.1f} {outcome['unit']} at "
            f"${outcome.get('costPerUnit') or 0:.3f} per {outcome['unit'].removesuffix('s')} "
            f"(status.outcome, measured {outcome['observedAt']})"
        )
    events("llama-finetune")

    say("alice: a run whose estimate (16 H100s for an hour, +50% contingency) is above the ceiling")
    apply(
        budget(
            "pretrain-70b",
            60,
            estimate={
                "hours": 1,
                "gpus": 16,
                "instanceType": "p5.48xlarge",
                "capacityType": "spot",
            },
        )
    )
    apply(manifests.gpu_job("pretrain-70b", NAMESPACE, "pretrain-70b", utilization=0.72))
    live_view("pretrain-70b", {"AwaitingApproval"}, timeout=30)
    print("the Job is held: spec.suspend =", kubectl(
        "get", "job", "pretrain-70b", "-n", NAMESPACE, "-o", "jsonpath={.spec.suspend}"
    ))  # fmt: skip

    say("alice tries to approve her own budget")
    print(
        kubectl(
            "annotate", "tb", "pretrain-70b", "-n", NAMESPACE, "gpubudget.dev/approved-amount=60",
            context="alice", check=False,
        ).strip()
    )  # fmt: skip

    say("bob (finance) lists what waits for approval, and approves it")
    print(
        kubectl(
            "get", "tb", "-A", "--field-selector", "status.phase=AwaitingApproval", context="bob"
        ),
        end="",
    )
    kubectl(
        "annotate",
        "tb",
        "pretrain-70b",
        "-n",
        NAMESPACE,
        "gpubudget.dev/approved-amount=60",
        context="bob",
    )
    final = live_view("pretrain-70b", {"Suspended"})
    approval = final.get("approval") or {}
    print(
        f"approved by {approval.get('approvedBy')} at {approval.get('approvedAt')}; "
        f"final spend ${final['spent']:.2f} of $60"
    )
    events("pretrain-70b")

    say(f"the operator's own metrics (http://127.0.0.1:{METRICS_PORT}/metrics)")
    with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(
                (
                    "gpubudget_spent_usd{",
                    "gpubudget_cost_per_outcome_usd{",
                    "gpubudget_enforcement_actions_total{",
                )
            ):
                print(line)

    if os.environ.get("DEMO_KEEP") != "1":
        cleanup(names)


if __name__ == "__main__":
    try:
        main()
    except KubectlError as error:
        sys.exit(str(error))
    except KeyboardInterrupt:
        sys.exit(130)
