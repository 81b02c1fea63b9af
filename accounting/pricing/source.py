"""The price-source plug point, and the source that serves a table of configured prices.

Every source answers the same question, ``price_for(model, provider, at=...)``, with a
:class:`~accounting.pricing.price.ModelPrice` or ``None`` ("I do not know this model"). A
:class:`~accounting.pricing.book.PriceBook` asks its sources in order; the first answer wins.

Model and provider names match exactly, ignoring case (as genai-prices's ``equals`` clauses
do); never by substring or prefix.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from accounting.pricing.price import ModelPrice

__all__ = ["OverrideSource", "PriceSource"]


@runtime_checkable
class PriceSource(Protocol):
    """Where prices come from: genai-prices's data, a configured table, or your own."""

    def price_for(
        self, model: str, provider: str | None = None, *, at: datetime | None = None
    ) -> ModelPrice | None:
        """The price of ``model`` served by ``provider``, at time ``at``.

        Args:
            model: the model name, matched exactly (case-insensitively).
            provider: e.g. ``"openai"``; ``None`` lets the source decide by its documented rule.
            at: when the call was made (for prices that change over time); ``None`` means now.
                Naive datetimes are UTC.

        Returns:
            The price, or ``None`` when this source does not know the model. Never raises for
            an unknown model.
        """
        ...


class OverrideSource:
    """A fixed table of prices, keyed by ``(provider, model)``; provider ``None`` means any.

    Lookup of ``(provider, model)``: the entry for that provider, else the provider-less entry.
    With ``provider=None``: the provider-less entry, else the only provider-specific entry for
    that model; when several providers have one, the answer is ``None`` (ambiguous), and a
    :class:`~accounting.pricing.book.PriceBook` goes on to its next source.

    Args:
        prices: the table; names are matched case-insensitively.

    Raises:
        TypeError: a value is not a ModelPrice.
        ValueError: two keys differ only by case.
    """

    __slots__ = ("_any_provider", "_table")

    def __init__(self, prices: Mapping[tuple[str | None, str], ModelPrice]) -> None:
        table: dict[tuple[str | None, str], ModelPrice] = {}
        by_model: dict[str, list[ModelPrice]] = {}
        for (provider, model), price in prices.items():
            if not isinstance(price, ModelPrice):
                raise TypeError(
                    f"price for {provider}/{model} must be a ModelPrice, got {type(price).__name__}"
                )
            key = (None if provider is None else provider.lower(), model.lower())
            if key in table:
                raise ValueError(f"price for {provider}/{model} is given twice (names ignore case)")
            table[key] = price
            if key[0] is not None:
                by_model.setdefault(key[1], []).append(price)
        # Lookups with provider=None: the provider-less entry, else the single provider-specific
        # one. Precomputed apart from ``table`` so that a provider-specific entry never answers
        # for another provider, and every lookup stays one or two dict gets.
        any_provider = {
            model: price for (provider, model), price in table.items() if provider is None
        }
        for model, found in by_model.items():
            if len(found) == 1:
                any_provider.setdefault(model, found[0])
        self._table: Mapping[tuple[str | None, str], ModelPrice] = MappingProxyType(table)
        self._any_provider: Mapping[str, ModelPrice] = MappingProxyType(any_provider)

    def price_for(
        self, model: str, provider: str | None = None, *, at: datetime | None = None
    ) -> ModelPrice | None:
        """The configured price (see the class doc for the lookup rule); ``at`` is ignored.

        Args:
            model: the model name.
            provider: the provider, or ``None``.
            at: unused: configured prices do not change over time.

        Returns:
            The price, or ``None``.
        """
        name = model.lower()
        if provider is None:
            return self._any_provider.get(name)
        found = self._table.get((provider.lower(), name))
        if found is not None:
            return found
        return self._table.get((None, name))

    def __len__(self) -> int:
        """Number of configured entries."""
        return len(self._table)
