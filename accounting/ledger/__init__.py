"""The ledger: one durable record per LLM call, in SQLite (the default) or Redis (shared).

- :class:`Ledger` is what the request path calls: it batches hit records, writes spend
  records before returning, and contains store failures (spill, count, log once, replay).
- :class:`LedgerStore` is the plug point: :class:`SQLiteStore` (embedded, one host) and
  :class:`RedisStore` (aggregate counters and a record stream shared by hosts). Both are also
  :class:`TotalsStore` s: ``totals(day, by=...)`` gives exact per-day totals.
- :func:`default_ledger` opens the embedded default: ``ledger.sqlite3`` under
  ``$LLMCACHE_DIR``, else under the user's data directory (:func:`default_ledger_path`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accounting.ledger._paths import default_ledger_path, default_spill_dir
from accounting.ledger.base import (
    DIMENSIONS,
    LedgerStore,
    LedgerTotals,
    TotalsStore,
    counters,
    totals_of,
)
from accounting.ledger.front import Ledger, LedgerStats
from accounting.ledger.sqlite import DEFAULT_BUSY_TIMEOUT, SQLiteStore

if TYPE_CHECKING:
    from accounting.ledger.redis import RedisStore

__all__ = [
    "DIMENSIONS",
    "Ledger",
    "LedgerStats",
    "LedgerStore",
    "LedgerTotals",
    "RedisStore",
    "SQLiteStore",
    "TotalsStore",
    "counters",
    "default_ledger",
    "default_ledger_path",
    "totals_of",
]


def __getattr__(name: str) -> Any:
    # RedisStore is imported on first use: redis-py takes longer to import than all the rest
    # of the ledger, and the embedded default never needs it (PEP 562).
    if name == "RedisStore":
        from accounting.ledger.redis import RedisStore  # noqa: PLC0415 - lazy, see above

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_ledger(
    path: str | os.PathLike[str] | None = None,
    *,
    synchronous: str = "NORMAL",
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    batch_size: int = 256,
    batch_interval: float = 1.0,
) -> Ledger:
    """The embedded default: a :class:`Ledger` on a SQLite file, its spill directory beside it.

    Args:
        path: the SQLite file; default :func:`default_ledger_path` (read now, not at import).
        synchronous: ``"NORMAL"`` (survives a killed process) or ``"FULL"`` (survives power
            loss; an fsync per spend record). See :mod:`accounting.ledger.sqlite`.
        busy_timeout: seconds a write waits in all for the file's write lock (0.5 by
            default: the most a call waits for a locked ledger; see
            :mod:`accounting.ledger.sqlite`).
        batch_size: hit records written together; a crash loses at most twice this many
            (those waiting and the batch being written; see :class:`Ledger`).
        batch_interval: seconds a hit record waits for its batch at most.

    Returns:
        A new ledger (nothing is shared between calls); close it when done. No file is
        touched until the first record.

    Raises:
        ValueError: a bad option value.
    """
    file = Path(path) if path is not None else default_ledger_path()
    store = SQLiteStore(file, synchronous=synchronous, busy_timeout=busy_timeout)
    return Ledger(
        store,
        batch_size=batch_size,
        batch_interval=batch_interval,
        spill_dir=default_spill_dir(file),
    )
