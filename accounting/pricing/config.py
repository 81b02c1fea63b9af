"""Price overrides and model aliases from configuration: a TOML or JSON file, or a mapping.

The layout (TOML shown; JSON and Python mappings have the same shape)::

    # USD per 1M tokens. "*" as the provider means any provider.
    [prices.openai."gpt-4o"]
    input = "2.50"
    cached_input = "1.25"        # optional; default: the input rate
    cache_write = "2.50"         # optional; default: the input rate
    output = "10"
    reasoning = "10"             # optional; default: the output rate
    max_output_tokens = 16384    # optional; budgets reserve this worst case
    context_window = 128000      # optional

    [prices."*"."my-finetune"]
    input = 3
    output = 12
    tiers = [{ above_input_tokens = 200000, input = 6, output = 18 }]

    [aliases]                    # exact name -> exact name, one hop (no chains)
    "gpt-4o-prod" = "gpt-4o"

Numbers are exact. Rates may be strings (``"0.15"``), integers or Decimals. A file's decimal
literals never become floats: TOML and JSON are parsed with ``parse_float=Decimal``, so a bare
``0.15`` is read from its text. A Python ``float`` in a mapping is converted from its shortest
``repr`` (``0.15`` → ``Decimal("0.15")``), which is the literal as written for up to 15
significant digits; write a string for more. Every error is a
:class:`~accounting._exceptions.ConfigError` whose ``where`` names the file (or ``<mapping>``)
and the key, e.g. ``prices.toml:prices.openai."gpt-4.1".input``, and whose message quotes the
value.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any

from accounting._exceptions import ConfigError
from accounting.pricing.price import ModelPrice, PriceTier

__all__ = ["PriceConfig", "load_price_config", "normalize_aliases"]

_RATES = ("input", "output", "cached_input", "cache_write", "reasoning")
_LIMITS = ("max_output_tokens", "context_window")
_ENTRY_KEYS = frozenset((*_RATES, *_LIMITS, "tiers"))
_TIER_KEYS = frozenset((*_RATES, "above_input_tokens"))
_ANY_PROVIDER = "*"


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceConfig:
    """Configured prices and aliases, validated.

    Attributes:
        prices: ``(provider, model) -> price``; provider ``None`` means any provider. Names are
            lowercased (lookups ignore case).
        aliases: model name -> the model name to price it as (lowercased).
    """

    prices: Mapping[tuple[str | None, str], ModelPrice] = field(
        default_factory=lambda: MappingProxyType({})
    )
    aliases: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def load_price_config(source: str | os.PathLike[str] | Mapping[str, Any]) -> PriceConfig:
    """Read prices and aliases from a ``.toml`` or ``.json`` file, or from a mapping.

    Args:
        source: a file path (``str`` or path-like), or the parsed configuration itself.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: the file cannot be read or parsed, or a key or value is invalid; ``where``
            names the file and the key.
    """
    if isinstance(source, Mapping):
        return _parse(source, "<mapping>")
    path = Path(source)
    origin = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the price configuration: {exc}", where=origin) from exc
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(text, parse_float=Decimal)
        elif suffix == ".json":
            data = json.loads(text, parse_float=Decimal, parse_constant=_no_constant)
        else:
            raise ConfigError(
                f"unknown format {suffix or '(no suffix)'!r}: use .toml or .json", where=origin
            )
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"invalid {suffix[1:].upper()}: {exc}", where=origin) from exc
    except ValueError as exc:  # NaN / Infinity in JSON
        raise ConfigError(str(exc), where=origin) from exc
    return _parse(data, origin)


def normalize_aliases(aliases: Mapping[Any, Any], *, where: str) -> dict[str, str]:
    """Validate an alias table and lowercase it.

    Args:
        aliases: model name -> model name to price it as.
        where: names the table in errors, e.g. ``"prices.toml:aliases"``.

    Returns:
        The table with lowercased names.

    Raises:
        ConfigError: a name is not a non-empty string, an alias points to itself or to another
            alias (chains are refused: one hop keeps the rule obvious), or two aliases differ
            only by case.
    """
    if not isinstance(aliases, Mapping):
        raise ConfigError(f"must be a table of names, got {_show(aliases)}", where=where)
    table: dict[str, str] = {}
    for alias, target in aliases.items():
        at = f"{where}.{_key(alias)}"
        name = _name(alias, at)
        if not isinstance(target, str) or not target.strip():
            raise ConfigError(f"must be a model name, got {_show(target)}", where=at)
        if name in table:
            raise ConfigError("alias given twice (names ignore case)", where=at)
        table[name] = target.lower()
    for alias, target in table.items():
        if target == alias:
            raise ConfigError(f"alias {alias!r} points to itself", where=f"{where}.{_key(alias)}")
        if target in table:
            raise ConfigError(
                f"alias {alias!r} points to another alias {target!r}: aliases are one hop",
                where=f"{where}.{_key(alias)}",
            )
    return table


def _parse(data: Any, origin: str) -> PriceConfig:
    if not isinstance(data, Mapping):
        raise ConfigError(f"must be a table, got {_show(data)}", where=origin)
    for key in data:
        if key not in ("prices", "aliases"):
            raise ConfigError(
                "unknown key: expected 'prices' and/or 'aliases'", where=f"{origin}:{_key(key)}"
            )
    prices: dict[tuple[str | None, str], ModelPrice] = {}
    table = data.get("prices", {})
    if not isinstance(table, Mapping):
        raise ConfigError(
            f"must be a table of providers, got {_show(table)}", where=f"{origin}:prices"
        )
    for provider, models in table.items():
        at = f"{origin}:prices.{_key(provider)}"
        name = _name(provider, at)
        provider_key = None if name == _ANY_PROVIDER else name
        if not isinstance(models, Mapping):
            raise ConfigError(f"must be a table of models, got {_show(models)}", where=at)
        for model, entry in models.items():
            model_at = f"{at}.{_key(model)}"
            key = (provider_key, _name(model, model_at))
            if key in prices:
                raise ConfigError("price given twice (names ignore case)", where=model_at)
            prices[key] = _price(entry, model_at)
    aliases = normalize_aliases(data.get("aliases", {}), where=f"{origin}:aliases")
    return PriceConfig(prices=MappingProxyType(prices), aliases=MappingProxyType(aliases))


def _price(entry: Any, where: str) -> ModelPrice:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"must be a table of rates, got {_show(entry)}", where=where)
    _check_keys(entry, _ENTRY_KEYS, where)
    rates = _rates(entry, where)
    limits: dict[str, Any] = {}
    for name in _LIMITS:
        value = entry.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value <= 0
        ):
            raise ConfigError(
                f"must be a positive integer, got {_show(value)}", where=f"{where}.{name}"
            )
        limits[name] = value
    raw_tiers = entry.get("tiers", [])
    if not isinstance(raw_tiers, list | tuple):
        raise ConfigError(
            f"must be a list of tiers, got {_show(raw_tiers)}", where=f"{where}.tiers"
        )
    tiers = tuple(_tier(t, f"{where}.tiers[{i}]") for i, t in enumerate(raw_tiers))
    try:
        return ModelPrice(**rates, **limits, tiers=tiers)
    except (TypeError, ValueError) as exc:  # tier order: the rest was checked above
        raise ConfigError(str(exc), where=f"{where}.tiers") from exc


def _tier(entry: Any, where: str) -> PriceTier:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"must be a table of rates, got {_show(entry)}", where=where)
    _check_keys(entry, _TIER_KEYS, where)
    threshold = entry.get("above_input_tokens")
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
        raise ConfigError(
            f"must be a non-negative integer, got {_show(threshold)}",
            where=f"{where}.above_input_tokens",
        )
    rates = _rates(entry, where)
    return PriceTier(above_input_tokens=threshold, **rates)


def _rates(entry: Mapping[Any, Any], where: str) -> dict[str, Any]:
    """The five rates as keyword arguments (input and output required, the rest may be None)."""
    rates: dict[str, Any] = {}
    for name in _RATES:
        value = entry.get(name)
        if value is None:
            if name in ("input", "output"):
                raise ConfigError("required: USD per 1M tokens", where=f"{where}.{name}")
            rates[name] = None
        else:
            rates[name] = _rate(value, f"{where}.{name}")
    return rates


def _rate(value: Any, where: str) -> Decimal:
    problem = "must be a non-negative number of USD per 1M tokens (a string, int or Decimal)"
    if isinstance(value, bool):
        raise ConfigError(f"{problem}, got {_show(value)}", where=where)
    if isinstance(value, Decimal):
        rate = value
    elif isinstance(value, int):
        rate = Decimal(value)
    elif isinstance(value, float):
        # Shortest repr: the literal as the author wrote it (up to 15 significant digits).
        rate = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            rate = Decimal(value.strip())
        except InvalidOperation:
            raise ConfigError(f"{problem}, got {_show(value)}", where=where) from None
    else:
        raise ConfigError(f"{problem}, got {_show(value)}", where=where)
    if not rate.is_finite() or rate < 0:
        raise ConfigError(f"{problem}, got {_show(value)}", where=where)
    return rate


def _check_keys(entry: Mapping[Any, Any], allowed: frozenset[str], where: str) -> None:
    for key in entry:
        if key not in allowed:
            raise ConfigError(
                f"unknown key; expected one of {', '.join(sorted(allowed))}",
                where=f"{where}.{_key(key)}",
            )


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"must be a non-empty name, got {_show(value)}", where=where)
    return value.lower()


def _key(key: Any) -> str:
    """A key as TOML writes it in a dotted path: bare when it can be, quoted otherwise."""
    text = str(key)
    if text and all(c.isascii() and (c.isalnum() or c in "-_") for c in text):
        return text
    return json.dumps(text)


def _show(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a price")
