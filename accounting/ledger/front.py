"""The ledger the request path calls: a store behind batching, failure isolation and a spill.

:class:`Ledger` never raises from :meth:`~Ledger.append`.

Records of money spent (``record.spent``) are *durable*: before ``append`` returns, the record
is either committed by the store (as durable as the store makes it: see
:mod:`accounting.ledger.sqlite`) or, when the store fails or is failing, added to the spill
(:mod:`accounting.ledger.spill`). With a ``spill_dir`` that is one ``pwrite`` of the record's
line to this process's spill file, done before ``append`` returns and not fsynced: the record
survives the process being killed, not a power loss or kernel crash. Two cases are weaker,
and logged and counted: if the spill file cannot be written (disk full) the record is kept in
memory (``Ledger(store)`` without ``spill_dir`` always does), lost if the process dies before
the store works again; if the spill holds ``spill_limit`` records already, the record is
dropped (``stats().dropped``).

How long a call waits. A store call on the request path waits at most the store's own timeout
(SQLite: ``busy_timeout``, counted from the call's start, so threads queued on the connection
do not wait one timeout each, and once one gives up on a locked file the others go to the spill
at once; Redis: ``socket_timeout``). The first failure starts a *failure episode*: one warning
is logged (not one per call), and until the store works again every record goes straight to
the spill, without waiting. The background thread retries every ``retry_interval`` seconds by
replaying the spill; when it is empty again the episode ends (logged once).

Records that spent nothing (hits, refusals) are *batched*: written together by one
``append_many`` when ``batch_size`` are pending or the oldest has waited ``batch_interval``
seconds, by the append that completes the batch or by the background thread. The request path
never waits for another write or a replay: when one is in progress, the due batch is left to
the background thread. At most ``batch_size`` records wait in memory, besides the batch being
written; a record that finds ``batch_size`` waiting goes to the spill instead (counted in
``stats().overflowed`` and ``spilled``) and is written back by the background thread. So if the
process dies, at most ``2 * batch_size`` hit records (512 by default) are lost, those waiting
and the batch being written, and none older than ``batch_interval`` (1 s) plus the time of the
store write in progress and of its own (each bounded by the store's timeout); no spend record
is, but for the weaker cases above. (Without a ``spill_dir``, overflowed records are held in
the memory spill, and lost with the process too.)

Replays go in steps of ``replay_batch`` records (the first retry of a failing store tries one
record), one store call each, and a due batch of hits
is dealt with between two steps (written, or during a failure episode added to the spill
behind the records there); neither face of ``append`` waits for a replay (a spend record may
wait for the one store call in progress, as for any other write). Spill files left by
processes that died are adopted and replayed too. The spill file keeps its progress, so a
crash during a replay repeats at most one step, and the stores keep one copy of a record
written twice (SQLite by its unique id; Redis by its per-day sets of record ids, see
:mod:`accounting.ledger.redis`).
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
from accounting.ledger.base import (
    LedgerStore,
    LedgerTotals,
    TotalsStore,
    check_dimension,
    day_bounds,
    totals_of,
)
from accounting.ledger.spill import FileSpill, MemorySpill, Spill, orphan_files
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
        pending: hit records waiting in the batch now (at most ``batch_size``).
        failed: store calls that failed (appends, batch writes, replays, adoptions).
        spilled: records put in the spill: the store failed or was failing, or (``overflowed``)
            the batch was full.
        overflowed: hit records that found ``batch_size`` records waiting for a busy writer,
            and went to the spill instead of memory (or were dropped if it was full).
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
    overflowed: int
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
        batch_size: hit records written together, and the most that wait in memory besides
            the batch being written (so a crash loses at most twice this many).
        batch_interval: seconds a hit record waits for its batch at most.
        spill_dir: directory for this process's spill file (kept across a crash and adopted
            by the next ledger using the directory); ``None`` keeps spilled records in memory,
            where a crash loses them.
        spill_limit: records the spill holds at most (default 100,000 in a file, 10,000 in
            memory); past it records are dropped and counted.
        retry_interval: seconds between attempts to write the spill back to a failing store.
        replay_batch: spilled records written back per store call.

    Raises:
        ValueError: a bad option value.

    Thread-safe. ``append`` is the request path; :meth:`aappend` is its asyncio face (store
    calls run in a worker thread). What is durable when, and how long a call may wait: see
    :mod:`accounting.ledger.front`. Close the ledger (or use it as a context manager): that
    writes what is pending and stops its thread; an ``atexit`` hook does it for a ledger still
    open when the interpreter exits.
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
        # One store write of the background kind at a time (a batch, or one replay step), so
        # at most one batch is in flight. Held for one store call, never for a whole replay;
        # the request path only ever tries it (acquire(blocking=False)).
        self._io = threading.Lock()
        self._pending: list[CallRecord] = []
        self._oldest = 0.0  # monotonic time the oldest pending record arrived
        self._failing = False
        self._retry_at = 0.0
        self._drop_logged = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._written = self._batched = self._failed = self._spilled = 0
        self._overflowed = self._replayed = self._dropped = self._episodes = 0
        self._adopted_corrupt = 0
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
                self._flush_batch(wait=False)
        except Exception as exc:  # a bug here must still not reach the caller
            self._lost(record, exc)

    async def aappend(self, record: CallRecord, *, durable: bool | None = None) -> None:
        """:meth:`append` for asyncio code: store calls run in a worker thread. Never raises.

        A hit record never waits for another write: when one is in progress the due batch is
        left to the background thread, without a trip to a worker thread.
        """
        try:
            if record.spent if durable is None else durable:
                await asyncio.to_thread(self._write, record)
            elif self._enqueue(record):
                if self._io.locked():
                    self._nudge()
                else:
                    await asyncio.to_thread(self._flush_batch, False)
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
            if len(self._pending) >= self.batch_size:
                # A full batch waits for its writer, busy with the batch before it or a replay
                # step: memory takes no more (the loss bound in the module docstring), the
                # spill does, and the background thread writes it back.
                self._overflowed += 1
                self._keep(record)
                self._wake.notify()
                return False
            self._pending.append(record)
            self._batched += 1
            now = time.monotonic()
            if len(self._pending) == 1:
                self._oldest = now
                self._wake.notify()  # the flusher now has a deadline
            return self._due(now)

    def _due(self, now: float) -> bool:
        # Called with self._lock held.
        return bool(self._pending) and (
            len(self._pending) >= self.batch_size or now - self._oldest >= self.batch_interval
        )

    def _nudge(self) -> None:
        with self._lock:
            self._wake.notify()

    def _flush_batch(self, wait: bool = True) -> None:
        """Write the pending batch; with ``wait=False`` only if no other write is in progress."""
        if not self._io.acquire(blocking=wait):
            # A batch or a replay step is being written: the flusher takes this batch as soon
            # as that is done, and the request path goes on.
            self._nudge()
            return
        try:
            with self._lock:
                batch, self._pending = self._pending, []
                if not batch:
                    return
                if self._failing:
                    for record in batch:
                        self._keep(record)
                    return
            try:
                self._store.append_many(batch)
            except Exception as exc:
                self._store_failed(exc, batch)
                return
            with self._lock:
                self._written += len(batch)
        finally:
            self._io.release()

    def _flush_due(self) -> None:
        """Write the pending batch if it is due (between replay steps)."""
        with self._lock:
            due = self._due(time.monotonic())
        if due:
            self._flush_batch()

    # -- failures and the spill -----------------------------------------------------------------

    def _failure(self, exc: BaseException) -> None:
        # Called with self._lock held: count a failed store call; start an episode if none is on.
        self._failed += 1
        self._last_error = f"{type(exc).__name__}: {exc}"
        self._retry_at = time.monotonic() + self.retry_interval
        if not self._failing:
            self._failing = True
            self._episodes += 1
            self._drop_logged = False
            where = self.spill_dir if self.spill_dir is not None else "memory"
            log.warning(
                "ledger store %s is failing (%s); records are kept in the spill (%s) and "
                "written back when it works again (retry every %gs)",
                self._store_name,
                self._last_error,
                where,
                self.retry_interval,
            )
        self._wake.notify()

    def _store_failed(self, exc: BaseException, records: list[CallRecord]) -> None:
        with self._lock:
            self._failure(exc)
            for record in records:
                self._keep(record)

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

    def _spilled_now(self) -> int:
        # Called with self._lock held.
        return sum(s.size for s in self._spills())

    def _replay_step(self, spill: Spill, n: int) -> tuple[int, int]:
        """Write the oldest ``n`` records of ``spill`` to the store, as one store call.

        Returns:
            Records written and lines removed from the spill (corrupt ones included).

        Raises:
            Exception: the store (or the spill file) failed; the records stay in the spill.
        """
        with self._io:
            batch = spill.take(n)
            if batch:
                self._store.append_many(batch)
            # Removed from the spill and counted as replayed in one step: a flush that finds
            # the spill empty must also find these records counted.
            with self._lock:
                removed = spill.done()
                self._replayed += len(batch)
            return len(batch), removed

    def _replay(self) -> bool:
        """Write the spill back to the store; ``True`` when it is empty and the episode over."""
        # While the store is failing, a retry tries one record first: reading and decoding a
        # whole step only to see the store fail again would cost the request path's threads
        # (the GIL) at every retry of an outage.
        probe = self._failing
        for spill in self._spills():
            while spill.size:
                self._flush_due()  # hits due wait for one replay step at most, not all of it
                try:
                    _, removed = self._replay_step(spill, 1 if probe else self.replay_batch)
                    probe = False
                except Exception as exc:
                    with self._lock:
                        self._failure(exc)
                    return False
                if not removed:
                    break  # no progress (cannot happen): never spin here
        with self._lock:
            if self._spilled_now():
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

    def _adopt(self) -> None:
        """Replay the spill files other ledgers left in ``spill_dir`` (their owner is gone)."""
        if self.spill_dir is None or not self.spill_dir.is_dir():
            return
        own = self._spill.path if isinstance(self._spill, FileSpill) else None
        for path, fd in orphan_files(self.spill_dir, own):
            replayed = 0
            try:
                # A dup: the adopted spill closes its own descriptor, orphan_files its one.
                mine = os.dup(fd)
                try:
                    adopted = FileSpill.adopt(path, mine)
                except BaseException:
                    os.close(mine)
                    raise
            except OSError as exc:
                with self._lock:
                    self._failed += 1
                    self._last_error = f"{type(exc).__name__}: {exc}"
                continue
            try:
                while adopted.size:
                    self._flush_due()
                    written, removed = self._replay_step(adopted, self.replay_batch)
                    replayed += written
                    if not removed:
                        break
            except Exception as exc:
                # The file stays, its header at the first record not yet replayed, for the
                # next attempt; the store's failure shows on the next append, which starts an
                # episode if it is more than a blip.
                with self._lock:
                    self._failed += 1
                    self._last_error = f"{type(exc).__name__}: {exc}"
                return
            finally:
                with self._lock:
                    self._adopted_corrupt += adopted.corrupt
                adopted.close()  # removes the file once every record in it is replayed
            log.warning(
                "ledger %s: replayed %d records from %s, left by a process that exited",
                self._store_name,
                replayed,
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
                    flush = self._due(now)
                    if self._failing:
                        replay = now >= self._retry_at
                        adopt = False
                    else:
                        # Records overflowed from a full batch are written back at once.
                        replay = self._spilled_now() > 0
                        adopt = now >= next_adopt
                if flush:
                    self._flush_batch()
                if replay:
                    self._replay()
                elif adopt:
                    next_adopt = now + self.retry_interval
                    self._adopt()
            except Exception:  # the flusher must outlive any surprise
                log.exception("ledger %s: flusher error", self._store_name)
                with self._lock:
                    if not self._closed:
                        self._wake.wait(self.retry_interval)

    def _next_deadline(self) -> float:
        # Called with self._lock held.
        now = time.monotonic()
        deadline = now + self.retry_interval
        if len(self._pending) >= self.batch_size:
            deadline = now  # due; a nudge may have come while this thread was busy writing
        elif self._pending:
            deadline = min(deadline, self._oldest + self.batch_interval)
        if self._failing:
            deadline = min(deadline, self._retry_at)
        elif self._spilled_now():
            deadline = now
        return deadline

    # -- flushing, reading, closing -------------------------------------------------------------

    def flush(self) -> bool:
        """Write the pending batch now, and the spill back if it holds records. Never raises.

        Also adopts spill files left by processes that exited. Unlike :meth:`append`, this
        waits for writes and replays in progress.

        Returns:
            ``True`` when every record appended so far has reached the store.
        """
        try:
            self._flush_batch()
            with self._lock:
                replay = self._failing or self._spilled_now() > 0
            if replay:
                self._replay()
            if not self._failing:
                self._adopt()
        except Exception as exc:
            with self._lock:
                self._failed += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
            log.exception("ledger %s: flush failed", self._store_name)
        with self._lock:
            return not self._pending and not self._spilled_now()

    async def aflush(self) -> bool:
        """:meth:`flush` in a worker thread."""
        return await asyncio.to_thread(self.flush)

    def records(
        self, since: float | None = None, until: float | None = None
    ) -> Iterator[CallRecord]:
        """Flush, then every record with ``since <= time < until`` (for reports), each once.

        The store's records come first, in its order, then those this ledger holds in its
        spill (the store was failing or locked, or a batch overflowed: they are written back
        later), oldest first. So a report made during an outage counts what was spent. The
        spill is read once, when this is called, and left as it is; a record the background
        thread writes back while the report reads is yielded once (records are matched by
        id). Records appended after the call may be missing; spill files of other processes
        are not read (they are replayed into the store by whoever adopts them).

        Raises:
            LedgerError: the store cannot be read, or this ledger's spill file cannot (a
                report asked: it is told).
        """
        self.flush()
        # The spill first, the store after: a record written back in between is then in both
        # (deduplicated below), never in neither.
        try:
            with self._lock:
                spills = self._spills()
            held: dict[str, CallRecord] = {}
            for spill in spills:
                for record in spill.snapshot():
                    if (since is None or record.time >= since) and (
                        until is None or record.time < until
                    ):
                        held.setdefault(record.id, record)
        except OSError as exc:
            raise LedgerError(
                f"ledger {self._store_name}: the spill cannot be read: {type(exc).__name__}: {exc}",
                store=self._store_name,
            ) from exc
        return self._with_held(self._store.records(since, until), held)

    @staticmethod
    def _with_held(
        stored: Iterator[CallRecord], held: dict[str, CallRecord]
    ) -> Iterator[CallRecord]:
        """``stored``, then the ``held`` records it did not yield (``held`` is consumed)."""
        for record in stored:
            held.pop(record.id, None)
            yield record
        yield from held.values()

    def totals(self, day: str | dt.date, *, by: str = "user") -> dict[str, LedgerTotals]:
        """Flush, then the totals of UTC day ``day`` per name of dimension ``by``.

        The store's totals; while this ledger holds records in its spill (an outage), the
        totals are computed from :meth:`records` instead, so money already spent is counted,
        and counted once even when a record also reached the store.

        Raises:
            ValueError: ``by`` is not a dimension, or ``day`` not a date.
            LedgerError: the store keeps no totals, or it or the spill cannot be read.
        """
        store = self._store
        if not isinstance(store, TotalsStore):
            raise LedgerError(f"{store!r} keeps no totals", store=self._store_name)
        check_dimension(by)
        _, start, end = day_bounds(day)
        self.flush()
        with self._lock:
            held = self._spilled_now()
        if not held:
            return store.totals(day, by=by)
        return totals_of(self.records(start, end), day, by=by)

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
                overflowed=self._overflowed,
                replayed=self._replayed,
                dropped=self._dropped,
                spill_size=sum(s.size for s in spills),
                corrupt=corrupt + self._adopted_corrupt + sum(s.corrupt for s in spills),
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
