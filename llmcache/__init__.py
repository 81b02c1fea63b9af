"""llmcache: caching and cost-accounting middleware for LLM calls.

Cache a function with ``@cached``, or build a :class:`Cache` from tiers::

    from llmcache import Cache, MemoryTier, DiskTier, RedisTier, cached

    cache = Cache([MemoryTier(), DiskTier("/var/cache/app"), RedisTier("redis://localhost")])

    @cached(cache=cache, ttl=3600)
    def summarize(text: str) -> str: ...

Or wrap an OpenAI client: ``client = llmcache.wrap(OpenAI())``.
"""

import importlib
from typing import TYPE_CHECKING, Any

from llmcache._exceptions import LLMCacheError, TierError, TierUnavailable, UncacheableValue
from llmcache.cache import Cache, CacheInfo, Fetched
from llmcache.decorators import AsyncCachedFunction, CachedFunction, cache_control, cached
from llmcache.keys import CacheKey, canonical_json
from llmcache.stats import CacheStats, TierStats
from llmcache.tiers.base import CounterTier, LockTier, Tier
from llmcache.tiers.disk import DiskTier
from llmcache.tiers.memory import MemoryTier

if TYPE_CHECKING:
    from llmcache.claim import Claim
    from llmcache.openai.client import cache_info, wrap
    from llmcache.openai.policy import WrapPolicy
    from llmcache.tiers.redis import RedisTier

__all__ = [
    "AsyncCachedFunction",
    "Cache",
    "CacheInfo",
    "CacheKey",
    "CacheStats",
    "CachedFunction",
    "Claim",
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
    "WrapPolicy",
    "cache_control",
    "cache_info",
    "cached",
    "canonical_json",
    "wrap",
]

# Loaded on first use: the openai SDK and redis-py take a while to import (about 0.1 s each),
# and the embedded default (memory + disk) and @cached users never need them.
_LAZY = {
    "Claim": "llmcache.claim",
    "RedisTier": "llmcache.tiers.redis",
    "WrapPolicy": "llmcache.openai.policy",
    "cache_info": "llmcache.openai.client",
    "wrap": "llmcache.openai.client",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llmcache' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"
