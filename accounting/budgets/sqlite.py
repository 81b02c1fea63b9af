"""Budget counters in one SQLite file, shared by the threads and processes of one host.

Each operation is one ``BEGIN IMMEDIATE`` transaction: it takes the database's write lock
before reading, so the check and the update of every counter happen with no other writer in
between, in this process or another. The file is in WAL mode (readers never block the writer)
with ``synchronous=NORMAL``: a committed transaction survives a crash of the process; a power
cut may lose the last ones. A writer waits for the lock up to ``timeout`` seconds
(``busy_timeout``), then the operation fails with :class:`BudgetStoreError`.

Money is stored as integer pico-dollars (exact, and summable in SQL). SQLite integers are
64-bit, which bounds a counter at $9,223,372.04 (limits are capped below it).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from accounting.budgets.core import first_refusal
from accounting.budgets.store import (
    RECLAIM_BATCH,
    RECORD_RETENTION_MS,
    BudgetStoreError,
    CounterSpec,
    CounterState,
    Refusal,
)

__all__ = ["SQLiteBudgetStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS budget_counters (
    key TEXT PRIMARY KEY,
    settled INTEGER NOT NULL DEFAULT 0,     -- pico-dollars
    reserved INTEGER NOT NULL DEFAULT 0,    -- pico-dollars held by calls in flight
    keep_until INTEGER                      -- Unix ms; NULL: keep forever
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS budget_reservations (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,                    -- reserved | settled | released | expired
    amount INTEGER NOT NULL,
    keys TEXT NOT NULL,                     -- JSON list of counter keys
    expires INTEGER NOT NULL,               -- Unix ms
    done INTEGER                            -- Unix ms it left 'reserved'
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS budget_reservations_expiring
    ON budget_reservations (expires) WHERE state = 'reserved';
CREATE TABLE IF NOT EXISTS budget_alerts (
    marker TEXT PRIMARY KEY,
    keep_until INTEGER
) WITHOUT ROWID;
"""
_UPSERT_COUNTER = """
INSERT INTO budget_counters (key, settled, reserved, keep_until) VALUES (?, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET
    settled = settled + excluded.settled,
    reserved = reserved + excluded.reserved,
    keep_until = excluded.keep_until
"""
_UPSERT_RECORD = """
INSERT INTO budget_reservations (id, state, amount, keys, expires, done) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET state = excluded.state, done = excluded.done
"""
# Old records, counters and markers are purged at most this often (milliseconds).
_PURGE_EVERY = 60_000


class SQLiteBudgetStore:
    """A :class:`~accounting.budgets.BudgetStore` in one SQLite file.

    Args:
        path: the database file (created with its tables if missing). Use a file of its own or
            share one with other tables: this store only touches ``budget_*`` tables.
        timeout: seconds an operation waits for the write lock (another thread of this process,
            or another process) before it fails with :class:`BudgetStoreError`.

    Raises:
        ValueError: ``timeout`` is not > 0.

    The connection opens at first use, so a database that cannot be opened fails that call
    (counted by :class:`~accounting.budgets.Budgets`), not the constructor.
    """

    name = "sqlite"

    def __init__(self, path: str | Path, *, timeout: float = 2.0) -> None:
        if not timeout > 0:
            raise ValueError(f"SQLiteBudgetStore timeout must be > 0, got {timeout}")
        self.path = Path(path)
        self.timeout = timeout
        # One connection for the process, used by one thread at a time: SQLite admits one
        # writer per database anyway, and the lock bounds the in-process wait by `timeout` too.
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._purged = 0

    def __repr__(self) -> str:
        return f"SQLiteBudgetStore({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            # isolation_level=None: no implicit transactions; each operation opens its own
            # BEGIN IMMEDIATE. The connect timeout is SQLite's busy_timeout.
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            try:
                self._wal(conn)
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}COMMIT;")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return conn

    def _wal(self, conn: sqlite3.Connection) -> None:
        # Switching a new file to WAL needs an exclusive lock, and SQLite answers "database is
        # locked" at once, without its busy handler, while another process is switching it
        # too (seen with 4 processes opening a fresh file together). Retry within the timeout.
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(0.005)

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        if not self._lock.acquire(timeout=self.timeout):
            raise BudgetStoreError(
                f"{self!r}: no connection free within {self.timeout}s", store=self.name
            )
        try:
            conn = self._connect()
            # IMMEDIATE takes the write lock before the first read: the check and the update
            # of every counter then see no other writer in between. A read needs no lock (WAL).
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                self._abort(conn)
                raise
        except sqlite3.Error as exc:
            # Constraint and data errors are answers; locks, I/O and a full disk are outages.
            refused = isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError)
            raise BudgetStoreError(f"{self!r}: {exc}", store=self.name, refused=refused) from exc
        finally:
            self._lock.release()

    def _abort(self, conn: sqlite3.Connection) -> None:
        # A transaction left open would make every later BEGIN fail: roll back, and if even
        # that fails, drop the connection (the next operation opens a fresh one).
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            conn.close()
            self._conn = None

    # -- BudgetStore ------------------------------------------------------------------------

    def reserve(
        self,
        *,
        reservation_id: str,
        counters: Sequence[CounterSpec],
        amount: int,
        expires: int,
        now: int,
    ) -> Refusal | None:
        """See :meth:`BudgetStore.reserve <accounting.budgets.BudgetStore.reserve>`."""
        with self._transaction() as conn:
            self._reclaim(conn, now)
            states = [self._state(conn, c.key) for c in counters]
            index = first_refusal(
                [(s.settled, s.reserved) for s in states], [c.limit for c in counters], amount
            )
            if index is not None:
                return Refusal(
                    index=index, settled=states[index].settled, reserved=states[index].reserved
                )
            for c in counters:
                conn.execute(_UPSERT_COUNTER, (c.key, 0, amount, c.keep_until))
            keys = json.dumps([c.key for c in counters])
            conn.execute(
                "INSERT INTO budget_reservations (id, state, amount, keys, expires) "
                "VALUES (?, 'reserved', ?, ?, ?)",
                (reservation_id, amount, keys, expires),
            )
            return None

    def settle(
        self,
        *,
        reservation_id: str,
        counters: Sequence[CounterSpec],
        amount: int,
        actual: int,
        now: int,
    ) -> list[int] | None:
        """See :meth:`BudgetStore.settle <accounting.budgets.BudgetStore.settle>`."""
        with self._transaction() as conn:
            state, held = self._record(conn, reservation_id)
            if state in ("settled", "released"):
                return None
            release = held if state == "reserved" else 0
            for c in counters:
                conn.execute(_UPSERT_COUNTER, (c.key, actual, -release, c.keep_until))
            self._finish(
                conn, reservation_id, state="settled", amount=amount, counters=counters, now=now
            )
            return [self._state(conn, c.key).settled for c in counters]

    def release(
        self, *, reservation_id: str, counters: Sequence[CounterSpec], amount: int, now: int
    ) -> bool:
        """See :meth:`BudgetStore.release <accounting.budgets.BudgetStore.release>`."""
        with self._transaction() as conn:
            state, held = self._record(conn, reservation_id)
            if state in ("settled", "released"):
                return False
            if state == "reserved":
                for c in counters:
                    conn.execute(_UPSERT_COUNTER, (c.key, 0, -held, c.keep_until))
            self._finish(
                conn, reservation_id, state="released", amount=amount, counters=counters, now=now
            )
            return True

    def read(self, keys: Sequence[str]) -> list[CounterState]:
        """See :meth:`BudgetStore.read <accounting.budgets.BudgetStore.read>`."""
        with self._transaction(write=False) as conn:
            return [self._state(conn, key) for key in keys]

    def claim(self, marker: str, *, keep_until: int | None) -> bool:
        """See :meth:`BudgetStore.claim <accounting.budgets.BudgetStore.claim>`."""
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO budget_alerts (marker, keep_until) VALUES (?, ?) "
                "ON CONFLICT (marker) DO NOTHING",
                (marker, keep_until),
            )
            return cursor.rowcount == 1

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- steps inside a transaction ---------------------------------------------------------

    @staticmethod
    def _state(conn: sqlite3.Connection, key: str) -> CounterState:
        row = conn.execute(
            "SELECT settled, reserved FROM budget_counters WHERE key = ?", (key,)
        ).fetchone()
        return CounterState() if row is None else CounterState(settled=row[0], reserved=row[1])

    @staticmethod
    def _record(conn: sqlite3.Connection, reservation_id: str) -> tuple[str | None, int]:
        row = conn.execute(
            "SELECT state, amount FROM budget_reservations WHERE id = ?", (reservation_id,)
        ).fetchone()
        return (None, 0) if row is None else (row[0], row[1])

    @staticmethod
    def _finish(
        conn: sqlite3.Connection,
        reservation_id: str,
        *,
        state: str,
        amount: int,
        counters: Sequence[CounterSpec],
        now: int,
    ) -> None:
        # Also creates the record of a reservation the store never saw (made while it was
        # down), so that a second settle or release of it is a no-op too.
        keys = json.dumps([c.key for c in counters])
        conn.execute(_UPSERT_RECORD, (reservation_id, state, amount, keys, now, now))

    def _reclaim(self, conn: sqlite3.Connection, now: int) -> None:
        rows = conn.execute(
            "SELECT id, amount, keys FROM budget_reservations "
            "WHERE state = 'reserved' AND expires <= ? LIMIT ?",
            (now, RECLAIM_BATCH),
        ).fetchall()
        for reservation_id, amount, keys in rows:
            for key in json.loads(keys):
                conn.execute(
                    "UPDATE budget_counters SET reserved = reserved - ? WHERE key = ?",
                    (amount, key),
                )
            conn.execute(
                "UPDATE budget_reservations SET state = 'expired', done = ? WHERE id = ?",
                (now, reservation_id),
            )
        if now - self._purged >= _PURGE_EVERY:
            self._purged = now
            conn.execute(
                "DELETE FROM budget_reservations WHERE state != 'reserved' AND done < ?",
                (now - RECORD_RETENTION_MS,),
            )
            conn.execute(
                "DELETE FROM budget_counters WHERE keep_until < ? AND reserved <= 0", (now,)
            )
            conn.execute("DELETE FROM budget_alerts WHERE keep_until < ?", (now,))
