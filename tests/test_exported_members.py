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
    "Claim",
    "WrapPolicy",
    "cache_info",
    "canonical_json",
    "wrap",
}


def test_llmcache_exports() -> None:
    assert set(llmcache.__all__) == EXPECTED
    for name in llmcache.__all__:
        member = getattr(llmcache, name)
        assert member.__module__.startswith("llmcache"), name
        assert member.__doc__, f"{name} has no docstring"


ACCOUNTING = {
    "UNATTRIBUTED",
    "Accountant",
    "AccountingError",
    "Attribution",
    "BudgetExceeded",
    "BudgetLimit",
    "BudgetStoreError",
    "Budgets",
    "CacheOutcome",
    "CallRecord",
    "CallRequest",
    "ConfigError",
    "Cost",
    "Ledger",
    "LedgerError",
    "Meter",
    "ModelPrice",
    "PriceBook",
    "Status",
    "TokenEstimate",
    "TokenUsage",
    "UnknownModelError",
    "attribute",
    "carry",
    "collecting",
    "count_message_tokens",
    "count_tokens",
    "current_attribution",
    "default_ledger",
    "estimate_prompt_tokens",
}


def test_accounting_exports() -> None:
    assert set(accounting.__all__) == ACCOUNTING
    for name in accounting.__all__:
        member = getattr(accounting, name)
        if isinstance(member, str):
            continue
        assert member.__module__.startswith("accounting"), name
        assert member.__doc__, f"{name} has no docstring"


def test_accounting_is_importable_and_never_imports_llmcache() -> None:
    # Importing every module of accounting must not pull llmcache in (the layers point one way).
    code = (
        "import sys, pkgutil, importlib, accounting\n"
        "for m in pkgutil.walk_packages(accounting.__path__, 'accounting.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] == 'llmcache'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
