"""Pure budget decisions on plain values: which limits apply, period keys, whether an amount fits.

Nothing here does I/O or reads a clock: the time is always an argument. The stores
(:mod:`accounting.budgets.sqlite`, :mod:`accounting.budgets.redis`) and the
:class:`~accounting.budgets.Budgets` front call these functions; the Redis store's Lua script
repeats :func:`fits` on the server, where it must run atomically.

Counter keys name one subject in one period, e.g. ``user:alice:day:2026-11-23``,
``feature:search:month:2026-11`` or ``global:total``; names are percent-encoded, so a name
holding ``:`` cannot collide with another key.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal, Inexact, localcontext
from urllib.parse import quote

from accounting.attribute import Attribution
from accounting.budgets.limits import MAX_LIMIT, PERIODS, BudgetLimit, Period, Scope
from accounting.money import PICO, ZERO, to_picos

__all__ = [
    "COUNTER_RETENTION",
    "AppliedLimit",
    "BudgetStatus",
    "LimitTable",
    "Reservation",
    "ThresholdCrossed",
    "ceil_picos",
    "counter_key",
    "crossed",
    "first_refusal",
    "fits",
    "period_end",
    "period_key",
    "status_of",
    "utc",
    "worst_case_cost",
]

#: How long a counter outlives its period, so reports can read last month's spend.
COUNTER_RETENTION = timedelta(days=35)
_MILLION = 6  # prices are per million tokens: scale by 10**-6


def utc(now: datetime | None) -> datetime:
    """``now`` in UTC, or the current time when ``None``.

    Raises:
        ValueError: ``now`` is naive (its time zone would be a guess).
    """
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got naive {now.isoformat()}")
    return now.astimezone(UTC)


def period_key(period: Period, now: datetime) -> str:
    """The key of the period holding ``now`` in UTC.

    ``day:2026-11-23``, ``month:2026-11`` or ``total``.
    """
    at = utc(now)
    if period == "day":
        return f"day:{at:%Y-%m-%d}"
    if period == "month":
        return f"month:{at:%Y-%m}"
    return "total"


def period_end(period: Period, now: datetime) -> datetime | None:
    """When the period that holds ``now`` ends (UTC midnight), or ``None`` for ``"total"``."""
    at = utc(now)
    if period == "day":
        return datetime(at.year, at.month, at.day, tzinfo=UTC) + timedelta(days=1)
    if period == "month":
        year, month = (at.year + 1, 1) if at.month == 12 else (at.year, at.month + 1)
        return datetime(year, month, 1, tzinfo=UTC)
    return None


def counter_key(scope: Scope, name: str | None, period_key: str) -> str:
    """The store key of one subject's counter in one period (names percent-encoded)."""
    if scope == "global":
        return f"global:{period_key}"
    return f"{scope}:{quote(name or '', safe='')}:{period_key}"


@dataclass(frozen=True, slots=True, kw_only=True)
class AppliedLimit:
    """A configured limit applied to one subject in one period.

    Attributes:
        limit: the limit as configured (``limit.name`` is ``None`` for a generic limit).
        name: the user/feature/task charged (for a generic limit, the one from the
            attribution); ``None`` for the global scope.
        period_key: e.g. ``day:2026-11-23``.
        key: the counter key, see :func:`counter_key`.
        keep_until: when the store may forget the counter (``None``: never).
    """

    limit: BudgetLimit
    name: str | None
    period_key: str
    key: str
    keep_until: datetime | None

    @classmethod
    def of(cls, limit: BudgetLimit, name: str | None, now: datetime) -> AppliedLimit:
        """``limit`` applied to ``name`` in the period holding ``now``."""
        pk = period_key(limit.period, now)
        end = period_end(limit.period, now)
        return cls(
            limit=limit,
            name=name,
            period_key=pk,
            key=counter_key(limit.scope, name, pk),
            keep_until=None if end is None else end + COUNTER_RETENTION,
        )


class LimitTable:
    """Configured limits, indexed to answer "which limits apply to this call?".

    Args:
        limits: validated limits (no two with the same ``(scope, name, period)``).
    """

    __slots__ = ("_by_slot", "limits")

    def __init__(self, limits: Iterable[BudgetLimit]) -> None:
        self.limits = tuple(limits)
        self._by_slot = {limit.slot: limit for limit in self.limits}

    def _pick(self, scope: Scope, name: str | None, period: Period) -> BudgetLimit | None:
        # The named limit overrides the generic one, for its own period only.
        return self._by_slot.get((scope, name, period)) or self._by_slot.get((scope, None, period))

    def applicable(self, attribution: Attribution, now: datetime) -> tuple[AppliedLimit, ...]:
        """Every limit a call with ``attribution`` at ``now`` must fit in, in check order.

        A dimension the attribution leaves unset (``user=None``) has no limit: such a call is
        subject to the global limits only (and those of the dimensions that are set).
        Order: user, feature, task, global; within each, day, month, total.
        """
        out: list[AppliedLimit] = []
        for scope in ("user", "feature", "task"):
            name = getattr(attribution, scope)
            if name is not None:
                out.extend(self.for_subject(scope, name, now))
        out.extend(self.for_subject("global", None, now))
        return tuple(out)

    def for_subject(self, scope: Scope, name: str | None, now: datetime) -> list[AppliedLimit]:
        """The limits of one subject (``name`` ignored for ``"global"``), day to total."""
        who = None if scope == "global" else name
        out = []
        for period in PERIODS:
            limit = self._pick(scope, who, period)
            if limit is not None:
                out.append(AppliedLimit.of(limit, who, now))
        return out

    def named(self, scope: Scope | None, now: datetime) -> list[AppliedLimit]:
        """Limits that name their subject (and global ones), of ``scope`` or of every scope.

        Generic limits are left out: their subjects are whoever calls, unknown in advance.
        """
        return [
            AppliedLimit.of(limit, limit.name, now)
            for limit in self.limits
            if (scope is None or limit.scope == scope)
            and (limit.name is not None or limit.scope == "global")
        ]


def fits(
    *, limit: Decimal | int, settled: Decimal | int, reserved: Decimal | int, amount: Decimal | int
) -> bool:
    """Whether reserving ``amount`` keeps settled + reserved spend within ``limit``.

    Reaching the limit exactly fits; one pico-dollar more does not.
    """
    return settled + reserved + amount <= limit


def first_refusal(
    states: Sequence[tuple[int, int]], limits: Sequence[int], amount: int
) -> int | None:
    """Index of the first counter ``amount`` does not fit in, or ``None`` if it fits in all.

    Args:
        states: ``(settled, reserved)`` of each counter, in pico-dollars.
        limits: the limit of each counter, in pico-dollars.
        amount: the reservation, in pico-dollars.
    """
    for i, ((settled, reserved), limit) in enumerate(zip(states, limits, strict=True)):
        if not fits(limit=limit, settled=settled, reserved=reserved, amount=amount):
            return i
    return None


def crossed(limit: Decimal, spent: Decimal, thresholds: Iterable[Decimal]) -> list[Decimal]:
    """The thresholds (fractions of ``limit``) that ``spent`` has reached.

    Nothing is reached while nothing is spent, even under a $0 limit.
    """
    if spent <= 0:
        return []
    return [t for t in thresholds if spent >= t * limit]


def ceil_picos(amount: Decimal) -> int:
    """``amount`` in whole pico-dollars, rounded up (a budget never under-counts)."""
    return to_picos(amount.quantize(PICO, rounding=ROUND_CEILING))


def _tokens(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0, got {value}")
    return value


def _price(value: Decimal, what: str) -> Decimal:
    if not isinstance(value, Decimal):
        raise TypeError(f"{what} must be a Decimal (USD per million tokens), got {value!r}")
    if not value.is_finite() or value < 0:
        raise ValueError(f"{what} must be a finite price >= 0, got {value}")
    return value


def worst_case_cost(
    prompt_tokens: int,
    max_output_tokens: int,
    input_per_million: Decimal,
    output_per_million: Decimal,
) -> Decimal:
    """The most a call can cost: every prompt token at the input price, every output token
    the call may generate at the output price. Exact.

    Reasoning tokens are billed as output and count against the same output limit, so they
    need no separate term. Cached input is cheaper than input, so pricing all prompt tokens as
    input is an upper bound; where writing to a prompt cache costs more than input (Anthropic),
    pass the cache-write price as ``input_per_million``.

    Args:
        prompt_tokens: counted tokens of the prompt as it will be sent.
        max_output_tokens: the request's ``max_tokens`` / ``max_output_tokens``, or the model's
            output limit when the request sets none.
        input_per_million: USD per million input tokens.
        output_per_million: USD per million output tokens.

    Returns:
        USD, exact.

    Raises:
        TypeError: a count is not an int, or a price not a Decimal.
        ValueError: a count or price is negative (or a price not finite).
    """
    prompt = _tokens(prompt_tokens, "prompt_tokens")
    output = _tokens(max_output_tokens, "max_output_tokens")
    pin = _price(input_per_million, "input_per_million")
    pout = _price(output_per_million, "output_per_million")
    with localcontext() as ctx:
        ctx.prec = 60  # far above any token count x price: the result is exact
        ctx.traps[Inexact] = True
        return (prompt * pin + output * pout).scaleb(-_MILLION)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reservation:
    """Money held against every applicable limit while a call is in flight.

    Pass it to :meth:`~accounting.budgets.Budgets.settle` with the actual cost, or to
    :meth:`~accounting.budgets.Budgets.release` when the call failed.

    Attributes:
        id: unique, time-ordered.
        amount: the worst-case cost held, USD.
        applied: the limits it is held against (empty: no limit applied to the call).
        expires_at: after this (UTC), a later reservation may reclaim the held amount (a
            crashed process must not hold money forever). Settling after that still records
            the spend.
    """

    id: str
    amount: Decimal
    applied: tuple[AppliedLimit, ...]
    expires_at: datetime

    @property
    def keys(self) -> tuple[str, ...]:
        """The counter keys this reservation touches."""
        return tuple(a.key for a in self.applied)


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetStatus:
    """Where one applicable limit stands.

    Attributes:
        scope, name, period, period_key: which limit and period (``name`` is the subject).
        limit: USD.
        spent: USD settled in the period.
        reserved: USD held by calls in flight.
        remaining: ``limit - spent - reserved``, never below zero.
    """

    scope: Scope
    name: str | None
    period: Period
    period_key: str
    limit: Decimal
    spent: Decimal
    reserved: Decimal
    remaining: Decimal


def status_of(applied: AppliedLimit, spent: Decimal, reserved: Decimal) -> BudgetStatus:
    """A :class:`BudgetStatus` from a counter's settled and reserved USD."""
    limit = applied.limit.usd
    return BudgetStatus(
        scope=applied.limit.scope,
        name=applied.name,
        period=applied.limit.period,
        period_key=applied.period_key,
        limit=limit,
        spent=spent,
        reserved=reserved,
        remaining=max(ZERO, limit - spent - reserved),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ThresholdCrossed:
    """Settled spend reached ``threshold`` of a limit (the event ``on_threshold`` receives).

    Attributes:
        scope, name, period, period_key: which limit and period.
        limit: USD.
        spent: USD settled when the threshold was found reached.
        threshold: the fraction of ``limit``, e.g. ``Decimal("0.8")``.
    """

    scope: Scope
    name: str | None
    period: Period
    period_key: str
    limit: Decimal
    spent: Decimal
    threshold: Decimal


#: Reservations and settlements are capped here before they reach a store: a larger amount
#: cannot fit in any limit, and would overflow a 64-bit pico-dollar counter.
AMOUNT_CAP = MAX_LIMIT + PICO
