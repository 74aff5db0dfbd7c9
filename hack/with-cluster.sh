#!/usr/bin/env bash
# Run a command against the local GPU cluster, starting the cluster first if it
# is not up, and stopping afterwards only the components this script started.
# Exits with the command's status.
#
#   hack/with-cluster.sh .venv/bin/pytest tests/e2e -q
#
# The command sees KUBECONFIG and PROMETHEUS_URL of the local cluster.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "${HERE}")"
PY="${REPO}/.venv/bin/python"

if [[ $# -eq 0 ]]; then
  echo "usage: $0 COMMAND [ARGS...]" >&2
  exit 2
fi
if [[ ! -x "${PY}" ]]; then
  echo "error: ${PY} not found; run \`make venv\` first" >&2
  exit 2
fi
lc() { PYTHONPATH="${HERE}" "${PY}" -m localcluster "$@"; }

started_file="$(mktemp "${TMPDIR:-/tmp}/with-cluster.XXXXXX")"
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -s "${started_file}" ]]; then
    echo "with-cluster: stopping what it started: $(paste -sd' ' "${started_file}")" >&2
    lc down --only "$(paste -sd, "${started_file}")" >&2 || true
  fi
  rm -f "${started_file}"
  exit "${rc}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if lc status --quiet; then
  echo "with-cluster: local cluster already up; it will be left running" >&2
else
  echo "with-cluster: starting the local cluster" >&2
  lc up --started-file "${started_file}" >&2
fi
eval "$(lc env)"

set +e
"$@"
rc=$?
set -e
exit "${rc}"
