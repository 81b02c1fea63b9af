"""The ledger the request path calls: a store behind batching, failure isolation and a spill.

:class:`Ledger` never raises from :meth:`~Ledger.append`. Records of money spent
(``record.spent``) are written to the store before ``append`` returns. Hit records (nothing
spent) are batched: written by one ``append_many`` when ``batch_size`` are pending or the
oldest has waited ``batch_interval`` seconds, by a background thread or by the next append,
whichever comes first. So if the process dies, at most ``batch_size`` hit records (256 by
default) and none older than ``batch_interval`` (1 s), plus the time of one write, are lost;
no spend record is.

When the store fails (SQLite locked or disk full, Redis down), the record goes to the spill
(:mod:`accounting.ledger.spill`): a file of this process's own in ``spill_dir``, surviving the
process, else memory; at most ``spill_limit`` records, past which records are dropped and
counted. A *failure episode* starts: one warning is logged (not one per call), and until the
store works again every record goes straight to the spill, so the request path never waits on
a dead store more than once per episode. The background thread retries every
``retry_interval`` seconds by replaying the spill; when it is empty again the episode ends
(logged once). Spill files left by processes that died are adopted and replayed too.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

from accounting._exceptions import LedgerError
from accounting.ledger.base import LedgerStore, LedgerTotals, TotalsStore, chunked
from accounting.ledger.spill import (
    FileSpill,
    MemorySpill,
    Spill,
    orphan_files,
    read_spill_file,
)
from accounting.record import CallRecord

__all__ = ["Ledger", "LedgerStats"]

log = logging.getLogger("accounting.ledger")

#: Records held by a spill file, or in memory, at most (unless ``spill_limit`` says otherwise).
FILE_SPILL_LIMIT: Final = 100_000
MEMORY_SPILL_LIMIT: Final = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerStats:
    """What a :class:`Ledger` did since it was made.

    Attributes:
        written: records the store committed when they were appended (or their batch flushed).
        batched: hit records accepted for batching.
        pending: hit records waiting in the batch now.
        failed: store calls that failed (appends, batch writes, replays).
        spilled: records put in the spill because the store failed or was failing.
        replayed: spilled (or adopted) records the store committed later.
        dropped: records lost: the spill was full, or the ledger was closed.
        spill_size: records in the spill now.
        corrupt: stored or spilled records skipped because they failed to decode.
        episodes: failure episodes (from a first failure until the spill is empty again).
        failing: whether an episode is going on now.
        last_error: type and message of the latest failure.
    """

    written: int
    batched: int
    pending: int
    failed: int
    spilled: int
    replayed: int
    dropped: int
    spill_size: int
    corrupt: int
    episodes: int
    failing: bool
    last_error: str | None


class Ledger:
    """One record per call, through ``store``; failures are contained, counted and logged.

    Args:
        store: where records go (:class:`~accounting.ledger.SQLiteStore`,
            :class:`~accounting.ledger.RedisStore`, or any :class:`LedgerStore`).
        batch_size: hit records written together; also the most that a crash may lose.
        batch_interval: seconds a hit record waits for its batch at most.
        spill_dir: directory for this process's spill file (kept across a crash and adopted
            by the next ledger using the directory); ``None`` keeps spilled records in memory.
        spill_limit: records the spill holds at most (default 100,000 in a file, 10,000 in
            memory); past it records are dropped and counted.
        retry_interval: seconds between attempts to write the spill back to a failing store.
        replay_batch: spilled records written back per store call.

    Raises:
        ValueError: a bad option value.

    Thread-safe. ``append`` is the request path; :meth:`aappend` is its asyncio face (the
    store call runs in a worker thread). Close the ledger (or use it as a context manager):
    that writes what is pending and stops its thread; an ``atexit`` hook does it for a
    ledger still open when the interpreter exits.
    """

    def __init__(
        self,
        store: LedgerStore,
        *,
        batch_size: int = 256,
        batch_interval: float = 1.0,
        spill_dir: str | os.PathLike[str] | None = None,
        spill_limit: int | None = None,
        retry_interval: float = 1.0,
        replay_batch: int = 500,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"Ledger batch_size must be >= 1, got {batch_size}")
        if batch_interval <= 0:
            raise ValueError(f"Ledger batch_interval must be > 0, got {batch_interval}")
        if retry_interval <= 0:
            raise ValueError(f"Ledger retry_interval must be > 0, got {retry_interval}")
        if spill_limit is not None and spill_limit < 1:
            raise ValueError(f"Ledger spill_limit must be >= 1, got {spill_limit}")
        if replay_batch < 1:
            raise ValueError(f"Ledger replay_batch must be >= 1, got {replay_batch}")
        self._store = store
        self.batch_size = batch_size
        self.batch_interval = batch_interval
        self.retry_interval = retry_interval
        self.replay_batch = replay_batch
        self.spill_dir = None if spill_dir is None else Path(spill_dir)
        self._spill_limit = spill_limit
        self._spill: Spill
        if self.spill_dir is None:
            self._spill = MemorySpill(limit=spill_limit or MEMORY_SPILL_LIMIT)
        else:
            self._spill = FileSpill(self.spill_dir, limit=spill_limit or FILE_SPILL_LIMIT)
        # Takes over when the spill file cannot be written (disk full).
        self._fallback: MemorySpill | None = None
        self._store_name = str(getattr(store, "name", repr(store)))

        self._lock = threading.Lock()  # guards everything below; never held across store I/O
        self._wake = threading.Condition(self._lock)
        self._io = threading.Lock()  # one batch write or replay at a time, in order
        self._pending: list[CallRecord] = []
        self._in_flight = 0  # hit records of the batch being written now
        self._oldest = 0.0  # monotonic time the oldest pending record arrived
        self._failing = False
        self._retry_at = 0.0
        self._drop_logged = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._written = self._batched = self._failed = self._spilled = 0
        self._replayed = self._dropped = self._episodes = 0
        self._last_error: str | None = None

    def __repr__(self) -> str:
        return f"Ledger({self._store!r})"

    @property
    def store(self) -> LedgerStore:
        """The store behind this ledger."""
        return self._store

    # -- the request path -----------------------------------------------------------------------

    def append(self, record: CallRecord, *, durable: bool | None = None) -> None:
        """Record one call. Never raises.

        Args:
            record: the call's record.
            durable: write it before returning (``True``) or batch it (``False``); by default
                records of money spent are durable and hit records are batched.
        """
        try:
            if record.spent if durable is None else durable:
                self._write(record)
            elif self._enqueue(record):
                self._flush_batch()
        except Exception as exc:  # a bug here must still not reach the caller
            self._lost(record, exc)

    async def aappend(self, record: CallRecord, *, durable: bool | None = None) -> None:
        """:meth:`append` for asyncio code: store calls run in a worker thread. Never raises."""
        try:
            if record.spent if durable is None else durable:
                await asyncio.to_thread(self._write, record)
            elif self._enqueue(record):
                await asyncio.to_thread(self._flush_batch)
        except Exception as exc:
            self._lost(record, exc)

    def _write(self, record: CallRecord) -> None:
        with self._lock:
            if self._closed:
                self._drop(record, "the ledger is closed")
                return
            self._start()
            if self._failing:
                self._keep(record)
                return
        try:
            self._store.append(record)
        except Exception as exc:
            self._store_failed(exc, [record])
            return
        with self._lock:
            self._written += 1

    def _enqueue(self, record: CallRecord) -> bool:
        """Add a hit record to the batch; ``True`` when the batch is due now."""
        with self._lock:
            if self._closed:
                self._drop(record, "the ledger is closed")
                return False
            self._start()
            self._pending.append(record)
            self._batched += 1
            now = time.monotonic()
            if len(self._pending) == 1:
                self._oldest = now
                self._wake.notify()  # the flusher now has a deadline
            # A batch the flusher is writing counts too: a crash would lose it with the rest.
            return (
                len(self._pending) + self._in_flight >= self.batch_size
                or now - self._oldest >= self.batch_interval
            )

    def _flush_batch(self) -> None:
        with self._io:
            with self._lock:
                batch, self._pending = self._pending, []
                if not batch:
                    return
                if self._failing:
                    for record in batch:
                        self._keep(record)
                    return
                self._in_flight = len(batch)
            try:
                self._store.append_many(batch)
            except Exception as exc:
                self._store_failed(exc, batch)
                return
            else:
                with self._lock:
                    self._written += len(batch)
            finally:
                with self._lock:
                    self._in_flight = 0

    # -- failures and the spill -----------------------------------------------------------------

    def _store_failed(self, exc: BaseException, records: list[CallRecord]) -> None:
        with self._lock:
            self._failed += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            if not self._failing:
                self._failing = True
                self._episodes += 1
                self._drop_logged = False
                self._retry_at = time.monotonic() + self.retry_interval
                where = self.spill_dir if self.spill_dir is not None else "memory"
                log.warning(
                    "ledger store %s is failing (%s); records are kept in the spill (%s) and "
                    "written back when it works again (retry every %gs)",
                    self._store_name,
                    self._last_error,
                    where,
                    self.retry_interval,
                )
            for record in records:
                self._keep(record)
            self._wake.notify()

    def _keep(self, record: CallRecord) -> None:
        # Called with self._lock held.
        kept = False
        if self._fallback is None:
            try:
                kept = self._spill.add(record)
            except OSError as exc:
                self._fallback = MemorySpill(limit=self._spill_limit or MEMORY_SPILL_LIMIT)
                log.warning(
                    "ledger spill file in %s cannot be written (%s: %s); spilled records are "
                    "kept in memory (at most %d) until the store works again",
                    self.spill_dir,
                    type(exc).__name__,
                    exc,
                    self._fallback.limit,
                )
        if self._fallback is not None:
            kept = self._fallback.add(record)
        if kept:
            self._spilled += 1
        else:
            self._drop(record, "the spill is full")

    def _drop(self, record: CallRecord, why: str) -> None:
        # Called with self._lock held.
        self._dropped += 1
        if not self._drop_logged:
            self._drop_logged = True
            log.error(
                "ledger %s: dropping records (%s), first %s; counted in stats().dropped",
                self._store_name,
                why,
                record.id,
            )

    def _lost(self, record: CallRecord, exc: Exception) -> None:
        with self._lock:
            self._dropped += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
        log.exception(
            "ledger %s: record %s was lost to an unexpected error",
            self._store_name,
            getattr(record, "id", "?"),
        )

    def _spills(self) -> list[Spill]:
        return [self._spill] if self._fallback is None else [self._spill, self._fallback]

    def _replay(self) -> bool:
        """Write the spill back to the store; ``True`` when it is empty and the episode over."""
        with self._io:
            for spill in self._spills():
                while spill.size:
                    before = spill.size
                    try:
                        batch = spill.take(self.replay_batch)
                        self._store.append_many(batch)
                    except Exception as exc:
                        self._replay_failed(exc)
                        return False
                    spill.done()
                    with self._lock:
                        self._replayed += len(batch)
                    if spill.size >= before:
                        break  # no progress (cannot happen): never spin here
            with self._lock:
                if any(s.size for s in self._spills()):
                    return False
                if self._failing:
                    self._failing = False
                    self._fallback = None
                    log.warning(
                        "ledger store %s works again; the spill is written back (%d records "
                        "replayed so far, %d dropped)",
                        self._store_name,
                        self._replayed,
                        self._dropped,
                    )
            return True

    def _replay_failed(self, exc: BaseException) -> None:
        with self._lock:
            self._failed += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            self._failing = True
            self._retry_at = time.monotonic() + self.retry_interval

    def _adopt(self) -> None:
        """Replay the spill files other ledgers left in ``spill_dir`` (their owner is gone)."""
        if self.spill_dir is None or not self.spill_dir.is_dir():
            return
        own = self._spill.path if isinstance(self._spill, FileSpill) else None
        with self._io:
            for path, fd in orphan_files(self.spill_dir, own):
                try:
                    records = read_spill_file(fd, path)
                    for chunk in chunked(records, self.replay_batch):
                        self._store.append_many(chunk)
                except Exception as exc:
                    # The file stays for the next attempt; the store's failure shows on the
                    # next append, which starts an episode if it is more than a blip.
                    with self._lock:
                        self._failed += 1
                        self._last_error = f"{type(exc).__name__}: {exc}"
                    return
                path.unlink(missing_ok=True)
                with self._lock:
                    self._replayed += len(records)
                log.warning(
                    "ledger %s: replayed %d records from %s, left by a process that exited",
                    self._store_name,
                    len(records),
                    path,
                )

    # -- the background thread ------------------------------------------------------------------

    def _start(self) -> None:
        # Called with self._lock held: the flusher starts with the first record, not before.
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="accounting-ledger-flusher", daemon=True
            )
            self._thread.start()
            atexit.register(self.close)

    def _run(self) -> None:
        next_adopt = 0.0
        while True:
            try:
                with self._lock:
                    timeout = self._next_deadline() - time.monotonic()
                    if timeout > 0 and not self._closed:
                        self._wake.wait(timeout)
                    if self._closed:
                        return
                    now = time.monotonic()
                    flush = bool(self._pending) and (
                        len(self._pending) >= self.batch_size
                        or now - self._oldest >= self.batch_interval
                    )
                    replay = self._failing and now >= self._retry_at
                    failing = self._failing
                if flush:
                    self._flush_batch()
                if replay:
                    self._replay()
                elif not failing and now >= next_adopt:
                    next_adopt = now + self.retry_interval
                    self._adopt()
            except Exception:  # the flusher must outlive any surprise
                log.exception("ledger %s: flusher error", self._store_name)
                with self._lock:
                    if not self._closed:
                        self._wake.wait(self.retry_interval)

    def _next_deadline(self) -> float:
        # Called with self._lock held.
        deadline = time.monotonic() + self.retry_interval
        if self._pending:
            deadline = min(deadline, self._oldest + self.batch_interval)
        if self._failing:
            deadline = min(deadline, self._retry_at)
        return deadline

    # -- flushing, reading, closing -------------------------------------------------------------

    def flush(self) -> bool:
        """Write the pending batch now, and the spill back if the store was failing. Never raises.

        Returns:
            ``True`` when every record appended so far has reached the store.
        """
        try:
            self._flush_batch()
            if self._failing or any(s.size for s in self._spills()):
                self._replay()
            if not self._failing:
                self._adopt()
        except Exception as exc:
            with self._lock:
                self._failed += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
            log.exception("ledger %s: flush failed", self._store_name)
        with self._lock:
            return not self._pending and not any(s.size for s in self._spills())

    async def aflush(self) -> bool:
        """:meth:`flush` in a worker thread."""
        return await asyncio.to_thread(self.flush)

    def records(
        self, since: float | None = None, until: float | None = None
    ) -> Iterator[CallRecord]:
        """Flush, then the store's records with ``since <= time < until`` (for reports).

        Raises:
            LedgerError: the store cannot be read (a report asked: it is told).
        """
        self.flush()
        return self._store.records(since, until)

    def totals(self, day: str | dt.date, *, by: str = "user") -> dict[str, LedgerTotals]:
        """Flush, then the store's totals of UTC day ``day`` per name of dimension ``by``.

        Raises:
            ValueError: ``by`` is not a dimension, or ``day`` not a date.
            LedgerError: the store keeps no totals, or cannot be read.
        """
        store = self._store
        if not isinstance(store, TotalsStore):
            raise LedgerError(f"{store!r} keeps no totals", store=self._store_name)
        self.flush()
        return store.totals(day, by=by)

    def stats(self) -> LedgerStats:
        """Counters since the ledger was made."""
        with self._lock:
            spills = self._spills()
            try:
                corrupt = int(self._store.corrupt)
            except Exception:
                corrupt = 0
            return LedgerStats(
                written=self._written,
                batched=self._batched,
                pending=len(self._pending),
                failed=self._failed,
                spilled=self._spilled,
                replayed=self._replayed,
                dropped=self._dropped,
                spill_size=sum(s.size for s in spills),
                corrupt=corrupt + sum(s.corrupt for s in spills),
                episodes=self._episodes,
                failing=self._failing,
                last_error=self._last_error,
            )

    def close(self) -> None:
        """Write what is pending, try the spill once more, stop the thread, close the store.

        Records still spilled stay in the spill file for the next ledger using ``spill_dir``
        (or are lost with the memory spill: counted in ``dropped``). Idempotent; never raises.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake.notify_all()
            thread = self._thread
        atexit.unregister(self.close)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        self.flush()
        with self._lock:
            if self._fallback is not None:
                self._dropped += self._fallback.size
            if isinstance(self._spill, MemorySpill):
                self._dropped += self._spill.size
        for closing in (self._spill.close, self._store.close):
            try:
                closing()
            except Exception:
                log.exception("ledger %s: error while closing", self._store_name)

    async def aclose(self) -> None:
        """:meth:`close` in a worker thread."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
