#!/usr/bin/env bash
# `make demo`: bring the local GPU cluster up, show the simulated GPU node pool,
# run a GPU training Job as alice in ml-team, show where its pods landed and what
# the simulated DCGM exporter reports for them through Prometheus; then install
# the Helm chart in development mode and run the operator's story as the three
# users (hack/demo_story.py): a budget that runs to its cap, and one that waits
# for finance's approval.
#
# DEMO_KEEP=1 leaves the release, the operator and the story's budgets in place.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "${HERE}")"
PY="${REPO}/.venv/bin/python"
[[ -x "${PY}" ]] || { echo "error: run \`make venv\` first" >&2; exit 2; }
lc() { PYTHONPATH="${HERE}" "${PY}" -m localcluster "$@"; }
if [[ -t 1 ]]; then
  step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
else
  step() { printf '\n==> %s\n' "$*"; }
fi

step "Local cluster"
lc up
eval "$(lc env)"
KUBECTL="$(lc which kubectl)"
k() { "${KUBECTL}" "$@"; }

step "Simulated GPU node pool"
k get nodes -l type=kwok \
  -L node.kubernetes.io/instance-type,karpenter.sh/capacity-type,topology.kubernetes.io/zone \
  -L nvidia.com/gpu.product,nvidia.com/gpu.count
echo
k get nodes -l type=kwok \
  -o custom-columns='NODE:.metadata.name,GPU-ALLOCATABLE:.status.allocatable.nvidia\.com/gpu,CPU:.status.allocatable.cpu,MEMORY:.status.allocatable.memory'

step "alice creates a 2 x 8-GPU training Job in ml-team (examples/demo-job.yaml)"
k -n ml-team delete job demo-train --ignore-not-found --wait=true >/dev/null
k --context alice -n ml-team create -f "${REPO}/examples/demo-job.yaml"

step "Waiting for its pods to be Running"
deadline=$((SECONDS + 60))
until [[ "$(k -n ml-team get pods -l batch.kubernetes.io/job-name=demo-train \
          -o jsonpath='{range .items[?(@.status.phase=="Running")]}x{end}')" == "xx" ]]; do
  if (( SECONDS > deadline )); then
    echo "pods not Running after 60s:" >&2
    k -n ml-team get pods -l batch.kubernetes.io/job-name=demo-train -o wide >&2
    k -n ml-team get events --sort-by=.lastTimestamp >&2
    exit 1
  fi
  sleep 1
done
k -n ml-team get pods -l batch.kubernetes.io/job-name=demo-train -o wide
echo
for pod in $(k -n ml-team get pods -l batch.kubernetes.io/job-name=demo-train -o name); do
  node="$(k -n ml-team get "${pod}" -o jsonpath='{.spec.nodeName}')"
  echo "${pod#pod/} -> ${node} ($(k get node "${node}" -o jsonpath='{.metadata.labels.node\.kubernetes\.io/instance-type}, {.metadata.labels.karpenter\.sh/capacity-type}, {.metadata.labels.topology\.kubernetes\.io/zone}'))"
done

step "GPU utilisation from the simulated DCGM exporter, via Prometheus (${PROMETHEUS_URL})"
query='avg by (namespace, pod, Hostname, modelName) (DCGM_FI_PROF_GR_ENGINE_ACTIVE{namespace="ml-team"})'
for _ in $(seq 1 30); do
  out="$("${PY}" - "${PROMETHEUS_URL}" "${query}" <<'PY'
import json, sys, urllib.parse, urllib.request
url, q = sys.argv[1], sys.argv[2]
with urllib.request.urlopen(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": q})) as r:
    res = json.load(r)["data"]["result"]
for s in res:
    m = s["metric"]
    print(f"  {m['pod']:<24} {m['Hostname']:<14} {m['modelName']:<22} GR_ENGINE_ACTIVE={float(s['value'][1]):.2f}")
PY
)"
  [[ -n "${out}" ]] && break
  sleep 1
done
echo "${out:-  (no series yet)}"
echo "  query: ${query}"

step "Deleting the plain Job (the story needs both spot p5 nodes)"
k -n ml-team delete job demo-train --wait=true

step "The operator: the Helm chart in development mode, serving ml-team (hack/chart-dev.sh)"
# The chart's policies and webhooks govern only namespaces labelled for it, so
# the end-to-end tests' own policies and this release never meet.
k label namespace ml-team gpubudget.dev/admission-policies=chart --overwrite >/dev/null
demo_values="${REPO}/.local/chart-dev/demo-values.yaml"
mkdir -p "$(dirname "${demo_values}")"
cat >"${demo_values}" <<'YAML'
operator:
  namespaces: [ml-team]
admissionPolicies:
  namespaceSelector:
    matchLabels: {gpubudget.dev/admission-policies: chart}
webhook:
  namespaceSelector:
    matchLabels: {gpubudget.dev/admission-policies: chart}
YAML
HELM_ARGS="-f ${demo_values}" OPERATOR_ARGS="--namespace ml-team --accounting-interval 2 --outcome-interval 5" \
  "${HERE}/chart-dev.sh" up

KUBECTL="${KUBECTL}" "${PY}" "${HERE}/demo_story.py"

if [[ "${DEMO_KEEP:-0}" == "1" ]]; then
  step "Leaving the release and the operator running (hack/chart-dev.sh down stops them)"
  echo "  kubectl get tb -n ml-team -w          # watch spend"
else
  step "Stopping the operator and uninstalling the release (DEMO_KEEP=1 keeps them)"
  "${HERE}/chart-dev.sh" down
fi
