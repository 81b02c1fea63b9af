"""The public surface is explicit and pinned: a change to it is a decision, not an accident."""

from __future__ import annotations

import subprocess
import sys

import accounting
import llmcache

EXPECTED = {
    "AsyncCachedFunction",
    "Cache",
    "CacheInfo",
    "CacheKey",
    "CacheStats",
    "CachedFunction",
    "CounterTier",
    "DiskTier",
    "Fetched",
    "LLMCacheError",
    "LockTier",
    "MemoryTier",
    "RedisTier",
    "Tier",
    "TierError",
    "TierStats",
    "TierUnavailable",
    "UncacheableValue",
    "cache_control",
    "cached",
    "canonical_json",
}


def test_llmcache_exports() -> None:
    assert set(llmcache.__all__) == EXPECTED
    for name in llmcache.__all__:
        member = getattr(llmcache, name)
        assert member.__module__.startswith("llmcache"), name
        assert member.__doc__, f"{name} has no docstring"


def test_accounting_is_importable_and_never_imports_llmcache() -> None:
    code = "import sys, accounting; print('llmcache' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert accounting.__all__ == []
