"""Where the ledger lives when nobody says otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

__all__ = ["ENV_DIR", "LEDGER_FILE", "default_ledger_path", "default_spill_dir"]

#: Environment variable naming llmcache's directory (the one the disk cache uses too).
ENV_DIR = "LLMCACHE_DIR"
#: File name of the default SQLite ledger.
LEDGER_FILE = "ledger.sqlite3"


def default_ledger_path() -> Path:
    """``ledger.sqlite3`` under ``$LLMCACHE_DIR`` if set, else under the user's data directory.

    The data directory, not the cache directory: a ledger is a record of money spent, which
    nobody should delete to free space (``platformdirs.user_data_dir("llmcache")``, e.g.
    ``~/.local/share/llmcache`` on Linux). Read at each call: nothing is fixed at import time.
    """
    configured = os.environ.get(ENV_DIR)
    if configured:
        return Path(configured).expanduser().resolve() / LEDGER_FILE
    return Path(platformdirs.user_data_dir("llmcache", appauthor=False)) / LEDGER_FILE


def default_spill_dir(ledger_path: Path) -> Path:
    """The spill directory kept beside a ledger file: ``<file>-spill``."""
    return ledger_path.with_name(ledger_path.name + "-spill")
