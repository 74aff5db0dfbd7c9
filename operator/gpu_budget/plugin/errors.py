"""The one error the plugin shows its user: a sentence, never a traceback."""

from __future__ import annotations


class PluginError(Exception):
    """Something the user can act on (no cluster, no budget, forbidden, a bad flag).

    The command line prints its message and exits 1; anything else escaping a
    verb is a bug and keeps its traceback.
    """
