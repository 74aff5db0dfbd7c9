"""What `localcluster` tells its user: progress lines, and failures shown without a traceback."""

from __future__ import annotations

import time
from pathlib import Path

STARTED_AT = time.monotonic()


class ClusterError(Exception):
    """A failure to report to the user (no traceback)."""


def progress(msg: str) -> None:
    print(f"[{time.monotonic() - STARTED_AT:6.1f}s] {msg}", flush=True)


def tail(path: Path, lines: int = 30) -> str:
    """The end of a component's log, indented, to append to an error."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"  (no log at {path})"
    return "\n".join("  | " + ln for ln in text.splitlines()[-lines:])
