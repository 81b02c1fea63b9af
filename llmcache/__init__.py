"""llmcache: caching and cost-accounting middleware for LLM calls.

Cache a function with ``@cached``, or build a :class:`Cache` from tiers::

    from llmcache import Cache, MemoryTier, DiskTier, RedisTier, cached

    cache = Cache([MemoryTier(), DiskTier("/var/cache/app"), RedisTier("redis://localhost")])

    @cached(cache=cache, ttl=3600)
    def summarize(text: str) -> str: ...
"""

from llmcache._exceptions import LLMCacheError, TierError, TierUnavailable, UncacheableValue
from llmcache.cache import Cache, CacheInfo, Fetched
from llmcache.decorators import AsyncCachedFunction, CachedFunction, cache_control, cached
from llmcache.keys import CacheKey, canonical_json
from llmcache.stats import CacheStats, TierStats
from llmcache.tiers.base import CounterTier, LockTier, Tier
from llmcache.tiers.disk import DiskTier
from llmcache.tiers.memory import MemoryTier
from llmcache.tiers.redis import RedisTier

__all__ = [
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
]

__version__ = "0.1.0"
