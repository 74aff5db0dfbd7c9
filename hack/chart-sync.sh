#!/usr/bin/env bash
# Regenerate the files the Helm chart takes from the code: its copy of the CRDs
# (the same text `make crds` writes to crds/; run that too when models.py
# changed), the admission policies template and the webhook entries. The unit
# tests (tests/unit/test_chart.py) fail when the chart is out of date.
#
#   hack/chart-sync.sh           write charts/gpu-budget-operator/...
#   hack/chart-sync.sh --check   exit 1 with a diff when out of date
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${REPO}/.venv/bin/python"
[[ -x "${PY}" ]] || { echo "error: run \`make venv\` first" >&2; exit 2; }
CHART="${REPO}/charts/gpu-budget-operator"
if [[ "${1:-}" == "--check" ]]; then
    exec "${PY}" -m gpu_budget.chartgen --check "${CHART}"
fi
exec "${PY}" -m gpu_budget.chartgen --write "${CHART}"
