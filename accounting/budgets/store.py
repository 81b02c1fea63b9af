"""The plug point behind :class:`~accounting.budgets.Budgets`: one small Protocol, two stores.

A store keeps, per counter key, two integers of pico-dollars (settled and reserved), one record
per reservation (its state, amount and keys, for idempotency and for reclaiming it when it
expires), and fire-once markers for threshold alerts. Every method is one atomic step: a store
shared by threads, processes or hosts never lets two reservations both take the last dollar.

Reservation states::

    reserved ──settle──► settled
        │  └──release──► released
        └──expires, reclaimed by a later reserve──► expired ──settle──► settled
                                                            └─release──► released

- ``settle`` of a ``reserved`` record moves its amount out of *reserved* and adds the actual
  cost to *settled*; of an ``expired`` record (its amount was already reclaimed) or of an
  unknown id (reserved while the store was down), it adds the actual cost only. Spend is never
  lost. Of a ``settled`` or ``released`` record, it does nothing.
- ``release`` of a ``reserved`` record gives its amount back; otherwise it only marks the record
  released (so a later settle is a no-op).
- Records that left ``reserved`` are kept :data:`RECORD_RETENTION` for these idempotency checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from accounting._exceptions import BudgetStoreError

__all__ = [
    "RECORD_RETENTION_MS",
    "BudgetStore",
    "BudgetStoreError",
    "CounterSpec",
    "CounterState",
    "Refusal",
]

#: Milliseconds a settled, released or expired reservation record is kept (one day).
RECORD_RETENTION_MS = 24 * 3600 * 1000
#: Expired reservations one ``reserve`` reclaims at most (the rest wait for the next ones).
RECLAIM_BATCH = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class CounterSpec:
    """One counter a reservation touches.

    Attributes:
        key: counter key (:func:`~accounting.budgets.core.counter_key`).
        limit: the limit, pico-dollars.
        keep_until: Unix milliseconds after which the store may drop the counter (``None``:
            keep it).
    """

    key: str
    limit: int
    keep_until: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CounterState:
    """A counter as read: pico-dollars settled and reserved (0 and 0 if absent)."""

    settled: int = 0
    reserved: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """Why a reservation did not fit: the first counter it would cross, as it stood.

    Attributes:
        index: position of that counter in the request.
        settled: its settled pico-dollars.
        reserved: its reserved pico-dollars (calls in flight).
    """

    index: int
    settled: int
    reserved: int


@runtime_checkable
class BudgetStore(Protocol):
    """Where budget counters live. Times are Unix milliseconds; money is pico-dollars."""

    def reserve(
        self,
        *,
        reservation_id: str,
        counters: Sequence[CounterSpec],
        amount: int,
        expires: int,
        now: int,
    ) -> Refusal | None:
        """Reclaim expired reservations; then add ``amount`` to every counter, or to none.

        Returns:
            ``None`` when reserved; the :class:`Refusal` of the first counter where
            ``settled + reserved + amount > limit`` otherwise.

        Raises:
            BudgetStoreError: the store failed; nothing was reserved, or (a lost reply) the
                reservation holds until it expires.
        """
        ...

    def settle(
        self,
        *,
        reservation_id: str,
        counters: Sequence[CounterSpec],
        amount: int,
        actual: int,
        now: int,
    ) -> list[int] | None:
        """Move a reservation to ``actual`` spend (see the module docstring for each state).

        Returns:
            Each counter's settled pico-dollars afterwards; ``None`` if it was already settled
            or released (nothing changed).

        Raises:
            BudgetStoreError: the store failed.
        """
        ...

    def release(
        self, *, reservation_id: str, counters: Sequence[CounterSpec], amount: int, now: int
    ) -> bool:
        """Give a reservation's amount back. ``False`` if it was already settled or released.

        Raises:
            BudgetStoreError: the store failed.
        """
        ...

    def read(self, keys: Sequence[str]) -> list[CounterState]:
        """The counters under ``keys``, in order.

        Raises:
            BudgetStoreError: the store failed.
        """
        ...

    def claim(self, marker: str, *, keep_until: int | None) -> bool:
        """Set a fire-once marker; ``True`` only for the first caller, across processes.

        Raises:
            BudgetStoreError: the store failed.
        """
        ...

    def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...
