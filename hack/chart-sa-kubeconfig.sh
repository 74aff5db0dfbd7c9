#!/usr/bin/env bash
# Write a kubeconfig that authenticates as a ServiceAccount (a short-lived token
# from the TokenRequest API), for running the operator outside the cluster with
# exactly the RBAC the chart gives it (the chart's development mode).
#
#   hack/chart-sa-kubeconfig.sh NAMESPACE SERVICEACCOUNT OUT [DURATION]
#
# The cluster (server, CA) is the current context's of $KUBECONFIG; DURATION
# defaults to 1h. kubectl is taken from $KUBECTL, else from PATH, else from the
# local cluster's tools (python -m localcluster which kubectl).
set -euo pipefail
if [[ $# -lt 3 || $1 == -h || $1 == --help ]]; then
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit $(( $# < 3 ? 2 : 0 ))
fi
namespace=$1 sa=$2 out=$3 duration=${4:-1h}
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kubectl=${KUBECTL:-$(command -v kubectl || PYTHONPATH="${REPO}/hack" "${REPO}/.venv/bin/python" -m localcluster which kubectl)}

server=$("${kubectl}" config view --minify --raw -o jsonpath='{.clusters[0].cluster.server}')
ca=$("${kubectl}" config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
if [[ -z "${ca}" ]]; then
    ca_file=$("${kubectl}" config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority}')
    [[ -n "${ca_file}" ]] && ca=$(base64 -w0 <"${ca_file}")
fi
token=$("${kubectl}" create token "${sa}" -n "${namespace}" --duration="${duration}")
umask 077
mkdir -p "$(dirname "${out}")"
cat >"${out}" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
  - name: cluster
    cluster:
      server: ${server}
      certificate-authority-data: ${ca}
users:
  - name: ${sa}
    user:
      token: ${token}
contexts:
  - name: ${sa}
    context:
      cluster: cluster
      user: ${sa}
      namespace: ${namespace}
current-context: ${sa}
KUBECONFIG
echo "wrote ${out}: ServiceAccount ${namespace}/${sa} on ${server}, token valid ${duration}" >&2
