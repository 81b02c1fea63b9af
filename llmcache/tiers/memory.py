"""In-process LRU tier, bounded by entries and by bytes."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from llmcache.codec import Entry, decode, encode
from llmcache.tiers.base import InlineAsync

__all__ = ["MemoryTier"]

_INF = float("inf")
# Rough per-entry bookkeeping cost (tuple, dict slot, key object) so tiny values still count.
_OVERHEAD = 100

_Item = tuple[bytes | None, float, int, Entry | None]


class MemoryTier(InlineAsync):
    """An LRU of bytes in this process: fastest tier, lost when the process ends.

    An entry is held once: as the bytes given to :meth:`set`, or decoded (after
    :meth:`set_entry`, or the first :meth:`get_entry` of those bytes), never both, so
    ``max_bytes`` bounds the memory the values really take. :meth:`get` of a decoded entry
    re-encodes its envelope.

    Args:
        max_entries: evict least recently used entries beyond this count.
        max_bytes: evict beyond this many bytes of keys and values (plus a small per-entry cost).
        ttl: longest life of an entry in this tier, in seconds (``None`` = as the entry says).
    """

    name = "memory"

    def __init__(
        self, *, max_entries: int = 10_000, max_bytes: int = 64 * 2**20, ttl: float | None = None
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"MemoryTier max_entries must be >= 1, got {max_entries}")
        if max_bytes < 1:
            raise ValueError(f"MemoryTier max_bytes must be >= 1, got {max_bytes}")
        if ttl is not None and ttl <= 0:
            raise ValueError(f"MemoryTier ttl must be > 0 or None, got {ttl}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl = ttl
        # key -> (envelope bytes or None, monotonic expiry, accounted size, decoded entry or
        # None): exactly one of the bytes and the entry is kept. The entry's body is a copy of
        # part of the envelope, so keeping both would hold each value twice.
        self._data: OrderedDict[str, _Item] = OrderedDict()
        self._counters: dict[str, int] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        """Return the value under ``key`` and mark it recently used."""
        item = self._get(key)
        if item is None:
            return None
        raw, _, _, entry = item
        if raw is not None:
            return raw
        assert entry is not None
        return encode(key, entry.body, created=entry.created, ttl=entry.ttl)

    def get_entry(self, key: str) -> Entry | None:
        """Return the decoded entry under ``key``, or ``None``.

        Raises:
            CorruptEntry: bytes stored with plain :meth:`set` that are not a valid envelope.
        """
        item = self._get(key)
        if item is None:
            return None
        raw, expires, size, entry = item
        if entry is not None:
            return entry
        assert raw is not None
        entry = decode(key, raw)
        # Keep the decoded form instead of the bytes (not both: see _data).
        new_size = _entry_size(key, entry)
        with self._lock:
            if self._data.get(key) is item:
                self._data[key] = (None, expires, new_size, entry)
                self._bytes += new_size - size
        return entry

    def _get(self, key: str) -> _Item | None:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            if item[1] < time.monotonic():
                del self._data[key]
                self._bytes -= item[2]
                return None
            self._data.move_to_end(key)
            return item

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Store ``value``; evict least recently used entries to stay within bounds."""
        self._set(key, value, None, ttl)

    def set_entry(self, key: str, entry: Entry, ttl: float | None) -> None:
        """Store the decoded ``entry``, so hits skip decoding.

        Only the entry is kept: :meth:`get` re-encodes an equivalent envelope when asked.
        """
        self._set(key, None, entry, ttl)

    def _set(self, key: str, value: bytes | None, entry: Entry | None, ttl: float | None) -> None:
        if value is not None:
            size = len(key) + len(value) + _OVERHEAD
        else:
            assert entry is not None
            size = len(key) + len(entry.body) + _OVERHEAD  # _entry_size, inline: every miss
        if size > self.max_bytes:
            # Larger than the whole tier: keeping it would evict everything else.
            self.delete(key)
            return
        expires = _INF if ttl is None else time.monotonic() + ttl
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old[2]
            self._data[key] = (value, expires, size, entry)
            self._bytes += size
            while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
                _, evicted = self._data.popitem(last=False)
                self._bytes -= evicted[2]

    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        with self._lock:
            item = self._data.pop(key, None)
            if item is not None:
                self._bytes -= item[2]

    def clear(self) -> None:
        """Remove every entry (counters stay: generations must only move forward)."""
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def close(self) -> None:
        """Nothing to release; entries stay until the object is dropped."""

    def usage(self) -> tuple[int, int]:
        """Return ``(entries, bytes)`` held now."""
        return len(self._data), self._bytes

    def counter(self, key: str) -> int:
        """Return a counter of this process."""
        return self._counters.get(key, 0)

    def incr(self, key: str) -> int:
        """Increment a counter of this process."""
        with self._lock:
            value = self._counters.get(key, 0) + 1
            self._counters[key] = value
            return value


def _entry_size(key: str, entry: Entry) -> int:
    # The Entry object and its two floats are within _OVERHEAD.
    return len(key) + len(entry.body) + _OVERHEAD
