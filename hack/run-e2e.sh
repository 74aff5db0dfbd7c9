#!/usr/bin/env bash
# The end-to-end tests, side by side where they can be. Most of their time is spent
# waiting for money to accumulate, and each runs in a namespace of its own, so they
# run in parallel (pytest-xdist, E2E_WORKERS, default 3). Tests marked `serial`
# change what the cluster shares (the BudgetPolicy's notification URL and grace
# bound, or they need no other operator's webhooks around) and run one at a time
# afterwards. Both phases always run; the exit code is the first failure's.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTEST="${REPO}/.venv/bin/pytest"
cd "${REPO}"
"${PYTEST}" tests/e2e -q -n "${E2E_WORKERS:-3}" -m "not serial" "$@"
parallel=$?
"${PYTEST}" tests/e2e -q -m serial "$@"
serial=$?
if [[ ${parallel} -ne 0 ]]; then exit "${parallel}"; fi
exit "${serial}"
