"""The embedded default ledger store: one SQLite file in WAL mode.

Durability. Every :meth:`SQLiteStore.append` is its own committed transaction when it returns.
With ``synchronous="NORMAL"`` (the default) a commit is written to the WAL file but not
fsynced: it survives the process being killed (SIGKILL, a crash, an OOM kill) because the
operating system has it, but the last commits before a power loss or kernel panic may be lost
(the file stays consistent). ``synchronous="FULL"`` fsyncs the WAL at every commit and
survives power loss too, at the price of one fsync per record (SQLite's documentation,
"PRAGMA synchronous" and "Write-Ahead Logging").

Concurrency. One connection per store, guarded by a lock: SQLite lets one writer at a time
into a file whatever the number of connections, so a connection per thread would only add
connections queueing on the same file lock; the lock is held for one statement (tens of
microseconds). Several processes may write the same file: a writer that finds it locked waits
up to ``busy_timeout`` seconds (SQLite's busy handler) before the write fails.

A write waits ``busy_timeout`` *in all*, not per thread queued before it: the wait for the
connection counts against it (the statement's busy handler gets what is left), and when the
write holding the connection gives up on a locked file, the writes queued behind it fail at
once, with the same error, instead of each waiting its own ``busy_timeout`` in turn (8 threads
would otherwise wait 1, 2, ... 8 timeouts). The :class:`~accounting.ledger.Ledger` puts them in
its spill, so nothing is lost.

``busy_timeout`` is 0.5 s by default (Python's ``sqlite3`` uses 5 s): a write waits this long on
the request path at worst, once per failure episode. A ledger write holds the file's lock for
well under 10 ms (one INSERT, or one batch of a few hundred rows; WAL checkpoints do not take
it), so a lock held for half a second is something else (a long transaction of another tool, a
backup, a ``VACUUM``): better to spill the record and write it back later than to hold up the
call any longer.

Schema. Table ``calls`` holds each record's JSON (:func:`~accounting.ledger.base.encode_record`)
and its checksum, plus columns reports filter and group on: ``time`` (indexed), ``user``,
``feature``, ``task``, ``model``, ``status``, ``cache`` and ``cost``, the exact total in USD as
a Decimal string (``NULL`` when unpriced): TEXT because SQLite's REAL would round it and its
INTEGER sum overflows at 9.2 million dollars in pico-dollars; sums are taken in Python with
``Decimal``. ``id`` is unique, so writing a record twice (a replay) keeps one row. Table
``meta`` holds ``schema_version``; a file written by a newer version is refused.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from accounting._exceptions import LedgerError
from accounting.ledger.base import LedgerTotals, day_bounds, decode_record, encode_record, totals_of
from accounting.money import text as usd_text
from accounting.record import CallRecord

__all__ = ["DEFAULT_BUSY_TIMEOUT", "SCHEMA_VERSION", "SQLiteStore"]

log = logging.getLogger("accounting.ledger")

#: Version of the tables this code writes; a file with a higher one is refused.
SCHEMA_VERSION: Final = 1
_SYNCHRONOUS: Final = ("NORMAL", "FULL")
# Rows fetched per query while iterating records(): each page is one short read, so a long
# report never holds the connection (or a read transaction) while its caller works.
_PAGE: Final = 500
#: Seconds a write waits for another process's write lock unless told otherwise (see above).
DEFAULT_BUSY_TIMEOUT: Final = 0.5
# The least a write waits for another thread's statement on the connection, whatever
# busy_timeout says: such a statement normally takes tens of microseconds, and a busy_timeout
# of 0 ("never wait for another process") must not turn that into a failure.
_MIN_LOCK_WAIT: Final = 0.05
# A write that waited longer than this for the connection runs its statement with a busy
# timeout cut down to what is left of busy_timeout.
_SHORTEN_AFTER: Final = 0.001

_TABLES: Final = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS calls (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        time REAL NOT NULL,
        user TEXT,
        feature TEXT,
        task TEXT,
        model TEXT NOT NULL,
        status TEXT NOT NULL,
        cache TEXT NOT NULL,
        cost TEXT,
        record TEXT NOT NULL,
        sum TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS calls_time ON calls (time)",
)
_INSERT: Final = (
    "INSERT OR IGNORE INTO calls "
    "(id, time, user, feature, task, model, status, cache, cost, record, sum) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _row(record: CallRecord) -> tuple[Any, ...]:
    text, checksum = encode_record(record)
    a = record.attribution
    return (
        record.id,
        record.time,
        a.user,
        a.feature,
        a.task,
        record.model_served or record.model_requested,
        record.status.value,
        record.cache.value,
        None if record.cost is None else usd_text(record.cost.total),
        text,
        checksum,
    )


def _busy_timeout(conn: sqlite3.Connection, seconds: float) -> None:
    # The connection's busy handler, for its next statements (SQLite, "PRAGMA busy_timeout").
    conn.execute(f"PRAGMA busy_timeout = {max(0, int(seconds * 1000))}")


def _locked(exc: sqlite3.Error) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc)
    )


class SQLiteStore:
    """Ledger records in a SQLite file (WAL mode), for one host's processes.

    Args:
        path: the database file; it and its directory are created on first use.
        synchronous: ``"NORMAL"`` (durable against a killed process, not a power loss) or
            ``"FULL"`` (fsync at every commit: durable against power loss, slower).
        busy_timeout: seconds a write waits in all (for the connection, then for another
            process's write lock) before failing; 0.5 by default (see the module).

    Raises:
        ValueError: a bad ``synchronous`` or ``busy_timeout``.

    Construction touches no file: the first call opens the database (creating the file, its
    directory and its tables) and a failure there is that call's :class:`LedgerError`; the
    next call tries again. Thread-safe.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "NORMAL",
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    ) -> None:
        mode = synchronous.upper()
        if mode not in _SYNCHRONOUS:
            raise ValueError(f"SQLiteStore synchronous must be NORMAL or FULL, got {synchronous!r}")
        if busy_timeout < 0:
            raise ValueError(f"SQLiteStore busy_timeout must be >= 0, got {busy_timeout}")
        self.path = Path(path)
        self.synchronous = mode
        self.busy_timeout = busy_timeout
        self.name = f"sqlite:{self.path}"
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._corrupt = 0
        # Monotonic time a write last gave up on a locked file: writes that were queued for
        # the connection before it fail at once (see the module).
        self._gave_up = float("-inf")

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    @property
    def corrupt(self) -> int:
        """Rows skipped by :meth:`records` because they failed to decode or verify."""
        return self._corrupt

    # -- the connection -------------------------------------------------------------------------

    def _error(self, exc: BaseException) -> LedgerError:
        return LedgerError(f"ledger {self.path}: {type(exc).__name__}: {exc}", store=self.name)

    def _connection(self) -> sqlite3.Connection:
        # Called with self._lock held.
        if self._closed:
            raise LedgerError(f"ledger {self.path} is closed", store=self.name)
        if self._conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(
                    self.path,
                    timeout=self.busy_timeout,
                    isolation_level=None,  # autocommit: one INSERT is one committed transaction
                    check_same_thread=False,  # used by many threads, one at a time (self._lock)
                )
            except (sqlite3.Error, OSError) as exc:
                raise self._error(exc) from exc
            try:
                self._setup(conn)
            except BaseException as exc:
                conn.close()
                if isinstance(exc, LedgerError):
                    raise
                if isinstance(exc, sqlite3.Error):
                    if _locked(exc):
                        self._gave_up = time.monotonic()
                    raise self._error(exc) from exc
                raise
            self._conn = conn
        return self._conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        # Switching to WAL takes an exclusive lock once per file; processes opening a new file
        # together may find it busy without SQLite's busy handler being called, so retry here.
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if not _locked(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)
        if str(mode).lower() != "wal":
            raise LedgerError(
                f"ledger {self.path}: cannot use WAL mode (journal_mode is {mode!r}); "
                "is it on a network file system?",
                store=self.name,
            )
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        if self._version(conn) == SCHEMA_VERSION:
            return  # the usual case: no write needed, so a reader never waits for a writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = self._version(conn)
            if version is None:
                for statement in _TABLES:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?), ('created', ?)",
                    (str(SCHEMA_VERSION), dt.datetime.now(dt.UTC).isoformat()),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _version(self, conn: sqlite3.Connection) -> int | None:
        """The file's schema version; ``None`` for an empty file.

        Raises:
            LedgerError: the file holds other tables, or a newer or unreadable schema version.
        """
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if not tables:
            return None
        if "meta" not in tables:
            raise LedgerError(
                f"{self.path} is a SQLite file but not an llmcache ledger (no meta table); "
                "point the ledger at another file",
                store=self.name,
            )
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        try:
            version = int(row[0])
        except (TypeError, ValueError):
            raise LedgerError(
                f"ledger {self.path} has no readable schema version ({row!r})", store=self.name
            ) from None
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"ledger {self.path} has schema version {version}, written by a newer llmcache; "
                f"this one reads version {SCHEMA_VERSION}: upgrade llmcache, or use another file",
                store=self.name,
            )
        # No older version exists yet; the first schema change adds its migration here.
        return version

    def _failed(self, exc: sqlite3.Error) -> LedgerError:
        # Called with self._lock held. A busy file is a wait that ran out; any other error may
        # leave the connection unusable (I/O error, file replaced): open a fresh one next time.
        conn = self._conn
        locked = _locked(exc)
        if locked:
            self._gave_up = time.monotonic()
        if conn is not None:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if not locked:
                self._conn = None
                conn.close()
        return self._error(exc)

    def _begin_write(self) -> tuple[sqlite3.Connection, bool]:
        """Take the connection for one write, within ``busy_timeout`` in all (see the module).

        Returns:
            The connection, with ``self._lock`` held, and whether its busy timeout was cut
            down for this write (:meth:`_end_write` restores it and releases the lock).

        Raises:
            LedgerError: no write now: the connection stayed busy, a write ahead of this one
                gave up on the locked file meanwhile, or the database cannot be opened.
        """
        start = time.monotonic()
        if not self._lock.acquire(timeout=max(self.busy_timeout, _MIN_LOCK_WAIT)):
            raise LedgerError(
                f"ledger {self.path}: database is busy: another thread's write held the "
                f"connection for more than busy_timeout ({self.busy_timeout:g}s)",
                store=self.name,
            )
        try:
            if self._gave_up >= start:
                raise LedgerError(
                    f"ledger {self.path}: database is locked: the write ahead of this one "
                    f"waited busy_timeout ({self.busy_timeout:g}s) for it and gave up",
                    store=self.name,
                )
            conn = self._connection()
            waited = time.monotonic() - start
            if waited > _SHORTEN_AFTER:
                _busy_timeout(conn, self.busy_timeout - waited)
                return conn, True
            return conn, False
        except BaseException:
            self._lock.release()
            raise

    def _end_write(self, conn: sqlite3.Connection, shortened: bool) -> None:
        try:
            if shortened and self._conn is conn:
                with contextlib.suppress(sqlite3.Error):
                    _busy_timeout(conn, self.busy_timeout)
        finally:
            self._lock.release()

    # -- LedgerStore ----------------------------------------------------------------------------

    def append(self, record: CallRecord) -> None:
        """Write one record, committed when this returns (durability: see the module).

        Raises:
            LedgerError: the record was not written (file locked past ``busy_timeout``,
                disk full, read-only, unreadable or newer schema ...).
        """
        row = _row(record)
        conn, shortened = self._begin_write()
        try:
            conn.execute(_INSERT, row)
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc
        finally:
            self._end_write(conn, shortened)

    def append_many(self, records: Sequence[CallRecord]) -> None:
        """Write ``records`` in one transaction: all are committed, or none.

        A record whose id is in the file already (a replay) is skipped: one row per id.

        Raises:
            LedgerError: no record was written.
        """
        if not records:
            return
        rows = [_row(r) for r in records]
        conn, shortened = self._begin_write()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(_INSERT, rows)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc
        finally:
            self._end_write(conn, shortened)

    def records(
        self, since: float | None = None, until: float | None = None
    ) -> Iterator[CallRecord]:
        """The records with ``since <= time < until``, ordered by time (then by write order).

        Corrupt rows are skipped, logged with their id and counted in :attr:`corrupt`.

        Raises:
            LedgerError: the file cannot be read.
        """
        bounds: list[str] = []
        params: list[Any] = []
        if since is not None:
            bounds.append("time >= ?")
            params.append(since)
        if until is not None:
            bounds.append("time < ?")
            params.append(until)
        after: tuple[float, int] | None = None
        while True:
            where = list(bounds)
            args = list(params)
            if after is not None:
                # Keyset paging on the (time, rowid) order of the time index.
                where.append("(time, seq) > (?, ?)")
                args.extend(after)
            sql = "SELECT seq, id, time, record, sum FROM calls"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += f" ORDER BY time, seq LIMIT {_PAGE}"
            with self._lock:
                conn = self._connection()
                try:
                    page = conn.execute(sql, args).fetchall()
                except sqlite3.Error as exc:
                    raise self._failed(exc) from exc
            for seq, rid, _time, text, checksum in page:
                try:
                    yield decode_record(text, checksum)
                except Exception as exc:  # a report must outlive any bad row
                    self._corrupt += 1
                    log.warning(
                        "ledger %s: skipping corrupt record %r (row %s): %s",
                        self.path,
                        rid,
                        seq,
                        exc,
                    )
            if len(page) < _PAGE:
                return
            after = (page[-1][2], page[-1][0])

    def close(self) -> None:
        """Close the connection; later calls raise :class:`LedgerError`. Idempotent."""
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- TotalsStore ----------------------------------------------------------------------------

    def totals(self, day: str | dt.date, *, by: str = "user") -> dict[str, LedgerTotals]:
        """Totals of the UTC day ``day`` per name of dimension ``by``, summed from its records.

        Raises:
            ValueError: ``by`` is not a dimension, or ``day`` not a ``YYYY-MM-DD`` date.
            LedgerError: the file cannot be read.
        """
        _, start, end = day_bounds(day)
        return totals_of(self.records(start, end), day, by=by)
