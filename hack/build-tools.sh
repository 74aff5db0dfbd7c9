#!/usr/bin/env bash
# Build the local-cluster binaries from the Go module proxy into a cache that
# lives outside the repository, keyed by component and version, so a clean
# clone (and CI on the same machine) reuses what an earlier build produced.
#
# Usage: hack/build-tools.sh [component...]   (default: all)
# Prints the bin directory of each component on success.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/versions.env
source "${HERE}/versions.env"
# CI may run with a bare environment: Go and the cache both need a home.
export HOME="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
CACHE="${GPUBUDGET_TOOLS_CACHE:-${HOME}/.cache/gpu-budget-operator/tools}"
export GOFLAGS="-trimpath"
export CGO_ENABLED=0
mkdir -p "${CACHE}"
# One build at a time per cache: a second caller (CI racing a developer's
# `make test`) waits for the first and then finds the binaries present.
exec 9>"${CACHE}/.build.lock"
flock 9

started_at=$(date +%s)
log() { printf '[build-tools %4ss] %s\n' "$(( $(date +%s) - started_at ))" "$*" >&2; }

# Runs a long command while printing a heartbeat, so a 20-minute cold build
# never looks hung.
with_progress() {
  local label=$1; shift
  local t0; t0=$(date +%s)
  "$@" &
  local pid=$!
  while kill -0 "${pid}" 2>/dev/null; do
    sleep 30
    kill -0 "${pid}" 2>/dev/null && log "${label}: still building ($(( $(date +%s) - t0 ))s)"
  done
  wait "${pid}"
  log "${label}: done in $(( $(date +%s) - t0 ))s"
}

build_kubernetes() {
  local dir="${CACHE}/kubernetes-${KUBERNETES_VERSION}"
  local bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  if all_present "${dir}" "${bins[@]}"; then echo "${dir}/bin"; return; fi
  log "kubernetes ${KUBERNETES_VERSION}: preparing wrapper module"
  local src="${dir}/src"; rm -rf "${src}"; mkdir -p "${src}" "${dir}/bin"
  local staging_version="v0.${KUBERNETES_VERSION#v1.}"
  local modfile
  modfile="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/${KUBERNETES_VERSION}.mod"
  [[ -f "${modfile}" ]] || (cd "${src}" && go mod download -json "k8s.io/kubernetes@${KUBERNETES_VERSION}" >/dev/null)
  {
    echo "module gpubudget.dev/localcluster/kubernetes"
    echo
    grep -E '^go [0-9]' "${modfile}"
    grep -E '^godebug' "${modfile}" || true
    echo
    echo "replace ("
    # Every staging module the release points at ./staging/src is replaced by
    # its published v0.x twin; Go ignores a dependency's own replace lines.
    sed -n '/^replace (/,/^)/p' "${modfile}" | grep -oE 'k8s.io/[a-z0-9-]+ => \./staging' |
      awk -v v="${staging_version}" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } >"${src}/go.mod"
  local pkgs=()
  for b in "${bins[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/${b}"); done
  (cd "${src}" && for p in "${pkgs[@]}"; do go get -tool "${p}@${KUBERNETES_VERSION}"; done)
  local minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
  local ldflags="-s -w" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X ${pkg}.gitVersion=${KUBERNETES_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
    ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
  done
  log "kubernetes ${KUBERNETES_VERSION}: compiling ${bins[*]} (cold: tens of minutes on 2 cores)"
  (cd "${src}" && with_progress "kubernetes" go build -tags selinux,notest -ldflags "${ldflags}" -o "${dir}/bin/" "${pkgs[@]}")
  echo "${dir}/bin"
}

build_etcd() {
  local dir="${CACHE}/etcd-${ETCD_VERSION}"
  if all_present "${dir}" etcd; then echo "${dir}/bin"; return; fi
  local src="${dir}/src"; rm -rf "${src}"; mkdir -p "${src}" "${dir}/bin"
  log "etcd ${ETCD_VERSION}: preparing wrapper module"
  local v="${ETCD_VERSION}"
  cat >"${src}/go.mod" <<MOD
module gpubudget.dev/localcluster/etcd

go 1.26.0

replace (
	go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 ${v}
	go.etcd.io/etcd/client/pkg/v3 => go.etcd.io/etcd/client/pkg/v3 ${v}
	go.etcd.io/etcd/client/v3 => go.etcd.io/etcd/client/v3 ${v}
	go.etcd.io/etcd/pkg/v3 => go.etcd.io/etcd/pkg/v3 ${v}
)
MOD
  (cd "${src}" && go get -tool "go.etcd.io/etcd/server/v3@${v}")
  (cd "${src}" && with_progress "etcd" go build -ldflags "-s -w" -o "${dir}/bin/etcd" go.etcd.io/etcd/server/v3)
  echo "${dir}/bin"
}

build_kwok() {
  local dir="${CACHE}/kwok-${KWOK_VERSION}"
  if all_present "${dir}" kwok kwokctl; then echo "${dir}/bin"; return; fi
  mkdir -p "${dir}/bin"
  log "kwok ${KWOK_VERSION}: compiling kwok and kwokctl"
  with_progress "kwok" env GOBIN="${dir}/bin" go install -ldflags "-s -w" \
    "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}" "sigs.k8s.io/kwok/cmd/kwokctl@${KWOK_VERSION}"
  echo "${dir}/bin"
}

build_helm() {
  local dir="${CACHE}/helm-${HELM_VERSION}"
  if all_present "${dir}" helm; then echo "${dir}/bin"; return; fi
  mkdir -p "${dir}/bin"
  log "helm ${HELM_VERSION}: compiling"
  with_progress "helm" env GOBIN="${dir}/bin" go install \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}" \
    "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
  echo "${dir}/bin"
}

all_present() {
  local dir=$1; shift
  local b
  for b in "$@"; do [[ -x "${dir}/bin/${b}" ]] || return 1; done
}

components=("$@")
[[ ${#components[@]} -gt 0 ]] || components=(etcd kwok helm kubernetes)
for c in "${components[@]}"; do
  case "${c}" in
    kubernetes|etcd|kwok|helm) "build_${c}" ;;
    *) echo "unknown component: ${c} (expected kubernetes, etcd, kwok or helm)" >&2; exit 2 ;;
  esac
done
log "all requested tools present in ${CACHE}"
