"""The control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler.

Addresses:

    etcd                      127.0.0.1:32379 (client), :32380 (peer)
    kube-apiserver            https://127.0.0.1:36443   token auth, RBAC, admission
    kube-controller-manager   https://127.0.0.1:36257   (/healthz)
    kube-scheduler            https://127.0.0.1:36259   (/healthz)
"""

from __future__ import annotations

from localcluster.context import Context
from localcluster.kubectl import WaitTimeout, wait_for
from localcluster.layout import CLUSTER_CONFIG
from localcluster.net import HOST, http_get
from localcluster.pki import APISERVER_PORT, APISERVER_URL, SERVICE_CIDR
from localcluster.processes import Component
from localcluster.report import ClusterError, progress, tail

ETCD_PORT = 32379
ETCD_PEER_PORT = 32380
KCM_PORT = 36257
SCHEDULER_PORT = 36259
FIELD_MANAGER = "gpubudget-localcluster"


def components(ctx: Context) -> list[Component]:
    lay = ctx.layout
    pki = lay.pki
    kc = str(lay.kubeconfig)

    def etcd() -> list[str]:
        return [
            ctx.tool("etcd"),
            "--name=gpubudget",
            f"--data-dir={lay.root / 'etcd'}",
            f"--listen-client-urls=http://{HOST}:{ETCD_PORT}",
            f"--advertise-client-urls=http://{HOST}:{ETCD_PORT}",
            f"--listen-peer-urls=http://{HOST}:{ETCD_PEER_PORT}",
            f"--initial-advertise-peer-urls=http://{HOST}:{ETCD_PEER_PORT}",
            f"--initial-cluster=gpubudget=http://{HOST}:{ETCD_PEER_PORT}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]

    def apiserver() -> list[str]:
        return [
            ctx.tool("kube-apiserver"),
            f"--etcd-servers=http://{HOST}:{ETCD_PORT}",
            f"--bind-address={HOST}",
            f"--advertise-address={HOST}",
            # The loopback address may not be published as the endpoints of
            # the `kubernetes` Service; nothing in-cluster needs them.
            "--endpoint-reconciler-type=none",
            f"--secure-port={APISERVER_PORT}",
            f"--cert-dir={lay.root / 'apiserver'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={lay.tokens}",
            f"--requestheader-client-ca-file={pki / 'ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Added to the default set (which already has them): spelled
            # out because the operator depends on them.
            "--enable-admission-plugins=ServiceAccount,MutatingAdmissionWebhook,"
            "ValidatingAdmissionPolicy,ValidatingAdmissionWebhook",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ]

    def kcm() -> list[str]:
        return [
            ctx.tool("kube-controller-manager"),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            f"--bind-address={HOST}",
            f"--secure-port={KCM_PORT}",
            f"--cert-dir={lay.root / 'kube-controller-manager'}",
            "--leader-elect=false",
            "--controllers=*",
            "--use-service-account-credentials=false",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--profiling=false",
            "--v=1",
        ]

    def scheduler() -> list[str]:
        return [
            ctx.tool("kube-scheduler"),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            f"--bind-address={HOST}",
            f"--secure-port={SCHEDULER_PORT}",
            f"--cert-dir={lay.root / 'kube-scheduler'}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ]

    def etcd_ok() -> bool:
        status, body = http_get(f"http://{HOST}:{ETCD_PORT}/health")
        return status == 200 and '"health":"true"' in body.replace(" ", "")

    def apiserver_ok() -> bool:
        status, _ = http_get(f"{APISERVER_URL}/readyz", ca=pki / "ca.crt", token=ctx.admin_token())
        return status == 200

    def kcm_ok() -> bool:
        return http_get(f"https://{HOST}:{KCM_PORT}/healthz")[0] == 200

    def scheduler_ok() -> bool:
        return http_get(f"https://{HOST}:{SCHEDULER_PORT}/healthz")[0] == 200

    def bootstrap() -> None:
        ctx.kubectl(
            "apply",
            "--server-side",
            f"--field-manager={FIELD_MANAGER}",
            "--force-conflicts",
            "-f",
            str(CLUSTER_CONFIG / "bootstrap.yaml"),
        )
        progress("bootstrap: namespace ml-team and RBAC for alice/bob applied")

    def wait_service_accounts() -> None:
        # The controller-manager's serviceaccount controller creates them; pods
        # cannot be created in a namespace before its default one exists.
        def missing() -> list[str]:
            return [
                ns
                for ns in ("default", "ml-team")
                if ctx.kubectl("-n", ns, "get", "serviceaccount", "default", check=False).returncode
            ]

        try:
            wait_for(lambda: not missing(), 60, "the default ServiceAccounts")
        except WaitTimeout:
            raise ClusterError(
                f"no default ServiceAccount in {missing()} after 60s\n"
                + tail(lay.log("kube-controller-manager"))
            ) from None
        progress("service accounts: default ServiceAccounts exist")

    return [
        Component("etcd", "etcd", etcd, etcd_ok, (ETCD_PORT, ETCD_PEER_PORT), 30, 0),
        Component(
            "kube-apiserver",
            "kube-apiserver",
            apiserver,
            apiserver_ok,
            (APISERVER_PORT,),
            120,
            1,
            settle=bootstrap,
        ),
        Component(
            "kube-controller-manager",
            "kube-controller-manager",
            kcm,
            kcm_ok,
            (KCM_PORT,),
            60,
            2,
            settle=wait_service_accounts,
        ),
        Component(
            "kube-scheduler", "kube-scheduler", scheduler, scheduler_ok, (SCHEDULER_PORT,), 60, 2
        ),
    ]
