#!/usr/bin/env bash
# The Helm chart in development mode on the local cluster: everything installed by
# the chart, the operator running here as a local process with the chart's
# ServiceAccount (its RBAC, its identity in the admission policies). For `make demo`
# and for debugging; charts/gpu-budget-operator/README.md explains the mode.
#
#   hack/chart-dev.sh up       install/upgrade the release, start the operator (background)
#   hack/chart-dev.sh down     stop the operator, uninstall the release
#   hack/chart-dev.sh status   release and operator state
#
# Environment: RELEASE (gpubudget-dev), NAMESPACE (gpu-budget), WEBHOOK_PORT (38443),
# HEALTH_PORT (38081), METRICS_PORT (39102), OPERATOR_ARGS (extra operator flags,
# e.g. "--namespace ml-team"; then add HELM_ARGS="--set operator.namespaces={ml-team}"),
# HELM_ARGS (extra helm flags). State, logs and certificates: .local/chart-dev/.
# The BudgetPolicy "default" is the local cluster's (examples/policy.yaml), applied
# here if missing; the chart does not own it (other users of the cluster share it).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${REPO}/.venv/bin/python"
[[ -x "${PY}" ]] || { echo "error: run \`make venv\` first" >&2; exit 2; }
lc() { PYTHONPATH="${REPO}/hack" "${PY}" -m localcluster "$@"; }
eval "$(lc env)"
KUBECTL="$(lc which kubectl)"
HELM="$(lc which helm)"
RELEASE=${RELEASE:-gpubudget-dev}
NAMESPACE=${NAMESPACE:-gpu-budget}
WEBHOOK_PORT=${WEBHOOK_PORT:-38443}
HEALTH_PORT=${HEALTH_PORT:-38081}
METRICS_PORT=${METRICS_PORT:-39102}
STATE="${REPO}/.local/chart-dev"
FULLNAME="${RELEASE}-gpu-budget-operator"
[[ ${RELEASE} == *gpu-budget-operator* ]] && FULLNAME=${RELEASE}
PIDFILE="${STATE}/operator.pid"
k() { "${KUBECTL}" "$@"; }

running() { [[ -f ${PIDFILE} ]] && kill -0 "$(cat "${PIDFILE}")" 2>/dev/null; }

stop_operator() {
    if running; then
        kill -TERM -- "-$(cat "${PIDFILE}")" 2>/dev/null || true
        for _ in $(seq 1 40); do running || break; sleep 0.5; done
        running && kill -KILL -- "-$(cat "${PIDFILE}")" 2>/dev/null || true
    fi
    rm -f "${PIDFILE}"
}

up() {
    mkdir -p "${STATE}"
    "${REPO}/hack/webhook-certs.sh" "${STATE}/certs"
    local started=${SECONDS}
    # shellcheck disable=SC2086 # HELM_ARGS is a list of flags
    "${HELM}" upgrade --install "${RELEASE}" "${REPO}/charts/gpu-budget-operator" \
        --namespace "${NAMESPACE}" --create-namespace --wait \
        --set operator.enabled=false \
        --set "webhook.url=https://127.0.0.1:${WEBHOOK_PORT}" \
        --set-file "webhook.caBundle=${STATE}/certs/ca.crt" \
        --set "admissionPolicies.namePrefix=${RELEASE}-" \
        --set budgetPolicy.create=false \
        ${HELM_ARGS:-}
    # After the install: the chart brings the BudgetPolicy CRD on a fresh cluster.
    k get budgetpolicy default >/dev/null 2>&1 ||
        k apply --server-side -f "${REPO}/examples/policy.yaml"
    KUBECTL="${KUBECTL}" "${REPO}/hack/chart-sa-kubeconfig.sh" \
        "${NAMESPACE}" "${FULLNAME}" "${STATE}/kubeconfig" 12h
    stop_operator
    # shellcheck disable=SC2086 # OPERATOR_ARGS is a list of flags
    KUBECONFIG="${STATE}/kubeconfig" setsid "${PY}" -m gpu_budget \
        --peering-name "${FULLNAME}" \
        --webhook-address 127.0.0.1 --webhook-port "${WEBHOOK_PORT}" \
        --webhook-cert-file "${STATE}/certs/tls.crt" --webhook-key-file "${STATE}/certs/tls.key" \
        --prometheus-url "${PROMETHEUS_URL}" --metrics-port "${METRICS_PORT}" \
        --liveness-endpoint "http://127.0.0.1:${HEALTH_PORT}/healthz" \
        ${OPERATOR_ARGS:-} >>"${STATE}/operator.log" 2>&1 &
    echo $! >"${PIDFILE}"
    for _ in $(seq 1 120); do
        if ! running; then
            echo "operator exited; last lines of ${STATE}/operator.log:" >&2
            tail -20 "${STATE}/operator.log" >&2
            exit 1
        fi
        curl -fsS "http://127.0.0.1:${HEALTH_PORT}/healthz" >/dev/null 2>&1 && break
        sleep 0.5
    done
    echo "chart-dev: release ${RELEASE} in ${NAMESPACE}; operator pid $(cat "${PIDFILE}") as" \
        "system:serviceaccount:${NAMESPACE}:${FULLNAME}, ready $((SECONDS - started))s after" \
        "helm install; log ${STATE}/operator.log, metrics http://127.0.0.1:${METRICS_PORT}/metrics"
}

down() {
    stop_operator
    "${HELM}" uninstall "${RELEASE}" --namespace "${NAMESPACE}" --wait 2>/dev/null || true
    echo "chart-dev: stopped; CRDs and the BudgetPolicy default are left in place"
}

status() {
    "${HELM}" status "${RELEASE}" --namespace "${NAMESPACE}" 2>/dev/null | sed -n '1,6p' ||
        echo "release ${RELEASE}: not installed"
    if running; then echo "operator: running (pid $(cat "${PIDFILE}"))"; else echo "operator: stopped"; fi
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
*) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
