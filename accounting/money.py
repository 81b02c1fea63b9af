"""Money: exact USD amounts as :class:`~decimal.Decimal`, and a cost broken down by token type."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

__all__ = ["PICO", "ZERO", "Cost", "from_picos", "text", "to_picos", "usd"]

ZERO = Decimal(0)
#: Shared stores (Redis) keep money as integer pico-dollars: exact, and atomic to add.
PICO = Decimal("1e-12")


def usd(value: str | int | Decimal) -> Decimal:
    """An exact USD amount. Floats are refused: ``0.1`` is not exactly ten cents.

    Raises:
        TypeError: ``value`` is a float (or bool).
        ValueError: ``value`` is not a finite number.
    """
    if isinstance(value, bool | float):
        raise TypeError(f"money must be a str, int or Decimal, not {type(value).__name__}")
    amount = value if isinstance(value, Decimal) else Decimal(value)
    if not amount.is_finite():
        raise ValueError(f"money must be finite, got {value!r}")
    return amount


def text(amount: Decimal) -> str:
    """``amount`` as a plain decimal string (``0.00000015``, never ``1.5E-7``), exact."""
    return format(amount, "f")


def to_picos(amount: Decimal) -> int:
    """``amount`` in integer pico-dollars, for counters that must add atomically (Redis, SQL).

    Costs priced from genai-prices are whole pico-dollars; a price override with more than
    six decimals per 1M tokens can give a fraction of one, which is rounded half-even here.
    This is the only place money is rounded, and only in shared counters: the ledger record
    keeps the exact amount.
    """
    return int(amount.scaleb(12).to_integral_value(rounding=ROUND_HALF_EVEN))


def from_picos(picos: int) -> Decimal:
    """Inverse of :func:`to_picos` (normalized: no trailing zeros)."""
    return _plain(Decimal(picos).scaleb(-12))


def _plain(amount: Decimal) -> Decimal:
    if amount == 0:
        return ZERO
    normalized = amount.normalize()
    # normalize() may give an exponent form (1E+1); quantize back to a plain integer then.
    if normalized.as_tuple().exponent > 0:  # type: ignore[operator]
        return normalized.quantize(Decimal(1))
    return normalized


@dataclass(frozen=True, slots=True, kw_only=True)
class Cost:
    """What one call cost in USD, by token type.

    Each part prices only its own tokens: ``input`` is the prompt tokens that were neither
    cached nor written to the cache, ``output`` the generated tokens that were not reasoning.
    """

    input: Decimal = ZERO
    cached_input: Decimal = ZERO
    cache_write: Decimal = ZERO
    output: Decimal = ZERO
    reasoning: Decimal = ZERO

    @property
    def total(self) -> Decimal:
        """Sum of every part."""
        return self.input + self.cached_input + self.cache_write + self.output + self.reasoning

    def to_dict(self) -> dict[str, str]:
        """JSON form: amounts as strings, so no float ever touches them."""
        return {
            "input": text(self.input),
            "cached_input": text(self.cached_input),
            "cache_write": text(self.cache_write),
            "output": text(self.output),
            "reasoning": text(self.reasoning),
            "total": text(self.total),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cost:
        """Inverse of :meth:`to_dict` (``total`` is recomputed, not read)."""
        return cls(
            input=usd(data.get("input", "0")),
            cached_input=usd(data.get("cached_input", "0")),
            cache_write=usd(data.get("cache_write", "0")),
            output=usd(data.get("output", "0")),
            reasoning=usd(data.get("reasoning", "0")),
        )
