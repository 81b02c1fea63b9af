"""Settlements a failing budget store could not take, kept to be written once it answers.

A settle records money already spent. When the store fails at that moment (Redis down, SQLite
locked), dropping the settle would make the counters forget the spend, and the limits would let
later calls spend it again. So the settle is kept here and written again, in order, once the
store answers. Writing a settle twice is harmless: a store settles a reservation once.

Each call that finds settlements waiting writes a bounded batch of them before its own check
(:data:`DRAIN_BATCH`), waiting for another thread's batch rather than checking without it; so a
short outage's spend is counted before the next check, and a long outage's backlog is written
over the calls that follow, none of them held up for long.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from accounting.budgets.core import Reservation

__all__ = ["DEFAULT_LIMIT", "Deferred", "PendingSettle"]

#: Settlements held at most; beyond it the oldest is dropped (and counted): a store down for
#: days must not grow a process without bound.
DEFAULT_LIMIT = 100_000
#: Settlements one call writes at most before its own check.
DRAIN_BATCH = 100
#: Seconds a call waits for another thread's batch (one batch of store calls, or one timeout).
DRAIN_WAIT = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingSettle:
    """One settlement to write again: the reservation, what the call cost, and when."""

    reservation: Reservation
    actual: Decimal
    at: datetime


class Deferred:
    """A bounded, thread-safe queue of :class:`PendingSettle`, drained by one thread at a time."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"Deferred limit must be >= 1, got {limit}")
        self.limit = limit
        self.dropped = 0
        self.dropped_usd = Decimal(0)
        self._items: deque[PendingSettle] = deque()
        self._lock = threading.Lock()
        self._draining = threading.Lock()
        self._drainer: int | None = None  # the thread writing a batch

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: PendingSettle) -> PendingSettle | None:
        """Keep ``item``; return the oldest one dropped to make room, if any."""
        with self._lock:
            dropped = None
            if len(self._items) >= self.limit:
                dropped = self._items.popleft()
                self.dropped += 1
                self.dropped_usd += dropped.actual
            self._items.append(item)
            return dropped

    def total(self) -> Decimal:
        """What the held settlements spent, USD."""
        with self._lock:
            return sum((i.actual for i in self._items), Decimal(0))

    def drain(
        self,
        write: Callable[[PendingSettle], None],
        *,
        batch: int = DRAIN_BATCH,
        wait: float = DRAIN_WAIT,
    ) -> int:
        """Write up to ``batch`` held settlements, oldest first; return how many were written.

        Waits up to ``wait`` seconds while another thread writes its batch. A write that
        raises stops the batch: the settlement goes back to the head of the queue and the
        exception propagates (``write`` itself drops what must not be tried again).
        """
        me = threading.get_ident()
        if self._drainer == me:
            return 0  # a threshold callback of this very batch called back in
        if not self._draining.acquire(timeout=wait):
            return 0
        self._drainer = me
        try:
            done = 0
            while done < batch:
                with self._lock:
                    if not self._items:
                        return done
                    item = self._items.popleft()
                try:
                    write(item)
                except BaseException:
                    with self._lock:
                        self._items.appendleft(item)
                    raise
                done += 1
            return done
        finally:
            self._drainer = None
            self._draining.release()
