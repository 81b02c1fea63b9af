"""Persistent tier on local disk, shared by the processes of one machine (diskcache)."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from pathlib import Path
from typing import Any

import diskcache
import diskcache.core

from llmcache.codec import CorruptEntry
from llmcache.tiers.base import InlineAsync

__all__ = ["DiskTier"]

# The names diskcache.Disk.filename() gives value files: xx/yy/<28 hex>.val under the directory.
_VALUE_FILE = re.compile(r"[0-9a-f]{2}[/\\][0-9a-f]{2}[/\\][0-9a-f]{28}\.val")


class _NoPickleDisk(diskcache.Disk):  # type: ignore[misc]
    """diskcache's serializer with pickle taken out: bytes and str only, in and out.

    diskcache pickles anything that is not bytes, str, int or float, and unpickles rows marked
    so. A row written by something else into a shared directory could then run code on read, so
    both directions refuse pickle here. For the same reason a row's ``filename`` is trusted only
    when it names one of diskcache's own value files inside the directory: diskcache joins it to
    the directory as it is, so an absolute or ``../`` name would read, and on delete remove, any
    file this process may touch.
    """

    def __init__(self, directory: str, **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self._root = os.path.realpath(directory)

    def put(self, key: Any) -> tuple[Any, bool]:
        if type(key) is not str:
            raise TypeError(f"disk tier keys are str, not {type(key).__name__}")
        return super().put(key)  # type: ignore[no-any-return]

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise ValueError("refusing a pickled key in the disk cache")
        return super().get(key, raw)

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> Any:
        if type(value) not in (bytes, int):
            raise TypeError(f"disk tier values are bytes, not {type(value).__name__}")
        return super().store(value, read, key)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == diskcache.core.MODE_PICKLE:
            raise CorruptEntry("a pickled value in the disk cache (never unpickled)")
        if filename is not None and not self._ours(filename):
            raise CorruptEntry("a value file that is not one of the cache's own (never read)")
        return super().fetch(mode, filename, value, read)

    def remove(self, file_path: str) -> None:
        # diskcache also removes the file's emptied parent directories: only ever for our own.
        if self._ours(file_path):
            super().remove(file_path)

    def _ours(self, filename: str) -> bool:
        if _VALUE_FILE.fullmatch(filename) is None:
            return False
        # A symlinked xx/ or yy/ directory could still lead out: compare real paths.
        full = os.path.realpath(os.path.join(self._root, filename))
        try:
            return os.path.commonpath([self._root, full]) == self._root
        except ValueError:  # another drive (Windows)
            return False


class DiskTier(InlineAsync):
    """Entries in a ``diskcache`` directory: survives restarts, shared across local processes.

    It also keeps namespace counters and grants leases, so processes of one machine that share
    the directory share invalidations and single-flight without Redis.

    Async reads (:meth:`aget`, :meth:`acounter`) run inline: SQLite in WAL mode never makes a
    reader wait, and a read costs less than a hand-off to a thread. Async writes run in a
    thread (:func:`asyncio.to_thread`): a writer waits up to ``timeout`` for SQLite's lock
    while another process writes, and must not stall the event loop meanwhile.

    Args:
        directory: where the SQLite file and large values live (created if missing).
        size_limit: bytes kept before the least recently *stored* entries are evicted.
            (diskcache's least-recently-used policy writes on every read; we avoid that.)
        ttl: longest life of an entry in this tier, in seconds (``None`` = as the entry says).
        timeout: seconds to wait for SQLite's lock before giving up (the cache counts an error).
    """

    name = "disk"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        size_limit: int = 2**30,
        ttl: float | None = None,
        timeout: float = 1.0,
    ) -> None:
        if size_limit < 1:
            raise ValueError(f"DiskTier size_limit must be >= 1, got {size_limit}")
        if ttl is not None and ttl <= 0:
            raise ValueError(f"DiskTier ttl must be > 0 or None, got {ttl}")
        self.directory = Path(directory)
        self.ttl = ttl
        try:
            self._cache = diskcache.Cache(
                str(self.directory), timeout=timeout, disk=_NoPickleDisk, size_limit=size_limit
            )
            # Counters live apart, so clear() stays one statement and never resets them.
            self._counters = diskcache.Cache(
                str(self.directory / "counters"), timeout=timeout, disk=_NoPickleDisk
            )
        except (OSError, sqlite3.Error) as exc:
            raise ValueError(
                f"DiskTier cannot open directory {str(self.directory)!r}: {exc}"
            ) from exc

    def get(self, key: str) -> bytes | None:
        """Return the bytes under ``key``, or ``None``."""
        value = self._cache.get(key, default=None, retry=False)
        if value is None or type(value) is bytes:
            return value
        # An int here is a counter, or another writer's row: never a value of ours.
        raise CorruptEntry(f"disk entry holds {type(value).__name__}, not bytes")

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Store ``value`` for ``ttl`` seconds."""
        self._cache.set(key, value, expire=ttl, retry=False)

    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        self._cache.delete(key, retry=False)

    def clear(self) -> None:
        """Remove every entry (counters stay: generations must only move forward)."""
        self._cache.clear(retry=False)

    def close(self) -> None:
        """Close the SQLite connections of this process."""
        self._cache.close()
        self._counters.close()

    def usage(self) -> tuple[int, int]:
        """Return ``(entries, bytes on disk)``."""
        return len(self._cache), int(self._cache.volume())

    def counter(self, key: str) -> int:
        """Return a counter shared by the processes using this directory."""
        value = self._counters.get(key, default=0, retry=False)
        return value if type(value) is int else 0

    def incr(self, key: str) -> int:
        """Increment a shared counter atomically (one SQLite transaction)."""
        return int(self._counters.incr(key, 1, default=0, retry=False))

    def acquire(self, key: str, token: str, lease: float) -> bool:
        """Take the lease if free or expired (diskcache ``add`` is atomic across processes)."""
        return bool(self._cache.add(key, token.encode(), expire=lease, retry=False))

    def release(self, key: str, token: str) -> None:
        """Free the lease if ``token`` still holds it."""
        with self._cache.transact(retry=False):
            if self._cache.get(key, retry=False) == token.encode():
                self._cache.delete(key, retry=False)

    # -- async writes: in a thread, as they may wait for another process's write lock ---------

    async def aset(self, key: str, value: bytes, ttl: float | None) -> None:
        """Async :meth:`set` (in a thread)."""
        await asyncio.to_thread(self.set, key, value, ttl)

    async def adelete(self, key: str) -> None:
        """Async :meth:`delete` (in a thread)."""
        await asyncio.to_thread(self.delete, key)

    async def aclear(self) -> None:
        """Async :meth:`clear` (in a thread)."""
        await asyncio.to_thread(self.clear)

    async def aincr(self, key: str) -> int:
        """Async :meth:`incr` (in a thread)."""
        return await asyncio.to_thread(self.incr, key)

    async def aacquire(self, key: str, token: str, lease: float) -> bool:
        """Async :meth:`acquire` (in a thread)."""
        return await asyncio.to_thread(self.acquire, key, token, lease)

    async def arelease(self, key: str, token: str) -> None:
        """Async :meth:`release` (in a thread)."""
        await asyncio.to_thread(self.release, key, token)
