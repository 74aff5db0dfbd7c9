"""A local Kubernetes cluster with a simulated GPU node pool, for development and e2e tests.

Real components, run as local processes on loopback ports (each module's
docstring gives its addresses):

    controlplane  etcd, kube-apiserver (https://127.0.0.1:36443, token auth, RBAC,
                  admission), kube-controller-manager, kube-scheduler
    kwoknodes     kwok, playing the kubelet of the simulated GPU nodes
    metrics       dcgm-sim (hack/dcgm_sim.py, a fake DCGM exporter) and Prometheus
                  (http://127.0.0.1:39090) scraping it

Run it as ``python -m localcluster`` with hack/ on PYTHONPATH (the Makefile's
CLUSTER does; tests get it from pytest's ``pythonpath``):

    up      start whatever is not running, bootstrap namespaces/RBAC/nodes (idempotent)
    down    stop everything and delete the state directory (idempotent)
    env     print `export KUBECONFIG=... PROMETHEUS_URL=...` for eval
    status  print each component up/down (exit 0 only when all are up)
    nodes   print the generated Node manifests of the simulated GPU pool
    which   print the path of a cached tool, e.g. `which kubectl`

Adding a component: a module with ``components(ctx) -> list[Component]``
(processes.py says what a Component is; controlplane.py is the fullest example),
listed in cluster.COMPONENT_MODULES.

For code that uses the cluster (tests, demo, benchmark): kubectl.py (one
kubectl client, ``wait_for``), manifests.py (budgets, GPU Jobs and pods),
metrics.prom_query, net.free_port.

State (PKI, tokens, kubeconfig, data, logs, pid files) lives in
$GPUBUDGET_CLUSTER_DIR (default <repo>/.local/cluster). Binaries come from
hack/build-tools.sh's cache ($GPUBUDGET_TOOLS_CACHE, default
~/.cache/gpu-budget-operator/tools), versions from hack/versions.env.
"""
