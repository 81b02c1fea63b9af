"""Exceptions raised by llmcache.

The tree::

    LLMCacheError
    ├── TierError              a tier failed (caught and counted by Cache)
    │   └── TierUnavailable    the tier's circuit breaker is open; the call was not attempted
    └── UncacheableValue       a value with no faithful JSON form (also a TypeError)

A ``Cache`` never lets a ``TierError`` (or any other failure of a tier) reach its caller: it
counts it in ``Cache.stats()``, logs it, and serves from the tiers that still work.
"""

from __future__ import annotations

__all__ = ["LLMCacheError", "TierError", "TierUnavailable", "UncacheableValue"]


class LLMCacheError(Exception):
    """Root of every exception llmcache raises on purpose."""


class TierError(LLMCacheError):
    """A cache tier failed; ``tier`` names it."""

    def __init__(self, message: str, *, tier: str) -> None:
        super().__init__(message)
        self.tier = tier


class TierUnavailable(TierError):
    """The tier's circuit breaker is open: it is skipped until its next probe."""


class UncacheableValue(LLMCacheError, TypeError):
    """A value has no JSON encoding, so it cannot be stored (we never pickle)."""
