"""Prices: what a call cost, by token type, exactly and offline.

- :mod:`.price`: :class:`ModelPrice` (USD per 1M tokens by token type, limits, tiers) and the
  pure :func:`cost_of`.
- :mod:`.source`: the :class:`PriceSource` plug point and :class:`OverrideSource` (a table).
- :mod:`.genai`: :class:`GenaiPricesSource`, genai-prices's bundled data by exact name.
- :mod:`.config`: :func:`load_price_config` (TOML, JSON or a mapping) and :class:`PriceConfig`.
- :mod:`.book`: :class:`PriceBook`, overrides first, then genai-prices.
"""

from accounting.pricing.book import PriceBook
from accounting.pricing.config import PriceConfig, load_price_config
from accounting.pricing.genai import DEFAULT_PROVIDER_ORDER, PROVIDER_ALIASES, GenaiPricesSource
from accounting.pricing.price import ModelPrice, PriceTier, cost_of
from accounting.pricing.source import OverrideSource, PriceSource

__all__ = [
    "DEFAULT_PROVIDER_ORDER",
    "PROVIDER_ALIASES",
    "GenaiPricesSource",
    "ModelPrice",
    "OverrideSource",
    "PriceBook",
    "PriceConfig",
    "PriceSource",
    "PriceTier",
    "cost_of",
    "load_price_config",
]
