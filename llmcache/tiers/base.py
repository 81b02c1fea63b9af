"""The plug points of the cache: one small Protocol per ability.

Every tier stores opaque bytes under string keys (:class:`Tier`). A tier may also keep integer
counters (:class:`CounterTier`, used for namespace generations) and leases
(:class:`LockTier`, used for single-flight across processes). Each method has an ``a``-prefixed
async twin with the same meaning. Tiers may raise on failure: :class:`~llmcache.Cache` catches,
counts and logs every exception a tier raises, so a tier needs no error policy of its own.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from llmcache.codec import Entry

__all__ = ["CounterTier", "EntryTier", "InlineAsync", "LockTier", "SizedTier", "Tier"]


@runtime_checkable
class Tier(Protocol):
    """A store of bytes under string keys, with a per-entry TTL in seconds."""

    #: Short label used in stats, logs and cache outcomes ("memory", "disk", "redis").
    name: str
    #: Longest time an entry may live in this tier, or ``None`` for no cap of its own.
    ttl: float | None

    def get(self, key: str) -> bytes | None:
        """Return the bytes stored under ``key``, or ``None``."""

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (``None`` = no expiry)."""

    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""

    def clear(self) -> None:
        """Remove every entry this tier holds for llmcache (never someone else's data).

        Counters (:class:`CounterTier`) survive: namespace generations only move forward.
        """

    def close(self) -> None:
        """Release connections and files."""

    async def aget(self, key: str) -> bytes | None:
        """Async :meth:`get`."""

    async def aset(self, key: str, value: bytes, ttl: float | None) -> None:
        """Async :meth:`set`."""

    async def adelete(self, key: str) -> None:
        """Async :meth:`delete`."""

    async def aclear(self) -> None:
        """Async :meth:`clear`."""

    async def aclose(self) -> None:
        """Async :meth:`close`."""


@runtime_checkable
class CounterTier(Protocol):
    """A tier that keeps integer counters, shared as widely as the tier itself is."""

    def counter(self, key: str) -> int:
        """Return the counter's value (0 when it was never incremented)."""

    def incr(self, key: str) -> int:
        """Increment the counter atomically and return the new value."""

    async def acounter(self, key: str) -> int:
        """Async :meth:`counter`."""

    async def aincr(self, key: str) -> int:
        """Async :meth:`incr`."""


@runtime_checkable
class LockTier(Protocol):
    """A tier that grants leases: a lock that frees itself if its holder dies."""

    def acquire(self, key: str, token: str, lease: float) -> bool:
        """Take the lease on ``key`` for ``lease`` seconds if nobody holds it."""

    def release(self, key: str, token: str) -> None:
        """Give the lease back, only if ``token`` still holds it."""

    async def aacquire(self, key: str, token: str, lease: float) -> bool:
        """Async :meth:`acquire`."""

    async def arelease(self, key: str, token: str) -> None:
        """Async :meth:`release`."""


@runtime_checkable
class EntryTier(Protocol):
    """A tier in this process's memory that can hold entries already decoded.

    Its methods never block or do I/O, so the cache calls them directly from sync and async
    code, and skips decoding and checksum checks on its hits: bytes that never left the process
    cannot have been damaged or forged on the way.
    """

    def get_entry(self, key: str) -> Entry | None:
        """Return the decoded entry under ``key``, or ``None``."""

    def set_entry(self, key: str, entry: Entry, ttl: float | None) -> None:
        """Store ``entry``; :meth:`get` of the same key rebuilds its envelope when asked."""


@runtime_checkable
class SizedTier(Protocol):
    """A tier that can say cheaply how much it holds."""

    def usage(self) -> tuple[int, int]:
        """Return ``(entries, bytes)`` held now."""


class InlineAsync:
    """Async faces that run the sync methods inline, for tiers that do no network I/O.

    Memory is a dict lookup; a disk tier read is a local SQLite read of tens of microseconds,
    less than handing it to a thread would cost. Subclasses define the sync methods, and
    override the async faces of any that may block (the disk tier's writes wait for SQLite's
    lock).
    """

    def get(self, key: str) -> bytes | None:
        raise NotImplementedError

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def counter(self, key: str) -> int:
        raise NotImplementedError

    def incr(self, key: str) -> int:
        raise NotImplementedError

    async def aget(self, key: str) -> bytes | None:
        """Async :meth:`get`."""
        return self.get(key)

    async def aset(self, key: str, value: bytes, ttl: float | None) -> None:
        """Async :meth:`set`."""
        self.set(key, value, ttl)

    async def adelete(self, key: str) -> None:
        """Async :meth:`delete`."""
        self.delete(key)

    async def aclear(self) -> None:
        """Async :meth:`clear`."""
        self.clear()

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        self.close()

    async def acounter(self, key: str) -> int:
        """Async :meth:`counter`."""
        return self.counter(key)

    async def aincr(self, key: str) -> int:
        """Async :meth:`incr`."""
        return self.incr(key)
