"""The ledger record: one per LLM call (or decorated function call), hit or miss, ok or not."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from accounting.attribute import Attribution
from accounting.money import Cost, text, usd
from accounting.usage import TokenUsage

__all__ = ["CacheOutcome", "CallRecord", "Status", "new_record_id"]

#: Version of the record's JSON form; a reader refuses other versions.
RECORD_VERSION = 1


class CacheOutcome(StrEnum):
    """What the cache did for a call."""

    MISS = "miss"  # looked up, not found: the provider was called
    HIT = "hit"  # served from a cache tier: nothing spent
    BYPASS = "bypass"  # the cache was not consulted (no_cache, uncacheable request, no cache)


class Status(StrEnum):
    """How a call ended."""

    OK = "ok"
    PROVIDER_ERROR = "provider_error"
    REFUSED = "refused"  # refused by a budget before the provider was called


def new_record_id() -> str:
    """A time-ordered unique id (UUIDv7 layout, hex): sorts by creation time across processes."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= (rand >> 68) << 64 & (((1 << 12) - 1) << 64)
    value |= 0b10 << 62  # RFC 4122 variant
    value |= rand & ((1 << 62) - 1)
    return f"{value:032x}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRecord:
    """One call as the ledger keeps it.

    Attributes:
        id: unique, time-ordered (:func:`new_record_id`).
        time: when the call started, Unix seconds (UTC).
        provider: e.g. ``"openai"``; ``"local"`` for a decorated function with no provider.
        operation: ``"chat"``, ``"embeddings"``, ``"responses"``, ``"completions"``, ``"function"``.
        model_requested: the model as the application asked for it.
        model_served: the model the provider says answered (``None`` when unknown).
        usage: tokens by type; all zero on a hit or a refusal.
        cost: what this call spent, by token type; zero on a hit; ``None`` when unpriced.
        cache: the cache outcome; ``cache_tier`` names the tier of a hit.
        saved: on a hit, what the original call cost (``None`` when that was unpriced).
        compression_tokens_saved: prompt tokens removed by compression.
        latency: seconds from the start of the call to its result.
        attribution: who the call is charged to.
        status: ok, provider error or refused by a budget; ``error_type`` names the exception.
    """

    id: str = field(default_factory=new_record_id)
    time: float = field(default_factory=time.time)
    provider: str
    operation: str = "chat"
    model_requested: str
    model_served: str | None = None
    usage: TokenUsage = field(default_factory=TokenUsage)
    cost: Cost | None = None
    cache: CacheOutcome = CacheOutcome.BYPASS
    cache_tier: str | None = None
    saved: Decimal | None = None
    compression_tokens_saved: int = 0
    latency: float = 0.0
    attribution: Attribution = field(default_factory=Attribution)
    status: Status = Status.OK
    error_type: str | None = None

    @property
    def priced(self) -> bool:
        """False when no price was known for the model: the cost is unknown, not $0."""
        return self.cost is not None

    @property
    def spent(self) -> bool:
        """True when the call may have cost money (the provider was called)."""
        return self.cache is not CacheOutcome.HIT and self.status is not Status.REFUSED

    def to_dict(self) -> dict[str, Any]:
        """The record's JSON form (money as strings)."""
        return {
            "v": RECORD_VERSION,
            "id": self.id,
            "time": self.time,
            "provider": self.provider,
            "operation": self.operation,
            "model_requested": self.model_requested,
            "model_served": self.model_served,
            "usage": self.usage.to_dict(),
            "cost": None if self.cost is None else self.cost.to_dict(),
            "cache": self.cache.value,
            "cache_tier": self.cache_tier,
            "saved": None if self.saved is None else text(self.saved),
            "compression_tokens_saved": self.compression_tokens_saved,
            "latency": self.latency,
            "attribution": self.attribution.to_dict(),
            "status": self.status.value,
            "error_type": self.error_type,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CallRecord:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: another record version, or a malformed field (named in the message).
        """
        if data.get("v") != RECORD_VERSION:
            raise ValueError(f"record version {data.get('v')!r}, expected {RECORD_VERSION}")
        try:
            cost = data.get("cost")
            saved = data.get("saved")
            return cls(
                id=str(data["id"]),
                time=float(data["time"]),
                provider=str(data["provider"]),
                operation=str(data["operation"]),
                model_requested=str(data["model_requested"]),
                model_served=data.get("model_served"),
                usage=TokenUsage.from_dict(data.get("usage") or {}),
                cost=None if cost is None else Cost.from_dict(cost),
                cache=CacheOutcome(data["cache"]),
                cache_tier=data.get("cache_tier"),
                saved=None if saved is None else usd(saved),
                compression_tokens_saved=int(data.get("compression_tokens_saved", 0)),
                latency=float(data.get("latency", 0.0)),
                attribution=Attribution.from_dict(data.get("attribution") or {}),
                status=Status(data["status"]),
                error_type=data.get("error_type"),
            )
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise ValueError(f"malformed record {data.get('id')!r}: {exc!r}") from exc
