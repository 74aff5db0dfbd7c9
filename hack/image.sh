#!/usr/bin/env bash
# The operator's container image, built from the Dockerfile without a Docker engine.
#
#   hack/image.sh [build]   base (cached) + image + OCI archive + smoke check  (make image)
#   hack/image.sh base      only the Debian base image, made with mmdebstrap and cached
#   hack/image.sh save      only the OCI archive of the built image
#   hack/image.sh check     only the smoke check: non-root, read-only root filesystem
#   hack/image.sh measure   size, start time (--help, import, first log line)
#   hack/image.sh clean     drop the image and the build's cached layers (keeps the base)
#   hack/image.sh lock      regenerate requirements-dev.lock, requirements.lock and
#                           hack/image/requirements-build.lock (pip-compile, hash-pinned)
#
# No container registry is reachable here, so no public base image can be pulled: the
# build uses a base made from Debian's packages (bookworm: python3 3.11, python3-venv,
# ca-certificates) with mmdebstrap and `podman import`. The Dockerfile's default base
# stays python:3.11-slim for anyone with a registry: `docker build .` works as it is.
#
# Environment:
#   IMAGE       tag of the built image (localhost/gpu-budget-operator:<version>)
#   ARCHIVE     OCI archive written by build/save (build/image/gpu-budget-operator-<v>.oci.tar)
#   BASE        base image; set it to build on another one (e.g. python:3.11-slim)
#   CACHE_DIR   where the base tarball and pip-tools are cached
#               (~/.cache/gpu-budget-operator/image); delete base-*.tar there to refresh
#               the base with Debian's latest updates
#
# Podman on this kind of machine (cgroup v1 with a cgroup2 hierarchy at
# /sys/fs/cgroup/unified, root without CAP_SYS_RESOURCE) needs three things, which this
# script passes:
#   - builds use --isolation chroot: RUN steps need no OCI runtime or cgroups;
#   - `podman run` uses runc: crun refuses hybrid cgroups ("cgroups in hybrid mode not
#     supported, drop all controllers from cgroupv2");
#   - rlimits no higher than the current hard limits: podman's defaults (nofile and nproc
#     of 1048576 and more) cannot be set ("setrlimit RLIMIT_NOFILE: Operation not
#     permitted").
# Pip inside the build trusts the host's CA bundle through a build secret (a TLS proxy
# may sit between this machine and the package index); the secret never lands in a layer.
set -euo pipefail

cd "$(dirname "$0")/.."

CACHE_DIR=${CACHE_DIR:-$HOME/.cache/gpu-budget-operator/image}
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
IMAGE=${IMAGE:-localhost/gpu-budget-operator:$VERSION}
ARCHIVE=${ARCHIVE:-build/image/gpu-budget-operator-$VERSION.oci.tar}
SUITE=bookworm
LOCAL_BASE=localhost/gpubudget-base:$SUITE
BASE=${BASE:-$LOCAL_BASE}
HOST_CA=${HOST_CA:-/etc/ssl/certs/ca-certificates.crt}

log() { printf '%s image: %s\n' "$(date +%T)" "$*" >&2; }

need() {
    local missing=()
    for tool in "$@"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
    if ((${#missing[@]})); then
        log "installing ${missing[*]} (Debian packages)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
    fi
}

# Podman's run flags for this machine (see the header).
run_flags() {
    local nofile
    nofile=$(ulimit -Hn)
    # 4096 processes are plenty for the operator; 65536 already fails here although the
    # hard limit shown is higher.
    printf '%s\n' --runtime runc --ulimit "nofile=$nofile:$nofile" --ulimit nproc=4096:4096
}

# --- the Debian base ---------------------------------------------------------------------

MMDEBSTRAP_ARGS=(
    --mode=root
    --variant=essential
    --include=python3,python3-venv,ca-certificates
    # Merged /usr without the usrmerge package (which pulls in perl, 55 MB).
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*'
    "$SUITE"
)

base() {
    if [[ $BASE != "$LOCAL_BASE" ]]; then
        log "base $BASE (given; not made here)"
        return
    fi
    local key tarball
    key=$(printf '%s\n' "${MMDEBSTRAP_ARGS[@]}" | sha256sum | cut -c1-12)
    tarball=$CACHE_DIR/base-$SUITE-$key.tar
    if [[ ! -s $tarball ]]; then
        need mmdebstrap
        mkdir -p "$CACHE_DIR"
        log "mmdebstrap $SUITE -> $tarball (a few minutes, once)"
        local partial
        partial=$(mktemp "$CACHE_DIR/partial-XXXXXX.tar")
        trap 'rm -f "$partial"' EXIT
        mmdebstrap --quiet "${MMDEBSTRAP_ARGS[@]}" "$partial"
        mv "$partial" "$tarball"
        trap - EXIT
    fi
    local have
    have=$(podman image inspect --format '{{index .Config.Labels "org.gpubudget.base-key"}}' \
        "$LOCAL_BASE" 2>/dev/null || true)
    if [[ $have != "$key" ]]; then
        log "podman import $tarball -> $LOCAL_BASE"
        podman import --quiet \
            --change "LABEL org.gpubudget.base-key=$key" \
            --change 'ENV LANG=C.UTF-8' \
            --change 'CMD ["/usr/bin/python3"]' \
            "$tarball" "$LOCAL_BASE" >/dev/null
    fi
    log "base $LOCAL_BASE ($key)"
}

# --- the image ---------------------------------------------------------------------------

image() {
    need podman buildah runc
    base
    local secret=()
    [[ -s $HOST_CA ]] && secret=(--secret "id=pipcert,src=$HOST_CA")
    log "build $IMAGE from Dockerfile (BASE=$BASE)"
    podman build \
        --isolation chroot \
        --network host \
        --layers \
        --build-arg "BASE=$BASE" \
        "${secret[@]}" \
        --tag "$IMAGE" \
        --file Dockerfile \
        .
}

save() {
    mkdir -p "$(dirname "$ARCHIVE")"
    rm -f "$ARCHIVE"
    podman save --quiet --format oci-archive -o "$ARCHIVE" "$IMAGE"
    log "saved $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1)); load it with" \
        "ctr -n k8s.io images import $ARCHIVE"
}

# The chart's securityContext: UID 65532, read-only root, no capabilities, /tmp a tmpfs.
run_locked_down() {
    local flags
    mapfile -t flags < <(run_flags)
    podman run "${flags[@]}" \
        --read-only --user 65532:65532 --cap-drop ALL --security-opt no-new-privileges \
        --tmpfs /tmp:rw,size=64m \
        --env PYTHONDONTWRITEBYTECODE=1 --env PYTHONUNBUFFERED=1 \
        "$@"
}

check() {
    local user
    user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
    [[ $user =~ ^[0-9]+(:[0-9]+)?$ ]] || { log "USER is '$user', not numeric"; exit 1; }
    run_locked_down --rm "$IMAGE" --help >/dev/null
    run_locked_down --rm --entrypoint gpu-budget-operator "$IMAGE" --help >/dev/null
    run_locked_down --rm --entrypoint python "$IMAGE" -c '
import os, sys, gpu_budget.__main__
assert os.getuid() == 65532, os.getuid()
root = [m.split() for m in open("/proc/self/mounts") if m.split()[1] == "/"][-1]
assert "ro" in root[3].split(","), root
print("ok", sys.version.split()[0], gpu_budget.__file__)'
    log "check passed: USER $user, read-only root, gpu-budget-operator --help"
}

# --- measurements -------------------------------------------------------------------------

seconds() { python3 -c 'import sys, time; print(f"{time.time() - float(sys.argv[1]):.2f}")' "$1"; }

measure() {
    local size t0 kube
    size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
    echo "image $IMAGE: $((size / 1000 / 1000)) MB uncompressed"
    [[ -f $ARCHIVE ]] && echo "archive $ARCHIVE: $(du -h "$ARCHIVE" | cut -f1)"
    run_locked_down --rm "$IMAGE" --help >/dev/null # page the image in once
    t0=$(date +%s.%N)
    run_locked_down --rm "$IMAGE" --help >/dev/null
    echo "podman run ... --help: $(seconds "$t0") s (container start included)"
    t0=$(date +%s.%N)
    run_locked_down --rm --entrypoint true "$IMAGE"
    echo "podman run ... true: $(seconds "$t0") s (container start alone)"
    run_locked_down --rm --entrypoint python "$IMAGE" -c '
import time
t = time.perf_counter()
import gpu_budget.__main__
print(f"import gpu_budget.__main__ in the container: {time.perf_counter() - t:.2f} s")'
    # The operator against an API server that is not there: the time to its first log line.
    kube=$(mktemp -d)
    cat >"$kube/config" <<'EOF'
apiVersion: v1
kind: Config
clusters: [{name: nowhere, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: nobody, user: {token: "none"}}]
contexts: [{name: nowhere, context: {cluster: nowhere, user: nobody}}]
current-context: nowhere
EOF
    chmod -R a+rX "$kube"
    local name=gpubudget-measure-$$ first="" i
    t0=$(date +%s.%N)
    run_locked_down --detach --name "$name" --network none -v "$kube:/kube:ro" \
        --env KUBECONFIG=/kube/config --env GPUBUDGET_STANDALONE=true --env POD_ID=measure \
        "$IMAGE" >/dev/null
    for ((i = 0; i < 600; i++)); do
        first=$(podman logs "$name" 2>&1 | head -n 1 || true)
        [[ -n $first ]] && break
        sleep 0.05
    done
    echo "first log line after $(seconds "$t0") s (container start included): ${first:0:200}"
    sleep 3
    echo "its log 3 s later:"
    podman logs "$name" 2>&1 | head -n 8 | cut -c1-200 || true
    podman rm --force --time 0 "$name" >/dev/null
    rm -rf "$kube"
}

# --- the lock files -----------------------------------------------------------------------

lock() {
    local tools=$CACHE_DIR/pip-tools
    if [[ ! -x $tools/bin/pip-compile ]]; then
        python3 -m venv "$tools"
        "$tools/bin/pip" install --quiet 'pip-tools>=7.4,<8'
    fi
    local compile=(
        "$tools/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras
        --no-emit-index-url --no-emit-find-links
    )
    export CUSTOM_COMPILE_COMMAND='hack/image.sh lock'
    # The dev lock first: it resolves the operator's dependencies together with the dev
    # tools, and the runtime lock takes its versions from it, so the two never disagree.
    log "requirements-dev.lock (the operator's dependencies and the dev tools)"
    "${compile[@]}" --extra dev --output-file requirements-dev.lock pyproject.toml
    log "requirements.lock (the operator's dependencies, at the dev lock's versions)"
    "${compile[@]}" --constraint requirements-dev.lock --output-file requirements.lock \
        pyproject.toml
    log "hack/image/requirements-build.lock (the build backend)"
    "${compile[@]}" --only-build-deps --all-build-deps \
        --output-file hack/image/requirements-build.lock pyproject.toml
}

case ${1:-build} in
build)
    image
    save
    check
    ;;
base) need podman mmdebstrap && base ;;
save) save ;;
check) check ;;
measure) measure ;;
lock) lock ;;
clean)
    podman rmi --force "$IMAGE" >/dev/null 2>&1 || true
    podman image prune --force >/dev/null # untagged: the layers --layers kept as a cache
    rm -f "$ARCHIVE"
    ;;
*)
    sed -n '2,14p' "$0" >&2
    exit 2
    ;;
esac
