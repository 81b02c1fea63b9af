"""The price book: configured overrides first, then genai-prices, behind one exact lookup."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from accounting._exceptions import UnknownModelError
from accounting.money import Cost
from accounting.pricing.config import PriceConfig, load_price_config, normalize_aliases
from accounting.pricing.genai import GenaiPricesSource
from accounting.pricing.price import ModelPrice, cost_of
from accounting.pricing.source import OverrideSource, PriceSource
from accounting.usage import TokenUsage

__all__ = ["PriceBook"]

logger = logging.getLogger("accounting.pricing")


class PriceBook:
    """Prices calls: each source is asked in order, the first price found wins.

    The order is: ``overrides`` (if any), then ``sources`` (by default genai-prices's bundled
    data, offline). Before the sources are asked, an exact alias table may rename the model
    (one hop). A model no source knows is *unpriced*: :meth:`price_for` and :meth:`cost` return
    ``None`` (never ``$0``), :meth:`require` raises.

    A source that raises is an optional part failing: the error is logged and counted
    (:attr:`errors`) and the next source is asked, so pricing never fails a call.

    Args:
        overrides: configured prices, as ``{(provider | None, model): ModelPrice}`` or any
            :class:`PriceSource`; asked first.
        aliases: model name -> the model name to price it as (exact, case-insensitive, no chains).
        sources: the sources after the overrides; default ``(GenaiPricesSource(),)``; ``()``
            prices only the overrides.

    Raises:
        ConfigError: the alias table is invalid.
        TypeError: an override is not a ModelPrice.
    """

    __slots__ = ("_aliases", "_chain", "_errors", "_lock")

    def __init__(
        self,
        *,
        overrides: Mapping[tuple[str | None, str], ModelPrice] | PriceSource | None = None,
        aliases: Mapping[str, str] | None = None,
        sources: Sequence[PriceSource] | None = None,
    ) -> None:
        chain: list[PriceSource] = []
        if isinstance(overrides, Mapping):
            chain.append(OverrideSource(overrides))
        elif overrides is not None:
            chain.append(overrides)
        chain.extend((GenaiPricesSource(),) if sources is None else sources)
        self._chain = tuple(chain)
        self._aliases = normalize_aliases(aliases or {}, where="PriceBook(aliases=...)")
        self._errors = 0
        self._lock = threading.Lock()

    @classmethod
    def from_config(
        cls,
        config: PriceConfig | str | os.PathLike[str] | Mapping[str, Any],
        *,
        sources: Sequence[PriceSource] | None = None,
    ) -> PriceBook:
        """A book with the overrides and aliases of a configuration (see :mod:`.config`).

        Args:
            config: a loaded :class:`PriceConfig`, a ``.toml``/``.json`` path, or a mapping.
            sources: as for the constructor.

        Returns:
            The price book.

        Raises:
            ConfigError: the configuration is invalid; ``where`` names the file and key.
        """
        if not isinstance(config, PriceConfig):
            config = load_price_config(config)
        return cls(overrides=config.prices, aliases=config.aliases, sources=sources)

    @property
    def errors(self) -> int:
        """How many times a source raised (each was logged and skipped)."""
        return self._errors

    def price_for(
        self, model: str, provider: str | None = None, *, at: datetime | None = None
    ) -> ModelPrice | None:
        """The price of ``model``, or ``None`` when it is unpriced.

        Args:
            model: the model name (exact, case-insensitive; aliases apply).
            provider: the provider, e.g. ``"openai"``; ``None``: each source's documented rule.
            at: the call's time for time-dependent prices; ``None`` is now. Naive means UTC.

        Returns:
            The first source's price, or ``None``.
        """
        name = self._aliases.get(model.lower(), model)
        for source in self._chain:
            try:
                price = source.price_for(name, provider, at=at)
            except Exception:
                self._failed(source, name, provider)
                continue
            if price is not None:
                return price
        return None

    def require(
        self, model: str, provider: str | None = None, *, at: datetime | None = None
    ) -> ModelPrice:
        """The price of ``model``, strictly: like :meth:`price_for` but raises when unpriced.

        Args:
            model: the model name (exact, case-insensitive; aliases apply).
            provider: the provider, or ``None``.
            at: the call's time; ``None`` is now.

        Returns:
            The price.

        Raises:
            UnknownModelError: no source knows the model (for that provider).
        """
        price = self.price_for(model, provider, at=at)
        if price is None:
            where = "" if provider is None else f" from provider {provider!r}"
            raise UnknownModelError(
                f"no price is known for model {model!r}{where}: add it to the price overrides "
                "or an alias",
                model=model,
                provider=provider,
            )
        return price

    def cost(
        self,
        usage: TokenUsage,
        model: str,
        provider: str | None = None,
        at: datetime | None = None,
    ) -> Cost | None:
        """What a call cost, by token type; ``None`` when the model is unpriced (never $0).

        Args:
            usage: the call's tokens by type.
            model: the model that served the call (as reported, or as requested).
            provider: the provider; ``None``: each source's documented rule.
            at: when the call was made; ``None`` is now.

        Returns:
            The exact cost, or ``None`` (unpriced). Never raises for an unknown model.
        """
        price = self.price_for(model, provider, at=at)
        return None if price is None else cost_of(usage, price)

    def _failed(self, source: PriceSource, model: str, provider: str | None) -> None:
        with self._lock:
            self._errors += 1
        logger.warning(
            "price source %s failed for model %r (provider %r); trying the next one",
            type(source).__name__,
            model,
            provider,
            exc_info=True,
        )
