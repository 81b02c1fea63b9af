"""What a call may cost before it is made, and which price a finished call pays: pure functions.

:class:`~accounting.meter.Accountant` calls these; they take plain values and do no I/O, so
the rules are tested on their own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from accounting.attribute import Attribution
from accounting.budgets import worst_case_cost
from accounting.money import ZERO, Cost
from accounting.pricing import ModelPrice, PriceBook
from accounting.usage import TokenUsage

__all__ = ["CallRequest", "served_cost", "worst_case"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRequest:
    """What is known of a call before it is made.

    Attributes:
        provider: e.g. ``"openai"``.
        model: the model as sent to the provider.
        operation: ``"chat"``, ``"embeddings"``, ``"responses"``, ``"completions"``, …
        messages: the prompt, only to count its tokens for the budget (never stored).
        tools: tool definitions sent with the prompt (counted as a documented estimate).
        prompt_tokens: the prompt's token count when the caller has it (skips counting).
        max_output_tokens: the request's ``max_tokens``/``max_output_tokens``, if any.
        attribution: who pays; ``None`` is the current :func:`~accounting.attribute`.
        server_address: the provider's host, for the exported span (``server.address``).
        server_port: its port.
        params: the request's arguments (sampling settings for the exported span; the span
            reads only the names it knows, never the messages).
    """

    provider: str
    model: str
    operation: str = "chat"
    messages: Sequence[Any] | None = None
    tools: Sequence[Any] | None = None
    prompt_tokens: int | None = None
    max_output_tokens: int | None = None
    attribution: Attribution | None = None
    server_address: str | None = None
    server_port: int | None = None
    params: Mapping[str, Any] | None = None


def worst_case(
    price: ModelPrice | None, prompt_tokens: int | None, max_output_tokens: int | None
) -> Decimal | None:
    """The most a call can cost, or ``None`` when it cannot be bounded.

    Every prompt token at the dearest input-side rate (cache writes may cost more than
    input), every output token the call may make at the dearest output-side rate. The
    output bound is the request's own limit, else the model's output limit, else what is
    left of its context window after the prompt.
    """
    if price is None or prompt_tokens is None:
        return None
    rates = price.rates_for(prompt_tokens)
    output = max_output_tokens or rates.max_output_tokens
    if output is None and rates.context_window is not None:
        output = max(rates.context_window - prompt_tokens, 0)
    if output is None:
        return None
    dearest_in = max(rates.input, rates.cache_write or ZERO, rates.cached_input or ZERO)
    dearest_out = max(rates.output, rates.reasoning or ZERO)
    return worst_case_cost(prompt_tokens, output, dearest_in, dearest_out)


_DATE_SUFFIX = re.compile(r"[-@](?:20\d\d-\d\d-\d\d|20\d{6})")


def served_cost(
    prices: PriceBook, usage: TokenUsage, request: CallRequest, served: str | None
) -> Cost | None:
    """What a call cost: priced by the model that answered, or by the one asked for if the
    answer came from a dated snapshot of it the price table lacks.

    A provider reports the snapshot that served a call (``gpt-4o-mini-2024-07-18`` for
    ``gpt-4o-mini``); when the price table lacks that snapshot the requested name prices it.
    Any other unknown served model (a gateway that substituted a model) is unpriced, never
    billed at the price of the model that was asked for.
    """
    if served and served != request.model:
        cost = prices.cost(usage, served, request.provider)
        if cost is not None:
            return cost
        rest = served[len(request.model) :] if served.startswith(request.model) else ""
        if not _DATE_SUFFIX.fullmatch(rest):
            return None
    return prices.cost(usage, request.model, request.provider)
