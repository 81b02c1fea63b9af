"""The budget front: reserve the worst case before a call, settle the actual cost after.

::

    reservation = budgets.reserve(attribution, worst_case)   # BudgetExceeded if over a limit
    try:
        response = call_the_model()
    except Exception:
        budgets.release(reservation)
        raise
    budgets.settle(reservation, actual_cost)

Policies, and why:

- **Store failure** (``on_store_error``, default ``"allow"``): budgets are an optional part, and
  DESIGN says the failure of an optional part never reaches the caller. ``reserve`` then lets
  the call through unchecked; the failure is counted (:meth:`Budgets.stats`) and logged once
  per episode (at the first failure, and again when the store answers). ``"refuse"`` raises
  :class:`BudgetStoreError` instead, for deployments where overspending is worse than refusing.
  ``settle`` and ``release`` never raise for a store failure (the money is already spent). A
  settle the store fails to take in an outage is kept (:mod:`accounting.budgets.deferred`,
  bounded) and written once the store answers, by the calls that follow, a batch before each
  one's own check, so an outage never makes the counters forget money spent. A settle the
  store refuses outright (a command error) is logged with its amount and not kept. A call
  settled after the store comes back records its spend even if its reservation was made while
  the store was down.
- **Unknown worst case** (``amount=None``: unpriced model or unknown output limit) under at
  least one limit (``on_unpriced``, default ``"refuse"``): a limit is a promise of a cap, and
  a call of unbounded cost cannot keep it, so it is refused with :class:`BudgetExceeded`
  (``requested`` is ``Decimal("Infinity")``). ``"allow"`` reserves $0 instead: the call goes
  through unless the budget is already exhausted. With no applicable limit nothing is refused.
- **Thresholds** fire when *settled* spend reaches ``threshold x limit``, at the settle that
  makes it so, once per limit, period and threshold, across processes: the first process to
  set the store's marker fires it. A callback that raises is logged and counted, and never
  breaks the call.
- **Expiry**: a reservation not settled or released within ``reservation_ttl`` (default 10
  minutes) is reclaimed by the next ``reserve`` that touches the store, so a crashed process
  holds nothing for long. Calls that may run longer need a longer ``reservation_ttl``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from accounting._exceptions import BudgetExceeded
from accounting.attribute import Attribution, current_attribution
from accounting.budgets.core import (
    AMOUNT_CAP,
    AppliedLimit,
    BudgetStatus,
    LimitTable,
    Reservation,
    ThresholdCrossed,
    ceil_picos,
    crossed,
    status_of,
    utc,
)
from accounting.budgets.deferred import Deferred, PendingSettle
from accounting.budgets.limits import (
    DEFAULT_RESERVATION_TTL,
    BudgetConfig,
    BudgetLimit,
    Policy,
    Scope,
)
from accounting.budgets.store import BudgetStore, BudgetStoreError, CounterSpec
from accounting.money import ZERO, from_picos, to_picos
from accounting.record import new_record_id

__all__ = ["BudgetStats", "Budgets"]

log = logging.getLogger("accounting.budgets")
UNBOUNDED = Decimal("Infinity")
# Thresholds already fired (or claimed by another process) that this process remembers, so
# it stops asking the store; forgotten wholesale past this size (the store still decides).
_MEMO_SIZE = 10_000


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _specs(applied: Iterable[AppliedLimit]) -> list[CounterSpec]:
    return [
        CounterSpec(
            key=a.key,
            limit=to_picos(a.limit.usd),
            keep_until=None if a.keep_until is None else _ms(a.keep_until),
        )
        for a in applied
    ]


def _money(value: Decimal, what: str) -> Decimal:
    if not isinstance(value, Decimal):
        raise TypeError(f"{what} must be a Decimal (USD), got {value!r}")
    if not value.is_finite() or value < 0:
        raise ValueError(f"{what} must be a finite amount >= 0, got {value}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetStats:
    """What a :class:`Budgets` did since it was made (this process only).

    Attributes:
        reserved: reservations granted (checked by the store).
        unlimited: reservations no limit applied to (the store was not asked).
        refused: reservations refused with :class:`BudgetExceeded`.
        settled: settlements recorded (second settles not counted).
        released: releases recorded.
        store_errors: store operations that failed.
        unchecked: reservations let through unchecked because the store failed.
        alerts: threshold callbacks fired.
        callback_errors: threshold callbacks that raised.
        deferred: settlements the store failed to take, kept to be written when it answers.
        deferred_written: kept settlements written since (those the store had applied after
            all, its reply lost, add nothing and do not count in ``settled``).
        deferred_dropped: kept settlements dropped: too many were held, or the store refused
            one when it answered (both logged).
        deferred_pending: kept settlements still waiting for the store, now.
        settles_refused: settlements the store refused outright (a command error, logged with
            their amount): not kept, as asking again would not help.
    """

    reserved: int = 0
    unlimited: int = 0
    refused: int = 0
    settled: int = 0
    released: int = 0
    store_errors: int = 0
    unchecked: int = 0
    alerts: int = 0
    callback_errors: int = 0
    deferred: int = 0
    deferred_written: int = 0
    deferred_dropped: int = 0
    deferred_pending: int = 0
    settles_refused: int = 0


class Budgets:
    """USD limits per user, feature, task or globally, enforced before calls spend money.

    Args:
        store: where counters live (:class:`~accounting.budgets.SQLiteBudgetStore` for one
            host, :class:`~accounting.budgets.RedisBudgetStore` across hosts).
        limits: the limits (see :class:`~accounting.budgets.BudgetLimit`).
        thresholds: fractions of a limit in ``(0, 1]`` at which ``on_threshold`` fires.
        on_threshold: called with a :class:`ThresholdCrossed` event.
        reservation_ttl: seconds before an unsettled reservation may be reclaimed.
        on_unpriced: ``"refuse"`` (default) or ``"allow"`` a call whose worst case is unknown.
        on_store_error: ``"allow"`` (default) or ``"refuse"`` a call when the store fails.

    Raises:
        ConfigError: an argument is invalid (``where`` names it).

    Thread-safe; the async methods run the store in a worker thread (stores are synchronous,
    with short timeouts), so an event loop never blocks on them.
    """

    def __init__(
        self,
        *,
        store: BudgetStore,
        limits: Iterable[BudgetLimit] = (),
        thresholds: Iterable[Decimal] = (),
        on_threshold: Callable[[ThresholdCrossed], object] | None = None,
        reservation_ttl: float = DEFAULT_RESERVATION_TTL,
        on_unpriced: Policy = "refuse",
        on_store_error: Policy = "allow",
    ) -> None:
        self.config = BudgetConfig(
            limits=tuple(limits),
            thresholds=tuple(thresholds),
            reservation_ttl=reservation_ttl,
            on_unpriced=on_unpriced,
            on_store_error=on_store_error,
        )
        self.store = store
        self._table = LimitTable(self.config.limits)
        self._on_threshold = on_threshold
        self._ttl = timedelta(seconds=self.config.reservation_ttl)
        self._lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(BudgetStats.__slots__, 0)
        self._failing = False
        self._fired: set[str] = set()
        self._deferred = Deferred()

    @classmethod
    def from_config(
        cls,
        config: BudgetConfig,
        *,
        store: BudgetStore,
        on_threshold: Callable[[ThresholdCrossed], object] | None = None,
    ) -> Budgets:
        """A :class:`Budgets` with the limits and policies of ``config``."""
        return cls(
            store=store,
            limits=config.limits,
            thresholds=config.thresholds,
            on_threshold=on_threshold,
            reservation_ttl=config.reservation_ttl,
            on_unpriced=config.on_unpriced,
            on_store_error=config.on_store_error,
        )

    def __repr__(self) -> str:
        return f"Budgets({len(self.config.limits)} limits, store={self.store!r})"

    # -- bookkeeping --------------------------------------------------------------------------

    def _count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self._counts[what] += n

    def _store_failed(self, exc: Exception, operation: str) -> None:
        with self._lock:
            self._counts["store_errors"] += 1
            first, self._failing = not self._failing, True
        if first:
            policy = (
                "calls go through unchecked"
                if self.config.on_store_error == "allow"
                else "calls are refused"
            )
            log.warning(
                "budget store %r failed on %s (%s: %s); %s until it answers again",
                self.store,
                operation,
                type(exc).__name__,
                exc,
                policy,
            )

    def _store_ok(self) -> None:
        if self._failing:  # a plain read on the hot path; the lock decides who logs
            with self._lock:
                back, self._failing = self._failing, False
            if back:
                log.warning("budget store %r answers again; budgets are enforced", self.store)
        if len(self._deferred):
            self._write_deferred()

    def _defer(self, reservation: Reservation, actual: Decimal, at: datetime) -> None:
        self._count("deferred")
        dropped = self._deferred.add(PendingSettle(reservation=reservation, actual=actual, at=at))
        if dropped is not None:
            self._count("deferred_dropped")
            log.warning(
                "budget store %r: %d settlements are waiting for it; the oldest (USD %s) is "
                "dropped from the budget counters (the ledger keeps it)",
                self.store,
                self._deferred.limit,
                dropped.actual,
            )

    def _write_deferred(self) -> None:
        """Write the settlements kept while the store failed (never raises)."""
        try:
            self._deferred.drain(self._write_one)
        except Exception as exc:
            self._store_failed(exc, "settle")

    def _write_one(self, item: PendingSettle) -> None:
        try:
            self._settle_now(item.reservation, item.actual, item.at)
        except Exception as exc:
            if not getattr(exc, "refused", False):
                raise  # an outage again: the drain stops, the item waits
            # Tried again it would fail again (and block every later settle behind it).
            self._count("deferred_dropped")
            self._settle_refused(item.actual, exc)
            return
        self._count("deferred_written")

    def _settle_refused(self, actual: Decimal, exc: Exception) -> None:
        self._count("settles_refused")
        log.error(
            "budget store %r refused a settlement of USD %s (%s: %s); the budget counters "
            "miss it (the ledger has it)",
            self.store,
            actual,
            type(exc).__name__,
            exc,
        )

    def _as_store_error(self, exc: Exception) -> BudgetStoreError:
        # A store outside this package raised something else: same policy, same type.
        store = str(getattr(self.store, "name", type(self.store).__name__))
        return BudgetStoreError(f"{self.store!r}: {type(exc).__name__}: {exc}", store=store)

    def stats(self) -> BudgetStats:
        """Counts since this object was made."""
        with self._lock:
            return BudgetStats(**{**self._counts, "deferred_pending": len(self._deferred)})

    # -- reserve / settle / release ------------------------------------------------------------

    def reserve(
        self,
        attribution: Attribution | None,
        amount: Decimal | None,
        *,
        now: datetime | None = None,
    ) -> Reservation:
        """Hold ``amount`` against every limit that applies to ``attribution``, or refuse.

        Args:
            attribution: who the call is charged to; ``None`` for the current one
                (:func:`~accounting.current_attribution`).
            amount: the call's worst-case cost (:func:`worst_case_cost`), USD; ``None`` when
                it cannot be known (see ``on_unpriced``). Rounded up to a whole pico-dollar.
            now: the time of the call (aware), for the period keys; default: the clock.

        Returns:
            The reservation, to :meth:`settle` or :meth:`release`.

        Raises:
            BudgetExceeded: the amount would cross a limit (the first one, in the order user,
                feature, task, global; day, month, total). ``spent`` is settled plus reserved.
            BudgetStoreError: the store failed and ``on_store_error="refuse"``.
            TypeError, ValueError: ``amount`` is not a Decimal >= 0, or ``now`` is naive.
        """
        at = utc(now)
        who = current_attribution() if attribution is None else attribution
        applied = self._table.applicable(who, at)
        unknown = amount is None
        amount = ZERO if amount is None else _money(amount, "amount")
        reservation = Reservation(
            id=new_record_id(), amount=amount, applied=applied, expires_at=at + self._ttl
        )
        if not applied:
            self._count("unlimited")
            return reservation
        if len(self._deferred):
            # Spend kept during an outage counts before this check. A store that still fails
            # is not asked twice: the call goes as the store-error policy says.
            try:
                self._deferred.drain(self._write_one)
            except Exception as exc:
                return self._unchecked(reservation, exc)
        if unknown and self.config.on_unpriced == "refuse":
            first = applied[0]
            try:
                (state,) = self.store.read([first.key])
            except Exception as exc:
                # The store cannot say what was spent: its own policy decides.
                return self._unchecked(reservation, exc)
            self._store_ok()
            self._count("refused")
            raise BudgetExceeded(
                scope=first.limit.scope,
                name=first.name,
                period=first.limit.period,
                limit=first.limit.usd,
                spent=from_picos(state.settled + state.reserved),
                requested=UNBOUNDED,
            )
        counters = _specs(applied)
        try:
            refusal = self.store.reserve(
                reservation_id=reservation.id,
                counters=counters,
                amount=ceil_picos(min(amount, AMOUNT_CAP)),
                expires=_ms(reservation.expires_at),
                now=_ms(at),
            )
        except Exception as exc:
            return self._unchecked(reservation, exc)
        self._store_ok()
        if refusal is None:
            self._count("reserved")
            return reservation
        self._count("refused")
        hit = applied[refusal.index]
        raise BudgetExceeded(
            scope=hit.limit.scope,
            name=hit.name,
            period=hit.limit.period,
            limit=hit.limit.usd,
            spent=from_picos(refusal.settled + refusal.reserved),
            requested=amount,
        )

    def _unchecked(self, reservation: Reservation, exc: Exception) -> Reservation:
        self._store_failed(exc, "reserve")
        if self.config.on_store_error == "refuse":
            if isinstance(exc, BudgetStoreError):
                raise exc
            raise self._as_store_error(exc) from exc
        self._count("unchecked")
        return reservation

    def settle(
        self, reservation: Reservation, actual: Decimal, *, now: datetime | None = None
    ) -> None:
        """Record ``actual`` as spent and give back the rest of the reservation.

        ``actual`` may exceed the reservation: it is recorded all the same (spend is never
        lost), and may take a counter past its limit; later calls are then refused. A second
        settle or release of the same reservation does nothing. Store failures are counted
        and logged, never raised.

        Args:
            reservation: from :meth:`reserve`.
            actual: what the call cost, USD (rounded up to a whole pico-dollar).
            now: the time of settlement (aware), default the clock.

        Raises:
            TypeError, ValueError: ``actual`` is not a Decimal >= 0.
        """
        actual = _money(actual, "actual")
        if not reservation.applied:
            return
        at = utc(now)
        try:
            self._settle_now(reservation, actual, at)
        except Exception as exc:
            if getattr(exc, "refused", False):
                self._count("store_errors")
                self._settle_refused(actual, exc)
                return
            self._store_failed(exc, "settle")
            self._defer(reservation, actual, at)
            return
        self._store_ok()

    def _settle_now(self, reservation: Reservation, actual: Decimal, at: datetime) -> None:
        """Write one settlement; raises what the store raised."""
        after = self.store.settle(
            reservation_id=reservation.id,
            counters=_specs(reservation.applied),
            amount=ceil_picos(min(reservation.amount, AMOUNT_CAP)),
            actual=ceil_picos(min(actual, AMOUNT_CAP)),
            now=_ms(at),
        )
        if after is None:
            return
        self._count("settled")
        if self.config.thresholds:
            for applied, settled in zip(reservation.applied, after, strict=True):
                self._alert(applied, from_picos(settled))

    def release(self, reservation: Reservation, *, now: datetime | None = None) -> None:
        """Give back the whole reservation (the call failed and spent nothing).

        A second release, or a release after settle, does nothing. Store failures are
        counted and logged, never raised (an unreleased reservation expires).
        """
        if not reservation.applied:
            return
        try:
            done = self.store.release(
                reservation_id=reservation.id,
                counters=_specs(reservation.applied),
                amount=ceil_picos(min(reservation.amount, AMOUNT_CAP)),
                now=_ms(utc(now)),
            )
        except Exception as exc:
            self._store_failed(exc, "release")
            return
        self._store_ok()
        if done:
            self._count("released")

    def _alert(self, applied: AppliedLimit, spent: Decimal) -> None:
        for threshold in crossed(applied.limit.usd, spent, self.config.thresholds):
            marker = f"{applied.key}@{threshold}"
            if marker in self._fired:
                continue
            keep = None if applied.keep_until is None else _ms(applied.keep_until)
            try:
                won = self.store.claim(marker, keep_until=keep)
            except Exception as exc:
                self._store_failed(exc, "claim")
                return
            with self._lock:
                if len(self._fired) >= _MEMO_SIZE:
                    self._fired.clear()
                self._fired.add(marker)
            if won:
                self._fire(applied, spent, threshold)

    def _fire(self, applied: AppliedLimit, spent: Decimal, threshold: Decimal) -> None:
        self._count("alerts")
        if self._on_threshold is None:
            return
        event = ThresholdCrossed(
            scope=applied.limit.scope,
            name=applied.name,
            period=applied.limit.period,
            period_key=applied.period_key,
            limit=applied.limit.usd,
            spent=spent,
            threshold=threshold,
        )
        try:
            self._on_threshold(event)
        except Exception:
            self._count("callback_errors")
            log.exception("budget threshold callback failed for %s", applied.key)

    # -- inspecting ---------------------------------------------------------------------------

    def status(
        self,
        of: Attribution | Scope | None = None,
        name: str | None = None,
        *,
        now: datetime | None = None,
    ) -> list[BudgetStatus]:
        """Where each limit stands in the current period.

        Args:
            of: an :class:`~accounting.Attribution` (the limits a call of it must fit in), a
                scope (``"user"``, ...: with ``name``, that subject's limits; without, every
                limit naming a subject of that scope), or ``None`` (every global limit and
                every limit that names its subject; generic limits are listed for a subject
                only, as their subjects are not known in advance).
            name: the user/feature/task, with a scope.
            now: the time (aware) whose periods to read; default the clock.

        Raises:
            BudgetStoreError: the store failed.
            ValueError: ``of`` is not an Attribution, a scope or None.
        """
        at = utc(now)
        applied: list[AppliedLimit]
        if isinstance(of, Attribution):
            applied = list(self._table.applicable(of, at))
        elif of is None:
            applied = self._table.named(None, at)
        elif of in ("user", "feature", "task", "global"):
            if name is None and of != "global":
                applied = self._table.named(of, at)
            else:
                applied = self._table.for_subject(of, name, at)
        else:
            raise ValueError(f"status() takes an Attribution, a scope or None, got {of!r}")
        if not applied:
            return []
        try:
            states = self.store.read([a.key for a in applied])
        except Exception as exc:
            self._store_failed(exc, "status")
            if isinstance(exc, BudgetStoreError):
                raise exc
            raise self._as_store_error(exc) from exc
        self._store_ok()
        return [
            status_of(a, from_picos(s.settled), from_picos(s.reserved))
            for a, s in zip(applied, states, strict=True)
        ]

    # -- async faces (the store runs in a worker thread) -----------------------------------------

    async def areserve(
        self,
        attribution: Attribution | None,
        amount: Decimal | None,
        *,
        now: datetime | None = None,
    ) -> Reservation:
        """Async :meth:`reserve` (``attribution=None`` reads the awaiting task's context)."""
        return await asyncio.to_thread(self.reserve, attribution, amount, now=now)

    async def asettle(
        self, reservation: Reservation, actual: Decimal, *, now: datetime | None = None
    ) -> None:
        """Async :meth:`settle`."""
        await asyncio.to_thread(self.settle, reservation, actual, now=now)

    async def arelease(self, reservation: Reservation, *, now: datetime | None = None) -> None:
        """Async :meth:`release`."""
        await asyncio.to_thread(self.release, reservation, now=now)

    async def astatus(
        self,
        of: Attribution | Scope | None = None,
        name: str | None = None,
        *,
        now: datetime | None = None,
    ) -> list[BudgetStatus]:
        """Async :meth:`status`."""
        return await asyncio.to_thread(self.status, of, name, now=now)

    def close(self) -> None:
        """Write the settlements kept during an outage (one try), then close the store.

        Settlements the store still refuses are logged with their total: the ledger keeps
        them, the budget counters never see them.
        """
        if len(self._deferred):
            self._write_deferred()
        if len(self._deferred):
            log.warning(
                "budget store %r: %d settlements (USD %s) never reached it; the budget "
                "counters miss them (the ledger has them)",
                self.store,
                len(self._deferred),
                self._deferred.total(),
            )
        self.store.close()

    def __enter__(self) -> Budgets:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
