"""Entry point: ``python -m gpu_budget`` or the ``gpu-budget-operator`` script."""

from __future__ import annotations

from collections.abc import Sequence

import kopf

from gpu_budget import admission, handlers, logs
from gpu_budget.config import parse_args
from gpu_budget.runtime import Runtime


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_args(argv)
    logs.configure()
    registry = kopf.OperatorRegistry()
    handlers.register(registry, config)
    admission.register(registry, config)  # no-op without --webhook-cert-file
    kopf.run(
        registry=registry,
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        standalone=config.standalone,
        peering_name=config.peering_name,
        priority=config.priority,
        liveness_endpoint=config.liveness_endpoint,
        memo=kopf.Memo(runtime=Runtime.for_config(config)),
    )


if __name__ == "__main__":
    main()
