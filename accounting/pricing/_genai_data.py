"""genai-prices's model data turned into our prices: what :mod:`.genai` builds its table from.

Kept apart from the lookup so that each module reads as one concept: this one knows
genai-prices's data types (clauses, conditional and tiered prices), the other the lookup rules.
genai-prices is imported inside functions: it takes ~0.3 s to import, paid on first use only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from accounting.pricing.price import ModelPrice, PriceTier

if TYPE_CHECKING:
    from genai_prices import types as gp

__all__ = ["Entry", "equals_names", "own_names"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One genai-prices model: its fixed price, or its prices over time (latest first)."""

    model: gp.ModelInfo
    origin: gp.Provider
    fixed: ModelPrice | None
    timed: tuple[tuple[Any, ModelPrice | None], ...] = ()

    def price_at(self, at: datetime | None) -> ModelPrice | None:
        if not self.timed:
            return self.fixed
        when = at if at is not None else datetime.now(UTC)
        # genai-prices's rule (ModelInfo.get_prices): the last price whose constraint holds,
        # else the first one.
        for constraint, price in self.timed:
            if constraint is None or constraint.active(when):
                return price
        return self.fixed


def equals_names(clause: Any) -> Iterator[str]:
    """The ``equals`` values of a clause that are sufficient on their own (top level or in ORs)."""
    from genai_prices import types as gpt  # noqa: PLC0415 - see the module doc

    if isinstance(clause, gpt.ClauseEquals):
        yield clause.equals.lower()
    elif isinstance(clause, gpt.ClauseOr):
        for inner in clause.or_:
            yield from equals_names(inner)


def own_names(provider: gp.Provider) -> dict[str, Entry]:
    """A provider's own exact names → entries; a name claimed twice goes to the first model."""
    names: dict[str, Entry] = {}
    for model in provider.models:
        entry = _entry(provider, model)
        if entry is None:
            continue
        for name in (model.id.lower(), *equals_names(model.match)):
            if name not in names and provider.find_model(name) is model:
                names[name] = entry
    return names


def _entry(provider: gp.Provider, model: gp.ModelInfo) -> Entry | None:
    from genai_prices import types as gpt  # noqa: PLC0415 - see the module doc

    window = model.context_window if model.context_window and model.context_window > 0 else None
    try:
        if isinstance(model.prices, gpt.ModelPrice):
            fixed = _convert(model.prices, window)
            return None if fixed is None else Entry(model, provider, fixed)
        if not model.prices:
            return None
        timed = tuple((c.constraint, _convert(c.prices, window)) for c in reversed(model.prices))
        first = timed[-1][1]
    except (TypeError, ValueError):
        # A price our types refuse (e.g. negative) leaves this one model unpriced, not the table.
        return None
    if all(price is None for _, price in timed):
        return None
    if len(timed) == 1:
        return Entry(model, provider, first)
    return Entry(model, provider, first, timed)


# genai-prices's price keys (USD per 1M tokens) for our input, cached_input, cache_write,
# output and reasoning rates, in that order.
_KEYS = (
    "input_mtok",
    "cache_read_mtok",
    "cache_write_mtok",
    "output_mtok",
    "output_reasoning_mtok",
)
_ZERO = Decimal(0)


def _convert(prices: gp.ModelPrice, window: int | None) -> ModelPrice | None:
    from genai_prices import types as gpt  # noqa: PLC0415 - see the module doc

    raw = tuple(getattr(prices, key) for key in _KEYS)
    if raw[0] is None and raw[3] is None:
        return None
    thresholds = sorted({t.start for v in raw if isinstance(v, gpt.TieredPrices) for t in v.tiers})
    base = _rates_at(raw, -1)
    tiers = tuple(
        PriceTier(
            above_input_tokens=threshold,
            input=rates[0] or _ZERO,
            cached_input=rates[1],
            cache_write=rates[2],
            output=rates[3] or _ZERO,
            reasoning=rates[4],
        )
        for threshold in thresholds
        for rates in (_rates_at(raw, threshold),)
    )
    # No rate for one direction (an embedding model has no output price): genai-prices bills
    # those tokens at zero, and so do we.
    return ModelPrice(
        input=base[0] or _ZERO,
        cached_input=base[1],
        cache_write=base[2],
        output=base[3] or _ZERO,
        reasoning=base[4],
        context_window=window,
        tiers=tiers,
    )


def _rates_at(raw: tuple[Any, ...], threshold: int) -> tuple[Decimal | None, ...]:
    """Each rate for prompts of more than ``threshold`` tokens (-1: the base rates)."""
    from genai_prices import types as gpt  # noqa: PLC0415 - see the module doc

    rates: list[Decimal | None] = []
    for value in raw:
        if isinstance(value, gpt.TieredPrices):
            # genai-prices's cliff rule: a tier applies when the input tokens exceed its start.
            rate = value.base
            for tier in sorted(value.tiers, key=lambda t: t.start):
                if tier.start <= threshold:
                    rate = tier.price
            rates.append(_clean(rate))
        else:
            rates.append(_clean(value))
    return tuple(rates)


_MICRO = Decimal("0.000001")


def _clean(rate: Decimal | None) -> Decimal | None:
    """``rate`` with genai-prices's float artefacts (``0.18000000000000002``) rounded off.

    A rate per 1M tokens is published to a few decimals; one past six is a binary-float
    residue in the data. Six decimals per 1M tokens is a whole pico-dollar per token, so
    every cost priced from the table is a whole number of pico-dollars (what shared
    counters add up exactly).
    """
    if rate is None or rate.as_tuple().exponent >= -6:  # type: ignore[operator]
        return rate
    return rate.quantize(_MICRO)
