"""The ledger's plug point (:class:`LedgerStore`) and the pure code every store shares.

Pure core, thin drivers: how a record is written (JSON plus a checksum), which aggregate
counters one record bumps, and how counters read back as exact amounts are plain functions on
plain values here. The SQLite and Redis stores only move their results in and out.

Aggregates are kept per UTC day of the call's start (``record.time``) and per *dimension*:

- ``user``, ``feature``, ``task``: the record's attribution (``unattributed`` when unset);
- ``model``: the model that answered (``model_served``), else the one asked for;
- ``all``: every record, under the single name ``all``.

Money in counters is integer pico-dollars (:func:`accounting.money.to_picos`): exact and atomic
to add on a shared server. An amount with a fraction of a pico-dollar (no real price has one)
is rounded half-even in the counters only; the record itself keeps the exact amount.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final, Protocol, runtime_checkable

from accounting.attribute import UNATTRIBUTED
from accounting.money import ZERO, Cost, from_picos, to_picos
from accounting.record import CacheOutcome, CallRecord, Status
from accounting.usage import TokenUsage

__all__ = [
    "ALL",
    "DIMENSIONS",
    "LedgerStore",
    "LedgerTotals",
    "TotalsStore",
    "aggregate",
    "check_dimension",
    "chunked",
    "counters",
    "day_bounds",
    "day_of",
    "decode_record",
    "dimension_value",
    "encode_record",
    "totals_of",
]

#: The dimensions aggregates are kept by; ``all`` has the single name :data:`ALL`.
DIMENSIONS: Final = ("user", "feature", "task", "model", "all")
#: The one name of the ``all`` dimension.
ALL: Final = "all"
_EPOCH: Final = dt.date(1970, 1, 1)

# Counter names -> where they come from. Token and money counters are listed apart so
# LedgerTotals.from_counters reads them back by the same names.
_TOKEN_COUNTERS: Final = (
    ("input_tokens", "input"),
    ("cached_input_tokens", "cached_input"),
    ("cache_write_tokens", "cache_write"),
    ("output_tokens", "output"),
    ("reasoning_tokens", "reasoning"),
)
_COST_COUNTERS: Final = (
    ("input_cost", "input"),
    ("cached_input_cost", "cached_input"),
    ("cache_write_cost", "cache_write"),
    ("output_cost", "output"),
    ("reasoning_cost", "reasoning"),
)


# -- the plug point -------------------------------------------------------------------------


@runtime_checkable
class LedgerStore(Protocol):
    """Where ledger records are kept: one record per call, written before ``append`` returns.

    A store raises :class:`~accounting.LedgerError` when it cannot do what is asked; the
    :class:`~accounting.ledger.Ledger` in front of it catches that on the request path.
    Batching of hit records is not a store's business: the ``Ledger`` does it once, for every
    store, with :meth:`append_many`.
    """

    def append(self, record: CallRecord) -> None:
        """Write one record; it is committed when this returns.

        Raises:
            LedgerError: the record was not written.
        """
        ...

    def append_many(self, records: Sequence[CallRecord]) -> None:
        """Write several records at once (one transaction): all are committed, or none.

        Raises:
            LedgerError: no record was written.
        """
        ...

    def records(
        self, since: float | None = None, until: float | None = None
    ) -> Iterator[CallRecord]:
        """The records with ``since <= record.time < until`` (``None``: unbounded).

        A stored record that fails to decode or verify is skipped, logged with its id and
        counted in :attr:`corrupt`; it never ends the iteration.

        Raises:
            LedgerError: the store cannot be read.
        """
        ...

    @property
    def corrupt(self) -> int:
        """Stored records skipped by :meth:`records` because they failed to decode or verify."""
        ...

    def close(self) -> None:
        """Release connections; later calls raise :class:`~accounting.LedgerError`."""
        ...


@runtime_checkable
class TotalsStore(Protocol):
    """A store that can answer aggregate totals for one day (an optional ability)."""

    def totals(self, day: str | dt.date, *, by: str = "user") -> dict[str, LedgerTotals]:
        """Totals of the UTC day ``day`` per name of dimension ``by`` (see :data:`DIMENSIONS`).

        Raises:
            ValueError: ``by`` is not a dimension, or ``day`` not a ``YYYY-MM-DD`` date.
            LedgerError: the store cannot be read.
        """
        ...


# -- the stored form ------------------------------------------------------------------------


def encode_record(record: CallRecord) -> tuple[str, str]:
    """The record's stored form: its compact JSON text and a blake2b checksum of that text."""
    text = json.dumps(record.to_dict(), separators=(",", ":"), ensure_ascii=False)
    return text, _checksum(text)


def decode_record(text: str | bytes, checksum: str | bytes | None) -> CallRecord:
    """Inverse of :func:`encode_record`.

    Raises:
        ValueError: the text fails its checksum, is not JSON, or not a record of this version.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if isinstance(checksum, bytes):
        checksum = checksum.decode("ascii", "replace")
    if checksum != _checksum(text):
        raise ValueError("checksum mismatch")
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return CallRecord.from_dict(data)


def _checksum(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


# -- days and dimensions --------------------------------------------------------------------


def day_of(when: float) -> str:
    """The UTC day of Unix time ``when``, as ``YYYY-MM-DD``."""
    # Unix time has exactly 86400 seconds a day (leap seconds are not counted), so the day is
    # a division; its name is cached, as a batch of records is mostly of one day.
    return _day_name(int(when // 86400))


@functools.lru_cache(maxsize=64)
def _day_name(days: int) -> str:
    return (_EPOCH + dt.timedelta(days=days)).isoformat()


def day_bounds(day: str | dt.date) -> tuple[str, float, float]:
    """``day`` as ``YYYY-MM-DD`` and the Unix times of its UTC start and of the next day's.

    Raises:
        ValueError: ``day`` is not a date or a ``YYYY-MM-DD`` string.
    """
    if isinstance(day, dt.datetime):  # a datetime is a date too; its time would be ignored
        raise ValueError(f"day must be a date or 'YYYY-MM-DD', not a datetime ({day!r})")
    if isinstance(day, str):
        try:
            day = dt.date.fromisoformat(day)
        except ValueError:
            raise ValueError(f"day must be 'YYYY-MM-DD', got {day!r}") from None
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return day.isoformat(), start.timestamp(), (start + dt.timedelta(days=1)).timestamp()


def check_dimension(by: str) -> None:
    """Refuse a dimension name aggregates are not kept by.

    Raises:
        ValueError: ``by`` is not one of :data:`DIMENSIONS`.
    """
    if by not in DIMENSIONS:
        raise ValueError(f"by must be one of {', '.join(DIMENSIONS)}; got {by!r}")


def dimension_value(record: CallRecord, by: str) -> str:
    """The name ``record`` is counted under in dimension ``by``.

    Raises:
        ValueError: ``by`` is not one of :data:`DIMENSIONS`.
    """
    if by == "user":
        return record.attribution.user or UNATTRIBUTED
    if by == "feature":
        return record.attribution.feature or UNATTRIBUTED
    if by == "task":
        return record.attribution.task or UNATTRIBUTED
    if by == "model":
        return record.model_served or record.model_requested
    check_dimension(by)
    return ALL


# -- counters -------------------------------------------------------------------------------


def _picos(amount: Decimal) -> int:
    try:
        return to_picos(amount)
    except ValueError:
        # A fraction of a pico-dollar: rounded in the aggregates only (see the module docstring).
        return int(amount.scaleb(12).to_integral_value(ROUND_HALF_EVEN))


def counters(record: CallRecord) -> dict[str, int]:
    """The aggregate counters one record adds, by name; zero counters are left out.

    ``calls`` 1 for every record; ``hits`` (served from a cache), ``errors`` (provider errors),
    ``refused`` (by a budget), ``unpriced`` (spent with no known price), ``estimated`` (token
    counts estimated locally); tokens by type (``input_tokens`` ... ``reasoning_tokens``); cost
    by type in pico-dollars (``input_cost`` ... ``reasoning_cost``); ``saved`` in pico-dollars
    and ``saved_unpriced`` (hits whose original cost was unknown);
    ``compression_tokens_saved``.
    """
    out = {"calls": 1}
    hit = record.cache is CacheOutcome.HIT
    if hit:
        out["hits"] = 1
    if record.status is Status.PROVIDER_ERROR:
        out["errors"] = 1
    elif record.status is Status.REFUSED:
        out["refused"] = 1
    usage = record.usage
    if usage.estimated:
        out["estimated"] = 1
    for name, attr in _TOKEN_COUNTERS:
        n = getattr(usage, attr)
        if n:
            out[name] = n
    cost = record.cost
    if cost is None:
        if record.spent:
            out["unpriced"] = 1
    else:
        for name, attr in _COST_COUNTERS:
            amount = getattr(cost, attr)
            if amount:
                out[name] = _picos(amount)
    if record.saved is not None:
        if record.saved:
            out["saved"] = _picos(record.saved)
    elif hit:
        out["saved_unpriced"] = 1
    if record.compression_tokens_saved:
        out["compression_tokens_saved"] = record.compression_tokens_saved
    return out


def aggregate(records: Iterable[CallRecord]) -> dict[tuple[str, str, str], dict[str, int]]:
    """Sum the counters of ``records`` per (UTC day, dimension, name).

    Every record adds to one name of each of the :data:`DIMENSIONS` for its day.
    """
    out: dict[tuple[str, str, str], dict[str, int]] = {}
    for record in records:
        day = day_of(record.time)
        adds = counters(record)
        for by in DIMENSIONS:
            bucket = out.setdefault((day, by, dimension_value(record, by)), {})
            for name, n in adds.items():
                bucket[name] = bucket.get(name, 0) + n
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerTotals:
    """Totals of a set of records (a day of one user, feature, task or model ...).

    Attributes:
        calls: records, whatever their outcome.
        hits: calls served from a cache (nothing spent).
        errors: calls that ended in a provider error.
        refused: calls a budget refused before the provider was called.
        unpriced: calls that spent money at no known price: their cost is unknown, not in
            ``cost``.
        estimated: calls whose token counts were estimated locally.
        tokens: tokens by type (``tokens.estimated`` is true when ``estimated`` > 0).
        cost: what the priced calls spent, by token type (exact; ``cost.total`` sums them).
        saved: what the hits would have cost.
        saved_unpriced: hits whose original cost was unknown (not in ``saved``).
        compression_tokens_saved: prompt tokens removed by compression.
    """

    calls: int = 0
    hits: int = 0
    errors: int = 0
    refused: int = 0
    unpriced: int = 0
    estimated: int = 0
    tokens: TokenUsage = field(default_factory=TokenUsage)
    cost: Cost = field(default_factory=Cost)
    saved: Decimal = ZERO
    saved_unpriced: int = 0
    compression_tokens_saved: int = 0

    @classmethod
    def from_counters(cls, values: Mapping[str, int]) -> LedgerTotals:
        """Read counters as :func:`counters` names them (missing ones are zero; unknown ignored)."""

        def get(name: str) -> int:
            return int(values.get(name, 0))

        estimated = get("estimated")
        return cls(
            calls=get("calls"),
            hits=get("hits"),
            errors=get("errors"),
            refused=get("refused"),
            unpriced=get("unpriced"),
            estimated=estimated,
            tokens=TokenUsage(
                **{attr: get(name) for name, attr in _TOKEN_COUNTERS}, estimated=estimated > 0
            ),
            cost=Cost(**{attr: from_picos(get(name)) for name, attr in _COST_COUNTERS}),
            saved=from_picos(get("saved")),
            saved_unpriced=get("saved_unpriced"),
            compression_tokens_saved=get("compression_tokens_saved"),
        )

    def to_counters(self) -> dict[str, int]:
        """Inverse of :meth:`from_counters` (zero counters left out)."""
        out = {
            "calls": self.calls,
            "hits": self.hits,
            "errors": self.errors,
            "refused": self.refused,
            "unpriced": self.unpriced,
            "estimated": self.estimated,
            "saved": _picos(self.saved),
            "saved_unpriced": self.saved_unpriced,
            "compression_tokens_saved": self.compression_tokens_saved,
        }
        for name, attr in _TOKEN_COUNTERS:
            out[name] = getattr(self.tokens, attr)
        for name, attr in _COST_COUNTERS:
            out[name] = _picos(getattr(self.cost, attr))
        return {k: v for k, v in out.items() if v}

    def __add__(self, other: LedgerTotals) -> LedgerTotals:
        """Totals of both sets (to sum days into a month, or names into a group)."""
        if not isinstance(other, LedgerTotals):
            return NotImplemented
        mine, theirs = self.to_counters(), other.to_counters()
        return LedgerTotals.from_counters(
            {k: mine.get(k, 0) + theirs.get(k, 0) for k in mine.keys() | theirs.keys()}
        )


def totals_of(
    records: Iterable[CallRecord], day: str | dt.date, *, by: str
) -> dict[str, LedgerTotals]:
    """Totals of the ``records`` of UTC day ``day``, per name in dimension ``by``.

    This is what a :class:`TotalsStore` answers, computed from records (the SQLite store's way).

    Raises:
        ValueError: ``by`` is not a dimension, or ``day`` not a date.
    """
    check_dimension(by)
    wanted, _, _ = day_bounds(day)
    sums: dict[str, dict[str, int]] = {}
    for record in records:
        if day_of(record.time) != wanted:
            continue
        bucket = sums.setdefault(dimension_value(record, by), {})
        for k, n in counters(record).items():
            bucket[k] = bucket.get(k, 0) + n
    return {name: LedgerTotals.from_counters(values) for name, values in sorted(sums.items())}


def chunked(records: Sequence[CallRecord], size: int) -> Iterator[Sequence[CallRecord]]:
    """``records`` in slices of at most ``size``."""
    for start in range(0, len(records), size):
        yield records[start : start + size]
