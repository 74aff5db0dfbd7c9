"""One parser per format the operator reads from objects users write: money and time.

Every parser here returns a value or raises :class:`FormatError` with a message
that names the text, so a caller can turn a bad annotation into a condition on
the object instead of an exception that stops a pass. (Kubernetes quantities
have their own parser in :mod:`gpu_budget.gpus`.)
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

_THOUSANDS = re.compile(r"[+-]?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]*)?")
"""Where commas may stand in an amount: between groups of three digits, before any point.

``1,5`` is refused rather than read as 15: it is more likely a decimal comma
(one and a half), and a misread amount is worse than a refused one.
"""


class FormatError(ValueError):
    """A value does not parse; the message says which and why."""


def parse_usd(raw: object) -> float:
    """A non-negative amount of USD: ``20000``, ``$20,000``, ``20_000.50``, ``1.25e1``.

    Commas only group thousands (see ``_THOUSANDS``). This is the one reading of
    a USD amount someone wrote: approvals and node price annotations alike.
    """
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise FormatError(f"{raw!r} is not an amount of USD")
    text = str(raw).strip().removeprefix("$").strip()
    if "," in text:
        if _THOUSANDS.fullmatch(text) is None:
            raise FormatError(f"{raw!r} is not a number of USD (commas only group thousands)")
        text = text.replace(",", "")
    text = text.replace("_", "")
    try:
        value = float(text)
    except ValueError:
        raise FormatError(f"{raw!r} is not a number of USD") from None
    if not math.isfinite(value) or value < 0:
        raise FormatError(f"{raw!r} is not a non-negative amount of USD")
    return value


def parse_time(raw: object) -> datetime:
    """An RFC 3339 instant (``2026-12-02T05:00:00Z``), always timezone-aware."""
    if not isinstance(raw, str) or not raw:
        raise FormatError(f"{raw!r} is not an RFC 3339 time")
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise FormatError(f"{raw!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise FormatError(f"{raw!r} has no time zone")
    return moment


def optional_time(raw: object) -> datetime | None:
    """:func:`parse_time`, or None for a missing or unreadable value (Kubernetes-written fields)."""
    try:
        return parse_time(raw)
    except FormatError:
        return None


def rfc3339(moment: datetime) -> str:
    """Seconds precision, UTC, ``Z``: the form Kubernetes writes."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
