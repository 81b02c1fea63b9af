"""What a cache read returns: the value and where it came from."""

from __future__ import annotations

import dataclasses
from typing import Generic, TypeVar

__all__ = ["CacheInfo", "Fetched"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CacheInfo:
    """How a value was obtained.

    Attributes:
        hit: served from a tier without calling upstream.
        tier: name of the tier that served it (``None`` on a miss).
        key: the key the tiers hold the entry under.
        age: seconds since the entry was stored (hits only).
        coalesced: served by another caller's upstream call (single-flight).
        stored: the upstream result was written to at least one tier.
    """

    hit: bool
    tier: str | None
    key: str
    age: float | None = None
    coalesced: bool = False
    stored: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Fetched(Generic[T]):
    """A value with the :class:`CacheInfo` that says where it came from."""

    value: T
    info: CacheInfo
