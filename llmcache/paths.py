"""Where llmcache keeps its files when nobody says otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

__all__ = ["DISK_SUBDIR", "ENV_DIR", "cache_dir", "disk_cache_dir"]

#: Environment variable naming the directory for the disk cache (and, later, the ledger).
ENV_DIR = "LLMCACHE_DIR"
#: Subdirectory of :func:`cache_dir` that holds the default disk tier.
DISK_SUBDIR = "cache"


def cache_dir() -> Path:
    """``$LLMCACHE_DIR`` if set, else the user's cache directory for llmcache."""
    configured = os.environ.get(ENV_DIR)
    if configured:
        return Path(configured).expanduser().resolve()
    return Path(platformdirs.user_cache_dir("llmcache", appauthor=False))


def disk_cache_dir() -> Path:
    """Directory of the default disk tier: ``cache`` under :func:`cache_dir`.

    The rest of the directory is left for other files (the ledger, later).
    """
    return cache_dir() / DISK_SUBDIR
