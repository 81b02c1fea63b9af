"""A model's price per 1M tokens by token type, and the pure function that turns usage into cost.

Defaults, chosen so that a missing rate never makes tokens free:

- ``cached_input`` is ``None`` when the provider has no separate cache-read rate: cached tokens
  are then billed at the ``input`` rate (what such a provider charges).
- ``cache_write`` is ``None`` when there is no separate cache-write rate: written tokens are
  billed at the ``input`` rate (OpenAI, for example, charges nothing extra to fill its cache).
- ``reasoning`` is ``None`` when reasoning tokens cost the same as other output tokens (every
  major provider bills them as output).

Tiered prices (the rate depends on the prompt size, e.g. above 200k tokens) follow the
providers' and genai-prices's "cliff" rule: when a call's input tokens (cached ones included)
exceed a tier's threshold, that tier's rates apply to *all* the call's tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow, Rounded
from itertools import pairwise

from accounting.money import ZERO, Cost
from accounting.usage import TokenUsage

__all__ = ["ModelPrice", "PriceTier", "cost_of"]

# Every cost is computed in a context that raises instead of rounding: tokens (int) times a
# per-1M rate, then an exact shift by 10^-6, so a rounded result would be a bug, not a cost.
_EXACT = Context(prec=80, traps=[Inexact, Rounded, InvalidOperation, Overflow])

_RATES = ("input", "cached_input", "cache_write", "output", "reasoning")

# One band of resolved rates in USD per token: (above_input_tokens, input, cached_input,
# cache_write, output, reasoning). The base band has threshold -1: it fits every prompt size.
_Band = tuple[int, Decimal, Decimal, Decimal, Decimal, Decimal]


def _check_rate(owner: str, name: str, value: object, *, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, Decimal):
        raise TypeError(
            f"{owner}.{name} must be a Decimal (USD per 1M tokens), got {type(value).__name__}"
            + (": floats are not exact, write Decimal('...')" if isinstance(value, float) else "")
        )
    if not value.is_finite() or value < 0:
        raise ValueError(f"{owner}.{name} must be a finite, non-negative Decimal, got {value}")


def _check_limit(owner: str, name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{owner}.{name} must be a positive int or None, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceTier:
    """Rates that replace a model's base rates when the prompt exceeds a size.

    Attributes:
        above_input_tokens: the tier applies when the call's input tokens (cached included)
            are strictly more than this.
        input, cached_input, cache_write, output, reasoning: USD per 1M tokens, with the same
            ``None`` defaults as :class:`ModelPrice` (relative to this tier's own rates).

    Raises:
        TypeError: a rate is not a Decimal.
        ValueError: a rate is negative or not finite, or the threshold is negative.
    """

    above_input_tokens: int
    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    reasoning: Decimal | None = None

    def __post_init__(self) -> None:
        if (
            isinstance(self.above_input_tokens, bool)
            or not isinstance(self.above_input_tokens, int)
            or self.above_input_tokens < 0
        ):
            raise ValueError(
                "PriceTier.above_input_tokens must be a non-negative int, "
                f"got {self.above_input_tokens!r}"
            )
        for name in _RATES:
            optional = name not in ("input", "output")
            _check_rate("PriceTier", name, getattr(self, name), optional=optional)

    def _band(self) -> _Band:
        return _band(self.above_input_tokens, self)


def _band(threshold: int, rates: ModelPrice | PriceTier) -> _Band:
    def per_token(rate: Decimal) -> Decimal:
        # Exact: scaleb only moves the exponent. Done once here rather than on every call.
        return rate.scaleb(-6, _EXACT)

    return (
        threshold,
        per_token(rates.input),
        per_token(rates.input if rates.cached_input is None else rates.cached_input),
        per_token(rates.input if rates.cache_write is None else rates.cache_write),
        per_token(rates.output),
        per_token(rates.output if rates.reasoning is None else rates.reasoning),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelPrice:
    """What a model costs, in USD per 1M tokens, by token type; plus its size limits.

    Attributes:
        input: prompt tokens that were neither read from nor written to the prompt cache.
        output: generated tokens that are not reasoning tokens.
        cached_input: prompt tokens read from the provider's cache; ``None``: the input rate.
        cache_write: prompt tokens written to the provider's cache; ``None``: the input rate.
        reasoning: reasoning tokens; ``None``: the output rate.
        max_output_tokens: the most tokens the model may generate in one call (budgets reserve
            this worst case); genai-prices does not know it, so only overrides supply it.
        context_window: the most input tokens the model accepts (from genai-prices or overrides).
        tiers: rates for larger prompts, by increasing ``above_input_tokens``.

    Raises:
        TypeError: a rate is not a Decimal (floats are refused: ``0.1`` is not exact).
        ValueError: a rate is negative or not finite, a limit is not a positive int, or the
            tiers are not in strictly increasing order.
    """

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    reasoning: Decimal | None = None
    max_output_tokens: int | None = None
    context_window: int | None = None
    tiers: tuple[PriceTier, ...] = ()
    # Resolved per-token rates, largest threshold first: what cost_of reads (no None checks).
    _bands: tuple[_Band, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in _RATES:
            optional = name not in ("input", "output")
            _check_rate("ModelPrice", name, getattr(self, name), optional=optional)
        _check_limit("ModelPrice", "max_output_tokens", self.max_output_tokens)
        _check_limit("ModelPrice", "context_window", self.context_window)
        if not isinstance(self.tiers, tuple) or not all(
            isinstance(t, PriceTier) for t in self.tiers
        ):
            raise TypeError("ModelPrice.tiers must be a tuple of PriceTier")
        thresholds = [t.above_input_tokens for t in self.tiers]
        if any(a >= b for a, b in pairwise(thresholds)):
            raise ValueError(
                f"ModelPrice.tiers must have strictly increasing thresholds, got {thresholds}"
            )
        bands = [_band(-1, self), *(t._band() for t in self.tiers)]
        object.__setattr__(self, "_bands", tuple(reversed(bands)))

    def rates_for(self, input_tokens: int) -> ModelPrice:
        """The flat (untiered) price that applies to a call with ``input_tokens`` prompt tokens.

        Args:
            input_tokens: the call's input tokens, cached ones included.

        Returns:
            ``self`` when no tier applies, else a copy with that tier's rates and no tiers.
        """
        for tier in reversed(self.tiers):
            if input_tokens > tier.above_input_tokens:
                return ModelPrice(
                    input=tier.input,
                    output=tier.output,
                    cached_input=tier.cached_input,
                    cache_write=tier.cache_write,
                    reasoning=tier.reasoning,
                    max_output_tokens=self.max_output_tokens,
                    context_window=self.context_window,
                )
        return self


def _part(tokens: int, rate_per_token: Decimal) -> Decimal:
    if tokens == 0 or rate_per_token == 0:
        return ZERO
    # Exact: a rate's digits plus a token count's fit far inside the context's 80 digits (and
    # the context would raise rather than round).
    return _EXACT.multiply(rate_per_token, tokens)


def cost_of(usage: TokenUsage, price: ModelPrice) -> Cost:
    """What ``usage`` costs at ``price``, by token type, exactly (no rounding anywhere).

    Each part prices only its own tokens (``TokenUsage.input`` includes cached and
    cache-write tokens, ``output`` includes reasoning)::

        input        = (input - cached_input - cache_write) * input rate / 1e6
        cached_input = cached_input * cached-input rate / 1e6
        cache_write  = cache_write * cache-write rate / 1e6
        output       = (output - reasoning) * output rate / 1e6
        reasoning    = reasoning * reasoning rate / 1e6

    The rates are those of the tier that the call's input tokens select (see the module doc).

    Args:
        usage: the call's tokens by type.
        price: the model's price.

    Returns:
        The cost in USD; a part with no tokens (or a zero rate) is exactly ``Decimal(0)``.
    """
    # Largest threshold first; the base band's threshold is -1, so the scan always stops.
    for band in price._bands:
        if usage.input > band[0]:
            break
    _, input_rate, cached_rate, write_rate, output_rate, reasoning_rate = band
    return Cost(
        input=_part(usage.input - usage.cached_input - usage.cache_write, input_rate),
        cached_input=_part(usage.cached_input, cached_rate),
        cache_write=_part(usage.cache_write, write_rate),
        output=_part(usage.output - usage.reasoning, output_rate),
        reasoning=_part(usage.reasoning, reasoning_rate),
    )
