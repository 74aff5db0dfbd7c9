# syntax=docker/dockerfile:1
# The operator's container image, for the Helm chart's StatefulSet (command
# gpu-budget-operator, UID 65532, read-only root filesystem, /tmp an emptyDir).
#
#   docker build -t gpu-budget-operator .     on the public python:3.11-slim base
#   make image                                here, without a Docker engine: podman with
#                                             --build-arg BASE=localhost/gpubudget-base:bookworm,
#                                             a base made from Debian's packages (hack/image.sh)
#
# The dependencies are exactly the pins of requirements.lock, each checked against its
# hashes, from wheels only; the operator itself is built with the pinned build backend.
ARG BASE=python:3.11-slim

# The dependencies, in a layer of their own that a change to the operator leaves as it is.
FROM ${BASE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_NO_INPUT=1
WORKDIR /src
COPY requirements.lock hack/image/requirements-build.lock ./
# /opt/build has pip and the build backend; /opt/venv, the operator's, gets neither.
# kubernetes ships a second, asyncio copy of its whole client (kubernetes.aio, 70 MB with
# bytecode) that the operator never imports (tests/unit/test_image.py checks): left out.
# Bytecode that needs no source checks, compiled once: the image never changes, and at run
# time nothing can write any (read-only root filesystem, PYTHONDONTWRITEBYTECODE).
# The optional secret is a CA bundle for pip (a TLS proxy between the build and the index):
#   --secret id=pipcert,src=/etc/ssl/certs/ca-certificates.crt
RUN --mount=type=secret,id=pipcert \
    if [ -s /run/secrets/pipcert ]; then export PIP_CERT=/run/secrets/pipcert; fi \
    && python3 -m venv /opt/build \
    && /opt/build/bin/pip install --quiet --require-hashes --no-deps --only-binary=:all: \
        -r requirements-build.lock \
    && python3 -m venv --without-pip /opt/venv \
    && /opt/build/bin/pip --python /opt/venv/bin/python install --quiet --no-compile \
        --require-hashes --no-deps --only-binary=:all: -r requirements.lock \
    && rm -rf /opt/venv/lib/python3*/site-packages/kubernetes/aio \
    && /opt/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv

# The operator, built with the pinned backend and installed under /staging: its files alone.
FROM deps AS operator
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/build/bin/pip wheel --quiet --no-deps --no-build-isolation --no-index \
        --wheel-dir /wheels . \
    && /opt/build/bin/pip --python /opt/venv/bin/python install --quiet --no-compile \
        --no-deps --no-index --root /staging /wheels/*.whl \
    && /opt/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash \
        -s /staging -p / /staging

FROM ${BASE}
# A named user for the UID the chart runs as; the image works for any UID all the same.
RUN echo 'nonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin' >>/etc/passwd \
    && echo 'nonroot:x:65532:' >>/etc/group
COPY --from=deps /opt/venv /opt/venv
COPY --from=operator /staging/ /
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
LABEL org.opencontainers.image.title="gpu-budget-operator" \
      org.opencontainers.image.description="A Kubernetes operator that puts a hard dollar budget on GPU training runs." \
      org.opencontainers.image.licenses="Apache-2.0"
# health 8080, metrics 9090, admission webhook 9443 (the chart's defaults)
EXPOSE 8080 9090 9443
USER 65532:65532
ENTRYPOINT ["gpu-budget-operator"]
