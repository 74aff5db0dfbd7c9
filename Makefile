# gpu-budget-operator developer entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CLUSTER := PYTHONPATH=hack $(PY) -m localcluster

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# The same hash-pinned versions the image installs (requirements.lock is the runtime
# subset of requirements-dev.lock); `make lock` regenerates both from pyproject.toml.
$(VENV)/.installed: pyproject.toml requirements-dev.lock hack/image/requirements-build.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet --require-hashes -r requirements-dev.lock
	$(VENV)/bin/pip install --quiet --require-hashes -r hack/image/requirements-build.lock
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create the virtualenv with the operator and dev tools

.PHONY: lock
lock: ## Regenerate the hash-pinned lock files from pyproject.toml (pip-compile)
	hack/image.sh lock

.PHONY: image
image: ## Build the operator image with podman (no Docker engine) and save it as an OCI archive
	hack/image.sh

.PHONY: system-deps
system-deps: ## Install Debian packages the local cluster and tests need (prometheus, openssl, chromium)
	hack/install-system-deps.sh

.PHONY: tools
tools: ## Build etcd, Kubernetes, kwok and helm from the Go module proxy (cached)
	hack/build-tools.sh

.PHONY: cluster-up
cluster-up: venv system-deps tools ## Start the local GPU cluster (idempotent)
	$(CLUSTER) up

.PHONY: cluster-down
cluster-down: ## Stop the local GPU cluster and delete its state
	@if [ -x $(PY) ]; then $(CLUSTER) down; fi

.PHONY: cluster-env
cluster-env: ## Print exports for KUBECONFIG and PROMETHEUS_URL: eval "$$(make -s cluster-env)"
	@$(CLUSTER) env

.PHONY: crds
crds: venv ## Regenerate crds/ from the pydantic models, and the chart files made from code
	$(PY) -m gpu_budget.crdgen --write crds
	hack/chart-sync.sh

HELM = $$(hack/build-tools.sh helm 2>/dev/null)/helm

.PHONY: lint
lint: venv tools ## ruff, mypy --strict, generated files up to date, helm lint --strict
	$(VENV)/bin/ruff check operator tests hack
	$(VENV)/bin/ruff format --check operator tests hack
	$(VENV)/bin/mypy
	$(PY) -m gpu_budget.crdgen --check crds
	hack/chart-sync.sh --check
	$(HELM) lint --strict charts/gpu-budget-operator

.PHONY: fmt
fmt: venv ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix operator tests hack
	$(VENV)/bin/ruff format operator tests hack

.PHONY: test-unit
test-unit: venv system-deps tools ## Unit tests of the pure core and the chart (no cluster)
	$(VENV)/bin/pytest tests/unit -q

.PHONY: test-e2e
test-e2e: venv system-deps tools ## End-to-end tests on the local cluster (started if not up)
	hack/with-cluster.sh hack/run-e2e.sh

.PHONY: test
test: lint test-unit test-e2e ## Lint, unit tests and end-to-end tests

.PHONY: demo
demo: cluster-up ## Bring up the local cluster and show GPU nodes and a GPU job on them
	hack/demo.sh
