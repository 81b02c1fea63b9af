"""Counters of a cache: per tier and for the whole cache.

Counters are plain integers bumped on the request path without a lock. ``x.n += 1`` is several
bytecodes, but CPython 3.11's GIL only switches threads at calls and backward jumps, never
inside that sequence, so the counts stay exact (a test with 16 threads checks it); a
free-threaded build would need atomic counters here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["CacheStats", "TierStats"]


@dataclasses.dataclass(slots=True)
class _Counters:
    hits: int = 0
    misses: int = 0
    errors: int = 0
    corrupt: int = 0
    skipped: int = 0
    stores: int = 0
    promotions: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    last_error: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TierStats:
    """What one tier did since the cache was made (``entries``/``size_bytes`` = held now).

    ``misses`` counts lookups that found nothing (or an expired entry); ``corrupt`` counts entries
    that failed to decode or verify (each also served as a miss); ``errors`` counts failed calls;
    ``skipped`` counts calls not attempted because the tier's circuit breaker was open;
    ``last_error`` is the type and message of the latest failure. ``bytes_read`` counts value
    bytes served; ``bytes_written`` the bytes stored: values for an in-process tier, envelopes
    (header and value) for the others.
    """

    name: str
    hits: int
    misses: int
    errors: int
    corrupt: int
    skipped: int
    stores: int
    promotions: int
    bytes_read: int
    bytes_written: int
    last_error: str | None
    entries: int | None
    size_bytes: int | None

    @property
    def hit_rate(self) -> float:
        """Hits over the lookups that reached this tier (0.0 when none did)."""
        seen = self.hits + self.misses + self.corrupt
        return self.hits / seen if seen else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, with the hit rate, for JSON output."""
        return dataclasses.asdict(self) | {"hit_rate": round(self.hit_rate, 4)}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CacheStats:
    """What a cache did since it was made.

    ``lookups`` are reads of the cache; ``hits`` those served by any tier; ``upstream_calls`` the
    times the wrapped function really ran; ``coalesced`` the callers served by another caller's
    call (single-flight) instead of making their own; ``upstream_errors`` failed upstream calls
    (never cached).
    """

    lookups: int
    hits: int
    upstream_calls: int
    coalesced: int
    upstream_errors: int
    tiers: tuple[TierStats, ...]

    @property
    def hit_rate(self) -> float:
        """Hits over lookups (0.0 when there were none)."""
        return self.hits / self.lookups if self.lookups else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return {
            "lookups": self.lookups,
            "hits": self.hits,
            "hit_rate": round(self.hit_rate, 4),
            "upstream_calls": self.upstream_calls,
            "coalesced": self.coalesced,
            "upstream_errors": self.upstream_errors,
            "tiers": [t.as_dict() for t in self.tiers],
        }
