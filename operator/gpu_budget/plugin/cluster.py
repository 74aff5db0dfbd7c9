"""The cluster as kubectl sees it: the kubeconfig's current context, or the one named.

Only what the verbs read and write: TrainingBudgets, the BudgetPolicy
``default`` and a budget's annotations. Every failure a user can meet (no
kubeconfig, an unreachable API server, a missing budget, RBAC or an admission
policy saying no) becomes a :class:`PluginError` that says which and what to do.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import kubernetes
import urllib3

from gpu_budget import GROUP, VERSION
from gpu_budget.models import BudgetPolicySpec
from gpu_budget.plugin.errors import PluginError

BUDGETS = "trainingbudgets"
POLICIES = "budgetpolicies"
POLICY_NAME = "default"
TIMEOUT_SECONDS = 15


class Cluster:
    """A connection to one context's API server, with the context's namespace."""

    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        try:
            contexts, active = kubernetes.config.list_kube_config_contexts(config_file=kubeconfig)
            if context is not None:
                active = next((c for c in contexts if c["name"] == context), None)
                if active is None:
                    raise PluginError(f"context {context!r} is not in the kubeconfig")
            configuration = kubernetes.client.Configuration()
            kubernetes.config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
        except (kubernetes.config.ConfigException, OSError) as error:
            raise PluginError(
                f"no usable kubeconfig ({error}); set KUBECONFIG or pass --kubeconfig"
            ) from None
        configuration.retries = 0  # an unreachable cluster is reported at once, not retried
        self.context: str = active["name"]
        self.server: str = configuration.host
        self.namespace: str = active.get("context", {}).get("namespace") or "default"
        self._api = kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(configuration))

    @contextlib.contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        try:
            yield
        except kubernetes.client.ApiException as error:
            raise PluginError(self._api_error(what, error)) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise PluginError(
                f"cannot reach the cluster at {self.server} (context {self.context}): "
                f"{_root_cause(error)}"
            ) from None

    def _api_error(self, what: str, error: kubernetes.client.ApiException) -> str:
        message = _status_message(error)
        if error.status == 403:
            return f"forbidden: {what} as context {self.context}: {message}"
        if error.status == 401:
            return f"unauthorized: {what} (context {self.context}): check your credentials"
        if error.status == 404:
            return f"{what}: not found ({message})"
        if error.status == 409:
            return f"{what}: the object changed meanwhile; run the command again ({message})"
        return f"{what}: the API server answered {error.status}: {message}"

    def _call(
        self, what: str, call: Callable[[], object], missing_ok: bool = False
    ) -> dict[str, Any]:
        """One API call; with ``missing_ok`` a 404 is an empty answer instead of an error."""
        with self._calling(what):
            try:
                found = call()
            except kubernetes.client.ApiException as error:
                if missing_ok and error.status == 404:
                    return {}
                raise
        if not isinstance(found, dict):
            raise PluginError(f"{what}: the API server's answer is not an object")
        return found

    def budgets(self, namespace: str | None) -> list[dict[str, Any]]:
        """TrainingBudgets in ``namespace``, or in every namespace for None."""
        if namespace is None:
            found = self._call(
                "listing TrainingBudgets in all namespaces",
                lambda: self._api.list_cluster_custom_object(
                    GROUP, VERSION, BUDGETS, _request_timeout=TIMEOUT_SECONDS
                ),
            )
        else:
            found = self._call(
                f"listing TrainingBudgets in namespace {namespace}",
                lambda: self._api.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, BUDGETS, _request_timeout=TIMEOUT_SECONDS
                ),
            )
        return [item for item in found.get("items") or [] if isinstance(item, dict)]

    def budget(self, namespace: str, name: str) -> dict[str, Any]:
        return self._call(
            f"reading TrainingBudget {name} in namespace {namespace}",
            lambda: self._api.get_namespaced_custom_object(
                GROUP, VERSION, namespace, BUDGETS, name, _request_timeout=TIMEOUT_SECONDS
            ),
        )

    def policy(self) -> BudgetPolicySpec | None:
        """The BudgetPolicy ``default``'s spec, or None when the cluster has none."""
        found = self._call(
            f"reading BudgetPolicy {POLICY_NAME}",
            lambda: self._api.get_cluster_custom_object(
                GROUP, VERSION, POLICIES, POLICY_NAME, _request_timeout=TIMEOUT_SECONDS
            ),
            missing_ok=True,
        )
        if not found:
            return None
        return BudgetPolicySpec.model_validate(found.get("spec") or {})

    def annotate_budget(
        self, namespace: str, name: str, annotations: Mapping[str, str], resource_version: str
    ) -> dict[str, Any]:
        """Set annotations if the budget is still at ``resource_version`` (else 409)."""
        metadata: dict[str, Any] = {"annotations": dict(annotations)}
        if resource_version:
            metadata["resourceVersion"] = resource_version
        return self._call(
            f"annotating TrainingBudget {name} in namespace {namespace}",
            lambda: self._api.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                BUDGETS,
                name,
                {"metadata": metadata},
                _request_timeout=TIMEOUT_SECONDS,
            ),
        )


def _status_message(error: kubernetes.client.ApiException) -> str:
    """The API server's own sentence (a Status object's message), else the reason."""
    with contextlib.suppress(ValueError, TypeError):
        body = json.loads(error.body or "")
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])
    return str(error.reason)


def _root_cause(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    return str(reason if isinstance(reason, BaseException) else error)
