"""JSON logs: structlog for the operator's own lines, kopf's JSON format for kopf's."""

from __future__ import annotations

import logging
import sys

import kopf
import structlog


def configure(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON, log_refkey="object")
    if not verbose:
        # kopf logs every handler success at INFO (a line per webhook call).
        # Our own lines say what was decided.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        # urllib3 repeats the whole Prometheus query URL on every retry.
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
