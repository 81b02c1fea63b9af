"""Cost accounting for LLM calls: tokens, prices, attribution, ledger, budgets, reports.

This package is the lower layer: it never imports :mod:`llmcache`. Someone who only wants
cost tracking can use it alone::

    from accounting import Accountant, CallRequest, TokenUsage, attribute

    accountant = Accountant()                      # SQLite ledger, genai-prices, no budgets
    with attribute(user="ann", feature="search"):
        meter = accountant.begin(CallRequest(provider="openai", model="gpt-4o-mini"))
        response = client.chat.completions.create(...)
        meter.ok(TokenUsage.from_provider(response.usage), model_served=response.model)

The parts, each usable on its own: :mod:`accounting.tokens`, :mod:`accounting.pricing`,
:mod:`accounting.attribute`, :mod:`accounting.ledger`, :mod:`accounting.budgets`,
:mod:`accounting.report`.
"""

from accounting._exceptions import (
    AccountingError,
    BudgetExceeded,
    BudgetStoreError,
    ConfigError,
    LedgerError,
    UnknownModelError,
)
from accounting.attribute import UNATTRIBUTED, Attribution, attribute, carry, current_attribution
from accounting.budgets import BudgetLimit, Budgets
from accounting.ledger import Ledger, default_ledger
from accounting.meter import Accountant, Meter, collecting
from accounting.money import Cost
from accounting.plan import CallRequest
from accounting.pricing import ModelPrice, PriceBook
from accounting.record import CacheOutcome, CallRecord, Status
from accounting.tokens import (
    TokenEstimate,
    count_message_tokens,
    count_tokens,
    estimate_prompt_tokens,
)
from accounting.usage import TokenUsage

__all__ = [
    "UNATTRIBUTED",
    "Accountant",
    "AccountingError",
    "Attribution",
    "BudgetExceeded",
    "BudgetLimit",
    "BudgetStoreError",
    "Budgets",
    "CacheOutcome",
    "CallRecord",
    "CallRequest",
    "ConfigError",
    "Cost",
    "Ledger",
    "LedgerError",
    "Meter",
    "ModelPrice",
    "PriceBook",
    "Status",
    "TokenEstimate",
    "TokenUsage",
    "UnknownModelError",
    "attribute",
    "carry",
    "collecting",
    "count_message_tokens",
    "count_tokens",
    "current_attribution",
    "default_ledger",
    "estimate_prompt_tokens",
]
