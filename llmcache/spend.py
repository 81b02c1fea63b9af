"""What a ``@cached`` function's miss spent, kept with its entry and reported as saved at a hit.

At a miss the function runs inside :func:`accounting.collecting`, which sees every ledger record
written meanwhile (by a wrapped client, in this context or the tasks it starts). Their total is
what the call cost; when none was written but the function returned a provider response with
``usage``, that response is priced (and recorded, since nothing else recorded it). The amount
travels with the entry as a one-line JSON header before the value; a hit records a $0 call with
that amount saved, attributed to the caller of the hit. A function that spent nothing stores no
header and writes nothing to the ledger at its hits.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from accounting import Accountant, CallRecord

__all__ = ["Counted", "Spent", "acounted", "counted", "default_accountant", "frame", "unframe"]

log = logging.getLogger("llmcache")
_default: list[Accountant] = []
_default_lock = threading.Lock()


def default_accountant() -> Accountant:
    """The process-wide accountant of wrapped clients and cached functions that name none:
    the embedded SQLite ledger under ``LLMCACHE_DIR`` (else the user's data directory)."""
    from accounting import Accountant  # noqa: PLC0415 - the ledger opens at first use only

    with _default_lock:
        if not _default:
            _default.append(Accountant())
        return _default[0]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Spent:
    """What computing an entry cost: ``usd`` ``None`` when some of it is unpriced."""

    usd: Decimal | None
    provider: str
    model: str


@dataclasses.dataclass(frozen=True, slots=True)
class Counted:
    """A function's result with what computing it spent (``None``: nothing recorded)."""

    value: Any
    spent: Spent | None


def _from_records(records: list[CallRecord]) -> Spent | None:
    if not records:
        return None
    total: Decimal | None = Decimal(0)
    for r in records:
        if r.cost is None:
            total = None
        elif total is not None:
            total += r.cost.total
    main = max(records, key=lambda r: r.cost.total if r.cost is not None else Decimal(0))
    return Spent(usd=total, provider=main.provider, model=main.model_served or main.model_requested)


def _from_response(value: Any, get_accountant: Callable[[], Accountant | None]) -> Spent | None:
    """Price a provider response the function returned (no wrapped client recorded it)."""
    usage, model = getattr(value, "usage", None), getattr(value, "model", None)
    if usage is None or not isinstance(model, str):
        return None
    from accounting import CacheOutcome, CallRecord, TokenUsage  # noqa: PLC0415

    try:
        tokens = TokenUsage.from_provider(usage)
    except ValueError:  # a value of the user's that only looks like a response
        return None
    accountant = get_accountant()
    if accountant is None:
        return None
    cost = accountant.prices.cost(tokens, model)
    # Through the accountant, not the ledger alone: an enclosing @cached function collects it
    # (and prices nothing twice), and the exporter sees it.
    accountant.record(
        CallRecord(
            provider="unknown",
            operation="cached_function",
            model_requested=model,
            model_served=model,
            usage=tokens,
            cost=cost,
            cache=CacheOutcome.MISS,
        )
    )
    return Spent(usd=None if cost is None else cost.total, provider="unknown", model=model)


def counted(
    fn: Callable[[], Any], get_accountant: Callable[[], Accountant | None] | None
) -> Counted:
    """Call ``fn()`` and learn what it spent.

    ``get_accountant`` (``None``: accounting off) is called only if a returned response must
    be priced and recorded, so a function that calls no model never opens the ledger.
    """
    if get_accountant is None:
        return Counted(fn(), None)
    from accounting import collecting  # noqa: PLC0415 - loaded by the first cached call

    with collecting() as records:
        value = fn()
    return Counted(value, _from_records(records) or _from_response(value, get_accountant))


async def acounted(
    fn: Callable[[], Awaitable[Any]], get_accountant: Callable[[], Accountant | None] | None
) -> Counted:
    """Async :func:`counted`."""
    if get_accountant is None:
        return Counted(await fn(), None)
    from accounting import collecting  # noqa: PLC0415 - loaded by the first cached call

    with collecting() as records:
        value = await fn()
    return Counted(value, _from_records(records) or _from_response(value, get_accountant))


def frame(spent: Spent | None, body: bytes) -> bytes:
    """The stored form: ``body`` alone, or a header line with the spend, then ``body``.

    Value bodies are compact JSON, which never holds a raw newline, so a newline can only
    end a header.
    """
    if spent is None:
        return body
    header = {
        "spent": None if spent.usd is None else str(spent.usd),
        "provider": spent.provider,
        "model": spent.model,
    }
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + body


def unframe(stored: bytes) -> tuple[Spent | None, bytes]:
    """Split what :func:`frame` made; raises ``ValueError`` on a malformed header."""
    nl = stored.find(b"\n")
    if nl < 0:
        return None, stored
    header = json.loads(stored[:nl])
    usd = header["spent"]
    spent = Spent(
        usd=None if usd is None else Decimal(usd),
        provider=str(header["provider"]),
        model=str(header["model"]),
    )
    return spent, stored[nl + 1 :]


def record_hit(accountant: Accountant | None, spent: Spent, tier: str | None) -> None:
    """Record a hit of an entry that cost ``spent``: $0 now, that much saved."""
    if accountant is None:
        return
    try:
        accountant.hit(
            provider=spent.provider,
            model=spent.model,
            operation="cached_function",
            tier=tier,
            saved=spent.usd,
        )
    except Exception:
        log.exception("could not record a cached function's hit in the ledger")
